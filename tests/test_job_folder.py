"""The trainer's JOB folder: it deletes only files a segflow trainer wrote, has one writer at a time,
keeps the previous export until a rerun's own is complete, resumes past damaged checkpoints naming them, and saves
a checkpoint when it is stopped."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from pipelines.shared import cli, ownership
from schemas import errors
from tests.fixtures import warm
from tests.fixtures.model import train_tiny
from trainer import checkpoints

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A run with this many steps is still training whenever a test looks at it (it is stopped or killed by then).
_ENDLESS = 100_000


def _cmd(data_dir, job_dir, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainer.task",
        "--data_dir",
        str(data_dir),
        "--job_dir",
        str(job_dir),
        "--model",
        "unet",
        "--base_filters",
        "4",
        "--depth",
        "2",
        "--batch_size",
        "4",
        "--epochs",
        "1",
        "--validation_steps",
        "1",
        "--verbose",
        "0",
        *map(str, extra),
    ]


def _env() -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    return env


def _run(data_dir, job_dir, *extra, timeout: float = 300) -> subprocess.CompletedProcess:
    return warm.run(_cmd(data_dir, job_dir, *extra), env=_env(), cwd=REPO, timeout=timeout)


def _start(data_dir, job_dir, *extra) -> warm.Process:
    return warm.Process(
        _cmd(data_dir, job_dir, *extra), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )


def _ours(stderr: str) -> list[str]:
    """stderr less TensorFlow's native start-up lines (printed before any segflow code runs)."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(("WARNING: All log messages", "I0000", "W0000", "E0000"))
    ]


def _wait_until_training(job: pathlib.Path, process: warm.Process, timeout: float = 180) -> None:
    """Waits until ``process`` trains (TensorBoard has opened its event file)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended with {process.returncode}: {process.stderr.read()}")
        if list(job.glob("logs/train/events.out.tfevents.*")):
            return
        time.sleep(0.5)
    raise AssertionError("the run never started training")


def _snapshot(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _record(job: pathlib.Path) -> set:
    return set(json.loads((job / ".segflow" / "trainer.json").read_text())["files"])


# ------------------------------------------------------------------------ ownership: only its own files
def test_job_dir_holding_another_tools_files_is_refused_untouched(pet_records_dir, tmp_path):
    job = tmp_path / "repo"
    (job / "model").mkdir(parents=True)
    (job / "model" / "weights.h5").write_bytes(b"another tool's model")
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "ckpt-3.index").write_bytes(b"another tool's checkpoint")
    before = _snapshot(job)
    result = _run(pet_records_dir, job, "--steps_per_epoch", 1)
    assert result.returncode == 2, result.stderr
    lines = _ours(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("trainer.task: error: --job_dir"), lines
    assert "did not write" in lines[0]
    assert _snapshot(job) == before and not (job / ".segflow").exists()


def test_a_previous_release_job_is_adopted_and_only_its_files_are_replaced(pet_records_dir, tmp_path, caplog):
    job = tmp_path / "job"
    train_tiny(pet_records_dir, job, epochs=1, steps_per_epoch=2, checkpoint_steps=1, validation_steps=1)
    shutil.rmtree(job / ".segflow")  # what the previous release left: no owner record
    (job / "notes.txt").write_text("the user's")
    (job / "checkpoints" / "ckpt-9.index").write_bytes(b"not named by the state file: not the trainer's")
    (job / "model" / "README").write_text("the user's")
    with caplog.at_level(logging.INFO, logger="segflow.ownership"):
        metrics = train_tiny(pet_records_dir, job, epochs=2, steps_per_epoch=2, checkpoint_steps=1, validation_steps=1)
    assert metrics["resumed_from_step"] == 2 and "adopting" in caplog.text
    assert (job / "notes.txt").read_text() == "the user's"
    assert (job / "model" / "README").read_text() == "the user's"
    assert (job / "checkpoints" / "ckpt-9.index").exists()  # pruning deletes recorded checkpoints only
    assert not (job / "checkpoints" / "ckpt-1.index").exists()  # the adopted ones are pruned
    assert json.loads((job / "metrics.json").read_text())["epochs"] == 2
    recorded = _record(job)
    assert "checkpoints/ckpt-4.index" in recorded and "notes.txt" not in recorded
    assert "checkpoints/ckpt-9.index" not in recorded and "model/README" not in recorded


# ------------------------------------------------------------------------------ the export is published last
def test_a_failed_rerun_leaves_the_previous_export_and_metrics(pet_records_dir, tmp_path, monkeypatch):
    job = tmp_path / "job"
    train_tiny(pet_records_dir, job, epochs=1, steps_per_epoch=1, validation_steps=1)
    before = {**_snapshot(job / "model"), "metrics.json": (job / "metrics.json").read_bytes()}

    def full_disk(obj, export_dir, *args, **kwargs):
        os.makedirs(export_dir, exist_ok=True)
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    with pytest.raises(OSError):
        train_tiny(pet_records_dir, job, epochs=2, steps_per_epoch=1, validation_steps=1)
    assert {**_snapshot(job / "model"), "metrics.json": (job / "metrics.json").read_bytes()} == before
    assert not [p for p in (job / ".segflow").iterdir() if p.name.startswith("run-")]  # its staging is gone


# ------------------------------------------------------------------------------------ damaged checkpoints
@pytest.fixture(scope="module")
def trained_with_two_checkpoints(pet_records_dir, tmp_path_factory) -> pathlib.Path:
    """A JOB trained 2 steps with a checkpoint after each; trained once per module and only copied (read-only)."""
    job = tmp_path_factory.mktemp("two_checkpoints") / "job"
    train_tiny(pet_records_dir, job, epochs=1, steps_per_epoch=2, checkpoint_steps=1, validation_steps=1)
    assert sorted(p.name for p in (job / "checkpoints").glob("*.index")) == ["ckpt-1.index", "ckpt-2.index"]
    return job


@pytest.fixture
def job_with_two_checkpoints(trained_with_two_checkpoints, tmp_path) -> pathlib.Path:
    """This test's own copy of that JOB, to damage (the trainer's files name their checkpoints relatively)."""
    job = tmp_path / "job"
    shutil.copytree(trained_with_two_checkpoints, job, symlinks=True)
    return job


def _cut(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_garbage_state_file_resumes_from_the_newest_whole_checkpoint(
    job_with_two_checkpoints, pet_records_dir, caplog
):
    job = job_with_two_checkpoints
    (job / "checkpoints" / "checkpoint").write_bytes(b"\x00garbage\xff not a state file")
    with caplog.at_level(logging.WARNING, logger="trainer.callbacks"):
        metrics = train_tiny(pet_records_dir, job, epochs=2, steps_per_epoch=2, checkpoint_steps=1, validation_steps=1)
    assert metrics["resumed_from_step"] == 2  # not step 0 over the existing checkpoints
    assert f"{job}/checkpoints/checkpoint is damaged" in caplog.text
    assert f"resuming from checkpoint {job}/checkpoints/ckpt-2" in caplog.text
    assert checkpoints.find_checkpoint(str(job / "checkpoints")).step == 4  # the state file is whole again


def test_a_truncated_checkpoint_is_skipped_naming_its_file(job_with_two_checkpoints, pet_records_dir, caplog):
    job = job_with_two_checkpoints
    damaged = job / "checkpoints" / "ckpt-2.data-00000-of-00001"
    _cut(damaged)
    with caplog.at_level(logging.WARNING, logger="trainer.callbacks"):
        metrics = train_tiny(pet_records_dir, job, epochs=2, steps_per_epoch=2, checkpoint_steps=1, validation_steps=1)
    assert metrics["resumed_from_step"] == 1
    assert f"skipped checkpoint {job}/checkpoints/ckpt-2: {damaged} is damaged" in caplog.text
    assert f"resuming from checkpoint {job}/checkpoints/ckpt-1" in caplog.text


def test_checkpoints_that_are_all_damaged_are_refused_naming_the_newest(job_with_two_checkpoints, pet_records_dir):
    job = job_with_two_checkpoints
    for step in (1, 2):
        _cut(job / "checkpoints" / f"ckpt-{step}.data-00000-of-00001")
    before = _snapshot(job / "checkpoints")
    with pytest.raises(errors.DataError) as caught:
        train_tiny(pet_records_dir, job, epochs=2, steps_per_epoch=2, checkpoint_steps=1, validation_steps=1)
    line = cli.error_line("trainer.task", caught.value)
    assert f"{job}/checkpoints/ckpt-2.data-00000-of-00001 is damaged" in line and "\n" not in line
    assert caught.value.exit_code == 1
    assert _snapshot(job / "checkpoints") == before


# --------------------------------------------------------------------------------------------- one writer
def _wait_until_holding_the_lease(job: pathlib.Path, process: warm.Process, timeout: float = 180) -> None:
    """Waits until ``process`` holds JOB's writer lease (the lease file names its pid)."""
    lease = job / ownership.LEASE_FILE
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended with {process.returncode}: {process.stderr.read()}")
        try:
            if json.loads(lease.read_text()).get("pid") == process.pid:
                return
        except (OSError, ValueError):
            pass  # not written yet
        time.sleep(0.1)
    raise AssertionError("the run never took the lease")


def test_a_second_run_into_a_job_dir_in_use_is_refused_and_a_dead_holders_lease_taken_over(
    pet_records_dir, tmp_path, caplog
):
    job = tmp_path / "job"
    first = _start(pet_records_dir, job, "--steps_per_epoch", _ENDLESS, "--checkpoint_steps", 0)
    try:
        _wait_until_holding_the_lease(job, first)
        second = _run(pet_records_dir, job, "--steps_per_epoch", _ENDLESS, "--checkpoint_steps", 0, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = _ours(second.stderr)
        assert len(lines) == 1, lines
        assert f"is being written by segflow trainer (pid {first.pid} " in lines[0], lines
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()  # SIGKILL: its lease is left behind
        first.communicate()
    with caplog.at_level(logging.WARNING, logger="segflow.ownership"):
        train_tiny(pet_records_dir, job, epochs=1, steps_per_epoch=1, validation_steps=1)
    assert f"taking over the lease on {job} from segflow trainer (pid {first.pid} " in caplog.text
    assert (job / "model" / "segflow_model.json").exists()


# ------------------------------------------------------------------------------ a stop saves a checkpoint
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_saves_a_checkpoint_and_ends_in_one_line(pet_records_dir, tmp_path, stop):
    job = tmp_path / "job"
    run = _start(pet_records_dir, job, "--steps_per_epoch", _ENDLESS, "--checkpoint_steps", 3)
    try:
        _wait_until_training(job, run)
        deadline = time.time() + 120
        while not (job / "checkpoints" / "checkpoint").exists() and time.time() < deadline:
            time.sleep(0.2)  # the first periodic checkpoint: steps are being trained
        run.send_signal(stop)
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
    expected = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}[stop]
    assert run.returncode == expected[0], stderr
    lines = _ours(stderr)
    assert lines[-1] == f"trainer.task: error: {expected[1]}; {cli.RERUN_TO_FINISH}", lines
    assert not [line for line in lines if line.startswith(("Traceback", "  File"))], lines
    found = checkpoints.find_checkpoint(str(job / "checkpoints"))
    assert found is not None
    # The stop saved the step it reached (not only the last periodic checkpoint), and recorded it.
    assert f"INFO trainer.task: stopped at step {found.step}: saved {job}/checkpoints/ckpt-{found.step}; " in stderr
    assert f"checkpoints/ckpt-{found.step}.index" in _record(job)


# The command, with one change: after its third training step, an object's finalizer (``__del__``) sends this
# process SIGINT and runs on. Python runs the signal handler there and drops the KeyboardInterrupt it raises
# ("Exception ignored in ..."), as it does whenever a stop lands in one of the finalizers TensorFlow's objects run
# every step.
_STOP_LOST_IN_A_FINALIZER = """
import os, runpy, signal, sys, time
from pipelines.shared import logs
from trainer import callbacks

class Finalizer:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 30
        while not logs.interrupted.is_set() and time.monotonic() < deadline:
            pass  # the handler runs in here (it marks the stop, then raises)

step_end = callbacks.Throughput.on_train_batch_end

def on_train_batch_end(self, batch, logs=None):
    step_end(self, batch, logs)
    if batch == 2:
        Finalizer()

callbacks.Throughput.on_train_batch_end = on_train_batch_end
sys.argv[0] = "trainer.task"
runpy.run_module("trainer.task", run_name="__main__")
"""


def test_a_stop_whose_exception_python_drops_in_a_finalizer_still_ends_the_run_at_that_step(pet_records_dir, tmp_path):
    job = tmp_path / "job"
    argv = _cmd(pet_records_dir, job, "--steps_per_epoch", _ENDLESS, "--checkpoint_steps", 0)
    done = warm.run([sys.executable, "-c", _STOP_LOST_IN_A_FINALIZER, *argv[3:]], env=_env(), cwd=REPO, timeout=120)
    assert done.returncode == 130, done.stderr[-3000:]
    lines = _ours(done.stderr)
    assert lines[-1] == f"trainer.task: error: interrupted; {cli.RERUN_TO_FINISH}", lines
    # Not the dropped exception either (what follows a stop is its consequence), nor any traceback.
    assert not [line for line in lines if "Exception ignored" in line or line.startswith(("Traceback", "  "))], lines
    found = checkpoints.find_checkpoint(str(job / "checkpoints"))
    assert found is not None and found.step == 3, found
    assert f"INFO trainer.task: stopped at step 3: saved {job}/checkpoints/ckpt-3; " in done.stderr

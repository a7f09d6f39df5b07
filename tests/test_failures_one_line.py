"""Every failure a user can cause or meet is one stderr line naming the path and what to do.

Real faults, made with real means: a read-only or tiny tmpfs mounted in a private mount namespace
(``unshare -rm``; skipped where that is impossible), a file where a folder must be, a model whose variables
file was cut short, a plain TensorFlow SavedModel beside a copied ``segflow_model.json``.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from pipelines.shared import cli
from schemas import errors
from tests.fixtures import warm

pytestmark = pytest.mark.slow

_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
_TINY_TRAIN = ["--model", "unet", "--base_filters", "4", "--depth", "2", "--epochs", "1", "--batch_size", "4"]


def _mounting_works() -> bool:
    try:
        done = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# What ``unshare -rm sh -c 'mount -t tmpfs -o OPTIONS tmpfs DIR'`` does, done by the command's own process before
# it runs its module as ``python -m`` does: a private user and mount namespace (root there, this user outside), the
# mounts made private, a tmpfs over DIR. The warm server runs it (tests/fixtures/warm.py): its child is one thread
# after the fork, as unshare(CLONE_NEWUSER) requires, and does not import TensorFlow again (~6 CPU-s a command).
_IN_A_MOUNT_NAMESPACE = r"""
import ctypes, os, runpy, sys
libc = ctypes.CDLL(None, use_errno=True)

def check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")

uid, gid = os.getuid(), os.getgid()
check(libc.unshare(0x10000000 | 0x00020000), "unshare")  # CLONE_NEWUSER | CLONE_NEWNS
for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
    with open(f"/proc/self/{name}", "w") as f:
        f.write(text)
check(libc.mount(None, b"/", None, 0x4000 | 0x40000, None), "making / private")  # MS_REC | MS_PRIVATE
mount, options, module = sys.argv[1:4]
check(libc.mount(b"tmpfs", mount.encode(), b"tmpfs", 0, options.encode()), f"mounting a tmpfs on {mount}")
sys.argv = [module, *sys.argv[4:]]
runpy._run_module_as_main(module, alter_argv=True)
"""


def _run(module: str, args: list[str], mount: str | None = None, options: str = "ro") -> subprocess.CompletedProcess:
    """``python -m module args``; ``mount``: with a tmpfs mounted there (``options``) for this command only."""
    if mount is None:
        return warm.run([sys.executable, "-m", module, *args], env=_ENV, timeout=600)
    if not _mounting_works():
        pytest.skip("no private mount namespace here (unshare -rm)")
    os.makedirs(mount, exist_ok=True)
    command = [sys.executable, "-c", _IN_A_MOUNT_NAMESPACE, mount, options, module, *args]
    return warm.run(command, env=_ENV, timeout=600)


def _one_line(done: subprocess.CompletedProcess, code: int, *expected: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1, (done.returncode, done.stderr[-3000:])
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def predictions(pet_raw_dir, tmp_path_factory) -> pathlib.Path:
    """An OUT as infer leaves it, as far as evaluate reads it: OUT/masks, here the ground truth's own trimaps
    (the checks below are about evaluate's output file, not the scores)."""
    out = tmp_path_factory.mktemp("failures_out")
    shutil.copytree(pet_raw_dir / "annotations" / "trimaps", out / "masks")
    return out


# ------------------------------------------------------------------------------------------------ read-only outputs
def test_read_only_output_preprocess(pet_raw_dir, tmp_path):
    ro = tmp_path / "ro"
    args = ["--dataset", "pet", "--input_dir", str(pet_raw_dir), "--output_dir", str(ro / "dst"), "--image_size", "16"]
    _one_line(_run("pipelines.preprocess", args, mount=str(ro)), 1, str(ro / "dst"), "Read-only file system")


def test_read_only_output_infer(pet_job_dir, pet_raw_dir, tmp_path):
    ro = tmp_path / "ro"
    args = ["--model_dir", str(pet_job_dir / "model"), "--input", f"{pet_raw_dir}/images/*.jpg"]
    done = _run("pipelines.infer", [*args, "--output_dir", str(ro / "out")], mount=str(ro))
    _one_line(done, 1, str(ro / "out"), "Read-only file system")


def test_read_only_output_trainer(pet_records_dir, tmp_path):
    ro = tmp_path / "ro"
    args = ["--data_dir", str(pet_records_dir), "--job_dir", str(ro / "job"), *_TINY_TRAIN]
    _one_line(_run("trainer.task", args, mount=str(ro)), 1, str(ro / "job"), "Read-only file system")


def test_read_only_output_evaluate(predictions, pet_raw_dir, tmp_path):
    ro = tmp_path / "ro"
    args = ["--predictions", str(predictions / "masks"), "--ground_truth", str(pet_raw_dir), "--dataset", "pet"]
    done = _run("pipelines.evaluate", [*args, "--output_file", str(ro / "e.json")], mount=str(ro))
    _one_line(done, 1, f"{ro}: Read-only file system")  # the folder of --output_file, which evaluate claims first


def test_disk_full_in_the_middle_of_training_is_one_line(pet_records_dir, tmp_path):
    """Room for the ownership record and little more: TensorFlow's summary writer meets ENOSPC mid-run."""
    small = tmp_path / "small"
    args = ["--data_dir", str(pet_records_dir), "--job_dir", str(small / "job"), *_TINY_TRAIN, "--log_level", "error"]
    done = _run("trainer.task", args, mount=str(small), options="size=40k")
    _one_line(done, 1, str(small / "job"), "No space left on device", "rerun the same command")


# ---------------------------------------------------------------------------------------- flags of the wrong kind
def test_output_flags_of_the_wrong_kind_are_flag_errors(pet_records_dir, predictions, pet_raw_dir, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    done = _run("trainer.task", ["--data_dir", str(pet_records_dir), "--job_dir", str(a_file), *_TINY_TRAIN])
    _one_line(done, 2, f"--job_dir {a_file} is a file")
    done = _run(
        "pipelines.infer",
        ["--model_dir", "m", "--input", "x/*.jpg", "--output_dir", str(a_file / "out")],
    )
    _one_line(done, 2, "--output_dir", f"{a_file} is a file")
    evaluate = ["--predictions", str(predictions / "masks"), "--ground_truth", str(pet_raw_dir), "--dataset", "pet"]
    _one_line(
        _run("pipelines.evaluate", [*evaluate, "--output_file", str(tmp_path)]), 2, "--output_file", "is a folder"
    )
    assert a_file.read_text() == "mine"


# --------------------------------------------------------------------------------------- models that do not load
def _previous_outputs(out: pathlib.Path) -> dict[str, bytes]:
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "a.png").write_bytes(b"previous mask")
    (out / "summary.json").write_text('{"previous": true}')
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_truncated_variables_are_one_line_and_out_is_untouched(pet_job_dir, pet_raw_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(pet_job_dir / "model", model)
    data = next((model / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # an interrupted copy
    out = tmp_path / "out"
    before = _previous_outputs(out)
    done = _run(
        "pipelines.infer",
        ["--model_dir", str(model), "--input", f"{pet_raw_dir}/images/*.jpg", "--output_dir", str(out)],
    )
    _one_line(done, 1, str(model), "copy JOB/model again")
    assert "FATAL" not in done.stderr
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {k: after.get(k) for k in before} == before


def test_plain_saved_model_with_a_copied_info_file_is_one_line(pet_job_dir, pet_raw_dir, tmp_path, capfd):
    """Through infer's ``main`` in this process: the model loads (it is not cut short), so nothing can abort."""
    import tensorflow as tf

    from pipelines.infer import job as infer

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return {"y": x * 2}

    model = tmp_path / "plain"
    module = Doubler()
    tf.saved_model.save(module, str(model), signatures={"serving_default": module.double})
    shutil.copy(pet_job_dir / "model" / "segflow_model.json", model)
    out = tmp_path / "out"
    before = _previous_outputs(out)
    capfd.readouterr()
    status = infer.main(["--model_dir", str(model), "--input", f"{pet_raw_dir}/images/*.jpg", "--output_dir", str(out)])
    captured = capfd.readouterr()
    done = subprocess.CompletedProcess("pipelines.infer", status, captured.out, captured.err)
    _one_line(done, 1, str(model), "export the model again")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------------------------------------ the one mapping
def test_the_mapping_finds_faults_wherever_they_were_raised():
    """One mapping for every command: an OSError anywhere in the chain, TensorFlow's wording, a Beam worker's
    traceback text; a segflow error raised in a worker; anything else keeps its traceback (None)."""
    try:
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/out/x")
        except OSError as inner:
            raise RuntimeError("wrapped by a library") from inner
    except RuntimeError as outer:
        assert cli.known_failure(outer) == ("/out/x: Read-only file system: " + cli._PATH_FAULTS["EROFS"], 1)
    worker_text = RuntimeError(
        "Traceback ...\ntensorflow.python.framework.errors_impl.ResourceExhaustedError: /dst/a.pb; No space left "
        "on device [while running 'Write']\n"
    )
    message, code = cli.known_failure(worker_text)
    assert code == 1 and message.startswith("/dst/a.pb: No space left on device: free space")
    python_text = RuntimeError("Traceback ...\nOSError: [Errno 13] Permission denied: '/dst/b'\n")
    assert cli.known_failure(python_text)[0].startswith("/dst/b: Permission denied: ")

    class ModelNotLoading(errors.DataError):
        pass

    setup_text = RuntimeError(
        "Traceback ...\npipelines.x.ModelNotLoading: the model in /m does not load [while running 'S']"
    )
    assert cli.known_failure(setup_text) == ("the model in /m does not load", 1)
    assert cli.known_failure(ValueError("a bug")) is None
    assert cli.known_failure(OSError(errno.ENOENT, "No such file or directory", "/in")) is None

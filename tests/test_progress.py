"""The Beam jobs' progress (``pipelines.common.progress``): one updating line on a terminal, plain lines on a pipe,
nothing at ``--log_level warning``, with worker threads and worker processes, and the same output bytes."""

import os
import pathlib
import pickle
import pty
import re
import subprocess
import sys

import pytest

from pipelines.common import progress
from tests.fixtures import warm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS_LOG = "INFO segflow.progress:"


def _command(module, args: list, on_terminal: bool, interval_s: float = 30.0) -> tuple[int, str, str]:
    """``python -m module args`` (``module`` a list: ``python *module args``) → (exit status, stdout, stderr),
    stderr on a pseudo-terminal or a pipe."""
    env = dict(os.environ, PYTHONPATH=ROOT, **{progress.INTERVAL_ENV: str(interval_s)})
    argv = [sys.executable, *(["-m", module] if isinstance(module, str) else module), *map(str, args)]
    if not on_terminal:
        done = warm.run(argv, cwd=ROOT, env=env, timeout=300)
        return done.returncode, done.stdout, done.stderr
    primary, secondary = pty.openpty()
    child = warm.Process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary, cwd=ROOT, env=env)
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: every writer of the terminal closed it
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    out = child.stdout.read().decode()
    child.stdout.close()
    return child.wait(timeout=300), out, seen.decode("utf-8", "replace")


def _files(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _progress_lines(stderr: str, job: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{PROGRESS_LOG} {job}: ")]


@pytest.fixture(scope="module")
def infer_runs(pet_raw_dir, pet_job_dir, tmp_path_factory) -> dict:
    """The same infer command three ways: stderr on a terminal (worker threads), on a pipe with a 0.2 s interval
    (worker processes), and quiet (--log_level warning, on a pipe, 0.2 s interval)."""
    root = tmp_path_factory.mktemp("progress_infer")
    images = pet_raw_dir / "images"
    # --model_calls image: the three runs batch differently (threads, processes), and with padded batch calls a
    # pixel at an exact near-tie may follow an image's slot in the batch (docs/infer.md); one call per image
    # makes the masks independent of batching, so the bytes compared below show what progress does, only that.
    common = ["--model_dir", pet_job_dir / "model", "--input", f"{images}/*.jpg", "--model_calls", "image"]
    runs = {
        "terminal": (True, ["--direct_running_mode", "in_memory"]),
        "pipe": (False, ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]),
        "quiet": (False, ["--direct_running_mode", "in_memory", "--log_level", "warning"]),
    }
    found = {"total": len(list(images.glob("*.jpg")))}
    for name, (on_terminal, extra) in runs.items():
        out = root / name
        code, stdout, stderr = _command(
            "pipelines.infer", [*common, "--output_dir", out, *extra], on_terminal, interval_s=0.2
        )
        assert code == 0, stderr
        found[name] = (stdout, stderr, _files(out))
    return found


def test_infer_on_a_terminal_shows_one_updating_line_to_the_total(infer_runs):
    total = infer_runs["total"]
    stdout, terminal, _ = infer_runs["terminal"]
    redrawn = [part for part in terminal.split("\r") if part.startswith("infer:")]
    assert len(redrawn) >= 2, terminal  # drawn at 0, then redrawn in place as images finish
    assert f"0/{total}" in redrawn[0] and f"{total}/{total}" in redrawn[-1], terminal
    assert PROGRESS_LOG not in terminal  # the line, not log lines
    assert f"{total} written" in stdout


def test_infer_on_a_pipe_logs_plain_lines_from_worker_processes_and_writes_the_same_bytes(infer_runs):
    total = infer_runs["total"]
    _, stderr, written = infer_runs["pipe"]
    lines = _progress_lines(stderr, "infer")
    assert lines and "\r" not in stderr, stderr
    # tqdm writes a rate under one a second as seconds per image (a loaded machine): either is a rate.
    rate = r"[0-9.]+(image/s|s/image)"
    assert re.search(rf" {total}/{total} images \(100 %\), {rate}, .* elapsed, ETA 00:00$", lines[-1]), lines
    # The outputs do not depend on whether progress was shown, nor on threads or processes.
    assert written == infer_runs["quiet"][2] == infer_runs["terminal"][2]


def test_log_level_warning_shows_no_progress(infer_runs):
    assert _progress_lines(infer_runs["pipe"][1], "infer")  # what the same interval shows at the default level
    _, quiet, _ = infer_runs["quiet"]
    assert "infer:" not in quiet and "segflow.progress" not in quiet, quiet


def test_evaluate_on_a_pipe_counts_the_example_ids(infer_runs, pet_raw_dir, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for name, data in infer_runs["terminal"][2].items():
        if name.startswith("masks/"):
            (masks / name.split("/", 1)[1]).write_bytes(data)
    code, _, stderr = _command(
        "pipelines.evaluate",
        [
            "--predictions",
            masks,
            "--ground_truth",
            pet_raw_dir,
            "--dataset",
            "pet",
            "--direct_running_mode",
            "in_memory",
        ],
        on_terminal=False,
        interval_s=0.05,
    )
    assert code == 0, stderr
    total = infer_runs["total"]
    lines = _progress_lines(stderr, "evaluate")
    assert lines and f" {total}/{total} images (100 %)" in lines[-1], stderr


def test_preprocess_on_a_terminal_counts_examples_from_fork_server_workers(pet_raw_dir, tmp_path):
    code, stdout, terminal = _command(
        "pipelines.preprocess",
        [
            "--dataset",
            "pet",
            "--input_dir",
            pet_raw_dir,
            "--output_dir",
            tmp_path / "dst",
            "--image_size",
            "32",
            # Worker processes forked by the fork server, which started before the job was known.
            "--direct_running_mode",
            "multi_processing",
            "--direct_num_workers",
            "2",
        ],
        on_terminal=True,
    )
    assert code == 0, terminal
    redrawn = [part for part in terminal.split("\r") if part.startswith("preprocess:")]
    examples = len(list((pet_raw_dir / "images").glob("*.jpg")))
    assert redrawn and redrawn[-1].startswith(f"preprocess: {examples} examples ["), terminal
    assert "%" not in redrawn[-1]  # no total before discovery: no percentage, no ETA


def test_a_sink_travels_as_its_address_and_ignores_a_missing_launcher(tmp_path):
    sink = progress.Sink(str(tmp_path / "nobody-listens"))
    sink.add(3)
    sink.flush()  # no socket there: nothing sent, nothing raised
    copy = pickle.loads(pickle.dumps(progress.CountDone(sink)))
    assert copy._sink.address == sink.address and copy._sink._pending == 0
    assert list(copy.process("element")) == ["element"]


# A job's log lines while its progress line is drawn: segflow's (Python logging) and a native or worker line
# (written to descriptor 2, which the commands' quiet filter holds).
LINES_WHILE_DRAWN = """
import logging, os, time
from pipelines.common import progress
from pipelines.shared import logs

logs.setup_logging([])
with logs.native_stderr_filtered():
    with progress.shown("job", total=4, unit="image") as sink:
        sink.add(1)
        sink.flush()
        time.sleep(0.5)
        logging.getLogger("segflow.job").warning("a log line")
        os.write(2, b"a native line\\n")
        time.sleep(0.5)
        sink.add(3)
        sink.flush()
        time.sleep(0.3)
"""


@pytest.mark.slow
def test_lines_logged_while_the_progress_line_is_drawn_appear_on_lines_of_their_own():
    code, _, terminal = _command(["-c", LINES_WHILE_DRAWN], [], on_terminal=True)
    assert code == 0, terminal
    lines = terminal.replace("\r\n", "\n").split("\n")  # the terminal turns each \n into \r\n
    # What a line shows is what follows its last carriage return: the message alone, not the bar before it.
    for message in ("WARNING segflow.job: a log line", "a native line"):
        (line,) = [line for line in lines if message in line]
        assert line.split("\r")[-1] == message, repr(line)
    # The progress line is drawn again below them and counts on to the total.
    after = "\n".join(lines).split("a native line\n")[1]
    assert after.startswith("\rjob: ") and after.rstrip("\n").split("\r")[-1].startswith("job: 100%|"), repr(after)

"""SIGTERM (what Kubernetes, Vertex AI and Dataflow send) is a stop, not a kill: one line,
exit status 143, worker processes ended, the scratch folder removed, nothing left in TMPDIR."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.shared import cli
from pipelines.tools import synthetic
from tests.fixtures import warm

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    found, pending = set(), [pid]
    while pending:
        parent = pending.pop()
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = {int(c) for c in handle.read().split()}
                pending.extend(children - found)
                found |= children
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_sigterm_stops_preprocess_in_one_line(tmp_path):
    src, temp = tmp_path / "src", tmp_path / "tmp"
    synthetic.write_pet_dataset(str(src), 48, size=(120, 160), seed=3)  # the run lasts seconds past the stop
    temp.mkdir()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", TMPDIR=str(temp))
    flags = ["--dataset", "pet", "--input_dir", str(src), "--output_dir", str(tmp_path / "dst"), "--image_size", "64"]
    workers = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    proc = warm.Process(
        [sys.executable, "-m", "pipelines.preprocess", *flags, *workers],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    try:
        # Stopped once the scratch folder exists (the pipeline runs) and the workers are up.
        while not (any(".segflow-tmp-" in d for _, dirs, _ in os.walk(temp) for d in dirs) and _descendants(proc.pid)):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the pipeline did not start"
            time.sleep(0.05)
        time.sleep(1)
        children = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and err.strip().splitlines() == [
        f"pipelines.preprocess: error: terminated; {cli.RERUN_TO_FINISH}"
    ], err
    gone_by = time.monotonic() + 1  # the workers' exits may trail the job's by up to a second
    while any(_alive(pid) for pid in children) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert [pid for pid in children if _alive(pid)] == [], "worker processes outlived the job"
    assert os.listdir(temp) == [], "scratch or temporary files left in TMPDIR"

"""The local runner's worker processes, forked ready-made by a fork server whose imports overlap the launcher's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that

from pipelines.common import forkserver, runner
from pipelines.shared import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A module that neither Beam's harness, nor segflow, nor this test module imports: in a worker it is loaded only
# if the fork server preloaded it.
MARKER_MODULE = "wave"
TWO_PROCESSES = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]

pytestmark = pytest.mark.skipif(not forkserver.supported(), reason="fork servers need Linux")


class _Where(beam.DoFn):
    def process(self, number):
        yield number, os.getpid(), os.getppid(), MARKER_MODULE in sys.modules


def _where_workers_ran(server_pid, preloaded):
    def check(rows):
        assert sorted(r[0] for r in rows) == list(range(40))
        for _, pid, parent, loaded in rows:
            if server_pid is not None:  # the server itself, or a worker it forked
                assert server_pid in (pid, parent), (pid, parent, server_pid)
            assert loaded is preloaded

    return check


def _run_where(options, server_pid, preloaded):
    with runner.new_pipeline(options) as p:
        rows = p | beam.Create(range(40)) | beam.Reshuffle() | beam.ParDo(_Where())
        assert_that(rows, _where_workers_ran(server_pid, preloaded))


@pytest.mark.slow
def test_workers_come_from_the_fork_server_with_its_preload():
    options = runner.make_pipeline_options(TWO_PROCESSES)
    runner.start_workers(options, [MARKER_MODULE])
    server = runner._waiting_server
    assert server is not None and server.workers == 2
    _run_where(options, server.pid, preloaded=True)
    assert runner._waiting_server is None  # the pipeline took it ...
    assert server._process.poll() == 0  # ... and it ended with the pipeline, its forked worker reaped
    # Without a server, workers are plain processes that import only what they use.
    _run_where(options, None, preloaded=False)


@pytest.mark.slow
def test_a_request_the_server_cannot_take_runs_a_plain_worker():
    options = runner.make_pipeline_options(TWO_PROCESSES)
    runner.start_workers(options, [MARKER_MODULE])
    server = runner._waiting_server
    os.kill(server.pid, signal.SIGKILL)
    server._process.wait()
    _run_where(options, None, preloaded=False)  # every element still processed, by plain workers


def test_an_unused_server_is_discarded_at_once():
    options = runner.make_pipeline_options(TWO_PROCESSES)
    runner.start_workers(options, ["tensorflow_transform.beam"])  # seconds of imports
    server = runner._waiting_server
    started = time.monotonic()
    runner.discard_workers()
    assert time.monotonic() - started < 2 and server._process.poll() is not None
    assert runner._waiting_server is None


def test_threads_keep_no_server():
    options = runner.make_pipeline_options(["--direct_running_mode", "in_memory"])
    runner.start_workers(options, [MARKER_MODULE])
    assert runner._waiting_server is None


# One process for four starts of ``cli.main``: preprocess's prestart on the small test input by default (threads:
# no server), with processes named (a fork server starts, no TensorFlow) and with threads named (no server), then a
# prestart and a run with ``tensorflow=True``: TensorFlow is loaded after the prestart, before the run.
_STARTUP_PROBE = r"""
import sys
from pipelines.common import runner
from pipelines.preprocess import job
from pipelines.shared import cli
for extra in ([], ["--direct_running_mode", "multi_processing"], ["--direct_running_mode", "in_memory"]):
    cli.main("probe", [], lambda argv: None, prestart=lambda argv: job.start_workers(sys.argv[1:] + extra))
    print("server:", runner._waiting_server is not None, "tensorflow:", "tensorflow" in sys.modules)
    runner.discard_workers()
seen = []
cli.main("probe", [], lambda argv: seen.append("tensorflow" in sys.modules),
         prestart=lambda argv: seen.append("tensorflow" in sys.modules), tensorflow=True)
print("tensorflow loaded at prestart, at run:", seen)
"""


@pytest.mark.slow
def test_preprocess_starts_its_workers_before_tensorflow(pet_raw_dir, tmp_path):
    """``main`` runs the job's prestart before it imports TensorFlow, and preprocess's prestart starts the fork
    server without importing TensorFlow: the server's imports and the launcher's run at once. An input under
    ``THREADS_BELOW_INPUT_BYTES`` (this one) runs in threads unless processes are named: no server."""
    argv = ["--dataset", "pet", "--input_dir", str(pet_raw_dir), "--output_dir", str(tmp_path / "out")]
    argv += ["--image_size", "32", "--direct_num_workers", "2"]
    result = subprocess.run(
        [sys.executable, "-c", _STARTUP_PROBE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.stdout.splitlines() == [
        "server: False tensorflow: False",
        "server: True tensorflow: False",
        "server: False tensorflow: False",
        "tensorflow loaded at prestart, at run: [False, True]",
    ], result.stdout + result.stderr


def test_workers_start_early_by_entry_point_not_by_what_was_imported(monkeypatch):
    """Processes on 2 cores whatever the input's size inside a program's ``main`` (its fork server's imports
    overlap the launcher's); a Python caller keeps the size rule. Whether TensorFlow was imported before
    changes neither."""
    import tensorflow  # noqa: F401 - as in any test process that ran a model

    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    assert runner.default_running_mode(2, 0, early_workers=True) == "multi_processing"
    assert runner.default_running_mode(1, 0, early_workers=True) == "in_memory"
    seen = []
    for loaded in (True, False):
        with monkeypatch.context() as scope:
            if not loaded:
                scope.delitem(sys.modules, "tensorflow")
            seen.append(("python", loaded, runner.early_workers_possible()))
            cli.main("probe", [], lambda argv: seen.append(("main", loaded, runner.early_workers_possible())))
    supported = forkserver.supported()
    assert sorted(seen) == sorted(
        [("python", True, False), ("python", False, False), ("main", True, supported), ("main", False, supported)]
    )
    mode = runner.make_pipeline_options(["--direct_running_mode", "in_memory"], early_workers=True)
    assert mode.view_as(beam.options.pipeline_options.DirectOptions).direct_running_mode == "in_memory"


def _group_processes(group: int) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command) of the live processes of a process group."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 4) for line in out.splitlines()]
    return [(int(r[0]), int(r[1]), r[4]) for r in rows if r[2] == str(group) and not r[3].startswith("Z")]


def _interrupt_once_forked(argv: list[str]) -> "subprocess.Popen[str] | None":
    """Starts the job, interrupts its process group once the server has forked a worker (both worker commands
    run then); None if the job ended first."""
    job = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while job.poll() is None:
        processes = _group_processes(job.pid)
        servers = {pid for pid, _, command in processes if "forkserver serve" in command}
        if any(parent in servers for _, parent, _ in processes):
            time.sleep(0.2)
            try:
                os.killpg(job.pid, signal.SIGINT)
            except ProcessLookupError:
                break
            return job
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.communicate()
    return None


@pytest.mark.slow
def test_an_interrupted_job_prints_one_line_and_leaves_no_process(pet_raw_dir, tmp_path):
    """Ctrl-C reaches every process of the job: the launcher reports it in one line and ends its workers; they
    and their commands ignore the interrupt themselves, so nothing fails (and prints) before the launcher knows."""
    argv = [sys.executable, "-m", "pipelines.preprocess", "--dataset", "pet", "--input_dir", str(pet_raw_dir)]
    argv += ["--output_dir", str(tmp_path / "out"), "--image_size", "32", *TWO_PROCESSES]
    for _ in range(3):  # the job may end before the interrupt arrives
        job = _interrupt_once_forked(argv)
        if job is not None:
            break
    assert job is not None, "the job always ended before it could be interrupted"
    _, stderr = job.communicate(timeout=120)
    if job.returncode == 0:  # it finished as the interrupt arrived
        return
    assert job.returncode == 130 and stderr.splitlines() == [
        f"pipelines.preprocess: error: interrupted; {cli.RERUN_TO_FINISH}"
    ], stderr
    deadline = time.monotonic() + 10
    while _group_processes(job.pid):
        assert time.monotonic() < deadline, _group_processes(job.pid)
        time.sleep(0.1)

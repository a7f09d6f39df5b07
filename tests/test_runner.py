"""Shared Beam options: fast local defaults that every flag overrides, and the local runner choice."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions, SetupOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner

from pipelines.common import runner


def _direct(options):
    d = options.view_as(DirectOptions)
    return options.view_as(StandardOptions).runner, d.direct_running_mode, d.direct_num_workers


def test_defaults_follow_the_core_count(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    assert _direct(runner.make_pipeline_options([])) == ("DirectRunner", "in_memory", 2)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 16)
    assert _direct(runner.make_pipeline_options([])) == ("DirectRunner", "multi_processing", 16)


def test_large_inputs_run_in_processes_on_a_few_cores(monkeypatch):
    """Threads for small inputs on up to 4 cores (processes' start-up would dominate), processes from
    ``PROCESSES_FROM_INPUT_BYTES`` of input (threads' GIL would), processes on many cores, threads on one; an
    input under ``THREADS_BELOW_INPUT_BYTES`` runs in threads on any machine unless its workers start early."""
    large, small = runner.PROCESSES_FROM_INPUT_BYTES, runner.THREADS_BELOW_INPUT_BYTES
    assert runner.default_running_mode(2, None) == runner.default_running_mode(4, large - 1) == "in_memory"
    assert runner.default_running_mode(2, large) == runner.default_running_mode(8, small) == "multi_processing"
    assert runner.default_running_mode(8, None) == "multi_processing"
    assert runner.default_running_mode(8, small - 1) == runner.default_running_mode(64, 0) == "in_memory"
    assert runner.default_running_mode(8, 0, early_workers=True) == "multi_processing"
    assert runner.default_running_mode(1, 10 * large) == "in_memory"
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    assert _direct(runner.make_pipeline_options([], input_bytes=large)) == ("DirectRunner", "multi_processing", 2)
    assert _direct(runner.make_pipeline_options(["--direct_running_mode", "in_memory"], large))[1] == "in_memory"


def test_flags_override_the_defaults(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    options = runner.make_pipeline_options(["--direct_running_mode=multi_processing", "--direct_num_workers", "3"])
    assert _direct(options) == ("DirectRunner", "multi_processing", 3)
    assert options.view_as(SetupOptions).save_main_session is False
    assert _direct(runner.make_pipeline_options(["--direct_running_mode", "in_memory"]))[1] == "in_memory"


def test_direct_runner_goes_straight_to_the_fn_api_runner():
    """No Prism download attempt: the DirectRunner's batch fallback, built with the job's options."""
    assert isinstance(runner.local_runner(runner.make_pipeline_options([])), fn_runner.FnApiRunner)
    dataflow = runner.make_pipeline_options(["--runner", "DataflowRunner"])
    assert runner.local_runner(dataflow) is None and runner.is_remote(dataflow)


@pytest.mark.slow  # a subprocess
def test_exit_process_flushes_and_keeps_the_status():
    import subprocess
    import sys

    code = "from pipelines.common.runner import exit_process; print('summary', end=''); exit_process(3)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and result.stdout == "summary"


def test_misleading_in_memory_workers_warning_is_dropped_while_segflow_runs_a_pipeline(caplog):
    """The FnApiRunner's warning that threads have no parallel effect (they do) is dropped from segflow's runs,
    and only there: the filter is on the runner's logger while its pipeline runs, not since an import."""
    import logging

    from apache_beam.testing.util import assert_that, equal_to

    log = logging.getLogger(runner.FN_RUNNER_LOGGER)
    options = runner.make_pipeline_options(["--direct_running_mode", "in_memory", "--direct_num_workers", "2"])
    with caplog.at_level(logging.WARNING):
        with runner.new_pipeline(options) as p:
            assert_that(p | beam.Create([1, 2]) | beam.Map(lambda x: x * 2), equal_to([2, 4]))
        ran = caplog.text
        log.warning("If direct_num_workers is not equal to 1, direct_running_mode should be `multi_processing`")
    assert "direct_running_mode should be" not in ran
    assert "direct_running_mode should be" in caplog.text and not log.filters


class _MarkTeardown(beam.DoFn):
    """Doubles numbers; its worker process writes ``path`` if it runs the interpreter's exit handlers."""

    def __init__(self, path: str):
        self._path = path

    def setup(self):
        import atexit
        import pathlib

        atexit.register(pathlib.Path(self._path).write_text, "the worker ran its interpreter teardown")

    def process(self, number):
        yield 2 * number


@pytest.mark.slow  # a multi-processing pipeline
def test_worker_processes_skip_the_interpreter_teardown(tmp_path):
    """Multi-processing workers end once their harness is done, without the interpreter's teardown (seconds
    with TensorFlow loaded, which every job waited for); the job's results are all there."""
    from apache_beam.testing.util import assert_that, equal_to

    marker = tmp_path / "teardown"
    options = runner.make_pipeline_options(["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    with runner.new_pipeline(options) as p:
        doubled = p | beam.Create(range(40)) | beam.Reshuffle() | beam.ParDo(_MarkTeardown(str(marker)))
        assert_that(doubled, equal_to([2 * n for n in range(40)]))
    assert not marker.exists()
    assert _direct(options)[1:] == ("multi_processing", 2)  # the caller's options are as they were


def test_an_unknown_runner_is_a_flag_error():
    """Beam only fails on a runner name once the job is built, with a traceback; a typo is a flag error."""
    for good in ("DirectRunner", "direct", "dataflow", "DataflowRunner", "apache_beam.runners.direct.DirectRunner"):
        runner.check_beam_flags(["--runner", good])
    with pytest.raises(ValueError, match=r"unknown --runner Foo \(one of .*DataflowRunner.*module path\)"):
        runner.check_beam_flags(["--runner", "Foo"])
    with pytest.raises(ValueError, match="did you mean DataflowRunner"):
        runner.check_beam_flags(["--runner=DatafowRunner"])

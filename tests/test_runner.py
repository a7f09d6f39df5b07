"""Shared Beam options: fast local defaults that every flag overrides, and the local runner choice."""
from apache_beam.options.pipeline_options import DirectOptions, SetupOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner

from pipelines import runner


def _direct(options):
    d = options.view_as(DirectOptions)
    return options.view_as(StandardOptions).runner, d.direct_running_mode, d.direct_num_workers


def test_defaults_follow_the_core_count(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    assert _direct(runner.make_pipeline_options([])) == ("DirectRunner", "multi_threading", 2)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 16)
    assert _direct(runner.make_pipeline_options([])) == ("DirectRunner", "multi_processing", 16)


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

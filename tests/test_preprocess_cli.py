"""The command line contract: bad flags and empty inputs fail fast with one line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fixtures import warm


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return warm.run([sys.executable, "-m", "pipelines.preprocess", *args], env=env, timeout=300)


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("pipelines.preprocess: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_flag_fails_with_one_line(tmp_path):
    # (every other bad-flag case is checked in-process in test_preprocess_units.py: same code path)
    line = _error_line(
        _cli(
            "--dataset",
            "pet",
            "--input_dir",
            str(tmp_path),
            "--output_dir",
            str(tmp_path / "out"),
            "--image_size",
            "0x0",
        )
    )
    assert "--image_size" in line and "--help" in line


@pytest.mark.slow
def test_empty_and_missing_input_fail_with_one_line(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    for src in (tmp_path / "empty", tmp_path / "does-not-exist"):
        result = _cli(
            "--dataset", "pet", "--input_dir", str(src), "--output_dir", str(tmp_path / "out"), "--image_size", "32"
        )
        line = _error_line(result)
        assert "no input files" in line and "--input_dir" in line
    assert not (tmp_path / "out").exists()


def test_help_lists_every_flag():
    from pipelines.preprocess.options import build_arg_parser

    text = build_arg_parser().format_help()
    for flag in (
        "--dataset",
        "--input_dir",
        "--output_dir",
        "--image_size",
        "--num_shards",
        "--augment_copies",
        "--val_fraction",
        "--seed",
        "--resize_mode",
        "--label_mode",
        "--image_format",
    ):
        assert flag in text


@pytest.mark.slow
def test_the_input_size_picks_threads_or_processes(pet_raw_dir, tmp_path, monkeypatch):
    """The job counts the bytes of its input folder (up to the threshold, not the whole listing) and gives them to
    the runner's default: the same small input runs in threads, or in processes once the threshold is below it."""
    from apache_beam.options.pipeline_options import DirectOptions

    from pipelines.common import runner
    from pipelines.preprocess import job

    argv = [
        "--dataset",
        "pet",
        "--input_dir",
        str(pet_raw_dir),
        "--output_dir",
        str(tmp_path / "out"),
        "--image_size",
        "32",
    ]
    config, pipeline_args = job.from_args(argv)
    images = sorted((pet_raw_dir / "images").iterdir())
    total = sum(p.stat().st_size for p in images)
    assert job.check_input(config, count_up_to=10 * total) == total
    assert job.check_input(config, count_up_to=1) == images[0].stat().st_size  # stops listing once it has enough

    class Stop(Exception):
        pass

    modes = []

    def record_mode(options):
        modes.append(options.view_as(DirectOptions).direct_running_mode)
        raise Stop

    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runner, "new_pipeline", record_mode)
    monkeypatch.setattr(runner, "THREADS_BELOW_INPUT_BYTES", 0)  # this rule's own test: tests/test_runner.py
    for threshold in (total + 1, total):
        monkeypatch.setattr(runner, "PROCESSES_FROM_INPUT_BYTES", threshold)
        with pytest.raises(Stop):
            job.run(config, pipeline_args)
    assert modes == ["in_memory", "multi_processing"]

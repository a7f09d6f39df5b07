"""``make demo`` (pipelines.tools.demo) prints every command it runs, as a recipe to copy, and says when a
rerun reuses the finished training instead of announcing a new one."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from pipelines.tools import demo
from tests.fixtures import warm

TINY = ["--num_examples", "8", "--num_heldout", "2", "--image_size", "32", "--epochs", "1", "--batch_size", "4"]
TINY += ["--base_filters", "4", "--depth", "2", "--augment_copies", "0"]


def _commands(out: str) -> dict[str, list[str]]:
    """The ``$ python -m MODULE ...`` commands printed, continuation lines joined: module -> argv."""
    commands, lines = {}, out.replace(" \\\n", " ").splitlines()
    for line in lines:
        if line.strip().startswith("$ python -m "):
            module, *argv = shlex.split(line.strip()[len("$ python -m ") :])
            commands[module] = argv
    return commands


class _WarmSubprocess:
    """``subprocess`` as the demo uses it (``run(argv, check=True, env=...)``, ``CalledProcessError``), with its
    ``python -m trainer.task`` run by the warm server (tests/fixtures/warm.py): still a process of its own, with
    the demo's environment and output streams, without importing TensorFlow again (~6 CPU-s a run, two here)."""

    CalledProcessError = subprocess.CalledProcessError

    @staticmethod
    def run(argv, *, check: bool = False, env=None) -> subprocess.CompletedProcess:
        done = warm.run(argv, env=env, capture_output=False)
        if check and done.returncode:
            raise subprocess.CalledProcessError(done.returncode, argv)
        return done


@pytest.mark.slow
def test_the_demo_prints_the_commands_it_runs_and_says_when_it_reuses_a_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "subprocess", _WarmSubprocess)
    work = tmp_path / "demo"
    result = demo.run(["--work_dir", str(work), *TINY])
    out = capsys.readouterr().out
    commands = _commands(out)
    assert list(commands) == [
        "pipelines.preprocess",
        "trainer.task",
        "pipelines.infer",
        "pipelines.evaluate",
        "pipelines.evaluate.report",
    ], out
    # Each printed command is one its program takes as written (a recipe to copy), naming the demo's folders.
    from pipelines.evaluate.options import from_args as evaluate_args
    from pipelines.infer.options import from_args as infer_args
    from pipelines.preprocess.options import from_args as preprocess_args

    preprocess_config, _ = preprocess_args(commands["pipelines.preprocess"])
    assert preprocess_config.output_dir == str(work / "records") and (work / "records" / "metadata.json").exists()
    infer_config, _ = infer_args(commands["pipelines.infer"])
    assert infer_config.instances and (work / "predictions" / "summary.json").exists()
    evaluate_config, _ = evaluate_args(commands["pipelines.evaluate"])
    assert evaluate_config.predictions == str(work / "predictions" / "masks")
    train = commands["trainer.task"]
    assert train[train.index("--job_dir") + 1] == str(work / "job") and "--deterministic" in train
    assert result["mean_iou"] is not None and "reused" not in out

    again = demo.run(["--work_dir", str(work), *TINY])
    out = capsys.readouterr().out
    assert f"{work / 'job'} already holds this finished training, reused (delete it to train again)" in out, out
    assert again["mean_iou"] == result["mean_iou"]

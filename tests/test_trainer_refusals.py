"""The trainer refuses data it cannot trust and jobs it cannot continue, in one line, and
the metrics of a resume with a lower --epochs."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.fixtures import warm
from tests.fixtures.model import train_tiny
from trainer import task
from trainer.config import UsageError
from trainer.data_dir import DataError, load_dataset_info

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's native start-up lines (absl/C++ logging: "I0000 00:00:..." and its banner), printed before any
# segflow code runs and whatever TF_CPP_MIN_LOG_LEVEL says; everything else on stderr is ours.
_TF_NATIVE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] )"
)
_SHARD = re.compile(r"^(train|val|test)-\d{5}-of-\d{5}\.tfrecord\.gz$")


def _meta(dst: pathlib.Path) -> dict:
    return json.loads((dst / "metadata.json").read_text())


def _write_meta(dst: pathlib.Path, meta: dict) -> None:
    (dst / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _copy_dst(src, dst: pathlib.Path) -> pathlib.Path:
    """A writable copy of a preprocess output that has a shard manifest (built here from the shards when the
    source was written without one)."""
    shutil.copytree(src, dst)
    meta = _meta(dst)
    if not meta.get("shards"):
        meta["shards"] = {}
        for name in sorted(os.listdir(dst)):
            if _SHARD.match(name):
                records = sum(1 for _ in tf.data.TFRecordDataset(str(dst / name), "GZIP"))
                meta["shards"][name] = {"records": records, "bytes": (dst / name).stat().st_size}
        _write_meta(dst, meta)
    return dst


def _shard(dst: pathlib.Path, split: str) -> pathlib.Path:
    return sorted(p for p in dst.iterdir() if _SHARD.match(p.name) and p.name.startswith(split + "-"))[0]


def _cli(data_dir, job_dir, *extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    cmd = [
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
        "--steps_per_epoch",
        "2",
        "--validation_steps",
        "1",
        "--verbose",
        "0",
        *map(str, extra),
    ]
    return warm.run(cmd, env=env, cwd=REPO, timeout=300)


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr without TensorFlow's native start-up lines."""
    return [line for line in result.stderr.splitlines() if line.strip() and not _TF_NATIVE.match(line)]


# ------------------------------------------------------------------------------ item 3: a mixed DST
def _mix(dst: pathlib.Path, case: str) -> str:
    """Damages ``dst`` the way an interrupted or failed preprocess rerun leaves it; returns the file to name."""
    train, val, test = _shard(dst, "train"), _shard(dst, "val"), _shard(dst, "test")
    if case == "zero_bytes":  # a new shard just opened by the rerun
        train.write_bytes(b"")
        return train.name
    if case == "truncated":
        train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
        return train.name
    if case == "other_run":  # same name, another run's records
        val.write_bytes(test.read_bytes())
        return val.name
    if case == "missing":  # the rerun deleted it
        test.unlink()
        return test.name
    if case == "extra":  # a shard the metadata does not name
        (dst / "test-00000-of-00002.tfrecord.gz").write_bytes(test.read_bytes())
        return "test-00000-of-00002.tfrecord.gz"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["zero_bytes", "truncated", "other_run", "missing", "extra"])
def test_shards_that_do_not_match_metadata_are_refused(pet_records_dir, tmp_path, case):
    dst = _copy_dst(pet_records_dir, tmp_path / "dst")
    name = _mix(dst, case)
    with pytest.raises(DataError) as e:
        load_dataset_info(str(dst))
    message = str(e.value)
    assert "\n" not in message and name in message and "rerun" in message and "preprocess" in message


def test_metadata_without_a_manifest_or_with_other_counts_is_refused(pet_records_dir, tmp_path):
    dst = _copy_dst(pet_records_dir, tmp_path / "dst")
    info = load_dataset_info(str(dst))
    manifest = _meta(dst)["shards"]
    # Record counts come from the manifest, the list of the files actually checked.
    assert info.count("train") == sum(v["records"] for k, v in manifest.items() if k.startswith("train-")) > 0
    meta = _meta(dst)
    meta["counts"]["train"] += 1
    _write_meta(dst, meta)
    with pytest.raises(DataError, match="counts 19 train records but its shards hold 18"):
        load_dataset_info(str(dst))
    meta["counts"]["train"] -= 1
    meta["shards"] = {}  # metadata.json of an older segflow
    _write_meta(dst, meta)
    with pytest.raises(DataError, match="lists no shard files .*rerun python -m pipelines.preprocess"):
        load_dataset_info(str(dst))


@pytest.mark.slow
def test_mixed_dst_exits_1_with_one_line(pet_records_dir, tmp_path):
    dst = _copy_dst(pet_records_dir, tmp_path / "dst")
    name = _mix(dst, "zero_bytes")
    result = _cli(dst, tmp_path / "job")
    assert result.returncode == 1, result.stderr[-2000:]
    lines = _error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trainer.task: error:") and name in lines[0] and "0 bytes" in lines[0]
    assert not (tmp_path / "job").exists()


# ------------------------------------------------------------------ item 2: literal --data_dir, --job_dir
@pytest.mark.slow
def test_data_dir_and_job_dir_with_glob_characters_are_literal(pet_records_dir, tmp_path):
    dst = _copy_dst(pet_records_dir, tmp_path / "d[1]")
    # What "d[1]" matches as a glob: shards to be read instead of d[1]'s, no transform_fn/ (TensorFlow finds a
    # SavedModel's variables through a glob too: reading d[1]/transform_fn must not need d1/transform_fn).
    decoy_data = shutil.copytree(pet_records_dir, tmp_path / "d1", ignore=shutil.ignore_patterns("transform*"))
    assert [p for p in load_dataset_info(str(dst)).shards["train"] if not p.startswith(str(dst) + "/")] == []
    decoy = tmp_path / "job1" / "checkpoints"  # another job's checkpoints, which "job[1]" matches as a glob
    decoy.mkdir(parents=True)
    for n in (1, 2, 3):
        for suffix in ("index", "data-00000-of-00001"):
            (decoy / f"ckpt-{n}.{suffix}").write_text(f"job1 {n}")
    (decoy / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
    before = {p.name: p.read_bytes() for p in decoy.iterdir()}
    job = tmp_path / "job[1]"
    kw = dict(steps_per_epoch=3, validation_steps=1, checkpoint_steps=1)
    first = train_tiny(dst, job, **{**kw, "epochs": 1})
    assert first["steps"] == 3 and (job / "model" / "saved_model.pb").exists()
    assert {p.name: p.read_bytes() for p in decoy.iterdir()} == before  # job1 untouched
    assert sorted(p.name for p in (job / "checkpoints").iterdir() if p.name.endswith(".index")) == [
        "ckpt-2.index",
        "ckpt-3.index",
    ]  # this job's own old checkpoints were swept
    resumed = train_tiny(dst, job, **{**kw, "epochs": 2})
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6
    assert {p.name: p.read_bytes() for p in decoy.iterdir()} == before
    assert sorted(os.listdir(decoy_data)) == sorted(n for n in os.listdir(pet_records_dir) if "transform" not in n)


# ------------------------------------------------------------------------ item 4: no train examples
def test_dst_without_train_examples_is_explained_in_one_line(pet_records_dir, tmp_path, capsys):
    dst = _copy_dst(pet_records_dir, tmp_path / "dst")
    meta = _meta(dst)
    for path in dst.iterdir():
        if path.name.startswith("train-") or path.name in ("transform_fn", "transformed_metadata"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    meta["shards"] = {k: v for k, v in meta["shards"].items() if not k.startswith("train-")}
    meta["counts"]["train"] = meta["source_counts"]["train"] = 0
    meta["num_shards"].pop("train", None)
    meta["stats"] = None
    meta["stats_absent_reason"] = "no train examples"
    _write_meta(dst, meta)
    assert task.main(["--data_dir", str(dst), "--model", "unet", "--job_dir", str(tmp_path / "job")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no train records" in err and "train 0, val 2, test 4" in err
    assert "evaluation or inference data but not trained on" in err
    assert not (tmp_path / "job").exists()


def test_dst_whose_train_records_gave_no_statistics_is_refused(pet_records_dir, tmp_path):
    dst = _copy_dst(pet_records_dir, tmp_path / "dst")
    meta = _meta(dst)
    meta["stats"], meta["stats_absent_reason"] = None, "no labelled train pixels"
    _write_meta(dst, meta)
    shutil.rmtree(dst / "transform_fn")
    with pytest.raises(DataError, match=r"no statistics from its train records \(no labelled train pixels\)"):
        load_dataset_info(str(dst))


# ------------------------------------------------------------ item 12: a damaged shard, another dataset
@pytest.mark.slow
def test_shard_damaged_in_place_is_named_in_one_line(pet_records_dir, tmp_path):
    dst = _copy_dst(pet_records_dir, tmp_path / "dst")
    shard = _shard(dst, "train")
    damaged = bytearray(shard.read_bytes())
    for i in range(len(damaged) // 2, len(damaged) // 2 + 64):  # same size: the manifest check cannot see it
        damaged[i] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    result = _cli(dst, tmp_path / "job")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = _error_lines(result)
    # The error is the one line that is not the run's own progress log (INFO/WARNING lines before it).
    errors = [line for line in lines if line.startswith("trainer.task: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert str(shard) in errors[0] and "damaged" in errors[0] and "rerun" in errors[0]


def test_resuming_a_job_dir_on_other_data_names_the_mismatch(pet_job_dir, cityscapes_records_dir, tmp_path):
    job = shutil.copytree(pet_job_dir, tmp_path / "job")
    other = _copy_dst(cityscapes_records_dir, tmp_path / "cityscapes")  # 19 classes, 32x64
    with pytest.raises(UsageError) as e:
        train_tiny(other, job)
    message = str(e.value)
    assert "\n" not in message and "num_classes 3 there, 19 in --data_dir" in message
    assert "image_size [32, 32] there, [32, 64]" in message and "new --job_dir" in message
    # A job written before config.json recorded its data: the checkpoint itself does not fit, still one line.
    config = json.loads((job / "config.json").read_text())
    config.pop("data", None)
    (job / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="does not fit this model .*new --job_dir"):
        train_tiny(other, job, epochs=10)  # past the checkpoint's 8 steps: the shapes are what is wrong


# ------------------------------------------------------- item 15: a resume with a lower --epochs
@pytest.mark.slow
def test_resume_below_the_epochs_already_trained_is_refused(pet_job_dir, pet_records_dir, tmp_path):
    job = shutil.copytree(pet_job_dir, tmp_path / "job")
    dst = _copy_dst(pet_records_dir, tmp_path / "dst")
    metrics = (job / "metrics.json").read_bytes()
    reached = json.loads(metrics)["steps"]
    assert reached == 2 * (18 // 4)  # the fixture: 2 epochs of 4 steps
    with pytest.raises(
        UsageError, match=f"checkpoint at step {reached}, past the 4 steps of --epochs 1 .*pass --epochs 2 or more"
    ):
        train_tiny(dst, job, epochs=1)
    assert (job / "metrics.json").read_bytes() == metrics  # nothing rewritten
    # The same --epochs again: nothing left to train; metrics.json reports what the model saw.
    again = train_tiny(dst, job, epochs=2)
    assert again["steps"] == reached and again["epochs"] == 2 and again["resumed_from_step"] == reached

"""TFLite export (``trainer.tflite``): JOB/model.tflite (+ float16, int8) run through ``tf.lite.Interpreter`` give the
SavedModel's class ids; the quantised files' mIoU drop is in metrics.json; ``segflow_model.json`` describes every
file; an int8 file that loses more than ``--max_int8_drop`` fails the export in one line, publishing nothing.

One export of the session's tiny Pet model (a copy of ``pet_job_dir``: the rerun resumes its finished training and
exports again, ``--tflite all``) serves every test here."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from tests.fixtures.model import TINY_UNET


@pytest.fixture(scope="module")
def tflite_job(pet_job_dir, pet_records_dir, tmp_path_factory) -> pathlib.Path:
    from trainer import TrainConfig, run

    job = tmp_path_factory.mktemp("tflite") / "job"
    shutil.copytree(pet_job_dir, job)
    run(TrainConfig(data_dir=str(pet_records_dir), job_dir=str(job), **{**TINY_UNET, "tflite": "all"}))
    return job


def _model_images(job: pathlib.Path, tmp_path: pathlib.Path, count: int = 6) -> np.ndarray:
    """Generated Pet-layout photos (other than the training ones), decoded and resized by the SavedModel's own
    ``preprocess`` signature: uint8 ``[N, H, W, 3]`` at the records' size."""
    import tensorflow as tf

    from pipelines.tools import synthetic

    synthetic.write_pet_dataset(str(tmp_path / "photos"), count, size=(60, 80), seed=11, id_prefix="heldout_")
    preprocess = tf.saved_model.load(str(job / "model")).signatures["preprocess"]
    paths = sorted((tmp_path / "photos" / "images").glob("*.jpg"))
    return np.stack([preprocess(image_bytes=tf.constant(p.read_bytes()))["image"].numpy() for p in paths])


@pytest.mark.slow
def test_float32_tflite_gives_the_savedmodels_class_ids(tflite_job, tmp_path):
    import tensorflow as tf

    from trainer import tflite

    images = _model_images(tflite_job, tmp_path)
    predict = tf.saved_model.load(str(tflite_job / "model")).signatures["predict_resized"]
    reference = np.argmax(predict(images=tf.constant(images))["probabilities"].numpy(), axis=-1)
    ids = {
        kind: tflite.predict_ids(tflite.interpreter((tflite_job / name).read_bytes()), images)
        for kind, name in tflite.FILES.items()
    }
    assert np.mean(ids["float32"] == reference) >= 0.999
    for kind in ("float16", "int8"):  # they run, and give class ids of this model
        assert ids[kind].shape == reference.shape and set(np.unique(ids[kind])) <= {0, 1, 2}, kind
    # Scores too: float32 probabilities as the SavedModel's; int8 ones quantised, by the contract's parameters.
    runner = tflite.interpreter((tflite_job / "model.tflite").read_bytes()).get_signature_runner()
    probabilities = runner(images=images[:1])["probabilities"]
    np.testing.assert_allclose(probabilities[0], predict(images=images[:1])["probabilities"][0], atol=1e-4)


@pytest.mark.slow
def test_metrics_and_model_contract_describe_the_tflite_files(tflite_job, pet_records_dir):
    from schemas import model_contract as contract

    metrics = json.loads((tflite_job / "metrics.json").read_text())["tflite"]
    assert metrics["eval_split"] == "val" and metrics["images"] >= 1
    assert metrics["float32"]["miou_drop"] == pytest.approx(0.0, abs=1e-6) and metrics["float32"]["agreement"] >= 0.999
    for kind in contract.TFLITE_TYPES:
        figures = metrics[kind]
        assert figures["bytes"] == (tflite_job / contract.TFLITE_FILES[kind]).stat().st_size
        assert figures["miou_drop"] == pytest.approx(metrics["savedmodel_miou"] - figures["miou"], abs=1e-5)
    assert metrics["int8"]["bytes"] < metrics["float16"]["bytes"] < metrics["float32"]["bytes"]

    info = contract.ModelInfo.from_json((tflite_job / "model" / contract.MODEL_INFO_FILE).read_text())
    described = info.tflite
    meta = json.loads((pet_records_dir / "metadata.json").read_text())
    assert described["input_size"] == meta["image_size"] and described["normalization"] == "tft"
    assert described["channel_mean"] == pytest.approx(meta["stats"]["channel_mean"])
    assert described["channel_std"] == pytest.approx(meta["stats"]["channel_std"])
    files = {f["type"]: f for f in described["files"]}
    assert sorted(files) == sorted(contract.TFLITE_TYPES)
    h, w = meta["image_size"]
    for kind, entry in files.items():
        assert entry["file"] == contract.TFLITE_FILES[kind] and (tflite_job / entry["file"]).is_file()
        (image,) = entry["inputs"]
        assert (image["name"], image["dtype"], image["shape"]) == ("images", "uint8", [1, h, w, 3])
        outputs = {t["name"]: t for t in entry["outputs"]}
        assert outputs["class_ids"]["dtype"] == "int32" and outputs["class_ids"]["shape"] == [1, h, w]
        assert outputs["probabilities"]["shape"] == [1, h, w, 3]
    # int8: raw pixels in (scale 1, zero point 0 when the calibration images span 0..255), uint8 scores out.
    assert files["int8"]["inputs"][0]["scale"] is not None and files["float32"]["inputs"][0]["scale"] is None
    assert files["int8"]["outputs"][1]["dtype"] == "uint8" and files["int8"]["outputs"][1]["scale"] > 0


@pytest.mark.slow
def test_an_int8_file_over_max_int8_drop_fails_in_one_line_publishing_nothing(
    tflite_job, pet_records_dir, tmp_path, monkeypatch, capsys
):
    """The int8 measurement is made to fail here (its ids replaced by wrong ones): a real int8 drop of this tiny
    model is too small and too variable to cross a threshold on purpose."""
    from trainer import task, tflite

    job = tmp_path / "job"
    shutil.copytree(tflite_job, job)
    before = {p.name: p.read_bytes() for p in job.glob("*.tflite")}
    real = tflite.predict_ids

    def wrong_when_quantised(runner, images):
        ids = real(runner, images)
        quantised = runner.get_input_details()[0]["quantization"][0] != 0.0
        return (ids + 1) % 3 if quantised else ids

    monkeypatch.setattr(tflite, "predict_ids", wrong_when_quantised)
    flags = [f"--{k}={v}" for k, v in TINY_UNET.items()]
    argv = ["--data_dir", str(pet_records_dir), "--job_dir", str(job), *flags, "--tflite", "int8"]
    status = task.main([*argv, "--max_int8_drop", "0.01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert "--max_int8_drop 0.01" in err[0] and "int8" in err[0]
    assert {p.name: p.read_bytes() for p in job.glob("*.tflite")} == before  # the previous export stays whole
    assert json.loads((job / "metrics.json").read_text())["tflite"]["float16"]


def test_tflite_flag_values():
    from trainer import TrainConfig
    from trainer.config import UsageError

    def types(value):
        return TrainConfig(data_dir="d", job_dir="j", model="unet", tflite=value).tflite_types()

    assert TrainConfig(data_dir="d", job_dir="j", model="unet").tflite_types() == ("float32",)  # every run's
    assert types("float32") == ("float32",) and types("none") == ()
    assert types("int8, float32") == ("float32", "int8") and types("all") == ("float32", "float16", "int8")
    with pytest.raises(UsageError, match="--tflite takes none, all"):
        types("int4")

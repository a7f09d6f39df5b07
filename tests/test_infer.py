"""pipelines.infer end to end on the DirectRunner with the tiny trained Pet model (tests/fixtures/model.py)."""

import filecmp
import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines import evaluate, infer
from pipelines.common.deadletter import read_dead_letters
from pipelines.evaluate.transforms import to_train_ids
from schemas import labels
from schemas.errors import SegflowError
from schemas.labels import colorize

pytestmark = pytest.mark.slow


def _run(model_dir, inputs, out, pipeline_args=(), **config):
    return infer.run(
        infer.InferConfig(model_dir=str(model_dir), input=[str(p) for p in inputs], output_dir=str(out), **config),
        list(pipeline_args),
    )


@pytest.fixture(scope="module")
def pet_inputs(pet_raw_dir, tmp_path_factory) -> pathlib.Path:
    """The Pet images, one of them again under sub/ (same stem), a text file and an empty file posing as images."""
    root = tmp_path_factory.mktemp("infer_inputs")
    images = sorted((pet_raw_dir / "images").glob("*.jpg"))
    for image in images:
        shutil.copy(image, root / image.name)
    (root / "sub").mkdir()
    shutil.copy(images[0], root / "sub" / images[0].name)
    (root / "not_an_image.jpg").write_text("this is not a JPEG\n")
    (root / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def pet_run(pet_job_dir, pet_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("infer_out") / "pred"
    result = _run(
        pet_job_dir / "model",
        [pet_inputs / "*", pet_inputs / "sub" / "*.jpg"],
        out,
        ["--direct_num_workers", "2"],
        instances=True,
        overlay=True,
        batch_size=(2, 4),
    )
    return out, result


def _valid_inputs(pet_inputs):
    return sorted(p for p in pet_inputs.rglob("*.jpg") if p.stat().st_size and p.name != "not_an_image.jpg")


def _names(out):
    summary = json.loads((out / "summary.json").read_text())
    return {pathlib.Path(path): stem for path, stem in summary["outputs"].items()}


def test_every_image_gets_a_mask_of_its_own_size_with_trimap_values(pet_run, pet_inputs):
    out, result = pet_run
    names = _names(out)
    valid = _valid_inputs(pet_inputs)
    assert sorted(names) == valid
    assert len(set(names.values())) == len(valid)  # unique even for the shared stem
    for path, stem in names.items():
        with Image.open(path) as image:
            size = image.size
        mask = Image.open(out / "masks" / f"{stem}.png")
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {1, 2, 3}
        color = Image.open(out / "color" / f"{stem}.png")
        assert color.size == size and color.mode == "P"  # a palette PNG: class colours, as viewers show them
        np.testing.assert_array_equal(
            np.asarray(color.convert("RGB")),
            colorize(to_train_ids(np.asarray(mask), "pet", "trimap"), labels.pet_spec()),
        )
        assert Image.open(out / "overlay" / f"{stem}.png").size == size
    assert result.images_written == len(valid)


def test_shared_stems_get_distinct_hashed_names(pet_run, pet_inputs):
    out, _ = pet_run
    names = _names(out)
    first = sorted((pet_inputs / "sub").glob("*.jpg"))[0]
    a, b = names[first], names[pet_inputs / first.name]
    assert a != b and a.startswith(first.stem + "+") and b.startswith(first.stem + "+")


def test_planted_non_images_are_dead_lettered_and_counts_add_up(pet_run, pet_inputs):
    out, result = pet_run
    dead = read_dead_letters(str(out))
    assert sorted(pathlib.Path(d["path"]).name for d in dead) == ["empty.png", "not_an_image.jpg"]
    reasons = {pathlib.Path(d["path"]).name: d["error"] for d in dead}
    assert "empty" in reasons["empty.png"]
    assert "Unknown image file format" in reasons["not_an_image.jpg"] or "decod" in reasons["not_an_image.jpg"]
    summary = json.loads((out / "summary.json").read_text())
    matched = len(list(pet_inputs.glob("*"))) - 1 + len(list((pet_inputs / "sub").glob("*.jpg")))  # minus sub/
    assert summary["dead_letters"] == 2 == result.dead_letters
    assert summary["inputs_seen"] == summary["images_written"] + summary["dead_letters"] == matched
    assert result.inputs_matched == matched


def test_instance_files_follow_the_cityscapes_result_format(pet_run):
    out, result = pet_run
    total = 0
    for stem in _names(out).values():
        doc = json.loads((out / "instances" / f"{stem}.json").read_text())
        lines = (out / "instances" / f"{stem}.txt").read_text().splitlines()
        assert len(lines) == len(doc["instances"])
        ids = np.asarray(Image.open(out / "instances" / f"{stem}_instanceIds.png"))
        assert ids.dtype == np.uint16 and ids.shape == (doc["height"], doc["width"])
        for line, row in zip(lines, doc["instances"]):
            rel, label_id, score = line.split(" ")
            assert not rel.startswith("/") and ".." not in rel
            assert int(label_id) == row["label_id"] == 1 and row["class"] == "pet"  # trimap value of pets
            assert 0.0 <= float(score) <= 1.0
            # Read as the official instance evaluator reads it (convert("L"), then != 0); the file is 1-bit.
            mask = np.asarray(Image.open(out / "instances" / rel).convert("L"))
            assert mask.shape == ids.shape and set(np.unique(mask)) <= {0, 255}
            assert int((mask > 0).sum()) == row["area"] >= 20  # --min_instance_area default
            assert ((ids == row["id"]) == (mask > 0)).all()
            x, y, w, h = row["bbox"]
            ys, xs = np.nonzero(mask)
            assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        total += len(lines)
    assert total == result.instances


def test_one_model_per_process_shared_by_every_stage(pet_job_dir):
    """Preprocess, RunInference and postprocess each unpickle their own copy of the Shared handle: they must
    still get one loaded model between them, not one set of weights each."""
    import pickle

    from apache_beam.utils import shared

    from pipelines.infer.model import acquire_model

    handle = shared.Shared()
    model_dir = str(pet_job_dir / "model")
    first = acquire_model(pickle.loads(pickle.dumps(handle)), model_dir)
    # Shared strongly keeps only the latest object acquired in the process; RunInference acquires its own.
    other = shared.Shared().acquire(lambda: type("Other", (), {})())
    second = acquire_model(pickle.loads(pickle.dumps(handle)), model_dir)
    assert first is second and other is not None


def test_masks_equal_the_models_own_serving_signature(pet_run, pet_job_dir):
    """One source of truth: the job's masks are what serving_default returns for the same bytes."""
    from pipelines.infer.model import SegflowModel
    from schemas.labels import spec_for

    out, _ = pet_run
    model = SegflowModel(str(pet_job_dir / "model"))
    spec = spec_for("pet")
    items = sorted(_names(out).items())[:4]
    served = model.serve([p.read_bytes() for p, _ in items])
    for i, (_, stem) in enumerate(items):
        h, w = int(served["height"][i]), int(served["width"][i])
        expected = spec.to_native[served["class_ids"][i, :h, :w].astype(np.uint8)]
        np.testing.assert_array_equal(np.asarray(Image.open(out / "masks" / f"{stem}.png")), expected)


def test_rerun_is_byte_identical(pet_run, pet_job_dir, pet_inputs, tmp_path):
    out, _ = pet_run
    again = tmp_path / "again"
    _run(
        pet_job_dir / "model",
        [pet_inputs / "*", pet_inputs / "sub" / "*.jpg"],
        again,
        ["--direct_running_mode", "in_memory"],
        instances=True,
        overlay=True,
        batch_size=(1, 3),
    )
    first = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    differing = [
        str(p) for p in first if p.name != "summary.json" and not filecmp.cmp(out / p, again / p, shallow=False)
    ]
    assert not differing
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, again))
    assert {k: v for k, v in a.items() if k != "input"} == {k: v for k, v in b.items() if k != "input"}


@pytest.mark.parametrize("network", ["unet", "fcn8s"])
def test_an_image_scores_the_same_wherever_it_sits_in_a_padded_batch(network):
    """``--model_calls batch`` rests on this: at one batch shape, an image's scores are bit-identical whatever
    its position in the batch and whatever its neighbours are (zero padding or other images). Different batch
    sizes need not agree (FCN-8s's batch-1 kernels differ in the last bit here), hence the fixed shape."""
    import tensorflow as tf

    from trainer import models

    extra = {"depth": 2} if network == "unet" else {}
    model = models.build_model(network, (32, 32, 3), 3, base_filters=4, **extra)
    call = tf.function(lambda images: model(images, training=False))
    rng = np.random.default_rng(4)
    others = rng.integers(0, 256, size=(4, 32, 32, 3)).astype(np.float32)
    target = rng.integers(0, 256, size=(32, 32, 3)).astype(np.float32)
    reference = None
    for position in range(4):
        for neighbours in (np.zeros_like(others), others):
            batch = neighbours.copy()
            batch[position] = target
            scores = call(batch).numpy()[position]
            reference = scores if reference is None else reference
            np.testing.assert_array_equal(scores, reference)


def test_padded_model_calls_return_one_result_per_image(pet_job_dir):
    from pipelines.infer.model import SegflowModel, predict_resized_fn

    model = SegflowModel(str(pet_job_dir / "model"))
    rng = np.random.default_rng(5)
    images = list(rng.integers(0, 256, size=(4, 32, 32, 3)).astype(np.uint8))
    alone = predict_resized_fn(model, images[:1], pad_to=4)
    crowded = predict_resized_fn(model, images[1:] + images[:1], pad_to=4)
    assert len(alone) == 1 and len(crowded) == 4
    # The same image in another slot of the padded batch: the same scores up to the float rounding of CPU kernels
    # whose tiling depends on the row (oneDNN's last tile), and the same mask.
    np.testing.assert_allclose(alone[0].inference, crowded[3].inference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(alone[0].inference.argmax(-1), crowded[3].inference.argmax(-1))
    assert alone[0].inference.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="exceeds the padded batch size"):
        predict_resized_fn(model, images, pad_to=3)


def test_evaluate_scores_the_predictions(pet_run, pet_raw_dir):
    out, _ = pet_run
    doc = evaluate.run(
        evaluate.EvaluateConfig(predictions=str(out / "masks"), ground_truth=str(pet_raw_dir), dataset="pet"),
        ["--direct_running_mode", "in_memory"],
    ).document
    # The duplicated stem was written under hashed names, so its ground truth has no plain-named prediction.
    assert doc["images"] == 23 and doc["missing_predictions"] == 1 and doc["unmatched_predictions"] == 2
    assert 0.0 <= doc["mean_iou"] <= 1.0 and 0.0 <= doc["pixel_accuracy"] <= 1.0
    assert set(doc["per_class_iou"]) == {"pet", "background", "border"}


@pytest.mark.parametrize("case", ["missing_model", "empty_glob", "bad_batch", "bad_area", "typo"])
def test_bad_flags_fail_fast_with_one_line(case, pet_job_dir, tmp_path, capsys):
    """The command line's checks: flags, as ``python -m pipelines.infer`` gets them."""
    model = str(pet_job_dir / "model")
    argv = {
        "missing_model": ["--model_dir", str(tmp_path / "nope"), "--input", str(tmp_path / "*.jpg")],
        "empty_glob": ["--model_dir", model, "--input", str(tmp_path / "*.jpg")],
        "bad_batch": ["--model_dir", model, "--input", "x", "--batch_size", "8,2"],
        "bad_area": ["--model_dir", model, "--input", "x", "--min_instance_area", "-1"],
        "typo": ["--model_dir", model, "--input", "x", "--instance"],
    }[case]
    with pytest.raises(SegflowError) as err:
        infer.run(*infer.from_args(argv + ["--output_dir", str(tmp_path / "out")]))
    message = str(err.value)
    assert message.strip() and "\n" not in message.strip() and "Traceback" not in message
    expected = {
        "missing_model": "segflow_model.json not found",
        "empty_glob": "matches no files",
        "bad_batch": "MIN <= MAX",
        "bad_area": ">= 0",
        "typo": "unknown flag --instance (did you mean --instances?)",
    }[case]
    assert expected in message
    assert not (tmp_path / "out").exists()

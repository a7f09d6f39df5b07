"""pipelines.evaluate: the arithmetic by hand, the Beam job, and agreement with the official Cityscapes evaluator."""

import json
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from pipelines import evaluate
from pipelines.evaluate.transforms import confusion_matrix, scores
from pipelines.tools import synthetic
from schemas.errors import DataError, UsageError


def test_confusion_and_scores_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 255, 0, 1]])
    m = confusion_matrix(gt, pred, 3)
    # rows gt 0..2, columns pred 0..2 + "not evaluated"; the gt-ignored pixel counts nowhere.
    assert m.tolist() == [[1, 1, 0, 0], [0, 3, 0, 0], [0, 0, 1, 1]]
    s = scores(m)
    # class 0: tp 1, fn 1, fp 0 -> 1/2; class 1: tp 3, fp 1 -> 3/4; class 2: tp 1, fn 1 (pred void) -> 1/2
    np.testing.assert_allclose(s["iou"], [0.5, 0.75, 0.5])
    assert s["mean_iou"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    m = confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2)), 3)
    s = scores(m)
    assert s["iou"][0] == 1.0 and math.isnan(s["iou"][1]) and math.isnan(s["iou"][2])
    assert s["mean_iou"] == 1.0
    empty = scores(confusion_matrix(np.full((2, 2), 255), np.zeros((2, 2)), 3))
    assert math.isnan(empty["mean_iou"]) and math.isnan(empty["pixel_accuracy"])


def _perturbed(mask: np.ndarray, seed: int, values) -> np.ndarray:
    """A 'prediction': the ground truth with a random block repainted and some pixels set to random values."""
    rng = np.random.default_rng(seed)
    out = mask.copy()
    h, w = out.shape
    y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    out[y : y + h // 3, x : x + w // 3] = rng.choice(values)
    noise = rng.uniform(size=out.shape) < 0.1
    out[noise] = rng.choice(values, size=int(noise.sum()))
    return out


@pytest.mark.slow
def test_beam_evaluate_matches_numpy_on_pet(tmp_path):
    src = tmp_path / "pet"
    ids = synthetic.write_pet_dataset(str(src), 5, size=(30, 40), seed=3)
    preds = tmp_path / "out" / "masks"
    preds.mkdir(parents=True)
    total = np.zeros((3, 4), np.int64)
    for i, example in enumerate(ids[:4]):  # the fifth has no prediction
        gt = np.asarray(Image.open(src / "annotations" / "trimaps" / f"{example}.png"))
        pred = _perturbed(gt, i, [1, 2, 3])
        Image.fromarray(pred).save(preds / f"{example}.png")
        total += confusion_matrix(gt.astype(int) - 1, pred.astype(int) - 1, 3)
    Image.fromarray(np.ones((30, 40), np.uint8)).save(preds / "stranger.png")
    doc = evaluate.run(
        evaluate.EvaluateConfig(predictions=str(preds), ground_truth=str(src), dataset="pet"),
        ["--direct_running_mode", "in_memory"],
    ).document
    expected = scores(total)
    assert doc["images"] == 4 and doc["missing_predictions"] == 1 and doc["unmatched_predictions"] == 1
    assert doc["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert doc["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-6)
    assert doc["confusion_matrix"] == total.tolist()
    on_disk = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert on_disk["mean_iou"] == doc["mean_iou"]


def test_bad_flags_fail_fast_with_one_line(tmp_path, capsys):
    with pytest.raises(DataError) as err:
        evaluate.run(evaluate.EvaluateConfig(predictions=str(tmp_path), ground_truth=str(tmp_path), dataset="pet"))
    assert "no predicted masks" in str(err.value)
    with pytest.raises(UsageError) as err:
        evaluate.from_args(["--predictions", str(tmp_path), "--dataset", "pet"])
    assert err.value.exit_code == 2 and "--ground_truth" in str(err.value)
    with pytest.raises(UsageError) as err:  # a typo is an error, not a Beam option Beam would silently drop
        evaluate.from_args(
            [
                "--predictions",
                str(tmp_path),
                "--ground_truth",
                str(tmp_path),
                "--dataset",
                "pet",
                "--output-file",
                "x.json",
            ]
        )
    assert "unknown flag --output-file (did you mean --output_file?)" in str(err.value)


def official_pixel_level(gt_root: pathlib.Path, predictions: pathlib.Path, monkeypatch, tmp_path) -> dict:
    """Runs cityscapesscripts' evalPixelLevelSemanticLabeling on every val frame; returns its result dict."""
    # cityscapesscripts 2.3.0 calls np.in1d, removed in numpy 2.4: shim it here only, never in production.
    monkeypatch.setattr(np, "in1d", lambda a, b, invert=False: np.isin(a, b, invert=invert), raising=False)
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.args
    monkeypatch.setattr(args, "predictionPath", str(predictions.resolve()))
    monkeypatch.setattr(args, "predictionWalk", None)
    monkeypatch.setattr(args, "exportFile", str(tmp_path / "official_pixel.json"))
    monkeypatch.setattr(args, "quiet", True)
    gts = sorted(str(p) for p in (gt_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    assert gts
    preds = [official.getPrediction(args, gt) for gt in gts]
    return official.evaluateImgLists(preds, gts, args)


@pytest.mark.slow
def test_same_miou_as_the_official_cityscapes_evaluator(tmp_path, monkeypatch):
    src = tmp_path / "cs"
    synthetic.write_cityscapes_dataset(str(src), frames_per_split={"val": 3}, size=(48, 96), seed=5)
    preds = tmp_path / "out" / "masks"
    preds.mkdir(parents=True)
    # Predictions include void labelIds (0 unlabeled, 4 static) and non-evaluated ones, as a real model may.
    values = [0, 4, 7, 8, 11, 17, 21, 23, 24, 25, 26, 33]
    for i, gt_path in enumerate(sorted((src / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))):
        gt = np.asarray(Image.open(gt_path))
        frame = gt_path.name.replace("_gtFine_labelIds.png", "")
        Image.fromarray(_perturbed(gt, i, values)).save(preds / f"{frame}_leftImg8bit.png")
    ours = evaluate.run(
        evaluate.EvaluateConfig(predictions=str(preds), ground_truth=str(src), dataset="cityscapes", split="val"),
        ["--direct_running_mode", "in_memory"],
    ).document
    theirs = official_pixel_level(src, preds, monkeypatch, tmp_path)
    assert ours["images"] == 3
    assert ours["mean_iou"] == pytest.approx(theirs["averageScoreClasses"], abs=1e-9)
    for name, iou in ours["per_class_iou"].items():
        official_iou = theirs["classScores"][name]
        assert (iou is None and math.isnan(official_iou)) or iou == pytest.approx(official_iou, abs=1e-6), name


def test_per_image_scores_by_hand_sorted_by_id_and_the_report_command_in_the_summary(tmp_path):
    """evaluation.json keeps each image's IoU per class, mIoU and pixel accuracy (the global rule applied to that
    image alone, null for a class absent on both sides), sorted by id; the global figures are unchanged; the
    summary ends with the command that makes the report of this run."""
    from pipelines.evaluate import job

    src, out = tmp_path / "pet", tmp_path / "out"
    (src / "annotations" / "trimaps").mkdir(parents=True)
    (out / "masks").mkdir(parents=True)
    # trimap 1 pet, 2 background, 3 border. "b_1": pet 1/2, background 2/3, no border; "a_1": all right.
    cases = {"b_1": ([[1, 1], [2, 2]], [[1, 2], [2, 2]]), "a_1": ([[3, 3], [1, 1]], [[3, 3], [1, 1]])}
    for name, (gt, pred) in cases.items():
        Image.fromarray(np.array(gt, np.uint8)).save(src / "annotations" / "trimaps" / f"{name}.png")
        Image.fromarray(np.array(pred, np.uint8)).save(out / "masks" / f"{name}.png")
    result = evaluate.run(
        evaluate.EvaluateConfig(predictions=str(out / "masks"), ground_truth=str(src), dataset="pet"),
        ["--direct_running_mode", "in_memory"],
    )
    on_disk = json.loads((out / "evaluation.json").read_text())
    assert on_disk["per_image"] == [
        {
            "id": "a_1",
            "miou": 1.0,
            "pixel_accuracy": 1.0,
            "per_class_iou": {"pet": 1.0, "background": None, "border": 1.0},
        },
        {
            "id": "b_1",
            "miou": pytest.approx((1 / 2 + 2 / 3) / 2),
            "pixel_accuracy": 0.75,
            "per_class_iou": {"pet": 0.5, "background": pytest.approx(2 / 3), "border": None},
        },
    ]
    # The global figures are the summed matrix's, not a mean of the images' (pet: tp 3 of 4; background 2 of 3).
    assert on_disk["mean_iou"] == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    assert on_disk["per_class_iou"] == {"pet": 0.75, "background": pytest.approx(2 / 3), "border": 1.0}
    assert "NaN" not in (out / "evaluation.json").read_text()
    last = job.summary(result, []).splitlines()[-1]
    assert last == f"report: python -m pipelines.evaluate.report --output_dir {out} --dataset pet --ground_truth {src}"

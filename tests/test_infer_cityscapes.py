"""Cityscapes outputs read by the official cityscapesscripts evaluators (pixel- and instance-level)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from pipelines import evaluate, infer
from pipelines.infer import outputs
from pipelines.infer.instances import extract_instances
from schemas.labels import cityscapes_label_ids_to_train_ids, spec_for
from tests.test_evaluate import official_pixel_level

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _np_in1d(monkeypatch):
    # cityscapesscripts 2.3.0 calls np.in1d, removed in numpy 2.4: shim it in tests only.
    monkeypatch.setattr(np, "in1d", lambda a, b, invert=False: np.isin(a, b, invert=invert), raising=False)


@pytest.fixture(scope="module")
def cityscapes_run(cityscapes_job_dir, cityscapes_raw_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cs_infer") / "pred"
    infer.run(
        infer.InferConfig(
            model_dir=str(cityscapes_job_dir / "model"),
            input=[str(cityscapes_raw_dir / "leftImg8bit" / "val" / "*" / "*_leftImg8bit.png")],
            output_dir=str(out),
            instances=True,
            min_instance_area=0,
        ),
        ["--direct_running_mode", "in_memory"],
    )
    return out


def _write_json_numpy_aware(data, path):
    def default(o):
        return o.item() if isinstance(o, np.generic) else o.tolist() if isinstance(o, np.ndarray) else o.__dict__

    with open(path, "w") as handle:
        handle.write(json.dumps(data, default=default, sort_keys=True, indent=1))


def official_instance_level(gt_root, results_dir, monkeypatch, tmp_path) -> dict:
    """Runs evalInstanceLevelSemanticLabeling on the val frames against ``results_dir`` (OUT/instances)."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official

    args = official.args
    monkeypatch.chdir(tmp_path)  # it writes matches.json into the working directory
    monkeypatch.setattr(args, "predictionPath", str(results_dir.resolve()))
    monkeypatch.setattr(args, "predictionWalk", None)
    monkeypatch.setattr(args, "gtInstancesFile", str(tmp_path / "gtInstances.json"))
    monkeypatch.setattr(args, "exportFile", str(tmp_path / "official_instances.json"))
    monkeypatch.setattr(args, "quiet", True)
    # Our frames are tiny (64x128): count ground-truth objects from 10 pixels, not the release's 100.
    monkeypatch.setattr(args, "minRegionSizes", np.array([10, 10, 10]))
    # Its JSON writer predates numpy 2 (np.int64 has no __dict__): same test-only shim as np.in1d.
    monkeypatch.setattr(official, "writeDict2JSON", _write_json_numpy_aware)
    gts = sorted(str(p) for p in (gt_root / "gtFine" / "val").glob("*/*_gtFine_instanceIds.png"))
    preds = [official.getPrediction(gt, args) for gt in gts]
    return official.evaluateImgLists(preds, gts, args)


def test_masks_are_label_ids_of_each_frames_size(cityscapes_run, cityscapes_raw_dir):
    valid = {
        label.id
        for label in __import__("cityscapesscripts.helpers.labels", fromlist=["labels"]).labels
        if 0 <= label.trainId < 255
    }
    frames = sorted((cityscapes_raw_dir / "leftImg8bit" / "val").glob("*/*.png"))
    for frame in frames:
        mask = np.asarray(Image.open(cityscapes_run / "masks" / frame.name))
        assert mask.shape == Image.open(frame).size[::-1]
        assert set(np.unique(mask)) <= valid


def test_official_pixel_level_evaluator_reads_our_masks_and_agrees_with_ours(
    cityscapes_run, cityscapes_raw_dir, monkeypatch, tmp_path
):
    theirs = official_pixel_level(cityscapes_raw_dir, cityscapes_run / "masks", monkeypatch, tmp_path)
    assert 0.0 <= theirs["averageScoreClasses"] <= 1.0
    ours = evaluate.run(
        evaluate.EvaluateConfig(
            predictions=str(cityscapes_run / "masks"),
            ground_truth=str(cityscapes_raw_dir),
            dataset="cityscapes",
            split="val",
        ),
        ["--direct_running_mode", "in_memory"],
    )
    assert ours.images == 2
    assert ours.mean_iou == pytest.approx(theirs["averageScoreClasses"], abs=1e-9)


def test_official_instance_level_evaluator_reads_our_instances(
    cityscapes_run, cityscapes_raw_dir, monkeypatch, tmp_path
):
    result = official_instance_level(cityscapes_raw_dir, cityscapes_run / "instances", monkeypatch, tmp_path)
    ap = result["averages"]["allAp"]
    assert isinstance(ap, float) and (math.isnan(ap) or 0.0 <= ap <= 1.0)
    assert set(result["averages"]["classes"]) >= {"car", "person"}


def test_instances_from_ground_truth_semantics_score_high_with_the_official_evaluator(
    cityscapes_raw_dir, monkeypatch, tmp_path
):
    """Our instance writer + splitter on perfect semantics: the official evaluator must find the objects."""
    spec = spec_for("cityscapes")
    out = tmp_path / "gt_pred"
    for gt_path in sorted((cityscapes_raw_dir / "gtFine" / "val").glob("*/*_gtFine_labelIds.png")):
        train = cityscapes_label_ids_to_train_ids(np.asarray(Image.open(gt_path))).astype(np.int32)
        found = extract_instances(train, None, spec.instance_train_ids)
        stem = gt_path.name.replace("_gtFine_labelIds.png", "_leftImg8bit")
        outputs.write_prediction(str(out), stem, train, spec, instances=found)
    result = official_instance_level(cityscapes_raw_dir, out / "instances", monkeypatch, tmp_path)
    assert result["averages"]["allAp50%"] > 0.5, json.dumps(result["averages"], indent=1)

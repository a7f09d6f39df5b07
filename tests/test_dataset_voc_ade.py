"""Pascal VOC 2012 and ADE20K as their authors ship them (``pipelines/datasets/voc.py``, ``ade20k.py``): the official
tables, discovery on generated samples (list splits, SBD's extra masks, VOC's void border, ADE's 0 = other),
the records' masks (the palette *index* read, 255 kept as ignore, ADE's 1..150 → 0..149) and evaluate."""

from __future__ import annotations

import io
import os
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not a pytest class
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipelines import datasets
from pipelines.datasets.base import DEAD_LETTER_TAG, Example, SplitFractions
from pipelines.datasets.discovery import Discover
from pipelines.tools import synthetic_benchmarks as bench
from schemas import labels

BEAM_FLAGS = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


def _discover(name: str, src, examples: list, dead: list) -> None:
    """``Discover`` on the DirectRunner finds exactly ``examples`` and the dead letters ``dead`` ((path, error))."""
    with BeamTestPipeline(argv=BEAM_FLAGS) as p:
        out = p | f"Discover{name}" >> Discover(datasets.get(name), str(src), SplitFractions(0.0, 0.0))
        assert_that(out["examples"], equal_to(examples), label="Examples")
        assert_that(out[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.path, d.error)), equal_to(dead), label="Dead")


def _mask_of(record) -> np.ndarray:
    import tensorflow as tf

    features = tf.train.Example.FromString(record.serialized).features.feature
    return np.asarray(Image.open(io.BytesIO(features["image/segmentation/class/encoded"].bytes_list.value[0])))


def _records(name: str, example: Example, size) -> list:
    from pipelines.preprocess.records import MakeRecords, RecordOptions

    fn = MakeRecords(RecordOptions(dataset=name, image_size=size, image_format="jpeg"))
    fn.setup()
    return [o for o in fn.process(example) if not isinstance(o, beam.pvalue.TaggedOutput)]


# ------------------------------------------------------------------------------------------ the tables
def test_official_tables():
    voc, ade = labels.spec_for("voc"), labels.spec_for("ade20k")
    assert voc.num_classes == 21 and voc.class_names[:3] == ("background", "aeroplane", "bicycle")
    assert voc.class_names[-1] == "tvmonitor" and voc.palette[1] == (128, 0, 0) and voc.palette[15] == (192, 128, 128)
    assert labels.voc_colour_map()[255] == (224, 224, 192)  # the void border's colour in every VOC mask
    assert voc.to_native[[0, 20, 255]].tolist() == [0, 20, 255] and voc.instance_train_ids == tuple(range(1, 21))
    assert ade.num_classes == 150 and ade.class_names[:4] == ("wall", "building", "sky", "floor")
    assert ade.class_names[-1] == "flag" and ade.palette[0] == (120, 120, 120) and len(ade.palette) == 150
    assert ade.to_native[[0, 149, 255]].tolist() == [1, 150, 0]  # train id k is value k + 1; ignore is 'other'
    assert 0 not in ade.instance_train_ids and 12 in ade.instance_train_ids  # wall is stuff, person an object
    assert labels.ade20k_label_lut()[[0, 1, 150, 255]].tolist() == [255, 0, 149, 255]
    mask = np.array([[0, 20, 255, 21, 254]], np.uint8)
    assert labels.native_mask_problem("voc", mask) == "VOC class mask has values [21, 254] outside {0..20, 255}"
    assert labels.native_mask_problem("ade20k", np.array([[0, 150, 151]], np.uint8)) == (
        "ADE20K annotation has values [151] outside {0..150}"
    )
    assert labels.native_mask_problem("pet", np.array([[0, 1]], np.uint8)) == "trimap has values [0] outside {1, 2, 3}"


# --------------------------------------------------------------------------------------------------- VOC
@pytest.fixture(scope="module")
def voc_src(tmp_path_factory):
    """A VOC2012 folder with SBD's Aug masks and the quirks of the release and of users' copies."""
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    ids = bench.write_voc_dataset(str(root), per_split={"train": 2, "val": 2}, size=(24, 32), sbd=1)
    lists = root / "ImageSets" / "Segmentation"
    # A val image whose mask is missing (and whose Aug copy is too); a test image (the test tarball merged in).
    os.remove(root / "SegmentationClass" / f"{ids['val'][1]}.png")
    os.remove(root / "SegmentationClassAug" / f"{ids['val'][1]}.png")
    shutil.copy(root / "JPEGImages" / f"{ids['detection'][0]}.jpg", root / "JPEGImages" / "2008_000001.jpg")
    (lists / "test.txt").write_text("2008_000001\n")
    # A mask without its image, a file in a subfolder, a list row that is not one id.
    shutil.copy(root / "SegmentationClass" / f"{ids['train'][0]}.png", root / "SegmentationClass" / "2009_000009.png")
    (root / "JPEGImages" / "old").mkdir()
    shutil.copy(root / "JPEGImages" / f"{ids['train'][0]}.jpg", root / "JPEGImages" / "old" / "x.jpg")
    with open(lists / "train.txt", "a") as handle:
        handle.write("2007_000001 1\n")
    return root, ids


def test_voc_discovery(voc_src):
    root, ids = voc_src
    seg, aug = root / "SegmentationClass", root / "SegmentationClassAug"
    img = root / "JPEGImages"
    expected = [Example(i, "train", str(img / f"{i}.jpg"), str(seg / f"{i}.png")) for i in ids["train"]]
    expected += [Example(ids["val"][0], "val", str(img / f"{ids['val'][0]}.jpg"), str(seg / f"{ids['val'][0]}.png"))]
    # SBD's extra mask trains (train_aug); the test image is an image-only record.
    expected += [Example(ids["sbd"][0], "train", str(img / f"{ids['sbd'][0]}.jpg"), str(aug / f"{ids['sbd'][0]}.png"))]
    expected += [Example("2008_000001", "test", str(img / "2008_000001.jpg"))]
    val_missing = ids["val"][1]
    dead = [
            (str(img / f"{val_missing}.jpg"), f"image listed in ImageSets/Segmentation/val.txt without a "
             f"SegmentationClass/{val_missing}.png"),
            (str(img / "old" / "x.jpg"), "in a subfolder of JPEGImages/: VOC files lie directly in JPEGImages/"),
            (str(root / "ImageSets" / "Segmentation" / "train.txt") + ":3", "list row '2007_000001 1' is not one "
             "image id"),
            (str(seg / "2009_000009.png"), "mask without image (no readable JPEGImages/2009_000009.jpg)"),
    ]  # fmt: skip
    # The detection-only images and the Aug copies of VOC's own masks are neither (counted, not read).
    _discover("voc", root, expected, dead)


def test_voc_records_read_the_palette_index_and_keep_the_border_as_ignore(voc_src):
    root, ids = voc_src
    example_id = ids["train"][0]
    mask_path = root / "SegmentationClass" / f"{example_id}.png"
    with Image.open(mask_path) as png:
        assert png.mode == "P"  # the colours differ from the indices: only the index is the class
        native = np.asarray(png)
    assert labels.VOC_VOID in native and native.max() == 255 and (native[native != 255] < 21).all()
    example = Example(example_id, "train", str(root / "JPEGImages" / f"{example_id}.jpg"), str(mask_path))
    (record,) = _records("voc", example, native.shape)
    np.testing.assert_array_equal(_mask_of(record), native)  # identity: VOC index = train id, void = 255


# ----------------------------------------------------------------------------------------------- ADE20K
@pytest.fixture(scope="module")
def ade_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade") / "ADEChallengeData2016"
    ids = bench.write_ade20k_dataset(str(root), per_split={"train": 2, "val": 2}, size=(24, 32))
    # An annotation without its image, an image in no split folder, a test image (the test release added).
    os.remove(root / "images" / "validation" / f"{ids['val'][1]}.jpg")
    shutil.copy(root / "images" / "training" / f"{ids['train'][0]}.jpg", root / "images" / "stray.jpg")
    (root / "images" / "testing").mkdir()
    shutil.copy(root / "images" / "training" / f"{ids['train'][0]}.jpg", root / "images" / "testing" / "ADE_test_1.jpg")
    return root, ids


def test_ade20k_discovery_and_records(ade_src):
    root, ids = ade_src
    images, annotations = root / "images", root / "annotations"
    expected = [
        Example(i, split, str(images / folder / f"{i}.jpg"), str(annotations / folder / f"{i}.png"))
        for split, folder, chosen in (("train", "training", ids["train"]), ("val", "validation", ids["val"][:1]))
        for i in chosen
    ] + [Example("ADE_test_1", "test", str(images / "testing" / "ADE_test_1.jpg"))]
    lost = ids["val"][1]
    dead = [
            (str(annotations / "validation" / f"{lost}.png"),
             f"annotation without image (no readable images/validation/{lost}.jpg)"),
            (str(images / "stray.jpg"),
             "not directly in images/{training,validation,testing}/ (the ADEChallengeData2016 layout)"),
    ]  # fmt: skip
    _discover("ade20k", root, expected, dead)
    example = expected[0]
    native = np.asarray(Image.open(example.mask_path))
    assert 0 in native and native.max() <= 150
    (record,) = _records("ade20k", example, native.shape)
    np.testing.assert_array_equal(_mask_of(record), np.where(native == 0, 255, native.astype(np.int16) - 1))


# --------------------------------------------------------------------------------------------- evaluate
@pytest.mark.slow
def test_evaluate_scores_voc_and_ade20k_the_standard_way(voc_src, ade_src, tmp_path):
    """A prediction that is the ground truth everywhere it counts scores 1.0 whatever it says on VOC's void border
    or ADE20K's 'other'; ``--split val`` scores the val list (VOC) or folder (ADE20K) only."""
    from pipelines import evaluate

    cases = {
        "voc": (voc_src[0], voc_src[0] / "SegmentationClass", voc_src[1]["val"][0], labels.VOC_VOID, 0),
        "ade20k": (ade_src[0], ade_src[0] / "annotations" / "validation", ade_src[1]["val"][0], 0, 1),
    }
    for name, (root, gt_folder, val_id, ignored, wrong) in cases.items():
        preds = tmp_path / name / "masks"
        preds.mkdir(parents=True)
        gt = np.asarray(Image.open(gt_folder / f"{val_id}.png"))
        pred = np.where(gt == ignored, wrong, gt).astype(np.uint8)  # says anything where the truth is ignored
        Image.fromarray(pred, "L").save(preds / f"{val_id}.png")
        train_id = next(p.stem for p in sorted((root / "JPEGImages" if name == "voc" else root / "images" /
                        "training").glob("*.jpg")))  # fmt: skip
        Image.fromarray(np.zeros_like(pred), "L").save(preds / f"{train_id}.png")  # wrong, and not in val
        doc = evaluate.run(
            evaluate.EvaluateConfig(predictions=str(preds), ground_truth=str(root), dataset=name, split="val"),
            BEAM_FLAGS,
        ).document
        assert doc["mean_iou"] == pytest.approx(1.0), (name, doc["mean_iou"])
        assert doc["images"] == 1, (name, doc)
        # The ignored value counts nowhere (VOC: the void border; ADE20K: 'other'), and it was there to ignore.
        assert sum(doc["gt_pixels"].values()) == int((gt != ignored).sum()) < gt.size, name
    with pytest.raises(Exception, match="ADE20K's splits are train"):
        evaluate.run(
            evaluate.EvaluateConfig(predictions=str(preds), ground_truth=str(ade_src[0]), dataset="ade20k", split="x"),
            BEAM_FLAGS,
        )

"""The user's own folder dataset (``--dataset folder``, ``pipelines/datasets/folder.py``): classes.json, nested
folders, index and RGB colour-coded masks, the three ways of splitting, dead letters, and the label table that
travels in metadata.json and segflow_model.json to infer's colour PNGs and evaluate."""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines import datasets
from pipelines.datasets import folder
from pipelines.datasets.base import Files
from pipelines.tools import synthetic_folder


class LocalFiles(Files):
    def join(self, root, *parts):
        return os.path.join(root, *parts)

    def read(self, path):
        return pathlib.Path(path).read_bytes()


def bound(src) -> folder.Folder:
    return datasets.get("folder").with_source(str(src), LocalFiles())


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_classes_json_is_checked_in_one_line_and_masks_map_through_it(tmp_path):
    with pytest.raises(ValueError, match="no readable .*classes.json"):
        bound(tmp_path)
    bad = {
        '{"classes": [{"name": "a", "value": 0}]}': "at least 2 classes",
        '{"classes": [{"name": "a", "value": 0}, {"name": "a", "value": 1}]}': "names a appear more than once",
        '{"classes": [{"name": "a", "value": 0}, {"name": "b", "value": 0}]}': "values 0 appear more than once",
        '{"classes": [{"name": "a", "value": -1}, {"name": "b", "value": 1}]}': "value 0..65535",
        '{"classes": [{"name": "a", "value": 0, "color": [0, 0, 0]}, {"name": "b", "value": 1}]}': "every class",
        '{"classes": [{"name": "a", "value": 0}, {"name": "b", "value": 1}], "colors": 1}': "unknown keys",
        "{": "not JSON",
    }
    for text, message in bad.items():
        (tmp_path / "classes.json").write_text(text)
        with pytest.raises(ValueError, match=message) as err:
            bound(tmp_path)
        assert "\n" not in str(err.value)
    synthetic_folder.write_folder_dataset(str(tmp_path / "src"))
    dataset = bound(tmp_path / "src")
    spec = dataset.label_spec()
    assert spec.class_names == ("background", "road", "car") and spec.palette[2] == (0, 0, 142)
    assert spec.to_native[:3].tolist() == [0, 1, 7]
    index = np.array([[0, 1, 7, 255]], np.uint8)
    assert dataset.read_mask(png(index)).tolist() == [[0, 1, 2, 255]]
    rgb = np.array([[[0, 0, 0], [128, 64, 128], [0, 0, 142], [255, 255, 255]]], np.uint8)
    assert dataset.read_mask(png(rgb)).tolist() == [[0, 1, 2, 255]]
    sixteen = np.array([[0, 1, 7, 300]], np.uint16)
    with pytest.raises(ValueError, match=r"mask has values \[300\] that classes.json does not list"):
        dataset.read_mask(png(sixteen))
    with pytest.raises(ValueError, match=r"colors \[\(1, 2, 3\)\]"):
        dataset.read_mask(png(np.array([[[1, 2, 3]]], np.uint8)))
    assert pickle_roundtrip(dataset) == dataset


def pickle_roundtrip(value):
    import pickle

    return pickle.loads(pickle.dumps(value))


@pytest.mark.slow
def test_discovery_splits_by_folders_lists_or_hash(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.datasets.base import SplitFractions
    from pipelines.datasets.discovery import Discover

    expected = {}
    for layout in ("folders", "lists", "hash"):
        src = tmp_path / layout
        written = synthetic_folder.write_folder_dataset(str(src), size=(8, 8), splits=layout)
        if layout == "hash":
            from pipelines.datasets.base import split_from_hash

            written = {k: split_from_hash(k, 0.25, 0.25) for k in written}
        with_mask = {k: v for k, v in written.items() if not k.endswith("b3") or v == "test"}
        expected[layout] = sorted((k, s, not k.endswith("b3")) for k, s in with_mask.items())
        dead = [("orphan.png", "mask without image")] + [
            ("b3.jpg", f"{s} image without mask") for k, s in written.items() if k.endswith("b3") and s != "test"
        ]
        with beam.Pipeline("DirectRunner") as p:
            found = p | Discover(bound(src), str(src), SplitFractions(0.25, 0.25))
            assert_that(
                found["examples"] | beam.Map(lambda e: (e.example_id, e.split, e.mask_path is not None)),
                equal_to(expected[layout]),
                label="examples",
            )
            assert_that(
                found["dead_letter"] | beam.Map(lambda d: (os.path.basename(d.path), d.error.split(" (")[0])),
                equal_to(dead),
                label="dead",
            )
    # Sub-folders and list files give the same splits; the id keeps the nesting (and the split folder).
    assert ("train/site_a/a0", "train", True) in expected["folders"]
    assert [(k, s) for k, s, _ in expected["lists"]] == sorted(synthetic_folder.SPLIT_OF.items())


@pytest.mark.slow
def test_preprocess_rerun_infer_palette_and_evaluate_on_the_sample(tmp_path):
    from pipelines.evaluate.job import EvaluateConfig, run as evaluate
    from pipelines.infer import outputs
    from pipelines.infer.transforms import label_spec
    from pipelines.preprocess import PreprocessConfig, run
    from schemas.errors import DataError
    from schemas.metadata import DatasetMetadata
    from schemas.model_contract import ModelInfo

    src = tmp_path / "src"
    synthetic_folder.write_folder_dataset(str(src))
    results = []
    for dst in ("dst", "again"):
        config = PreprocessConfig(
            dataset="folder", input_dir=str(src), output_dir=str(tmp_path / dst), image_size=(16, 16)
        )
        results.append(run(config, ["--direct_running_mode", "in_memory"]))
    meta = results[0].metadata
    assert meta.counts == {"train": 4, "val": 2, "test": 1} and meta.dead_letter_count == 2
    assert meta.inputs_seen == 9 and meta.class_names == ["background", "road", "car"]
    assert meta.label_table["palette"] == [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
    assert meta.label_table["native_values"] == [0, 1, 7]
    dead = "".join(p.read_text() for p in (tmp_path / "dst" / "dead_letter").iterdir())
    assert "mask has values [9] that classes.json does not list" in dead and "orphan.png" in dead
    for name in sorted(meta.shards) + ["metadata.json"]:  # byte-identical rerun
        assert (tmp_path / "dst" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name

    # The model's info copies the table (trainer/export.model_info); infer paints with the sample's colours.
    stored = DatasetMetadata.from_json((tmp_path / "dst" / "metadata.json").read_text())
    info = ModelInfo(
        dataset=stored.dataset,
        label_mode=stored.label_mode,
        num_classes=stored.num_classes,
        class_names=stored.class_names,
        ignore_label=stored.ignore_label,
        image_size=stored.image_size,
        resize_mode=stored.resize_mode,
        model="unet",
        label_table=stored.label_table,
    )
    spec = label_spec(ModelInfo.from_json(info.to_json()))
    ids = np.array([[0, 1, 2]], np.uint8)
    colour = np.asarray(Image.open(io.BytesIO(outputs.encode_palette_png(ids, spec))).convert("RGB"))
    assert colour.tolist() == [[[0, 0, 0], [128, 64, 128], [0, 0, 142]]]
    assert np.take(spec.to_native, ids).tolist() == [[0, 1, 7]]  # masks/ keeps the user's values

    # Evaluate against SRC (classes.json, masks/ nested, index and RGB): perfect predictions score 1.
    gt = tmp_path / "gt"
    shutil.copytree(src, gt)
    (gt / "masks" / "site_a" / "a3.png").unlink()
    (gt / "masks" / "site_a" / "orphan.png").unlink()
    predictions = tmp_path / "out" / "masks"
    predictions.mkdir(parents=True)
    dataset = bound(gt)
    for mask in sorted((gt / "masks").rglob("*.png")):
        train = dataset.read_mask(mask.read_bytes())
        (predictions / mask.name).write_bytes(png(np.take(spec.to_native, np.where(train == 255, 0, train))))
    result = evaluate(EvaluateConfig(predictions=str(predictions), ground_truth=str(gt), dataset="folder"))
    assert result.images == 6 and result.document["class_names"] == ["background", "road", "car"]
    assert result.mean_iou == pytest.approx(1.0)
    with pytest.raises(DataError, match="classes.json"):
        evaluate(EvaluateConfig(predictions=str(predictions), ground_truth=str(tmp_path), dataset="folder"))

    # The report: the model's colours (summary.json's model_dir), the ground truth read through classes.json.
    from pipelines.evaluate import report_page

    out = predictions.parent
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "segflow_model.json").write_text(info.to_json())
    written = {}
    for mask in sorted((gt / "masks").rglob("*.png")):
        image = next((gt / "images").rglob(mask.stem + ".*"))
        written[str(image)] = mask.stem
        train = dataset.read_mask(mask.read_bytes())
        (out / "color").mkdir(exist_ok=True)
        (out / "color" / mask.name).write_bytes(outputs.encode_palette_png(np.where(train == 255, 0, train), spec))
    (out / "summary.json").write_text(json.dumps({"outputs": written, "model_dir": str(model_dir)}))
    paths = report_page.write_report(str(out), "folder", ground_truth=str(gt), max_images=2)
    assert all(os.path.getsize(p) for p in paths.values())
    rows, _, _ = report_page.collect_rows(str(out), spec, str(gt), 8, result.document, dataset)
    truth = {tuple(c) for row in rows for c in row["panels"][1].reshape(-1, 3).tolist()}
    assert (0, 0, 142) in truth and (128, 64, 128) in truth  # the RGB and the index masks, in the sample's colours
    (model_dir / "segflow_model.json").unlink()
    with pytest.raises(DataError, match="classes.json"):
        report_page.write_report(str(out), "folder", max_images=2)

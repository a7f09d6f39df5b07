"""The whole mission on each dataset added after Pet and Cityscapes (the user's folder, Pascal VOC, ADE20K): records →
a trained model → infer of the dataset's val split → evaluate of that split → the report, with no dataset code in
the trainer, infer or the report: the class table travels in metadata.json and segflow_model.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.model import TINY_UNET

BEAM_FLAGS = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


def _write_source(name: str, root) -> None:
    from pipelines.tools import synthetic_benchmarks, synthetic_folder

    if name == "folder":
        synthetic_folder.write_folder_dataset(str(root), splits="folders")
    elif name == "voc":
        synthetic_benchmarks.write_voc_dataset(str(root), per_split={"train": 4, "val": 2}, size=(24, 32), sbd=0)
    else:
        synthetic_benchmarks.write_ade20k_dataset(str(root), per_split={"train": 4, "val": 2}, size=(24, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["folder", "voc", "ade20k"])
def test_records_train_infer_the_val_split_evaluate_and_report(name, tmp_path):
    from pipelines import evaluate, infer, preprocess
    from pipelines.evaluate import report_page
    from schemas.labels import spec_for, spec_from_table
    from trainer import TrainConfig, run

    src, records, job, out = (tmp_path / n for n in ("src", "records", "job", "out"))
    _write_source(name, src)
    meta = preprocess.run(
        preprocess.PreprocessConfig(dataset=name, input_dir=str(src), output_dir=str(records), image_size=(16, 16)),
        BEAM_FLAGS,
    ).metadata
    assert meta.counts["train"] >= 2 and meta.counts["val"] >= 1, meta.counts
    run(TrainConfig(data_dir=str(records), job_dir=str(job), **{**TINY_UNET, "epochs": 1}))
    model_info = json.loads((job / "model" / "segflow_model.json").read_text())
    assert model_info["dataset"] == name and model_info["class_names"] == meta.class_names
    assert model_info["label_table"] == meta.label_table  # the table the exported model serves with

    summary = infer.run(
        infer.InferConfig(
            model_dir=str(job / "model"), input_dir=str(src), dataset=name, split="val", output_dir=str(out)
        ),
        BEAM_FLAGS,
    )
    assert summary.images_written == meta.counts["val"] and summary.dead_letters == 0, summary
    # Masks hold the dataset's own values (VOC: 0..20, ADE20K: 1..150, folder: classes.json's), colours its palette.
    spec = (
        spec_from_table(name, meta.label_mode, meta.class_names, meta.ignore_label, meta.label_table)
        if meta.label_table
        else spec_for(name, meta.label_mode)
    )
    native = set(np.asarray(spec.to_native)[: spec.num_classes].tolist())
    palette = {tuple(c) for c in spec.palette}
    for mask in sorted((out / "masks").rglob("*.png")):
        assert set(np.unique(np.asarray(Image.open(mask))).tolist()) <= native, mask
    for colour in sorted((out / "color").rglob("*.png")):
        assert {tuple(c) for c in np.unique(np.asarray(Image.open(colour).convert("RGB")).reshape(-1, 3), axis=0)} <= (
            palette
        ), colour

    result = evaluate.run(
        evaluate.EvaluateConfig(predictions=str(out / "masks"), ground_truth=str(src), dataset=name, split="val"),
        BEAM_FLAGS,
    )
    document = result.document
    assert document["images"] == meta.counts["val"] and document["class_names"] == meta.class_names
    assert document["missing_predictions"] == 0 and document["unmatched_predictions"] == 0, document
    # Without --split every ground-truth mask is read, at whatever depth the dataset nests it: each prediction
    # still pairs with its own mask (the others are missing predictions, not the other way round).
    everything = evaluate.run(
        evaluate.EvaluateConfig(predictions=str(out / "masks"), ground_truth=str(src), dataset=name), BEAM_FLAGS
    ).document
    assert everything["images"] == meta.counts["val"] and everything["unmatched_predictions"] == 0, everything
    paths = report_page.write_report(str(out), name, ground_truth=str(src))
    page = (out / "report.html").read_text()
    assert all((out / p).stat().st_size for p in ("report.html", "report.png")), paths
    assert "True Mask (not available)" not in page  # every shown image found its ground truth

"""The folder dataset's own folder names and mask suffix (classes.json's "images", "masks", "mask_suffix"), and
literal ids: a file name repeated across sub-folders (site_a/0001, site_b/0001) is two examples in discovery, in
infer's --split and in evaluate's pairing, never one guessed from the other."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines import datasets
from pipelines.common.deadletter_record import DeadLetter
from pipelines.datasets.base import Count, Fact, SplitFractions
from pipelines.datasets.discovery import BeamFiles
from pipelines.tools import synthetic_folder

LAYOUT = {"images": "img_dir", "masks": "ann_dir/seg", "mask_suffix": "_mask.png"}


def bound(src):
    return datasets.get("folder").with_source(str(src), BeamFiles())


def discover(dataset, src) -> tuple[list, list]:
    """Discovery's functions run in-process (the Beam transform routes exactly these): (examples, dead letters)."""
    parts: dict[str, list] = {}
    facts, dead = [], []
    for source in dataset.discovery_sources():
        for item in dataset.list_source(source, str(src), BeamFiles()):
            if isinstance(item, DeadLetter):
                dead.append(item)
            elif isinstance(item, Fact):
                facts.append(item.value)
            elif not isinstance(item, Count):
                parts.setdefault(item[0], []).append(item[1])
    examples = []
    for key in sorted(parts):
        for out in dataset.assemble(key, parts[key], facts, SplitFractions(0.25, 0.25)):
            (dead if isinstance(out, DeadLetter) else examples).append(out)
    return examples, dead


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_classes_json_names_the_folders_and_the_mask_suffix(tmp_path):
    src = tmp_path / "src"
    synthetic_folder.write_folder_dataset(str(src), size=(8, 8), layout=LAYOUT)
    dataset = bound(src)
    assert dataset.input_folder == ("img_dir",)
    examples, dead = discover(dataset, src)
    assert sorted((e.example_id, e.split) for e in examples) == sorted(synthetic_folder.SPLIT_OF.items())
    a0 = next(e for e in examples if e.example_id == "site_a/a0")
    assert a0.image_path.endswith("/img_dir/site_a/a0.png") and a0.mask_path.endswith("/ann_dir/seg/site_a/a0_mask.png")
    assert any("no readable img_dir/site_a/orphan.*" in d.error for d in dead)
    # A PNG in the masks folder without the suffix is a stray, named as such.
    shutil.copy(src / "ann_dir/seg/site_a/a0_mask.png", src / "ann_dir/seg/site_a/a9.png")
    _, dead = discover(dataset, src)
    assert any("not a mask named <id>_mask.png (a9.png) in ann_dir/seg/" in d.error for d in dead)
    # evaluate finds the ground truth there; infer's --input_dir reads the images folder classes.json names.
    layout = dataset.ground_truth_layouts("val")[0]
    assert layout.folder == ("ann_dir", "seg", "val") and layout.suffix == "_mask.png"
    found = dataset.split_images(str(src), "val", BeamFiles())
    assert [p.rsplit("/img_dir/", 1)[1] for p in found.images] == ["site_a/a2.png", "site_b/b2.jpg"]
    classes = json.loads((src / "classes.json").read_text())
    for bad, message in (
        ({"images": "../x"}, '"images" must be a folder below SRC'),
        ({"masks": "img_dir"}, "must be two folders"),
        ({"mask_suffix": "_mask.jpg"}, '"mask_suffix" must end with .png'),
    ):
        (src / "classes.json").write_text(json.dumps(dict(classes, **bad)))
        with pytest.raises(ValueError, match=message) as err:
            bound(src)
        assert "\n" not in str(err.value)


def repeated_names(src, size=(6, 8)) -> dict[str, np.ndarray]:
    """A list-split sample whose file names repeat across sub-folders: test = site_a/0001 and site_b/0001 (masks
    that differ), val = site_c/0001. Returns each id's mask (class values 0/1)."""
    (src / "splits").mkdir(parents=True)
    (src / "classes.json").write_text(json.dumps({"classes": [{"name": "bg", "value": 0}, {"name": "fg", "value": 1}]}))
    masks = {}
    for i, key in enumerate(("site_a/0001", "site_b/0001", "site_c/0001")):
        mask = np.zeros(size, np.uint8)
        mask[: i + 1] = 1
        for folder, data in (("images", png(np.full(size + (3,), 40 * i, np.uint8))), ("masks", png(mask))):
            (src / folder / key).parent.mkdir(parents=True, exist_ok=True)
            (src / folder / f"{key}.png").write_bytes(data)
        masks[key] = mask
    (src / "splits" / "test.txt").write_text("site_a/0001\nsite_b/0001\n")
    (src / "splits" / "val.txt").write_text("site_c/0001\n")
    return masks


def test_ids_are_paths_so_repeated_names_stay_apart_in_discovery_and_infer_split(tmp_path):
    src = tmp_path / "src"
    repeated_names(src)
    dataset = bound(src)
    examples, dead = discover(dataset, src)
    assert [(e.example_id, e.split) for e in examples] == [
        ("site_a/0001", "test"),
        ("site_b/0001", "test"),
        ("site_c/0001", "val"),
    ] and not dead
    assert dataset.evaluate_split_ids("test", str(src), BeamFiles()) == {"site_a/0001", "site_b/0001"}
    found = dataset.split_images(str(src), "test", BeamFiles())  # infer --split test: not site_c's 0001
    assert [p.rsplit("/images/", 1)[1] for p in found.images] == ["site_a/0001.png", "site_b/0001.png"]
    assert dataset.literal_id(str(src / "masks/site_b/0001.png"), str(src), "mask") == "site_b/0001"
    assert dataset.literal_id(str(src / "images/site_b/0001.png"), str(src), "image") == "site_b/0001"
    assert dataset.literal_id("/elsewhere/0001.png", str(src), "image") is None


@pytest.mark.slow
def test_evaluate_split_pairs_each_prediction_with_its_own_mask(tmp_path):
    from pipelines.evaluate.job import EvaluateConfig, run as evaluate
    from pipelines.infer import outputs
    from schemas.errors import DataError

    src = tmp_path / "src"
    masks = repeated_names(src)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    images = {key: str(src / "images" / f"{key}.png") for key in masks}
    stems = outputs.unique_stems(images.values())  # infer's names: 0001+<hash> for the repeated ones
    for key, path in images.items():
        # site_a is predicted exactly; site_b gets site_a's mask (what a pairing by file name would score).
        predicted = masks["site_a/0001"] if key != "site_c/0001" else masks[key]
        (out / "masks" / f"{stems[path]}.png").write_bytes(png(predicted))
    summary = {"outputs": {p: stems[p] for p in images.values()}, "input_dir": str(src), "input_dataset": "folder"}
    (out / "summary.json").write_text(json.dumps(summary))
    config = EvaluateConfig(predictions=str(out / "masks"), ground_truth=str(src), dataset="folder", split="test")
    result = evaluate(config, ["--direct_running_mode", "in_memory"])
    per_image = {e["id"]: e["miou"] for e in result.document["per_image"]}
    assert result.images == 2 and set(per_image) == {"site_a/0001", "site_b/0001"}
    assert per_image["site_a/0001"] == pytest.approx(1.0) and per_image["site_b/0001"] < 1.0
    assert result.document["predictions_outside_split"] == 1 and result.document["missing_prediction_ids"] == []

    # Without infer's summary the names alone cannot say which 0001 is which: nothing is paired by a guess.
    (out / "summary.json").unlink()
    for stale in (out / "masks").iterdir():
        stale.unlink()
    (out / "masks" / "0001.png").write_bytes(png(masks["site_a/0001"]))
    with pytest.raises(DataError, match="0 of 1 predictions"):
        evaluate(config, ["--direct_running_mode", "in_memory"])


def test_split_help_names_no_dataset_list(capsys):
    # The registry grows by a file: --split's help must not spell some datasets' layouts as if they were all.
    from pipelines.evaluate.job import from_args as evaluate_args
    from pipelines.infer.job import from_args as infer_args

    for parse in (evaluate_args, infer_args):
        with pytest.raises((SystemExit, Exception)) as err:  # the help goes to stdout or rides the exception
            parse(["--help"])
        text = " ".join((capsys.readouterr().out + str(err.value)).split())
        assert "docs/datasets.md describes for each --dataset" in text and "Cityscapes: " not in text

"""pipelines.evaluate never reports a wrong score with exit 0: predictions that are not id masks, masks of another
size or with values outside the label set are errors (exit 1, one line, the JSON still written); ``--split`` selects
the dataset's own split or is refused; the JSON is strict."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines.evaluate import job as evaluate
from pipelines.infer import outputs
from pipelines.tools import synthetic
from schemas import labels

BEAM = ["--direct_running_mode", "in_memory"]


def _pet(root: pathlib.Path, n: int = 6, seed: int = 4) -> list[str]:
    return synthetic.write_pet_dataset(str(root), n, size=(24, 32), seed=seed, test_fraction=0.5)


def _trimap(src: pathlib.Path, example: str) -> np.ndarray:
    return np.asarray(Image.open(src / "annotations" / "trimaps" / f"{example}.png"))


def _perfect_predictions(src: pathlib.Path, ids: list[str], out: pathlib.Path) -> pathlib.Path:
    masks = out / "masks"
    masks.mkdir(parents=True)
    for example in ids:
        shutil.copy(src / "annotations" / "trimaps" / f"{example}.png", masks / f"{example}.png")
    return masks


def _main(argv: list[str], capsys) -> tuple[int, list[str]]:
    """``python -m pipelines.evaluate``'s status and its stderr lines."""
    capsys.readouterr()
    status = evaluate.main(argv + BEAM)
    return status, capsys.readouterr().err.strip().splitlines()


def _strict(path: pathlib.Path) -> dict:
    """The file parsed as strict JSON: a bare NaN / Infinity fails the test."""

    def refuse(constant: str):
        raise AssertionError(f"{path} is not strict JSON: {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_color_folder_exits_1_with_one_line_naming_masks(tmp_path, capsys):
    """infer's color/ holds palette images of train ids: an error per image, never an mIoU."""
    src = tmp_path / "src"
    ids = _pet(src)
    out = tmp_path / "out"
    _perfect_predictions(src, ids, out)
    spec = labels.pet_spec("trimap")
    (out / "color").mkdir()
    for example in ids:  # what infer writes to color/: train ids as palette indices
        train_ids = labels.pet_trimap_to_train_ids(_trimap(src, example))
        (out / "color" / f"{example}.png").write_bytes(outputs.encode_palette_png(train_ids, spec))
    status, lines = _main(["--predictions", str(out / "color"), "--ground_truth", str(src), "--dataset", "pet"], capsys)
    assert status == 1 and len(lines) == 1, lines
    assert "palette (colour) image, expected a single-channel id mask" in lines[0]
    assert f"point it at infer's OUT/masks; did you mean --predictions {out / 'masks'}?" in lines[0]
    doc = _strict(out / "evaluation.json")
    assert doc["images"] == 0 and doc["mean_iou"] is None and len(doc["errors"]) == len(ids)


def test_rgb_predictions_are_errors(tmp_path, capsys):
    src = tmp_path / "src"
    ids = _pet(src, n=2)
    preds = tmp_path / "out" / "overlay"
    preds.mkdir(parents=True)
    for example in ids:
        trimap = _trimap(src, example)
        Image.fromarray(np.stack([trimap] * 3, axis=-1)).save(preds / f"{example}.png")
    status, lines = _main(["--predictions", str(preds), "--ground_truth", str(src), "--dataset", "pet"], capsys)
    assert status == 1 and len(lines) == 1 and "RGB image, expected a single-channel id mask" in lines[0], lines


def test_every_prediction_of_another_size_exits_1(tmp_path, capsys):
    src = tmp_path / "src"
    ids = _pet(src, n=3)
    preds = tmp_path / "out" / "masks"
    preds.mkdir(parents=True)
    for example in ids:
        trimap = _trimap(src, example)
        Image.fromarray(trimap[::2, ::2]).save(preds / f"{example}.png")
    status, lines = _main(["--predictions", str(preds), "--ground_truth", str(src), "--dataset", "pet"], capsys)
    assert status == 1 and len(lines) == 1, lines
    assert "3 errors, 0 images scored" in lines[0]
    doc = _strict(tmp_path / "out" / "evaluation.json")
    assert doc["images"] == 0 and doc["mean_iou"] is None and doc["pixel_accuracy"] is None
    h, w = _trimap(src, ids[0]).shape
    first = next(e for e in doc["errors"] if e["path"] == str(preds / f"{ids[0]}.png"))
    assert first["error"] == f"prediction: size {(w + 1) // 2}x{(h + 1) // 2}, ground truth {w}x{h}"


def test_one_wrong_size_among_good_ones_still_exits_1(tmp_path, capsys):
    src = tmp_path / "src"
    ids = _pet(src, n=3)
    preds = _perfect_predictions(src, ids, tmp_path / "out")
    Image.fromarray(_trimap(src, ids[0])[:-1]).save(preds / f"{ids[0]}.png")
    status, lines = _main(["--predictions", str(preds), "--ground_truth", str(src), "--dataset", "pet"], capsys)
    assert status == 1 and len(lines) == 1 and "1 error, 2 images scored" in lines[0], lines
    assert _strict(tmp_path / "out" / "evaluation.json")["images"] == 2


def test_zero_based_trimap_ground_truth_is_an_error_naming_the_values(tmp_path, capsys):
    src = tmp_path / "src"
    ids = _pet(src, n=2)
    preds = _perfect_predictions(src, ids, tmp_path / "out")
    zero_based = src / "annotations" / "trimaps" / f"{ids[1]}.png"
    Image.fromarray((_trimap(src, ids[1]) - 1).astype(np.uint8)).save(zero_based)
    status, lines = _main(["--predictions", str(preds), "--ground_truth", str(src), "--dataset", "pet"], capsys)
    assert status == 1 and len(lines) == 1, lines
    doc = _strict(tmp_path / "out" / "evaluation.json")
    assert {"path": str(zero_based), "error": "ground truth: trimap has values [0] outside {1, 2, 3}"} in doc["errors"]
    assert doc["images"] == 1


def test_prediction_values_outside_the_label_set_are_an_error_naming_them(tmp_path, capsys):
    src = tmp_path / "src"
    ids = _pet(src, n=2)
    preds = _perfect_predictions(src, ids, tmp_path / "out")
    trimap = _trimap(src, ids[0]).copy()
    trimap[0, 0], trimap[0, 1] = 0, 4  # a zero-based tool's output, and a stray id
    Image.fromarray(trimap).save(preds / f"{ids[0]}.png")
    status, lines = _main(["--predictions", str(preds), "--ground_truth", str(src), "--dataset", "pet"], capsys)
    assert status == 1 and len(lines) == 1 and "trimap has values [0, 4] outside {1, 2, 3}" in lines[0], lines
    doc = _strict(tmp_path / "out" / "evaluation.json")
    assert doc["errors"] == [
        {"path": str(preds / f"{ids[0]}.png"), "error": "prediction: trimap has values [0, 4] outside {1, 2, 3}"}
    ]


def test_split_test_scores_only_the_ids_in_test_txt(tmp_path, capsys):
    src = tmp_path / "src"
    ids = _pet(src, n=8)
    listed = (src / "annotations" / "test.txt").read_text().split("\n")
    test_ids = sorted(line.split()[0] for line in listed if line.strip())
    assert 0 < len(test_ids) < len(ids) - 1
    preds = _perfect_predictions(src, ids, tmp_path / "out")
    (preds / f"{test_ids[0]}.png").unlink()  # missing: counted, as an id of the split
    other = next(i for i in ids if i not in test_ids)
    (preds / f"{other}.png").unlink()  # not of the split: not missing
    Image.fromarray(np.full((24, 32), 4, np.uint8)).save(preds / "stranger.png")
    out_file = tmp_path / "test_eval.json"
    status, lines = _main(
        [
            "--predictions",
            str(preds),
            "--ground_truth",
            str(src),
            "--dataset",
            "pet",
            "--split",
            "test",
            "--output_file",
            str(out_file),
        ],
        capsys,
    )
    assert status == 0 and lines == [], lines
    doc = _strict(out_file)
    assert doc["split"] == "test" and doc["images"] == len(test_ids) - 1
    assert doc["missing_prediction_ids"] == [test_ids[0]]
    assert doc["predictions_outside_split"] == len(ids) - len(test_ids) - 1 + 1  # the stranger is of no split
    assert doc["unmatched_predictions"] == 0 and doc["errors"] == []


@pytest.mark.parametrize(
    "split, remove, expected",
    [
        ("val", None, "Pet's own splits are test and trainval"),
        ("test", "test.txt", "--split test needs Pet's list"),
    ],
)
def test_a_split_pet_does_not_have_is_refused_with_one_line(tmp_path, capsys, split, remove, expected):
    src = tmp_path / "src"
    ids = _pet(src, n=2)
    preds = _perfect_predictions(src, ids, tmp_path / "out")
    if remove:
        (src / "annotations" / remove).unlink()
    status, lines = _main(
        ["--predictions", str(preds), "--ground_truth", str(src), "--dataset", "pet", "--split", split], capsys
    )
    assert status == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "out" / "evaluation.json").exists()


def test_a_cityscapes_split_that_is_not_there_is_refused_and_a_flat_folder_cannot_select_one(tmp_path, capsys):
    src = tmp_path / "cs"
    synthetic.write_cityscapes_dataset(str(src), frames_per_split={"val": 1}, size=(16, 32), seed=1)
    preds = tmp_path / "out" / "masks"
    preds.mkdir(parents=True)
    flat = tmp_path / "flat"
    flat.mkdir()
    for gt in (src / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"):
        shutil.copy(gt, preds / gt.name.replace("_gtFine_labelIds", "_leftImg8bit"))
        shutil.copy(gt, flat / gt.name)
    argv = ["--predictions", str(preds), "--dataset", "cityscapes", "--split", "train"]
    status, lines = _main(argv + ["--ground_truth", str(src)], capsys)
    assert status == 2 and len(lines) == 1 and "--split train: no cityscapes ground truth of split train" in lines[0]
    status, lines = _main(argv + ["--ground_truth", str(flat)], capsys)  # before: every mask scored as "train"
    assert status == 2 and len(lines) == 1, lines
    status, lines = _main(argv[:-1] + ["val", "--ground_truth", str(src)], capsys)
    assert status == 0 and lines == [], lines
    assert _strict(tmp_path / "out" / "evaluation.json")["mean_iou"] == 1.0


def test_cityscapes_palette_predictions_are_not_scored(tmp_path, capsys):
    """Cityscapes' train ids 0..18 are all valid labelIds: only the image mode tells color/ from masks/."""
    src = tmp_path / "cs"
    synthetic.write_cityscapes_dataset(str(src), frames_per_split={"val": 2}, size=(16, 32), seed=2)
    spec = labels.spec_for("cityscapes")
    color = tmp_path / "out" / "color"
    color.mkdir(parents=True)
    for gt in (src / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"):
        train_ids = labels.cityscapes_label_ids_to_train_ids(np.asarray(Image.open(gt)))
        name = gt.name.replace("_gtFine_labelIds", "_leftImg8bit")
        (color / name).write_bytes(outputs.encode_palette_png(train_ids, spec))
    status, lines = _main(
        ["--predictions", str(color), "--ground_truth", str(src), "--dataset", "cityscapes", "--split", "val"], capsys
    )
    assert status == 1 and len(lines) == 1 and "expected a single-channel id mask" in lines[0], lines


def test_the_evaluation_json_is_strict(tmp_path):
    """Absent figures are null in the file, never a bare NaN / Infinity."""
    doc = {"mean_iou": float("nan"), "per_class_iou": {"a": float("inf"), "b": 0.5}, "rows": [[float("-inf"), 1]]}
    evaluate.write_evaluation(str(tmp_path / "evaluation.json"), doc)
    assert _strict(tmp_path / "evaluation.json") == {
        "mean_iou": None,
        "per_class_iou": {"a": None, "b": 0.5},
        "rows": [[None, 1]],
    }


@pytest.mark.slow
def test_an_evaluation_file_segflow_did_not_write_is_never_replaced(tmp_path, capsys):
    """The JSON goes beside any predictions (another tool's folder too), and a rerun replaces its own JSON; a file
    of that name that evaluate did not write is refused (exit 2, one line) and left as it was."""
    src = tmp_path / "src"
    ids = _pet(src)
    out = tmp_path / "their_tool"
    masks = _perfect_predictions(src, ids, out)
    argv = ["--predictions", str(masks), "--ground_truth", str(src), "--dataset", "pet"]
    assert _main(argv, capsys)[0] == 0 and _main(argv, capsys)[0] == 0  # the rerun replaces its own file
    assert _strict(out / "evaluation.json")["images"] == len(ids)
    mine = tmp_path / "mine.json"
    mine.write_text("the user's notes")
    status, err = _main(argv + ["--output_file", str(mine)], capsys)
    assert status == 2 and len(err) == 1 and "exists and is not an evaluation segflow wrote" in err[0]
    assert mine.read_text() == "the user's notes"

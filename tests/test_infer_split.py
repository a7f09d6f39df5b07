"""infer's ``--input_dir SRC --dataset NAME --split S``: exactly the images of a dataset's own split, so that
``evaluate --split S`` scores every one of them (no "missing predictions" of the other split)."""

from __future__ import annotations

import json
import pathlib

import pytest

from pipelines import datasets
from pipelines.datasets.discovery import BeamFiles
from pipelines.evaluate import job as evaluate_job
from pipelines.infer import job as infer_job, options as infer_options
from pipelines.infer.inputs import InputError, MatchedInputs, check_output_dir, dataset_inputs
from pipelines.infer.options import InferConfig
from pipelines.tools import synthetic
from schemas.errors import UsageError

BEAM = ["--direct_running_mode", "in_memory"]


def _pet(root: pathlib.Path) -> tuple[list[str], list[str]]:
    """A small Pet folder with list files: (every id, the test ids); seed 2 puts 3 of the 8 ids in test."""
    ids = synthetic.write_pet_dataset(str(root), 8, size=(40, 48), seed=2, test_fraction=0.4)
    test = [line.split()[0] for line in (root / "annotations" / "test.txt").read_text().splitlines()]
    assert 2 <= len(test) < len(ids), test
    return ids, test


def _remove(root: pathlib.Path, example: str) -> None:
    """A listed id whose image and trimap are gone (the list names it; nothing else does)."""
    (root / "images" / f"{example}.jpg").unlink()
    (root / "annotations" / "trimaps" / f"{example}.png").unlink()


def test_split_images_reads_the_datasets_own_split_and_reports_listed_ids_without_image(tmp_path):
    src = tmp_path / "pet"
    ids, test = _pet(src)
    (src / "images" / f"{test[0]}.jpg").unlink()
    (src / "images" / "._Abyssinian_1.jpg").write_bytes(b"x")  # macOS metadata: never an image
    pet = datasets.get("pet")
    found = pet.split_images(str(src), "test", BeamFiles())
    assert [pathlib.Path(p).stem for p in found.images] == sorted(test[1:])
    assert found.missing_ids == [test[0]] and found.unreadable == []
    trainval = pet.split_images(str(src), "trainval", BeamFiles())
    assert sorted(pathlib.Path(p).stem for p in trainval.images) == sorted(set(ids) - set(test))
    assert len(pet.split_images(str(src), None, BeamFiles()).images) == len(ids) - 1
    with pytest.raises(ValueError, match="Pet's own splits are test and trainval"):
        pet.split_images(str(src), "val", BeamFiles())

    cs = tmp_path / "cs"
    frames = synthetic.write_cityscapes_dataset(str(cs), frames_per_split={"train": 2, "val": 2}, size=(8, 16))
    cityscapes = datasets.get("cityscapes")
    val = cityscapes.split_images(str(cs), "val", BeamFiles())
    assert sorted(cityscapes.example_id(pathlib.Path(p).stem) for p in val.images) == sorted(frames["val"])
    assert all("/leftImg8bit/val/" in p for p in val.images) and val.missing_ids == []
    with pytest.raises(ValueError, match="--split test: no cityscapes images in .*leftImg8bit/test"):
        cityscapes.split_images(str(cs), "test", BeamFiles())


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "no images named: give --input 'GLOB' or --input_dir SRC --dataset NAME"),
        (["--input", "x/*.jpg", "--input_dir", "x"], "--input and --input_dir both name the images"),
        (["--input", "x/*.jpg", "--split", "test"], "--split test is a dataset's own split: give --input_dir"),
        (["--input_dir", "x", "--split", "test"], "--input_dir needs --dataset (one of pet, cityscapes"),
        (["--input", "x/*.jpg", "--dataset", "pet"], "--dataset is the layout of --input_dir"),
        (["--input_dir", "x", "--dataset", "pets"], "(did you mean pet?)"),
    ],
)
def test_bad_input_flag_combinations_are_one_line_and_exit_2(argv, expected, tmp_path, capsys):
    capsys.readouterr()
    status = infer_job.main(["--model_dir", str(tmp_path / "m"), "--output_dir", str(tmp_path / "o"), *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_a_python_config_is_checked_as_the_flags_are_and_the_usage_names_the_two_inputs(tmp_path, capsys):
    with pytest.raises(UsageError, match="--split test is a dataset's own split"):
        infer_job.run(InferConfig(model_dir="m", input=["x/*.jpg"], split="test", output_dir=str(tmp_path / "o")))
    # A missing local --input_dir: one line, exit 1 (data, not flags), before the model or Beam loads.
    capsys.readouterr()
    status = infer_job.main(
        ["--model_dir", "m", "--input_dir", str(tmp_path / "nope"), "--dataset", "pet"]
        + ["--output_dir", str(tmp_path / "o")]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "nope does not exist" in lines[0] and not (tmp_path / "o").exists()
    usage = " ".join(infer_options.parser().format_usage().split())
    assert "--model_dir DIR {--input GLOB | --input_dir SRC} --output_dir DIR [options]" in usage, usage


def test_listed_gs_inputs_inside_the_output_folders_are_refused():
    # --input_dir on gs:// lists its images on the launcher: their folders are checked as gs:// paths.
    listed = MatchedInputs(["gs://bucket/out/masks/a.jpg"], [], [])
    with pytest.raises(InputError, match="--input gs://bucket/out/masks is inside gs://bucket/out/masks"):
        check_output_dir(listed, "gs://bucket/out", "gs://bucket/job/model")
    check_output_dir(listed, "gs://bucket/other", "gs://bucket/job/model")


def test_an_output_dir_among_the_images_it_reads_is_refused(tmp_path):
    src = tmp_path / "pet"
    _pet(src)
    with pytest.raises(InputError, match="is inside .*images, whose images this run reads"):
        dataset_inputs(str(src), "pet", None, str(src / "images" / "out"))
    with pytest.raises(InputError, match="no pet images of split test under"):
        for example in (src / "annotations" / "test.txt").read_text().split("\n"):
            if example:
                _remove(src, example.split()[0])
        dataset_inputs(str(src), "pet", "test", str(tmp_path / "out"))


@pytest.mark.slow
def test_infer_of_the_test_split_then_evaluate_of_it_scores_every_image(pet_job_dir, tmp_path, capsys):
    src = tmp_path / "pet"
    _, test = _pet(src)
    _remove(src, test[0])
    out = tmp_path / "out"
    common = ["--model_dir", str(pet_job_dir / "model"), "--input_dir", str(src), "--dataset", "pet"]
    capsys.readouterr()
    assert infer_job.main([*common, "--split", "test", "--output_dir", str(out), *BEAM]) == 0
    printed = capsys.readouterr().out
    assert "1 id of the split has no image (summary.json: ids_without_image)" in printed, printed
    assert sorted(p.stem for p in (out / "masks").iterdir()) == sorted(test[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "test" and summary["ids_without_image"] == [test[0]]
    assert summary["input_dir"] == str(src) and summary["images_written"] == len(test) - 1

    assert (
        evaluate_job.main(
            ["--predictions", str(out / "masks"), "--ground_truth", str(src), "--dataset", "pet", "--split", "test"]
            + ["--output_file", str(tmp_path / "evaluation.json"), *BEAM]
        )
        == 0
    )
    scored = json.loads((tmp_path / "evaluation.json").read_text())
    assert scored["images"] == len(test) - 1 and scored["missing_predictions"] == 0
    assert scored["predictions_outside_split"] == 0 and scored["unmatched_predictions"] == 0

    # A split Pet does not have: one line, exit 2, nothing written.
    capsys.readouterr()
    assert infer_job.main([*common, "--split", "val", "--output_dir", str(tmp_path / "o2"), *BEAM]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Pet's own splits are test and trainval" in lines[0], lines
    assert not (tmp_path / "o2").exists()

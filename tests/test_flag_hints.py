"""A mistyped command line gets one line that says what to type instead: an unquoted glob the shell expanded,
a choice close to a real one, a stray value, a bad value of a Beam option."""

from __future__ import annotations

import re

import pytest

from pipelines.common import flags
from pipelines.infer import job as infer
from pipelines.preprocess import PreprocessConfig, job as preprocess
from schemas.errors import UsageError
from tests.fixtures import probe
from trainer import task


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def expanded_glob(tmp_path) -> list[str]:
    """What the shell makes of ``tmp_path/images/*.jpg`` unquoted: every matching path, sorted."""
    images = tmp_path / "images"
    images.mkdir()
    paths = [images / f"cat_{i}.jpg" for i in range(40)]
    for path in paths:
        path.write_bytes(b"")
    return [str(p) for p in paths]


def test_an_unquoted_glob_is_named_with_its_quoted_form(expanded_glob, tmp_path, capsys):
    code = infer.main(["--model_dir", str(tmp_path / "m"), "--input", *expanded_glob, "--output_dir", str(tmp_path)])
    err = _one_line(capsys)
    assert code == 2
    assert "your shell expanded the glob; quote it: --input '" + str(tmp_path / "images") + "/*.jpg'" in err, err
    assert "takes one value but got 40 paths (cat_0.jpg, cat_1.jpg and 38 more)" in err, err  # not 40 listed
    # The trainer's folder flags too, and before any missing required flag is reported.
    assert task.main(["--data_dir", *expanded_glob[:3]]) == 2
    err = _one_line(capsys)
    assert "quote it: --data_dir '" + str(tmp_path / "images") + "/*.jpg'" in err, err


def test_a_value_no_flag_takes_is_refused_first(tmp_path, capsys):
    argv = ["--dataset", "pet", "--input_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out")]
    assert preprocess.main([*argv, "oops", "--image_size", "32"]) == 2
    err = _one_line(capsys)
    assert "unexpected value 'oops'" in err and "every value follows its flag" in err, err
    assert "required" not in err


@pytest.mark.parametrize(
    "main, argv, hint",
    [
        (
            preprocess.main,
            ["--dataset", "pets"],
            "got 'pets' (did you mean pet?)",
        ),
        (task.main, ["--model", "unnet"], "got 'unnet' (did you mean unet?)"),
        (task.main, ["--model", "UNET"], "got 'UNET' (did you mean unet?)"),
        (task.main, ["--loss", "dice_ce"], "got 'dice_ce' (did you mean ce_dice?)"),
    ],
)
def test_a_choice_close_to_a_real_one_is_suggested(main, argv, hint, tmp_path, capsys):
    required = {
        preprocess.main: ["--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--image_size", "32"],
        task.main: ["--data_dir", str(tmp_path), "--job_dir", str(tmp_path / "j"), "--model", "unet"],
    }[main]
    assert main([*required, *argv]) == 2
    err = _one_line(capsys)
    assert hint in err, err


def test_a_config_built_in_python_gets_the_same_suggestion(tmp_path):
    config = PreprocessConfig(
        dataset="pets", input_dir=str(tmp_path), output_dir=str(tmp_path / "o"), image_size=(32, 32)
    )
    with pytest.raises(UsageError, match=r"got 'pets' \(did you mean pet\?\)"):
        preprocess.run(config)


def test_a_bad_value_of_a_beam_option_is_one_line_without_beams_usage(capsys):
    with pytest.raises(UsageError) as refused:
        flags.check_beam_argv(["--runner", "DirectRunner", "--dry_run"], "python -m pipelines.preprocess")
    assert str(refused.value).startswith("invalid Beam option: argument --dry_run: expected one argument")
    assert capsys.readouterr().err == ""  # argparse would print Beam's 150-line usage here


@pytest.mark.parametrize(
    "given, expected",
    [
        ("missing", "no input files: --input_dir {root}/missing does not exist; check --input_dir"),
        (
            "pet/images",
            "--input_dir {root}/pet/images is the images folder itself; use its parent, the dataset's root: "
            "--input_dir {root}/pet",
        ),
        (
            "pet/images/more",
            "--input_dir {root}/pet/images/more is inside the images folder; use the dataset's root: "
            "--input_dir {root}/pet",
        ),
        ("pet/images/cat_1.jpg", "is a file, not the dataset's folder; check --input_dir"),
        ("other", "--input_dir {root}/other has no images/ folder (expected pet layout: images/<Breed_N>.jpg)"),
        ("empty", "no input files under {root}/empty (expected pet layout: images/<Breed_N>.jpg); check --input_dir"),
    ],
)
def test_a_wrong_input_dir_is_a_data_error_found_before_beam_and_tensorflow_load(given, expected, tmp_path):
    (tmp_path / "pet" / "images" / "more").mkdir(parents=True)
    (tmp_path / "pet" / "images" / "cat_1.jpg").write_bytes(b"")
    (tmp_path / "other").mkdir()
    (tmp_path / "empty" / "images" / "none").mkdir(parents=True)  # folders, no file
    argv = ["--dataset", "pet", "--input_dir", str(tmp_path / given), "--output_dir", str(tmp_path / "out")]
    found = probe.run_module("pipelines.preprocess", [*argv, "--image_size", "32"])
    assert found.code == 1 and len(found.stderr) == 1, found
    assert expected.format(root=tmp_path) in found.stderr[0], found.stderr
    assert found.loaded == "[]" and found.seconds < 1.0, found


@pytest.mark.parametrize(
    "module, required",
    [
        ("pipelines.preprocess", ["--dataset", "--input_dir", "--output_dir", "--image_size"]),
        ("pipelines.infer", ["--model_dir", "--input", "--input_dir", "--output_dir"]),
        ("pipelines.evaluate", ["--predictions", "--ground_truth", "--dataset"]),
        ("trainer.task", ["--data_dir", "--model", "--job_dir"]),
    ],
)
def test_help_shows_the_required_flags_first_then_common_then_advanced_options(module, required, capsys):
    import importlib

    main = importlib.import_module("trainer.task" if module == "trainer.task" else f"{module}.job").main
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    sections = [line for line in out.splitlines() if re.fullmatch(r"[a-z ]+:", line)]  # argparse's group titles
    assert sections == ["required:", "options:", "advanced options:", "logging:"], sections
    intro = out.split("\nrequired:\n")[0]
    assert len([line for line in intro.splitlines() if line.strip()]) <= 6, intro  # title and example, no notes
    listed = out.split("\nrequired:\n")[1].split("\noptions:\n")[0]
    assert [line.split()[0] for line in listed.splitlines() if line.startswith("  --")] == required
    advanced = out.split("\nadvanced options:\n")[1].split("\nlogging:\n")[0]
    assert "--epochs" not in advanced and "--instances" not in advanced and "--num_shards" not in advanced

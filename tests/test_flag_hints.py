"""A mistyped command line gets one line that says what to type instead: an unquoted glob the shell expanded,
a choice close to a real one, a stray value, a bad value of a Beam option."""

from __future__ import annotations

import pytest

from pipelines.common import flags
from pipelines.infer import job as infer
from pipelines.preprocess import PreprocessConfig, job as preprocess
from schemas.errors import UsageError
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
            "--dataset must be one of pet, cityscapes, got 'pets' (did you mean pet?)",
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

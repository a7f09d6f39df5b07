"""Named training recipes (--preset) and the warning for a network sized for accelerators on a CPU."""

from __future__ import annotations

import json
import logging

import pytest

from trainer import callbacks, presets, task
from trainer.config import TrainConfig, UsageError


def test_a_preset_sets_its_recipe_and_every_flag_given_overrides_it():
    config = task.from_args(["--data_dir", "d", "--job_dir", "j", "--preset", "pet_cpu", "--epochs", "3"])
    recipe = presets.PRESETS["pet_cpu"].values
    assert config.preset == "pet_cpu" and config.epochs == 3  # the flag given wins
    for name, value in recipe.items():
        if name != "epochs":
            assert getattr(config, name) == value, name
    # --model is required only without a preset, and a preset's model can be overridden too.
    with pytest.raises(UsageError, match="required: --model"):
        task.from_args(["--data_dir", "d", "--job_dir", "j"])
    assert (
        task.from_args(["--data_dir", "d", "--job_dir", "j", "--preset=pet_cpu", "--model", "fcn8s"]).model == "fcn8s"
    )
    # A switch the preset turns on is turned off by --no_NAME (listed in --help, "default: on" on the switch).
    off = task.from_args(["--data_dir", "d", "--job_dir", "j", "--preset", "pet_cpu", "--no_augment"])
    assert recipe["augment"] is True and off.augment is False and off.test_time_flip is recipe["test_time_flip"]
    shown = task.build_parser("pet_cpu").format_help()
    assert "--no_augment" in shown and "turn --augment off" in shown
    # From Python, the same.
    assert TrainConfig.from_preset("pet_gpu", data_dir="d", job_dir="j", epochs=2) == task.from_args(
        ["--data_dir", "d", "--job_dir", "j", "--preset", "pet_gpu", "--epochs", "2"]
    )


def test_an_unknown_preset_names_the_closest(capsys):
    assert task.main(["--data_dir", "d", "--job_dir", "j", "--preset", "pets_cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("got 'pets_cpu' (did you mean pet_cpu?) (see python -m trainer.task --help)"), err
    with pytest.raises(UsageError, match=r"did you mean cityscapes_gpu\?"):
        TrainConfig.from_preset("cityscape_gpu", data_dir="d", job_dir="j")


def test_help_lists_each_preset_on_a_line_of_its_own(capsys):
    assert task.main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = out.split("\npresets (--preset NAME; any flag given overrides the preset's value):\n")[1]
    starts = [line.split(":")[0].strip() for line in listed.splitlines() if line.startswith("  ") and ":" in line]
    assert [s for s in starts if s in presets.PRESETS] == list(presets.PRESETS)


@pytest.mark.slow
def test_job_config_records_the_preset_and_a_large_network_on_a_cpu_is_named_with_its_time_per_step(
    pet_records_dir, tmp_path, monkeypatch, caplog
):
    """The resolved values reach JOB/config.json. With the size threshold lowered to 0, this tiny network counts
    as large: one warning after a few steps, with the measured time per step and the preset to use."""
    from trainer import run

    monkeypatch.setattr(callbacks, "LARGE_FOR_CPU_PARAMETERS", 0)
    caplog.set_level(logging.WARNING, logger="trainer.callbacks")
    config = TrainConfig.from_preset(
        "pet_cpu",
        data_dir=str(pet_records_dir),
        job_dir=str(tmp_path / "job"),
        base_filters=4,
        depth=2,
        epochs=1,
        batch_size=2,
        warmup_steps=0,
        checkpoint_steps=0,
        verbose=0,
    )
    run(config)
    saved = json.loads((tmp_path / "job" / "config.json").read_text())
    assert saved["preset"] == "pet_cpu" and saved["augment"] is True and saved["loss"] == "ce_dice"
    assert saved["lr_schedule"] == "cosine" and saved["base_filters"] == 4 and saved["epochs"] == 1
    warned = [r.getMessage() for r in caplog.records if "trains on a CPU" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "unet has 0.0 M parameters" in warned[0] and " s per step (measured over 4 steps)" in warned[0]
    assert "min per epoch of 9 steps; --preset pet_cpu trains a model sized for a CPU" in warned[0]

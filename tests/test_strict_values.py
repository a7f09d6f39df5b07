"""NaN and infinity: no float flag takes them, and no JSON segflow writes holds them.

Every comparison with NaN is false, so a range check alone lets ``--learning_rate nan`` through; and Python's
``json`` writes a bare ``NaN`` that strict readers (jq, ``JSON.parse``, BigQuery) reject.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from schemas import errors


def _strict(text: str):
    """``text`` parsed as strict JSON: a bare NaN/Infinity fails the test."""
    return json.loads(text, parse_constant=lambda constant: pytest.fail(f"non-strict JSON constant {constant}"))


def _mains() -> dict:
    from pipelines.preprocess import job as preprocess
    from trainer import launch, task

    return {"pipelines.preprocess": preprocess.main, "trainer.task": task.main, "trainer.launch": launch.main}


REQUIRED = {
    "pipelines.preprocess": ["--dataset", "pet", "--input_dir", "in", "--output_dir", "out", "--image_size", "32"],
    "trainer.task": ["--data_dir", "d", "--model", "unet", "--job_dir", "j"],
    "trainer.launch": [
        *("--project", "segflow-demo", "--image_uri", "img", "--data_dir", "gs://b/d"),
        *("--model", "unet", "--job_dir", "gs://b/j"),
    ],
}
# Every float flag of every program (infer and evaluate have none), with and without a range.
FLOAT_FLAGS = [
    ("trainer.task", "--learning_rate"),
    ("trainer.task", "--alpha"),
    ("trainer.task", "--weight_decay"),
    ("trainer.task", "--batch_norm_momentum"),
    ("trainer.task", "--max_int8_drop"),
    ("pipelines.preprocess", "--val_fraction"),
    ("pipelines.preprocess", "--test_fraction"),
    ("trainer.launch", "--timeout_hours"),
]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "infinity"])
@pytest.mark.parametrize(("module", "flag"), FLOAT_FLAGS)
def test_a_float_flag_refuses_nan_and_infinity_in_one_line(module, flag, value, capsys):
    assert _mains()[module](REQUIRED[module] + [f"{flag}={value}"]) == 2  # "=": argparse reads "-inf" as a flag
    assert capsys.readouterr().err.splitlines() == [
        f"{module}: error: {flag} takes a finite number, got {float(value)} (see python -m {module} --help)"
    ]


def test_every_float_flag_is_listed_above():
    """A float flag added later is checked by the same rule (``flag_parser.Parser.add_flag``); this list only
    keeps the test above covering them all."""
    from pipelines.evaluate import options as evaluate_options
    from pipelines.infer import options as infer_options
    from pipelines.preprocess import job as preprocess
    from trainer import launch, task

    parsers = {
        "pipelines.preprocess": preprocess.build_arg_parser(),
        "pipelines.infer": infer_options.parser(),
        "pipelines.evaluate": evaluate_options.parser(),
        "trainer.task": task.build_parser(),
        "trainer.launch": launch.build_parser(),
    }
    found = set()
    for module, parser in parsers.items():
        for action in parser._actions:
            if getattr(action.type, "__name__", None) == "float":
                found.add((module, action.option_strings[0]))
    assert found == set(FLOAT_FLAGS)


def test_a_float_field_built_in_python_refuses_nan():
    from trainer.config import TrainConfig

    config = TrainConfig(data_dir="d", model="unet", job_dir="j", learning_rate=float("nan"))
    with pytest.raises(errors.UsageError, match="--learning_rate takes a finite number, got nan"):
        config.validate()


@pytest.mark.parametrize("weights", ["1,nan", "inf,1", "1,-inf"])
def test_class_weights_refuse_nan_and_infinity(weights):
    from trainer.config import TrainConfig

    config = TrainConfig(data_dir="d", model="unet", job_dir="j", class_weights=weights)
    with pytest.raises(errors.UsageError, match="--class_weights takes finite numbers"):
        config.validate()


def test_a_float_flag_still_takes_a_finite_number():
    from trainer import task

    argv = ["--data_dir", "d", "--model", "unet", "--job_dir", "j", "--learning_rate", "1e-2"]
    assert task.config_from_args(argv).learning_rate == pytest.approx(0.01)


# ------------------------------------------------------------------------------------------------ strict JSON
def test_a_report_writes_an_absent_figure_as_null():
    from schemas import strict_json

    text = strict_json.dumps(
        {"loss": float("nan"), "miou": float("inf"), "per_class_iou": {"cat": float("-inf"), "dog": 0.5}},
        absent_as_null=True,
    )
    assert _strict(text) == {"loss": None, "miou": None, "per_class_iou": {"cat": None, "dog": 0.5}}


def test_a_non_finite_value_elsewhere_is_refused_naming_where():
    from schemas import strict_json

    with pytest.raises(strict_json.NonFiniteError, match=r"metadata.json not written: its stats.channel_std\[1\] is"):
        strict_json.dumps({"stats": {"channel_std": [1.0, float("nan")]}}, what="metadata.json")
    assert strict_json.NonFiniteError.exit_code == 1 and issubclass(strict_json.NonFiniteError, errors.SegflowError)


def test_the_trainer_writes_metrics_with_nan_as_null(tmp_path):
    from trainer import job_folder

    path = tmp_path / "metrics.json"
    figures = {"loss": float("nan"), "miou": 0.25, "per_class_iou": {"b": float("nan"), "a": 1.0}}
    job_folder.write_json(str(path), figures)
    text = path.read_text()
    doc = _strict(text)
    assert doc == {"loss": None, "miou": 0.25, "per_class_iou": {"b": None, "a": 1.0}}
    assert list(doc["per_class_iou"]) == ["b", "a"]  # insertion order kept: class names stay in id order


def test_metadata_json_refuses_nan_rather_than_writing_it():
    from schemas import strict_json
    from schemas.metadata import DatasetMetadata, DatasetStats

    metadata = DatasetMetadata(
        dataset="pet",
        label_mode="trimap",
        num_classes=3,
        class_names=["a", "b", "c"],
        ignore_label=255,
        image_size=[8, 8],
        resize_mode="stretch",
        image_format="png",
        counts={"train": 1},
        source_counts={"train": 1},
        dead_letter_count=0,
        inputs_seen=1,
        stats=DatasetStats([1.0, 2.0, 3.0], [1.0, float("nan"), 1.0], [1, 2, 3], [0.1, 0.2, 0.7], [1.0, 1.0, 1.0]),
    )
    with pytest.raises(strict_json.NonFiniteError, match="metadata.json"):
        metadata.to_json()
    finite = dataclasses.replace(metadata, stats=dataclasses.replace(metadata.stats, channel_std=[1.0, 1.0, 1.0]))
    assert DatasetMetadata.from_json(_strict_text(finite.to_json())) == finite


def _strict_text(text: str) -> str:
    _strict(text)
    return text


def test_storage_write_json_refuses_nan(tmp_path):
    from pipelines.common import storage
    from schemas import strict_json

    with pytest.raises(strict_json.NonFiniteError, match="summary.json"):
        storage.write_json(str(tmp_path / "summary.json"), {"images_written": 1, "seconds": float("nan")})
    assert not (tmp_path / "summary.json").exists()
    storage.write_json(str(tmp_path / "summary.json"), {"images_written": 1})
    assert _strict((tmp_path / "summary.json").read_text()) == {"images_written": 1}

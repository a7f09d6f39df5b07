"""``schemas.model_contract``: the trainer's export writes exactly what inference reads, and inference refuses a
model of another contract in one line."""

import dataclasses
import json

import pytest

from pipelines.shared.cli import error_line
from schemas.errors import DataError
from schemas.labels import spec_for
from schemas.model_contract import MODEL_FORMAT_VERSION, MODEL_INFO_FILE, SIGNATURES, ModelContractError, ModelInfo

PET = spec_for("pet", "trimap")


def _info(**changes) -> ModelInfo:
    fields = dict(
        dataset="pet",
        label_mode="trimap",
        num_classes=3,
        class_names=list(PET.class_names),
        ignore_label=255,
        image_size=[32, 48],
        resize_mode="stretch",
        model="tiny",
    )
    fields.update(changes)
    return ModelInfo(**fields)


def test_model_info_round_trips_through_json():
    info = _info()
    text = info.to_json()
    assert json.loads(text)["format_version"] == MODEL_FORMAT_VERSION
    assert ModelInfo.from_json(text) == info
    assert ModelInfo.from_json(text).to_json() == text


def test_an_info_file_from_before_versions_is_version_1():
    """Exports written before ``format_version`` existed hold the same fields and signatures: they keep working."""
    raw = json.loads(_info().to_json())
    del raw["format_version"]
    assert ModelInfo.from_json(json.dumps(raw)) == _info()


@pytest.mark.parametrize(
    "case", ["version_0", "other_version", "missing_field", "unknown_field", "not_json", "bad_names"]
)
def test_a_mismatched_info_file_is_refused_in_one_line(case):
    raw = json.loads(_info().to_json())
    if case == "version_0":
        raw["format_version"] = 0
    elif case == "other_version":
        raw["format_version"] = MODEL_FORMAT_VERSION + 1
    elif case == "missing_field":
        del raw["resize_mode"]
    elif case == "unknown_field":
        raw["colour"] = "blue"
    elif case == "bad_names":
        raw["class_names"] = ["only one"]
    text = "{not json" if case == "not_json" else json.dumps(raw)
    with pytest.raises(ModelContractError) as err:
        ModelInfo.from_json(text, where="JOB/model/segflow_model.json")
    message = str(err.value)
    assert "\n" not in message and "JOB/model/segflow_model.json" in message
    expected = {
        "version_0": "version 0,",
        "other_version": f"version {MODEL_FORMAT_VERSION + 1}",
        "missing_field": "lacks ['resize_mode']",
        "unknown_field": "unknown fields ['colour']",
        "not_json": "is not JSON",
        "bad_names": "1 class_names for 3 classes",
    }[case]
    assert expected in message


def test_infer_refuses_an_info_file_of_another_version_in_one_line(tmp_path):
    from pipelines import infer

    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")
    (model / MODEL_INFO_FILE).write_text(json.dumps(dict(dataclasses.asdict(_info()), format_version=2)))
    with pytest.raises(DataError) as err:  # main() prints it as one line, exit 1
        infer.run(
            infer.InferConfig(model_dir=str(model), input=[str(tmp_path / "*.jpg")], output_dir=str(tmp_path / "out"))
        )
    message = error_line("pipelines.infer", err.value)
    assert "\n" not in message and message.startswith("pipelines.infer: error: ")
    assert (
        f"{model / MODEL_INFO_FILE} is model format version 2, this segflow reads version 1" in message
        and "trainer" in message
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_trainer_export_writes_exactly_what_infer_reads(tmp_path):
    """A model exported by ``trainer.export`` (an untrained network: the contract is about the interface) is read
    by ``pipelines.infer.model`` as the same ``ModelInfo``, and its signatures pass the contract check."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from pipelines.infer.model import SegflowModel, read_model_info
    from schemas.metadata import DatasetMetadata
    from trainer import export
    from trainer.data_dir import DatasetInfo

    meta = DatasetMetadata(
        dataset="pet",
        label_mode="trimap",
        num_classes=3,
        class_names=list(PET.class_names),
        ignore_label=255,
        image_size=[32, 48],
        resize_mode="stretch",
        image_format="png",
        counts={},
        source_counts={},
        dead_letter_count=0,
        inputs_seen=0,
    )
    images = keras.Input((32, 48, 3), dtype="uint8")
    logits = keras.layers.Conv2D(3, 1)(keras.layers.Lambda(lambda x: tf.cast(x, tf.float32) / 255.0)(images))
    export_dir = str(tmp_path / "model")
    export.export_model(keras.Model(images, logits), DatasetInfo(str(tmp_path), meta, {}, None), export_dir, "tiny")

    written = ModelInfo.from_json((tmp_path / "model" / MODEL_INFO_FILE).read_text())
    assert written == _info() == read_model_info(export_dir)
    model = SegflowModel(export_dir)  # checks every signature against SIGNATURES
    assert model.info == written
    loaded = tf.saved_model.load(export_dir).signatures
    assert set(loaded) == set(SIGNATURES)
    for name, contract in SIGNATURES.items():
        assert tuple(sorted(loaded[name].structured_input_signature[1])) == tuple(sorted(contract.input_names))
        assert set(loaded[name].structured_outputs) == set(contract.output_names)
    ids, _ = model.postprocess(model.predict_resized(np.zeros((1, 32, 48, 3), np.uint8))[0], 20, 30, False)
    assert ids.shape == (20, 30)


def test_signature_check_names_what_differs(tmp_path):
    """A SavedModel whose signatures are not the contract's (here: an output renamed) is refused in one line."""
    import tensorflow as tf

    from schemas import model_contract

    class Renamed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def preprocess(self, image_bytes):
            return {"pixels": tf.zeros([32, 48, 3], tf.uint8), "height": tf.constant(1), "width": tf.constant(1)}

    module = Renamed()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"preprocess": module.preprocess})
    signatures = dict(tf.saved_model.load(str(tmp_path / "m")).signatures)
    with pytest.raises(ModelContractError) as err:
        model_contract.check_signatures(signatures, _info(), "M")
    assert "\n" not in str(err.value) and "'predict_resized'" in str(err.value)
    for name in ("predict_resized", "postprocess", "serving_default"):
        signatures[name] = signatures["preprocess"]  # present, but with preprocess's tensors
    with pytest.raises(ModelContractError) as err:
        model_contract.check_signatures(signatures, _info(), "M")
    assert "\n" not in str(err.value) and "signature 'preprocess' outputs" in str(err.value)
    assert "'pixels'" in str(err.value)

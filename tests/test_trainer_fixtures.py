"""The model fixtures other areas build on export what the serving interface promises."""

import json

import numpy as np
import tensorflow as tf


def test_pet_job_dir_exports_a_serving_model(pet_job_dir):
    model_dir = pet_job_dir / "model"
    info = json.loads((model_dir / "segflow_model.json").read_text())
    assert info["num_classes"] == 3 and info["image_size"] == [32, 32] and info["model"] == "unet"
    loaded = tf.saved_model.load(str(model_dir))
    assert {"serving_default", "preprocess", "predict_resized", "postprocess"} <= set(loaded.signatures)
    metrics = json.loads((pet_job_dir / "metrics.json").read_text())
    assert set(metrics["per_class_iou"]) == {"pet", "background", "border"}
    assert 0.0 <= metrics["miou"] <= 1.0


def test_cityscapes_job_dir_has_19_classes(cityscapes_job_dir):
    info = json.loads((cityscapes_job_dir / "model" / "segflow_model.json").read_text())
    assert info["num_classes"] == 19 and info["image_size"] == [32, 64] and info["dataset"] == "cityscapes"
    loaded = tf.saved_model.load(str(cityscapes_job_dir / "model"))
    probs = loaded.signatures["predict_resized"](images=tf.zeros([1, 32, 64, 3], tf.uint8))["probabilities"]
    assert probs.shape == (1, 32, 64, 19)
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, rtol=1e-5)


def test_export_saves_the_signatures_and_weights_not_keras_objects(pet_job_dir):
    """The SavedModel holds the signatures' graphs and the weights only: no Keras layer objects and no traced
    call function per layer, which made the file 3x larger and loading it 4x slower in every inference process."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((pet_job_dir / "model" / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0]
    functions = [f.signature.name for f in graph.graph_def.library.function]
    assert not [name for name in functions if "layer_call" in name]
    assert not [node for node in graph.object_graph_def.nodes if node.user_object.identifier.startswith("_tf_keras")]
    loaded = tf.saved_model.load(str(pet_job_dir / "model"))
    assert len(loaded.model_variables) > 0

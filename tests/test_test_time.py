"""``--test_time_flip``: the exported model's probabilities are the mean of each image's and its mirror image's
(mirrored back), in the SavedModel's signatures; ``--batch_norm_momentum`` reaches the networks' batch norms."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from tests.fixtures.model import TINY_UNET


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_flip_averaged_logits_are_the_log_of_the_mean_probabilities():
    import tf_keras as keras

    from trainer.models import build_model
    from trainer.test_time import flip_averaged

    keras.utils.set_random_seed(3)
    network = build_model("unet", (16, 16, 3), 3, base_filters=4, depth=2)
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    straight = _softmax(network(images).numpy())
    mirrored = _softmax(network(images[:, :, ::-1]).numpy())[:, :, ::-1]
    averaged = flip_averaged(network)
    assert averaged.count_params() == network.count_params()  # the same weights, shared
    np.testing.assert_allclose(_softmax(averaged(images).numpy()), 0.5 * (straight + mirrored), atol=1e-6)
    assert not np.allclose(straight, mirrored, atol=1e-3)  # the check above can tell the two apart


def test_batch_norm_momentum_reaches_every_batch_norm():
    from tf_keras import layers

    from trainer.models import build_model

    for name in ("unet", "deeplabv3plus"):
        model = build_model(name, (32, 32, 3), 3, base_filters=4, depth=2, batch_norm_momentum=0.9)
        norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
        assert norms and {layer.momentum for layer in norms} == {0.9}, name


@pytest.mark.slow
def test_the_export_serves_the_flip_averaged_probabilities(pet_job_dir, pet_records_dir, tmp_path):
    import tensorflow as tf

    from trainer import TrainConfig, run

    job = tmp_path / "job"
    shutil.copytree(pet_job_dir, job)  # its training is finished: the rerun only exports again
    run(TrainConfig(data_dir=str(pet_records_dir), job_dir=str(job), **{**TINY_UNET, "test_time_flip": True}))
    assert json.loads((job / "config.json").read_text())["test_time_flip"] is True

    plain = tf.saved_model.load(str(pathlib.Path(pet_job_dir) / "model")).signatures["predict_resized"]
    flipped = tf.saved_model.load(str(job / "model")).signatures["predict_resized"]
    size = json.loads((job / "model" / "segflow_model.json").read_text())["image_size"]
    images = np.random.default_rng(1).integers(0, 256, size=(2, *size, 3), dtype=np.uint8)
    straight = plain(images=tf.constant(images))["probabilities"].numpy()
    mirrored = plain(images=tf.constant(images[:, :, ::-1]))["probabilities"].numpy()[:, :, ::-1]
    served = flipped(images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(served, 0.5 * (straight + mirrored), atol=1e-5)
    assert not np.allclose(served, straight, atol=1e-4)

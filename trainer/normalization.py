"""The tensorflow-transform normalisation as the first layer of the model (training and serving alike).

The input pipeline delivers raw uint8 images; the Keras model that is trained, evaluated and exported is
``TransformNormalization`` (the very graph preprocess wrote to ``DST/transform_fn``) → network. So training and
serving apply the same transform graph, and the normalisation runs where the model runs (on the accelerator
when there is one) instead of in ``tf.data`` on the CPU, where the tft call cost more than decoding.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from schemas import transform as transform_lib


def normalize(transform_layer, images: tf.Tensor) -> tf.Tensor:
    """uint8/float ``[B, H, W, 3]`` 0..255 → float32 ``[B, H, W, 3]`` normalised by the tft graph.

    Only the image is fed (serving has no label); tensorflow-transform fills the label input with a
    placeholder and we keep the image output only.
    """
    out = transform_layer({transform_lib.RAW_IMAGE: tf.cast(images, tf.float32)})
    return out[transform_lib.OUT_IMAGE]


class TransformNormalization(keras.layers.Layer):
    """Keras layer: raw 0..255 images (any real or integer dtype) → tft-normalised float32 images.

    ``transform_output_dir``: the preprocess output holding ``transform_fn/`` (``DST``, local or gs://). The
    layer loads that graph itself, so its config is just the directory: Keras can serialise the model (e.g.
    TensorBoard's graph summary) and rebuild the layer from its config. It has no weights of its own, so
    checkpoints and ``get_weights`` of a wrapped model are those of the network alone.
    """

    def __init__(self, transform_output_dir: str, **kwargs):
        import tensorflow_transform as tft

        # float32 whatever the global policy: the network's first layer casts to float16 when mixed.
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.transform_output_dir = transform_output_dir
        self.transform_layer = tft.TFTransformOutput(transform_output_dir).transform_features_layer()

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return normalize(self.transform_layer, images)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "transform_output_dir": self.transform_output_dir}


def with_transform(network: keras.Model, transform_output_dir: str, image_shape: Sequence[int]) -> keras.Model:
    """The model that is trained and exported: uint8 ``[B, H, W, 3]`` → tft normalisation (the graph in
    ``transform_output_dir``/transform_fn) → ``network``'s logits. The network keeps its own identity
    (``model.get_layer(network.name)``), so its weights can be checkpointed, copied and restored on their own."""
    inputs = keras.Input(shape=tuple(image_shape), dtype=tf.uint8, name="raw_image")
    normalised = TransformNormalization(transform_output_dir, name="transform")(inputs)
    logits = network(normalised)
    return keras.Model(inputs, logits, name=f"{network.name}_with_transform")

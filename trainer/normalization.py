"""The model's input convention as its first layer (training and serving alike): the tensorflow-transform
normalisation for networks trained from scratch, a pretrained encoder's own convention otherwise.

The input pipeline delivers raw uint8 images; the Keras model that is trained, evaluated and exported is
``TransformNormalization`` (the very graph preprocess wrote to ``DST/transform_fn``) → network. So training and
serving apply the same transform graph, and the normalisation runs where the model runs (on the accelerator
when there is one) instead of in ``tf.data`` on the CPU, where the tft call cost more than decoding.

An ImageNet-pretrained encoder was trained on inputs normalised its own way (MobileNetV2: [-1, 1]; VGG16: BGR
minus the ImageNet means), so a network built on one gets that convention (``EncoderInputConvention``) in
place of the tft graph: the same raw bytes in, no skew, and the dataset statistics still computed by
preprocess (they feed ``--class_weights auto`` and the reports).
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


class EncoderInputConvention(keras.layers.Layer):
    """Keras layer: raw 0..255 images → float32 in a pretrained encoder's input convention, with Keras' own
    ``preprocess_input`` of that application (``mobilenetv2``: x / 127.5 - 1; ``vgg16``: RGB → BGR minus the
    ImageNet channel means). No weights; its config is the convention's name."""

    def __init__(self, convention: str, **kwargs):
        if convention not in ENCODER_CONVENTIONS:
            raise ValueError(f"unknown input convention {convention!r}; one of {', '.join(ENCODER_CONVENTIONS)}")
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.convention = convention

    def call(self, images: tf.Tensor) -> tf.Tensor:
        images = tf.cast(images, tf.float32)
        if self.convention == "mobilenetv2":
            return keras.applications.mobilenet_v2.preprocess_input(images)
        return keras.applications.vgg16.preprocess_input(images)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "convention": self.convention}


ENCODER_CONVENTIONS = ("mobilenetv2", "vgg16")


def with_input_convention(
    network: keras.Model, convention: str, transform_output_dir: str, image_shape: Sequence[int]
) -> keras.Model:
    """The model that is trained and exported: uint8 ``[B, H, W, 3]`` → ``convention`` (``"tft"``: the graph in
    ``transform_output_dir``/transform_fn; or a pretrained encoder's, see ``EncoderInputConvention``) →
    ``network``'s logits. The network keeps its own identity (``model.get_layer(network.name)``), so its weights
    can be checkpointed, copied and restored on their own."""
    if convention == "tft":
        return with_transform(network, transform_output_dir, image_shape)
    inputs = keras.Input(shape=tuple(image_shape), dtype=tf.uint8, name="raw_image")
    normalised = EncoderInputConvention(convention, name=f"{convention}_input")(inputs)
    return keras.Model(inputs, network(normalised), name=f"{network.name}_with_{convention}_input")


def with_transform(network: keras.Model, transform_output_dir: str, image_shape: Sequence[int]) -> keras.Model:
    """The model that is trained and exported: uint8 ``[B, H, W, 3]`` → tft normalisation (the graph in
    ``transform_output_dir``/transform_fn) → ``network``'s logits. The network keeps its own identity
    (``model.get_layer(network.name)``), so its weights can be checkpointed, copied and restored on their own."""
    inputs = keras.Input(shape=tuple(image_shape), dtype=tf.uint8, name="raw_image")
    normalised = TransformNormalization(transform_output_dir, name="transform")(inputs)
    logits = network(normalised)
    return keras.Model(inputs, logits, name=f"{network.name}_with_transform")

"""FCN-8s (Long et al., 2015): a VGG16 encoder, score layers at pool3/pool4/pool5 fused by addition, and 2x, 2x,
8x transposed-conv upsampling initialised as bilinear interpolation.

Encoder layer names match ``keras.applications.VGG16`` (``block1_conv1`` … ``block5_conv3``), so
``--backbone_weights`` copies Keras' VGG16 weights in by name: ``imagenet`` (Keras' own download-and-cache) or
a local ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``. ``base_filters`` scales every width (64 = the
real VGG16). Pretrained, the network expects VGG16's input convention (``vgg16.preprocess_input``: BGR minus
the ImageNet means), which ``trainer.normalization`` puts in front of it.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

logger = logging.getLogger(__name__)

# (convs per block, width multiple of base_filters), VGG16's configuration.
VGG16_BLOCKS = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """A ``[size, size, channels, channels]`` Conv2DTranspose kernel that performs bilinear upsampling per channel."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    filt = (1 - abs(og[0] - centre) / factor) * (1 - abs(og[1] - centre) / factor)
    kernel = np.zeros((size, size, channels, channels), dtype=np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = filt
    return kernel


class BilinearInitializer(keras.initializers.Initializer):
    """Initialises a square Conv2DTranspose kernel (k, k, C, C) as bilinear upsampling."""

    def __call__(self, shape, dtype=None):
        return tf.constant(bilinear_kernel(int(shape[0]), int(shape[2])), dtype=dtype or tf.float32)

    def get_config(self):
        return {}


def vgg16_encoder(inputs, base_filters: int = 64):
    """VGG16 conv blocks; returns (pool3, pool4, pool5) at strides 8, 16, 32."""
    x, pools = inputs, []
    for b, (convs, mult) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, convs + 1):
            x = layers.Conv2D(base_filters * mult, 3, padding="same", activation="relu", name=f"block{b}_conv{c}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
        pools.append(x)
    return pools[2], pools[3], pools[4]


def build_fcn8s(
    input_shape: Sequence[int],
    num_classes: int,
    base_filters: int = 64,
    backbone_weights: Optional[str] = None,
    dropout: float = 0.5,
    name: str = "fcn8s",
) -> keras.Model:
    """FCN-8s on ``input_shape`` (H, W, 3) → logits ``[B, H, W, num_classes]``; H, W multiples of 32."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    pool3, pool4, pool5 = vgg16_encoder(inputs, base_filters)
    fc_width = base_filters * 64  # 4096 for the real VGG16
    # fc6/fc7 as convolutions (the "fully convolutional" part); 'same' padding keeps any input size valid.
    x = layers.Conv2D(fc_width, 7, padding="same", activation="relu", name="fc6")(pool5)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Conv2D(fc_width, 1, activation="relu", name="fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    score_fr = layers.Conv2D(num_classes, 1, name="score_fr")(x)

    def upsample(t, factor: int, layer_name: str):
        return layers.Conv2DTranspose(
            num_classes,
            2 * factor,
            strides=factor,
            padding="same",
            use_bias=False,
            kernel_initializer=BilinearInitializer(),
            name=layer_name,
        )(t)

    # Skip scores start at zero (as in the paper) so training begins from the coarse FCN-32s prediction.
    score_pool4 = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_pool4")(pool4)
    fuse4 = layers.Add(name="fuse_pool4")([upsample(score_fr, 2, "upscore2"), score_pool4])
    score_pool3 = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_pool3")(pool3)
    fuse3 = layers.Add(name="fuse_pool3")([upsample(fuse4, 2, "upscore_pool4"), score_pool3])
    logits = upsample(fuse3, 8, "upscore8")
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    model = keras.Model(inputs, logits, name=name)
    if backbone_weights:
        load_backbone_weights(model, backbone_weights, input_shape, base_filters)
    else:
        logger.info("fcn8s: VGG16 encoder randomly initialised (no --backbone_weights given)")
    return model


def load_backbone_weights(model: keras.Model, path: str, input_shape: Sequence[int], base_filters: int) -> None:
    """Copies VGG16 conv weights (``"imagenet"`` or a local Keras notop weights file) into ``model``'s encoder,
    by layer name."""
    if base_filters != 64:
        from trainer.models.weights import BackboneWeightsError

        raise BackboneWeightsError(
            "--backbone_weights holds the real VGG16 (64 base filters): drop --base_filters or set it to 64"
        )
    vgg = keras.applications.VGG16(include_top=False, weights=path, input_shape=tuple(input_shape))
    copied = 0
    for layer in vgg.layers:
        if layer.name.startswith("block") and layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    logger.info("fcn8s: loaded %d VGG16 encoder layers from %s", copied, path)

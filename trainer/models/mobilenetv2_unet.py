"""U-Net with a MobileNetV2 encoder, as in the TensorFlow segmentation tutorial (pix2pix upsampling decoder).

The encoder is ``keras.applications.MobileNetV2`` without its top, so ImageNet weights (``--backbone_weights
imagenet`` or a local ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_<rows>_no_top.h5``) load into it
unchanged. Its activations at strides 2, 4, 8, 16 and 32 (``block_1_expand_relu`` … ``block_16_project``) feed a
decoder of (3x3 stride-2 transposed conv → batch norm → ReLU) blocks, each concatenated with the next encoder
tap, and a last 3x3 stride-2 transposed conv to full-resolution logits.

The network expects MobileNetV2's input convention (pixels scaled to [-1, 1]); ``trainer.normalization`` puts
that in front of it, in the trained and the exported model alike.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import tf_keras as keras
from tf_keras import layers

logger = logging.getLogger(__name__)

ENCODER_TAPS = (
    "block_1_expand_relu",
    "block_3_expand_relu",
    "block_6_expand_relu",
    "block_13_expand_relu",
    "block_16_project",
)
ENCODER_NAME = "mobilenetv2_encoder"
BN_MOMENTUM = 0.9


def upsample_block(x, filters: int, name: str):
    """pix2pix ``upsample``: 3x3 stride-2 transposed conv (no bias: batch norm follows), batch norm, ReLU."""
    x = layers.Conv2DTranspose(
        filters,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
        name=f"{name}_up",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def mobilenetv2_encoder(input_shape: Sequence[int], alpha: float = 1.0, weights: Optional[str] = None) -> keras.Model:
    """MobileNetV2 (no top) as a model returning the five tap activations, shallowest first.

    ``weights``: None (random), ``"imagenet"`` (Keras' download-and-cache) or a local notop ``.h5``.
    """
    base = keras.applications.MobileNetV2(
        input_shape=tuple(input_shape), include_top=False, weights=weights, alpha=alpha
    )
    # MobileNetV2's batch norm keeps moving statistics with momentum 0.999: thousands of steps before they fit
    # a new dataset, so a short run validates (inference mode) with the statistics of its first steps (all
    # background on the bench's data from scratch). 0.9 (PyTorch's default) follows within tens of steps;
    # whatever the weights, since a resumed run builds the encoder without loading them and must behave the same.
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return keras.Model(base.input, [base.get_layer(n).output for n in ENCODER_TAPS], name=ENCODER_NAME)


def build_mobilenetv2_unet(
    input_shape: Sequence[int],
    num_classes: int,
    base_filters: int = 64,
    alpha: float = 1.0,
    backbone_weights: Optional[str] = None,
    name: str = "mobilenetv2_unet",
) -> keras.Model:
    """MobileNetV2 U-Net on ``input_shape`` (H, W, 3) images in [-1, 1] → logits ``[B, H, W, num_classes]``.

    H and W must be multiples of 32. Decoder widths are 8, 4, 2, 1 x ``base_filters`` (64: the tutorial's 512,
    256, 128, 64); ``alpha`` is MobileNetV2's width multiplier.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    encoder = mobilenetv2_encoder(input_shape, alpha, backbone_weights)
    *skips, x = encoder(inputs)
    for i, (skip, mult) in enumerate(zip(reversed(skips), (8, 4, 2, 1)), start=1):
        x = upsample_block(x, base_filters * mult, f"decoder{i}")
        x = layers.Concatenate(name=f"decoder{i}_concat")([x, skip])
    logits = layers.Conv2DTranspose(num_classes, 3, strides=2, padding="same", name="logits_up")(x)
    # Logits in float32 so the loss and softmax stay stable under a mixed-precision policy.
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    if backbone_weights:
        logger.info("mobilenetv2_unet: encoder weights from %s", backbone_weights)
    return keras.Model(inputs, logits, name=name)

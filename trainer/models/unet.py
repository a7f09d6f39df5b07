"""U-Net (Ronneberger et al., 2015) as in the seeds: double 3x3 conv blocks, max-pool down, transposed-conv up
with skip concatenation, a 1x1 logits head.

``base_filters`` and ``depth`` scale it from a laptop-CPU toy (e.g. 8 filters, depth 3) to the classic network
(64 filters, depth 4).
"""

from __future__ import annotations

from typing import Sequence

import tf_keras as keras
from tf_keras import layers


def conv_block(x, filters: int, name: str, batch_norm_momentum: float = 0.99):
    """(3x3 conv → batch norm → ReLU) twice; same spatial size. Bias is redundant before batch norm."""
    for i in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv{i}"
        )(x)
        x = layers.BatchNormalization(momentum=batch_norm_momentum, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def encoder_block(x, filters: int, name: str, batch_norm_momentum: float = 0.99):
    """Conv block, then 2x2 max-pool; returns (pooled, skip)."""
    skip = conv_block(x, filters, name, batch_norm_momentum)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(skip), skip


def decoder_block(x, skip, filters: int, name: str, batch_norm_momentum: float = 0.99):
    """2x2 stride-2 transposed conv, concatenation with the encoder's skip, conv block."""
    x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_up")(x)
    x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    return conv_block(x, filters, name, batch_norm_momentum)


def build_unet(
    input_shape: Sequence[int],
    num_classes: int,
    base_filters: int = 64,
    depth: int = 4,
    name: str = "unet",
    batch_norm_momentum: float = 0.99,
) -> keras.Model:
    """U-Net on ``input_shape`` (H, W, 3) normalised images → logits ``[B, H, W, num_classes]``.

    H and W must be multiples of ``2 ** depth``. Filters double at each level: base_filters * 2**level.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x, skips = inputs, []
    for level in range(depth):
        x, skip = encoder_block(x, base_filters * 2**level, f"enc{level + 1}", batch_norm_momentum)
        skips.append(skip)
    x = conv_block(x, base_filters * 2**depth, "bottleneck", batch_norm_momentum)
    for level in reversed(range(depth)):
        x = decoder_block(x, skips[level], base_filters * 2**level, f"dec{level + 1}", batch_norm_momentum)
    logits = layers.Conv2D(num_classes, 1, name="logits_conv")(x)
    # Logits in float32 so the loss and softmax stay stable under a mixed-precision policy.
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(inputs, logits, name=name)

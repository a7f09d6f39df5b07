"""DeepLabV3+ (Chen et al., 2018), as TF Model Garden's ``deeplabv3plus``, sized to train from scratch on a CPU.

Encoder: a small ResNet (a stride-2 stem, then stages of two basic residual blocks at strides 4, 8, 16) whose
last stage keeps stride 16 and dilates its convolutions by 2 instead of striding (atrous), so it sees as far
as a stride-32 stage would without losing resolution. ASPP on the stride-16 features: a 1x1 conv, three 3x3
atrous convs, and an image-level branch (global average pool, 1x1 conv, broadcast back). Decoder (the "+"):
the ASPP output upsampled x4 (bilinear), concatenated with the stride-4 features reduced by a 1x1 conv, two
3x3 convs, logits, upsampled x4 (bilinear) to the input size.

``base_filters`` scales every width: the stages have 1, 2, 4, 8, 8 x ``base_filters`` channels (stem, strides
4, 8, 16, atrous), ASPP and decoder 8x, the reduced low-level features 1.5x (the paper's 256 and 48 at 32: few
low-level channels, so they sharpen the edges without outweighing the ASPP's features). The default, 24, costs
about the CPU per training step of the U-Net at 16 filters, depth 4 (``pet_cpu``'s network before it took 24
filters) at 128x128.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tf_keras as keras
from tf_keras import layers

DEFAULT_BASE_FILTERS = 24
# The paper's ASPP rates at output stride 16, chosen for its 513-pixel crops (33x33 features): the largest
# rate's 3x3 taps (+-18) reach about the feature map's edges. The same rates on a 128-pixel input's 8x8
# features would put every off-centre tap in the zero padding (each 3x3 atrous conv a 1x1 conv), so the
# rates scale with the feature map's shorter side: 33 -> 6, 12, 18 as in the paper; 8 (128 px) -> 1, 3, 4.
PAPER_RATES = (6, 12, 18)
PAPER_FEATURE_SIDE = 33
ENCODER_STAGES = ((2, 2, 1), (4, 2, 1), (8, 2, 1), (8, 1, 2))  # (width multiple, stride, dilation) at 4, 8, 16, 16
BLOCKS_PER_STAGE = 2
LOW_LEVEL_STAGE = 0  # the stride-4 stage feeds the decoder


def aspp_rates(feature_side: int) -> tuple[int, int, int]:
    """The ASPP atrous rates for features ``feature_side`` pixels on their shorter side (see PAPER_RATES)."""
    return tuple(max(1, int(r * feature_side / PAPER_FEATURE_SIDE + 0.5)) for r in PAPER_RATES)


def conv_bn_relu(x, filters: int, kernel: int, name: str, *, strides: int = 1, dilation: int = 1, momentum: float):
    """Conv (no bias: batch norm follows) → batch norm → ReLU."""
    x = layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        dilation_rate=dilation,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def residual_block(x, filters: int, name: str, *, strides: int, dilation: int, momentum: float):
    """ResNet's basic block: two 3x3 convs and a shortcut (1x1 strided conv when the shape changes)."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_initializer="he_normal", name=f"{name}_proj_conv"
        )(x)
        shortcut = layers.BatchNormalization(momentum=momentum, name=f"{name}_proj_bn")(shortcut)
    x = conv_bn_relu(x, filters, 3, f"{name}_a", strides=strides, dilation=dilation, momentum=momentum)
    x = layers.Conv2D(
        filters,
        3,
        dilation_rate=dilation,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_b_conv",
    )(x)
    # Zero-initialised last scale: each block starts as the identity, which trains deep stacks from scratch.
    x = layers.BatchNormalization(momentum=momentum, gamma_initializer="zeros", name=f"{name}_b_bn")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.Activation("relu", name=f"{name}_relu")(x)


def aspp(x, filters: int, rates: Sequence[int], *, momentum: float):
    """Atrous spatial pyramid pooling: 1x1, three 3x3 atrous convs and image pooling, concatenated, 1x1."""
    height, width = int(x.shape[1]), int(x.shape[2])
    branches = [conv_bn_relu(x, filters, 1, "aspp_1x1", momentum=momentum)]
    for i, rate in enumerate(rates, start=1):
        branches.append(conv_bn_relu(x, filters, 3, f"aspp_atrous{i}", dilation=rate, momentum=momentum))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, "aspp_pool", momentum=momentum)
    # A 1x1 map upsampled is a broadcast; UpSampling2D keeps it a plain (TFLite-convertible) resize.
    branches.append(layers.UpSampling2D((height, width), name="aspp_pool_up")(pooled))
    x = layers.Concatenate(name="aspp_concat")(branches)
    return conv_bn_relu(x, filters, 1, "aspp_project", momentum=momentum)


def build_deeplabv3plus(
    input_shape: Sequence[int],
    num_classes: int,
    base_filters: int = DEFAULT_BASE_FILTERS,
    batch_norm_momentum: Optional[float] = None,
    name: str = "deeplabv3plus",
) -> keras.Model:
    """DeepLabV3+ on ``input_shape`` (H, W, 3) normalised images → logits ``[B, H, W, num_classes]``.

    H and W must be multiples of 16 (the stem's and three stages' strides of 2). ``batch_norm_momentum``: every
    batch norm's moving-average momentum (None: Keras' 0.99).
    """
    momentum = 0.99 if batch_norm_momentum is None else batch_norm_momentum
    f = base_filters
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = conv_bn_relu(inputs, f, 3, "stem1", strides=2, momentum=momentum)
    x = conv_bn_relu(x, f, 3, "stem2", momentum=momentum)
    low_level = None
    for s, (mult, strides, dilation) in enumerate(ENCODER_STAGES):
        for b in range(BLOCKS_PER_STAGE):
            x = residual_block(
                x,
                f * mult,
                f"stage{s + 1}_block{b + 1}",
                strides=strides if b == 0 else 1,
                dilation=dilation,
                momentum=momentum,
            )
        if s == LOW_LEVEL_STAGE:
            low_level = x
    x = aspp(x, 8 * f, aspp_rates(min(int(x.shape[1]), int(x.shape[2]))), momentum=momentum)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="decoder_up")(x)
    low_level = conv_bn_relu(low_level, (3 * f + 1) // 2, 1, "decoder_low_level", momentum=momentum)
    x = layers.Concatenate(name="decoder_concat")([x, low_level])
    x = conv_bn_relu(x, 8 * f, 3, "decoder1", momentum=momentum)
    x = conv_bn_relu(x, 8 * f, 3, "decoder2", momentum=momentum)
    x = layers.Conv2D(num_classes, 1, name="logits_conv")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="logits_up")(x)
    # Logits in float32 so the loss and softmax stay stable under a mixed-precision policy.
    logits = layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)

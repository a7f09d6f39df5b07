"""Segmentation networks, one plain Keras functional-API builder per file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from trainer.models.weights import BackboneWeightsError  # noqa: F401 (part of this package's interface)

if TYPE_CHECKING:  # flag validation reads MODELS without importing TensorFlow
    import tf_keras as keras

MODELS = ("unet", "fcn8s", "mobilenetv2_unet", "deeplabv3plus")
# The models whose encoder is a Keras application (ImageNet weights exist), and its input convention.
PRETRAINABLE = {"fcn8s": "vgg16", "mobilenetv2_unet": "mobilenetv2"}
# The MobileNetV2 widths (keras.applications.MobileNetV2's alpha) that ImageNet weights exist for.
MOBILENETV2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def output_stride(name: str, depth: int = 4) -> int:
    """The factor every input side must be a multiple of for model ``name``."""
    if name == "unet":
        return 2**depth
    if name in ("fcn8s", "mobilenetv2_unet"):
        return 32
    if name == "deeplabv3plus":
        return 16
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def check_input_size(name: str, size: Sequence[int], depth: int = 4) -> None:
    """Raises ``ValueError`` with a fix when ``size`` (H, W) does not divide by the model's stride."""
    stride = output_stride(name, depth)
    if any(int(s) % stride for s in size):
        hint = " or a smaller --depth" if name == "unet" else ""
        raise ValueError(
            f"{name} needs image sides that are multiples of {stride}, but the records are "
            f"{int(size[0])}x{int(size[1])}: preprocess with --image_size divisible by {stride}{hint}"
        )


def backbone_source(backbone_weights: Optional[str]) -> Optional[str]:
    """``--backbone_weights`` as Keras applications take it: None (random init), ``"imagenet"`` or a path."""
    if not backbone_weights or backbone_weights == "none":
        return None
    return backbone_weights


def input_convention(name: str, backbone_weights: Optional[str]) -> str:
    """How the model's raw 0..255 input is normalised: ``"tft"`` (the dataset's transform graph) for networks
    trained from scratch, or the pretrained encoder's own convention (``"vgg16"``, ``"mobilenetv2"``), which its
    ImageNet weights were trained with."""
    if backbone_source(backbone_weights) and name in PRETRAINABLE:
        return PRETRAINABLE[name]
    return "tft"


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    base_filters: Optional[int] = None,
    depth: int = 4,
    backbone_weights: Optional[str] = None,
    alpha: float = 1.0,
    batch_norm_momentum: float = 0.99,
) -> keras.Model:
    """Builds model ``name`` returning logits ``[B, H, W, num_classes]`` (float32 even under mixed precision).

    ``backbone_weights``: None/``"none"``, ``"imagenet"`` or a local notop ``.h5`` for the encoder of ``fcn8s``
    (VGG16) and ``mobilenetv2_unet`` (MobileNetV2 of width ``alpha``); raises ``BackboneWeightsError``.
    """
    check_input_size(name, input_shape[:2], depth)
    source = backbone_source(backbone_weights)
    if source and name not in PRETRAINABLE:
        raise ValueError(
            "--backbone_weights applies to fcn8s (VGG16) and mobilenetv2_unet (MobileNetV2); "
            f"{name} trains from scratch"
        )
    if name == "unet":
        from trainer.models.unet import build_unet

        return build_unet(
            input_shape,
            num_classes,
            base_filters=base_filters or 64,
            depth=depth,
            batch_norm_momentum=batch_norm_momentum,
        )
    if name == "deeplabv3plus":
        from trainer.models.deeplabv3plus import DEFAULT_BASE_FILTERS, build_deeplabv3plus

        return build_deeplabv3plus(
            input_shape,
            num_classes,
            base_filters=base_filters or DEFAULT_BASE_FILTERS,
            batch_norm_momentum=batch_norm_momentum,
        )
    from trainer.models import weights as weights_lib

    if name == "mobilenetv2_unet":
        from trainer.models.mobilenetv2_unet import build_mobilenetv2_unet

        with weights_lib.explained("mobilenetv2", source, input_shape, alpha):
            return build_mobilenetv2_unet(
                input_shape, num_classes, base_filters=base_filters or 64, alpha=alpha, backbone_weights=source
            )
    from trainer.models.fcn8s import build_fcn8s

    with weights_lib.explained("vgg16", source, input_shape, alpha):
        return build_fcn8s(input_shape, num_classes, base_filters=base_filters or 64, backbone_weights=source)


def encoder_layers(network: keras.Model, name: str) -> list:
    """The layers of ``network`` (built by ``build_model(name, ...)``) that hold the pretrainable encoder:
    what ``--freeze_backbone_epochs`` freezes. Empty for the U-Net."""
    if name == "mobilenetv2_unet":
        from trainer.models.mobilenetv2_unet import ENCODER_NAME

        return [network.get_layer(ENCODER_NAME)]
    if name == "fcn8s":
        return [layer for layer in network.layers if layer.name.startswith("block")]
    return []

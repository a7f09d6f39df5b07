"""Segmentation networks, one plain Keras functional-API builder per file."""
from __future__ import annotations

from typing import Optional, Sequence

import tf_keras as keras

MODELS = ("unet", "fcn8s")


def output_stride(name: str, depth: int = 4) -> int:
    """The factor every input side must be a multiple of for model ``name``."""
    if name == "unet":
        return 2 ** depth
    if name == "fcn8s":
        return 32
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def check_input_size(name: str, size: Sequence[int], depth: int = 4) -> None:
    """Raises ``ValueError`` with a fix when ``size`` (H, W) does not divide by the model's stride."""
    stride = output_stride(name, depth)
    if any(int(s) % stride for s in size):
        hint = " or a smaller --depth" if name == "unet" else ""
        raise ValueError(
            f"{name} needs image sides that are multiples of {stride}, but the records are "
            f"{int(size[0])}x{int(size[1])}: preprocess with --image_size divisible by {stride}{hint}")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, *, base_filters: Optional[int] = None,
                depth: int = 4, backbone_weights: Optional[str] = None) -> keras.Model:
    """Builds model ``name`` returning logits ``[B, H, W, num_classes]`` (float32 even under mixed precision)."""
    check_input_size(name, input_shape[:2], depth)
    if name == "unet":
        from trainer.models.unet import build_unet
        if backbone_weights:
            raise ValueError("--backbone_weights applies to fcn8s (a VGG16 encoder); U-Net trains from scratch")
        return build_unet(input_shape, num_classes, base_filters=base_filters or 64, depth=depth)
    from trainer.models.fcn8s import build_fcn8s
    return build_fcn8s(input_shape, num_classes, base_filters=base_filters or 64, backbone_weights=backbone_weights)

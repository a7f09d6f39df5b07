"""Named training recipes (``python -m trainer.task --preset NAME``), like Model Garden's experiment configs.

A preset sets a model, its size and a training recipe that fit one purpose; every flag given on the command line
(or keyword given to ``TrainConfig.from_preset``) still overrides it, and JOB/config.json records the preset's
name with the values the run resolved. The values are ``TrainConfig`` field names; this module imports nothing
heavy, so ``--help`` lists the presets at once.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    purpose: str  # one line in --help
    values: Mapping[str, Any]


def _preset(name: str, purpose: str, **values: Any) -> Preset:
    return Preset(name, purpose, types.MappingProxyType(values))


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        _preset(
            "pet_cpu",
            "a first real run on a laptop CPU (~26 min on 2 cores for 300 photos): a U-Net sized for 2 cores "
            "(24 filters, depth 4, ~4.4 M parameters) on Pet records made with --image_size 128, augmented, cosine "
            "schedule, served with flip averaging",
            model="unet",
            # 24 filters for 45 epochs, not 16 for 60: +0.011 to +0.014 val mIoU on real photos in the same
            # 30-minute budget, which oneDNN's kernels opened (docs/benchmarks.md, "oneDNN").
            base_filters=24,
            depth=4,
            batch_norm_momentum=0.9,
            test_time_flip=True,
            epochs=45,
            batch_size=16,
            learning_rate=2e-3,
            lr_schedule="cosine",
            warmup_steps=100,
            augment=True,
            loss="ce_dice",
        ),
        _preset(
            "pet_gpu",
            "the TensorFlow segmentation tutorial's recipe on a GPU: its MobileNetV2 U-Net from ImageNet weights, "
            "the encoder frozen, 20 epochs of batch 64 at a constant learning rate, on Pet records made with "
            "--image_size 128",
            model="mobilenetv2_unet",
            backbone_weights="imagenet",
            alpha=1.0,
            # The tutorial keeps its encoder frozen for the whole run (down_stack.trainable = False).
            freeze_backbone_epochs=20,
            epochs=20,
            batch_size=64,
            learning_rate=1e-3,
            lr_schedule="constant",
            augment=True,
            loss="ce",
        ),
        _preset(
            "cityscapes_gpu",
            "Cityscapes on a GPU: the MobileNetV2 U-Net from ImageNet weights, AdamW with cosine decay, "
            "median-frequency class weights, on records made with --image_size 512,1024",
            model="mobilenetv2_unet",
            backbone_weights="imagenet",
            alpha=1.0,
            freeze_backbone_epochs=2,
            epochs=60,
            batch_size=8,
            learning_rate=1e-3,
            lr_schedule="cosine",
            warmup_steps=1000,
            weight_decay=1e-4,
            augment=True,
            loss="ce",
            class_weights="auto",
        ),
    )
}

# The preset a run on a CPU should use instead of a model sized for accelerators (the large-model warning).
CPU_PRESET = "pet_cpu"


def help_lines() -> str:
    """One line per preset, for the end of ``--help``."""
    return "presets (--preset NAME; any flag given overrides the preset's value):\n" + "\n".join(
        f"  {p.name}: {p.purpose}" for p in PRESETS.values()
    )

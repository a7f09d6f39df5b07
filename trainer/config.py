"""The one configuration object of a training job, built from ``python -m trainer.task`` flags.

Each field is also the flag of the same name (``pipelines.shared.flag_parser.option``): its default, help text,
range and choices are written once, here; ``trainer.task.build_parser`` declares every flag from these fields. Adding a
flag is adding a field.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from pipelines.shared import flag_parser
from schemas.errors import UsageError
from schemas.model_contract import TFLITE_TYPES
from schemas.records import SPLITS
from trainer.models import MODELS  # the registry of networks; imports no TensorFlow
from trainer.presets import PRESETS

__all__ = ["LOSSES", "MODELS", "SPLITS", "STRATEGIES", "TrainConfig", "UsageError"]

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# trainer.losses.LOSSES, whose module imports TensorFlow: --help must not (tests/test_cli.py checks they agree).
LOSSES = ("ce", "dice", "ce_dice")
LR_SCHEDULES = ("constant", "cosine")
EXPORTS = ("best", "last")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on. Dataset facts (classes, image size) come from metadata.json.

    Each field's help text is its documentation (``python -m trainer.task --help`` shows it with the default).
    """

    data_dir: str = flag_parser.option(help="preprocess output (local or gs://): shards, metadata.json, transform_fn/")
    model: str = flag_parser.option(help="the network to train", choices=MODELS)
    job_dir: str = flag_parser.option(
        help="where checkpoints/, logs/, model/ and metrics.json go (local or gs://); "
        "rerunning the same command resumes from its checkpoints"
    )
    preset: Optional[str] = flag_parser.option(
        None,
        "a named recipe (model, size, training) for a purpose, listed at the end; any flag given overrides it",
        choices=tuple(PRESETS),
        default_text="none: the defaults below",
    )
    epochs: int = flag_parser.option(10, "total epochs (a resumed run continues up to this number)", minimum=1)
    batch_size: int = flag_parser.option(8, "global batch, split evenly across replicas and workers", minimum=1)
    strategy: str = flag_parser.option(
        "auto",
        "distribution: auto = multi_worker when TF_CONFIG names a cluster, mirrored on several GPUs, else one_device",
        choices=STRATEGIES,
        advanced=True,
    )
    loss: str = flag_parser.option("ce", "cross-entropy (ce), soft Dice (dice) or their sum (ce_dice)", choices=LOSSES)
    class_weights: str = flag_parser.option(
        "none",
        "none; auto (or the bare flag) = median-frequency weights from the transform statistics; or "
        "one comma-separated weight per class",
        argparse={"nargs": "?", "const": "auto"},
        advanced=True,
    )
    learning_rate: float = flag_parser.option(
        1e-3, "Adam learning rate", minimum=0.0, exclusive_min=True, default_text="0.001"
    )
    deterministic: bool = flag_parser.option(
        False, "deterministic tf.data order and TF op determinism (slower; bit-reproducible runs)", advanced=True
    )
    augment: bool = flag_parser.option(
        False, "online augmentation of training batches (flip, scale-crop, colour), seeded"
    )
    mixed_precision: bool = flag_parser.option(
        False, "float16 compute on GPUs (ignored with a warning on CPU)", advanced=True
    )
    backbone_weights: Optional[str] = flag_parser.option(
        None,
        "the pretrained encoder of fcn8s (VGG16) or mobilenetv2_unet (MobileNetV2): imagenet (Keras' own "
        "download and cache), PATH (a local notop .h5, as save_weights writes it), or none",
        default_text="none: random initialisation",
    )
    base_filters: Optional[int] = flag_parser.option(
        None,
        "first-level filters (U-Net) / VGG width (FCN-8s) / width unit (deeplabv3plus, default 24)",
        minimum=1,
        default_text="64",
        advanced=True,
    )
    depth: int = flag_parser.option(
        4, "U-Net levels (input sides must be multiples of 2**depth)", minimum=1, maximum=6, advanced=True
    )
    batch_norm_momentum: float = flag_parser.option(
        0.99,
        "momentum of the batch-norm moving statistics that inference uses (unet, deeplabv3plus): lower follows "
        "the training weights sooner; with few steps per epoch 0.99 leans on the initial statistics for hundreds "
        "of steps",
        minimum=0.0,
        maximum=1.0,
        advanced=True,
    )
    test_time_flip: bool = flag_parser.option(
        False,
        "the exported model (SavedModel and TFLite) averages each image's class probabilities with its mirror "
        "image's: two network passes per image",
        advanced=True,
    )
    steps_per_epoch: Optional[int] = flag_parser.option(
        None, "training steps per epoch", minimum=1, default_text="one pass over the train records", advanced=True
    )
    validation_steps: Optional[int] = flag_parser.option(
        None, "evaluation steps", minimum=1, default_text="the whole --eval_split", advanced=True
    )
    seed: int = flag_parser.option(0, "seeds shuffling, augmentation and weight initialisation")
    shuffle_buffer: int = flag_parser.option(512, "records in the shuffle buffer", minimum=1, advanced=True)
    checkpoint_steps: int = flag_parser.option(
        100, "also checkpoint every N training steps (0 = at epoch ends only)", minimum=0, advanced=True
    )
    eval_split: str = flag_parser.option(
        "val",
        "split for per-epoch validation and the final evaluation (train when the data has none of it)",
        choices=SPLITS,
        advanced=True,
    )
    verbose: Optional[int] = flag_parser.option(
        None,
        "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch",
        choices=(0, 1, 2),
        default_text="1 on a terminal, 2 otherwise",
    )
    # Models and training recipe.
    alpha: float = flag_parser.option(
        1.0,
        "mobilenetv2_unet: MobileNetV2 width multiplier (ImageNet weights: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)",
        minimum=0.0,
        exclusive_min=True,
        advanced=True,
    )
    freeze_backbone_epochs: int = flag_parser.option(
        0,
        "epochs trained with the pretrained encoder frozen (its batch norm in inference mode), then fine-tuned",
        minimum=0,
        advanced=True,
    )
    lr_schedule: str = flag_parser.option(
        "constant",
        "constant, or cosine decay to 0 at the last step (continues across resumes)",
        choices=LR_SCHEDULES,
        advanced=True,
    )
    warmup_steps: int = flag_parser.option(0, "linear learning-rate warm-up steps from 0", minimum=0, advanced=True)
    weight_decay: float = flag_parser.option(
        0.0, "decoupled weight decay (AdamW) when > 0; biases and batch norm excluded", minimum=0.0, advanced=True
    )
    tflite: str = flag_parser.option(
        "float32",
        "TensorFlow Lite files written in JOB beside model/: none, all, or a comma-separated list of float32 "
        "(model.tflite), float16 (model_fp16.tflite), int8 (model_int8.tflite: full-integer, calibrated on "
        "training records); the quantised ones are scored against the SavedModel in metrics.json",
    )
    max_int8_drop: float = flag_parser.option(
        0.05,
        "fail the export when the int8 TFLite file's mIoU on the eval split is below the SavedModel's by more "
        "than this (nothing is published; the same command resumes the finished training)",
        minimum=0.0,
        advanced=True,
    )
    export: str = flag_parser.option(
        "best",
        "JOB/model holds the best-validation-mIoU epoch's weights (best) or the last "
        "epoch's (last); metrics.json says which epoch",
        choices=EXPORTS,
    )

    @classmethod
    def from_preset(cls, name: str, **fields: Any) -> "TrainConfig":
        """The preset's values (``trainer.presets``), then ``fields`` (data_dir, job_dir and any value to
        override), as ``--preset NAME`` and flags give them; the preset's name is recorded."""
        if name not in PRESETS:
            raise UsageError(
                f"--preset must be one of {', '.join(PRESETS)}, got {name!r}{flag_parser.closest(name, list(PRESETS))}"
            )
        return cls(**{**PRESETS[name].values, **fields, "preset": name})

    def validate(self) -> None:
        """Raises ``UsageError`` with what to do for values no run could use: each field's range and choices
        (from its ``option``), then the combinations."""
        flag_parser.check_fields(self)
        if not self.data_dir or not self.job_dir:
            raise UsageError("--data_dir and --job_dir must not be empty")
        self._validate_recipe()
        self.parse_class_weights(None)
        self.tflite_types()

    def tflite_types(self) -> tuple[str, ...]:
        """``--tflite`` as types in ``TFLITE_TYPES`` order (``none``: none; ``all``: every one)."""
        text = (self.tflite or "").strip()
        if text in ("none", "all"):
            return TFLITE_TYPES if text == "all" else ()
        asked = [t.strip() for t in text.split(",") if t.strip()]
        if not asked or any(t not in TFLITE_TYPES for t in asked):
            raise UsageError(f"--tflite takes none, all, or a comma-separated list of {', '.join(TFLITE_TYPES)}")
        return tuple(t for t in TFLITE_TYPES if t in asked)

    def _validate_recipe(self) -> None:
        """The model and training-recipe flags (issue 14)."""
        from trainer.models import MOBILENETV2_ALPHAS as ALPHAS, PRETRAINABLE

        pretrained = bool(self.backbone_weights) and self.backbone_weights != "none"
        if pretrained and self.model not in PRETRAINABLE:
            raise UsageError(
                f"--backbone_weights applies to --model {' or '.join(PRETRAINABLE)} (a pretrained "
                f"encoder); {self.model} trains from scratch"
            )
        if self.alpha != 1.0 and self.model != "mobilenetv2_unet":
            raise UsageError("--alpha applies to --model mobilenetv2_unet only")
        if self.backbone_weights == "imagenet" and self.model == "mobilenetv2_unet" and self.alpha not in ALPHAS:
            raise UsageError(f"ImageNet MobileNetV2 weights exist for --alpha {', '.join(map(str, ALPHAS))} only")
        if self.freeze_backbone_epochs and not pretrained:
            raise UsageError("--freeze_backbone_epochs needs --backbone_weights (a pretrained encoder to keep frozen)")

    def parse_class_weights(self, num_classes: Optional[int]) -> Optional[list[float]]:
        """Explicit weights as floats (checked against ``num_classes`` when given); None for none/auto."""
        if self.class_weights in ("none", "auto"):
            return None
        try:
            weights = [float(w) for w in self.class_weights.split(",")]
        except ValueError:
            raise UsageError("--class_weights takes none, auto, or comma-separated numbers (one per class)")
        if not all(math.isfinite(w) for w in weights):  # NaN would pass the sign check below
            raise UsageError(f"--class_weights takes finite numbers, got {self.class_weights}")
        if any(w < 0 for w in weights):
            raise UsageError("--class_weights must be >= 0")
        if num_classes is not None and len(weights) != num_classes:
            raise UsageError(f"--class_weights has {len(weights)} values but the dataset has {num_classes} classes")
        return weights

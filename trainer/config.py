"""The one configuration object of a training job, built from ``python -m trainer.task`` flags."""
from __future__ import annotations

import dataclasses
from typing import Optional

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


class UsageError(ValueError):
    """A bad flag or flag combination; ``trainer.task`` prints it as one line and exits 2."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on. Dataset facts (classes, image size) come from metadata.json.

    Attributes:
      data_dir: preprocess output (local or gs://): shards, metadata.json, transform_fn/.
      model: ``unet``, ``fcn8s`` or ``mobilenetv2_unet``.
      job_dir: where checkpoints/, logs/, model/ and metrics.json go (local or gs://).
      epochs: total epochs (a resumed run continues up to this number).
      batch_size: global batch, split evenly across replicas and workers.
      strategy: ``auto``, ``one_device``, ``mirrored`` or ``multi_worker``.
      loss: ``ce``, ``dice`` or ``ce_dice``.
      class_weights: ``none``, ``auto`` (median-frequency weights from the transform statistics) or C
        comma-separated floats.
      learning_rate: Adam learning rate.
      deterministic: deterministic tf.data order and TF op determinism (slower; bit-reproducible runs).
      augment: online augmentation of training batches (flip, scale-crop, colour), seeded.
      mixed_precision: float16 compute on GPUs (ignored with a warning on CPU).
      backbone_weights: ``imagenet``, a local notop ``.h5`` or None/``none`` (random init) for the encoder of
        fcn8s (VGG16) or mobilenetv2_unet (MobileNetV2).
      base_filters: first-level filters (U-Net) / VGG width (FCN-8s); None = the classic 64.
      depth: U-Net levels (input sides must be multiples of 2**depth).
      steps_per_epoch: None = one pass over the training records per epoch.
      validation_steps: None = the whole validation split.
      seed: seeds shuffling, augmentation and weight initialisation.
      shuffle_buffer: records in the shuffle buffer.
      checkpoint_steps: also checkpoint every N training steps (0 = at epoch ends only).
      eval_split: split for per-epoch validation and the final evaluation (``val``; ``train`` if absent).
      verbose: Keras verbosity; None = progress bar on a terminal, one line per epoch otherwise.
      alpha: MobileNetV2 width multiplier (``mobilenetv2_unet``).
      freeze_backbone_epochs: epochs trained with the pretrained encoder frozen (BN in inference mode).
      lr_schedule: ``constant`` or ``cosine`` (decay to 0 at the last step); continues across resumes.
      warmup_steps: linear learning-rate warm-up steps from 0.
      weight_decay: decoupled weight decay (AdamW) when > 0.
      export: ``best`` (the best-validation-mIoU epoch's weights) or ``last``.
    """

    data_dir: str
    model: str
    job_dir: str
    epochs: int = 10
    batch_size: int = 8
    strategy: str = "auto"
    loss: str = "ce"
    class_weights: str = "none"
    learning_rate: float = 1e-3
    deterministic: bool = False
    augment: bool = False
    mixed_precision: bool = False
    backbone_weights: Optional[str] = None
    base_filters: Optional[int] = None
    depth: int = 4
    steps_per_epoch: Optional[int] = None
    validation_steps: Optional[int] = None
    seed: int = 0
    shuffle_buffer: int = 512
    checkpoint_steps: int = 100
    eval_split: str = "val"
    verbose: Optional[int] = None
    # Models and training recipe (issue 14).
    alpha: float = 1.0
    freeze_backbone_epochs: int = 0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    export: str = "best"

    def validate(self) -> None:
        """Raises ``UsageError`` with what to do for values no run could use."""
        from trainer.losses import LOSSES
        from trainer.models import MODELS
        if self.model not in MODELS:
            raise UsageError(f"--model must be one of {', '.join(MODELS)}")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}")
        if self.loss not in LOSSES:
            raise UsageError(f"--loss must be one of {', '.join(LOSSES)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be >= 1")
        for name in ("steps_per_epoch", "validation_steps", "base_filters"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name} must be >= 1 (or left out)")
        if not 1 <= self.depth <= 6:
            raise UsageError("--depth must be between 1 and 6")
        if self.learning_rate <= 0:
            raise UsageError("--learning_rate must be > 0")
        if self.checkpoint_steps < 0 or self.shuffle_buffer < 1:
            raise UsageError("--checkpoint_steps must be >= 0 and --shuffle_buffer >= 1")
        if self.eval_split not in ("train", "val", "test"):
            raise UsageError("--eval_split must be train, val or test")
        if not self.data_dir or not self.job_dir:
            raise UsageError("--data_dir and --job_dir must not be empty")
        self._validate_recipe()
        self.parse_class_weights(None)

    def _validate_recipe(self) -> None:
        """The model and training-recipe flags (issue 14)."""
        from trainer.models import MOBILENETV2_ALPHAS as ALPHAS, PRETRAINABLE
        pretrained = bool(self.backbone_weights) and self.backbone_weights != "none"
        if pretrained and self.model not in PRETRAINABLE:
            raise UsageError(f"--backbone_weights applies to --model {' or '.join(PRETRAINABLE)} (a pretrained "
                             f"encoder); {self.model} trains from scratch")
        if self.alpha <= 0 or (self.alpha != 1.0 and self.model != "mobilenetv2_unet"):
            raise UsageError("--alpha must be > 0 and applies to --model mobilenetv2_unet only")
        if self.backbone_weights == "imagenet" and self.model == "mobilenetv2_unet" and self.alpha not in ALPHAS:
            raise UsageError(f"ImageNet MobileNetV2 weights exist for --alpha {', '.join(map(str, ALPHAS))} only")
        if self.freeze_backbone_epochs < 0 or (self.freeze_backbone_epochs and not pretrained):
            raise UsageError("--freeze_backbone_epochs must be >= 0 and needs --backbone_weights (a pretrained "
                             "encoder to keep frozen)")
        if self.lr_schedule not in ("constant", "cosine"):
            raise UsageError("--lr_schedule must be constant or cosine")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise UsageError("--warmup_steps and --weight_decay must be >= 0")
        if self.export not in ("best", "last"):
            raise UsageError("--export must be best or last")

    def parse_class_weights(self, num_classes: Optional[int]) -> Optional[list[float]]:
        """Explicit weights as floats (checked against ``num_classes`` when given); None for none/auto."""
        if self.class_weights in ("none", "auto"):
            return None
        try:
            weights = [float(w) for w in self.class_weights.split(",")]
        except ValueError:
            raise UsageError("--class_weights takes none, auto, or comma-separated numbers (one per class)")
        if any(w < 0 for w in weights):
            raise UsageError("--class_weights must be >= 0")
        if num_classes is not None and len(weights) != num_classes:
            raise UsageError(f"--class_weights has {len(weights)} values but the dataset has {num_classes} classes")
        return weights

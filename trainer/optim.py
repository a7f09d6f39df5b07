"""The optimizer and its learning-rate schedule (``--learning_rate``, ``--lr_schedule``, ``--warmup_steps``,
``--weight_decay``).

The schedule is a function of ``optimizer.iterations``, which every checkpoint holds: a resumed run continues
the curve at the step it stopped, never from its start.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

SCHEDULES = ("constant", "cosine")


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then ``peak`` (``constant``) or a cosine decay
    to 0 at ``total_steps`` (``cosine``)."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, kind: str = "constant"):
        super().__init__()
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; one of {', '.join(SCHEDULES)}")
        self.peak, self.total_steps, self.warmup_steps, self.kind = (
            float(peak),
            int(total_steps),
            int(warmup_steps),
            kind,
        )

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak, tf.float32)
        warm = float(max(self.warmup_steps, 0))
        if self.kind == "cosine":
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.clip_by_value((step - warm) / span, 0.0, 1.0)
            rate = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
        else:
            rate = peak
        if warm > 0:
            rate = tf.where(step < warm, peak * (step + 1.0) / warm, rate)
        return rate

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
        }


def make_optimizer(
    learning_rate: float,
    total_steps: int,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
):
    """Adam (AdamW when ``weight_decay`` > 0; biases and batch-norm scales/offsets are not decayed) at
    ``learning_rate``, constant or on a schedule over ``total_steps``. The plain ``constant`` recipe without
    warm-up is a float learning rate, as before schedules existed."""
    rate = (
        learning_rate
        if schedule == "constant" and not warmup_steps
        else WarmupSchedule(learning_rate, total_steps, warmup_steps, schedule)
    )
    if weight_decay > 0:
        optimizer = keras.optimizers.AdamW(rate, weight_decay=weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer
    return keras.optimizers.Adam(rate)

"""Training callbacks: resumable checkpoints (fault tolerance) and throughput measurement.

``ResumableCheckpoint`` plays the role of ``BackupAndRestore`` but resumes *mid-epoch*: it saves the model,
the optimizer and the global step with ``tf.train.CheckpointManager`` (atomic on local disks and gs://: the
``checkpoint`` index is written last, so a SIGKILL during a save leaves the previous checkpoint valid) every
``checkpoint_steps`` steps and at each epoch end. On restart ``task.run`` restores the latest one and skips the
batches already consumed, so the resumed run sees the same data stream. In multi-worker runs every worker
saves (saving may involve collectives) but only the chief writes to ``JOB/checkpoints``; the others write to a
scratch directory that they delete, the pattern ``tf.distribute`` documents.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import tf_keras as keras
import tensorflow as tf

logger = logging.getLogger(__name__)


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves (network, optimizer, global step) every ``checkpoint_steps`` steps and every epoch end.

    ``network``: the weights to keep (the trained model's network, without the weight-less tft layer);
    ``optimizer``: the compiled model's optimizer.
    """

    def __init__(self, network: keras.Model, optimizer, directory: str, *, checkpoint_steps: int = 0,
                 is_chief: bool = True, worker_id: int = 0, max_to_keep: int = 2):
        super().__init__()
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self._checkpoint = tf.train.Checkpoint(model=network, optimizer=optimizer, global_step=self.step)
        self._is_chief = is_chief
        self._directory = directory if is_chief else f"{directory.rstrip('/')}/.scratch-worker-{worker_id}"
        self._manager = tf.train.CheckpointManager(self._checkpoint, self._directory, max_to_keep=max_to_keep)
        self._every = int(checkpoint_steps)
        self._last_saved = -1

    def restore(self) -> int:
        """Restores the latest checkpoint (chief's directory) if any; returns the global step (0 if none)."""
        latest = tf.train.latest_checkpoint(self._directory if self._is_chief else self._chief_dir())
        if latest:
            self._checkpoint.restore(latest).expect_partial()
            logger.info("resumed from %s at step %d", latest, int(self.step.numpy()))
        self._last_saved = int(self.step.numpy())
        return self._last_saved

    def _chief_dir(self) -> str:
        return self._directory.rsplit("/.scratch-worker-", 1)[0]

    def save(self) -> None:
        step = int(self.step.numpy())
        if step == self._last_saved:
            return
        self._manager.save(checkpoint_number=step)
        self._last_saved = step
        if not self._is_chief:  # scratch copy only existed for the collective save
            tf.io.gfile.rmtree(self._directory)

    def on_train_batch_end(self, batch, logs=None):
        self.step.assign_add(1)
        if self._every and int(self.step.numpy()) % self._every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()


class Throughput(keras.callbacks.Callback):
    """Training images/second over all steps but the first (tracing and warm-up), validation excluded."""

    def __init__(self, global_batch: int):
        super().__init__()
        self.global_batch = int(global_batch)
        self.seconds = 0.0
        self.steps = 0
        self._start: Optional[float] = None
        self._first = True

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None:
            return
        elapsed = time.perf_counter() - self._start
        if self._first:
            self._first = False
            return
        self.seconds += elapsed
        self.steps += 1

    @property
    def images_per_second(self) -> Optional[float]:
        return self.steps * self.global_batch / self.seconds if self.seconds > 0 else None

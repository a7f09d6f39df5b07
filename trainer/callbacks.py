"""Training callbacks: resumable checkpoints (fault tolerance) and throughput measurement.

``ResumableCheckpoint`` plays the role of ``BackupAndRestore`` but resumes *mid-epoch*: it saves the model,
the optimizer and the global step every ``checkpoint_steps`` steps and at each epoch end, in TensorFlow's
checkpoint format (``ckpt-<step>.index``/``.data-*`` and the ``checkpoint`` state file, which
``tf.train.latest_checkpoint`` reads). The state file is written last (atomically), so a SIGKILL during a save
leaves the previous checkpoint valid. On restart ``task.run`` restores the latest one and skips the batches
already consumed, so the resumed run sees the same data stream. In multi-worker runs every worker saves (saving
may involve collectives) but only the chief writes to ``JOB/checkpoints``; the others write to a scratch
directory that they delete, the pattern ``tf.distribute`` documents.

``--job_dir`` is a literal path: ``tf.train.CheckpointManager`` and ``tf.train.latest_checkpoint`` find and
delete checkpoint files through glob patterns built from the directory, so in a ``job[1]`` they would miss this
job's checkpoints and delete ``job1``'s. Here checkpoints are found by reading the state file and checking the
exact file names, and old ones are removed by listing the folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

# The writer of the ``checkpoint`` state file that tf.train.CheckpointManager uses (atomic, relative paths).
from tensorflow.python.checkpoint import checkpoint_management

from schemas.paths import TF_GLOB_CHARS

logger = logging.getLogger(__name__)


_CKPT_FILE_RE = re.compile(r"^ckpt-(\d+)\.(index|data-\d{5}-of-\d{5})$")


def latest_checkpoint(directory: str) -> Optional[str]:
    """The prefix of the newest complete checkpoint in ``directory`` (taken literally), or None."""
    state = tf.train.get_checkpoint_state(directory)  # reads directory/checkpoint by its exact name
    if state and state.model_checkpoint_path and tf.io.gfile.exists(state.model_checkpoint_path + ".index"):
        return state.model_checkpoint_path
    return None


def checkpoint_step(directory: str) -> int:
    """The global step of the newest checkpoint in ``directory`` (its ``ckpt-<step>`` number; 0 if none)."""
    latest = latest_checkpoint(directory)
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@contextlib.contextmanager
def _readable_prefix(prefix: str) -> Iterator[str]:
    """``prefix`` itself, or, when its folder has glob characters (``job[1]``), the same checkpoint files under
    a plain temporary name (links to local files, copies of remote ones), so the reader finds exactly them."""
    folder, name = prefix.rsplit("/", 1)
    if not TF_GLOB_CHARS & set(prefix):  # TensorFlow's checkpoint reader globs its file names
        yield prefix
        return
    staging = tempfile.mkdtemp(prefix="segflow-restore-")
    try:
        for entry in tf.io.gfile.listdir(folder):
            entry = entry.rstrip("/")
            if entry == f"{name}.index" or re.fullmatch(re.escape(name) + r"\.data-\d{5}-of-\d{5}", entry):
                source, target = f"{folder}/{entry}", os.path.join(staging, entry)
                if "://" in source:
                    tf.io.gfile.copy(source, target)
                else:
                    os.symlink(os.path.abspath(source), target)
        yield os.path.join(staging, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves (network, optimizer, global step) every ``checkpoint_steps`` steps and every epoch end.

    ``network``: the weights to keep (the trained model's network, without the weight-less tft layer);
    ``optimizer``: the compiled model's optimizer. The newest ``max_to_keep`` checkpoints are kept.
    """

    def __init__(
        self,
        network: keras.Model,
        optimizer,
        directory: str,
        *,
        checkpoint_steps: int = 0,
        is_chief: bool = True,
        worker_id: int = 0,
        max_to_keep: int = 2,
    ):
        super().__init__()
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self._checkpoint = tf.train.Checkpoint(model=network, optimizer=optimizer, global_step=self.step)
        self._is_chief = is_chief
        self._directory = directory.rstrip("/") if is_chief else f"{directory.rstrip('/')}/.scratch-worker-{worker_id}"
        self._every = int(checkpoint_steps)
        self._max_to_keep = max(1, int(max_to_keep))
        self._last_saved = -1

    def restore(self) -> int:
        """Restores the latest checkpoint (chief's directory) if any; returns the global step (0 if none).

        Raises ``ValueError`` when the checkpoint's variables do not fit this network (another class count or
        architecture); ``task.run`` checks the recorded configuration first and reports that in one line.
        """
        latest = latest_checkpoint(self._directory if self._is_chief else self._chief_dir())
        if latest:
            with _readable_prefix(latest) as prefix:
                self._checkpoint.restore(prefix).expect_partial()
            logger.info("resumed from %s at step %d", latest, int(self.step.numpy()))
        self._last_saved = int(self.step.numpy())
        return self._last_saved

    def _chief_dir(self) -> str:
        return self._directory.rsplit("/.scratch-worker-", 1)[0]

    def save(self) -> None:
        step = int(self.step.numpy())
        if step == self._last_saved:
            return
        name = f"ckpt-{step}"
        # What CheckpointManager.save writes (save_counter included), under a name chosen here.
        self._checkpoint.save_counter.assign_add(1)
        self._checkpoint.write(f"{self._directory}/{name}")
        self._last_saved = step
        if not self._is_chief:  # scratch copy only existed for the collective save
            tf.io.gfile.rmtree(self._directory)
            return
        kept = (
            sorted({n for n in self._checkpoint_numbers() if n < step})[-(self._max_to_keep - 1) :]
            if self._max_to_keep > 1
            else []
        )
        kept.append(step)
        # The state file last: until it names ckpt-<step>, a restart resumes from the previous checkpoint.
        checkpoint_management.update_checkpoint_state_internal(
            self._directory,
            f"{self._directory}/{name}",
            [f"{self._directory}/ckpt-{n}" for n in kept],
            save_relative_paths=True,
        )
        self._delete_except(set(kept))

    def _checkpoint_numbers(self) -> list[int]:
        return [int(m.group(1)) for m in map(_CKPT_FILE_RE.match, self._listdir()) if m]

    def _listdir(self) -> list[str]:
        try:
            return [n.rstrip("/") for n in tf.io.gfile.listdir(self._directory)]
        except tf.errors.NotFoundError:
            return []

    def _delete_except(self, kept: set[int]) -> None:
        """Deletes the files of every other checkpoint in the directory, found by listing it (no glob)."""
        for name in sorted(self._listdir()):
            m = _CKPT_FILE_RE.match(name)
            if m and int(m.group(1)) not in kept:
                try:
                    tf.io.gfile.remove(f"{self._directory}/{name}")
                except tf.errors.NotFoundError:
                    pass

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


class BestCheckpoint(ResumableCheckpoint):
    """Keeps the network weights of the epoch with the best ``monitor`` (validation mIoU) as a checkpoint of
    their own in ``directory`` (``JOB/checkpoints/best``), with that epoch (1-based) and its figure: so
    ``--export best`` exports them, and a resumed run still knows which epoch to beat.

    Written through the same machinery as the training checkpoints (state file last, named files, every
    worker takes part, only the chief's copy stays), one kept.
    """

    def __init__(
        self,
        network: keras.Model,
        directory: str,
        *,
        monitor: str = "val_miou",
        is_chief: bool = True,
        worker_id: int = 0,
    ):
        keras.callbacks.Callback.__init__(self)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")  # 0: none yet
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_value")
        self.monitor = monitor
        self._checkpoint = tf.train.Checkpoint(model=network, best_epoch=self.step, best_value=self.best)
        self._record = tf.train.Checkpoint(best_epoch=self.step, best_value=self.best)
        self._is_chief = is_chief
        self._directory = directory.rstrip("/") if is_chief else f"{directory.rstrip('/')}/.scratch-worker-{worker_id}"
        self._every = 0
        self._max_to_keep = 1
        self._last_saved = -1

    @property
    def epoch(self) -> int:
        """The best epoch so far (1-based), 0 when no epoch has been validated."""
        return int(self.step.numpy())

    @property
    def value(self) -> float:
        return float(self.best.numpy())

    def restore(self) -> int:
        """Reads which epoch was best and its figure (not its weights, which would overwrite the resumed
        network); returns that epoch (0 if none)."""
        latest = latest_checkpoint(self._directory if self._is_chief else self._chief_dir())
        if latest:
            with _readable_prefix(latest) as prefix:
                self._record.read(prefix).expect_partial()
        self._last_saved = self.epoch
        return self.epoch

    def restore_weights(self) -> bool:
        """Loads the best epoch's weights into the network; False when there is no best checkpoint."""
        latest = latest_checkpoint(self._directory if self._is_chief else self._chief_dir())
        if not latest:
            return False
        with _readable_prefix(latest) as prefix:
            self._checkpoint.read(prefix).expect_partial()
        return True

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value) or value <= self.value:
            return  # ties keep the earlier epoch
        self.best.assign(float(value))
        self.step.assign(epoch + 1)
        self.save()
        logger.info("best %s so far: %.4f at epoch %d", self.monitor, float(value), epoch + 1)

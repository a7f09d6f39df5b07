"""Training callbacks: resumable checkpoints (fault tolerance), the best epoch's weights, throughput measurement,
and the stop between steps.

``ResumableCheckpoint`` plays the role of ``BackupAndRestore`` but resumes *mid-epoch*: it saves the model,
the optimizer and the global step every ``checkpoint_steps`` steps and at each epoch end, in TensorFlow's
checkpoint format (``ckpt-<step>.index``/``.data-*`` and the ``checkpoint`` state file, which
``tf.train.latest_checkpoint`` reads). The state file is written last (atomically), so a SIGKILL during a save
leaves the previous checkpoint valid. On restart ``trainer.training.run`` restores the latest one and skips the batches
already consumed, so the resumed run sees the same data stream. In multi-worker runs every worker saves (saving
may involve collectives) but only the chief writes to ``JOB/checkpoints``; the others write to a scratch
directory that they delete, the pattern ``tf.distribute`` documents.

Checkpoints are found, and read back whole before they are trusted, by ``trainer.checkpoints`` (by exact file
names, never by glob: ``--job_dir`` is a literal path). Old ones are deleted through JOB's owner record
(``pipelines.shared.ownership``): only files a segflow trainer wrote, never another tool's ``ckpt-3.index``.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.shared import logs as program_logs, private_apis
from trainer.checkpoints import (
    STATE_FILE,
    CheckpointDamaged,
    Found,
    checkpoint_files,
    find_checkpoint,
    folder_names,
    readable_prefix,
)
from trainer.presets import CPU_PRESET

logger = logging.getLogger(__name__)


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves (network, optimizer, global step) every ``checkpoint_steps`` steps and every epoch end.

    ``network``: the weights to keep (the trained model's network, without the weight-less tft layer);
    ``optimizer``: the compiled model's optimizer. The newest ``max_to_keep`` checkpoints are kept.
    ``owner``: the chief's claim on JOB (an ownership ``Claim``), and ``owner_dir`` this directory relative
    to it: every file written is recorded there first, and old checkpoints are deleted through it (only files a
    segflow trainer wrote). Without one, only files this object wrote are ever deleted.
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
        owner=None,
        owner_dir: str = "checkpoints",
    ):
        super().__init__()
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self._checkpoint = tf.train.Checkpoint(model=network, optimizer=optimizer, global_step=self.step)
        self._setup(directory, is_chief, worker_id, checkpoint_steps, max_to_keep, owner, owner_dir)

    def _setup(self, directory, is_chief, worker_id, every, max_to_keep, owner, owner_dir) -> None:
        self._is_chief = is_chief
        self._directory = directory.rstrip("/") if is_chief else f"{directory.rstrip('/')}/.scratch-worker-{worker_id}"
        self._every = int(every)
        self._max_to_keep = max(1, int(max_to_keep))
        self._last_saved = -1
        self._owner = owner if is_chief else None
        self._owner_dir = owner_dir.strip("/")
        self._kept: list[int] = []  # the older checkpoints the state file lists, oldest first
        self._written: set[str] = set()  # file names written by this object (what it may delete without an owner)
        self.what = "checkpoint"

    def restore(self, found: Optional[Found] = None) -> int:
        """Restores ``found`` (default: the newest whole checkpoint of the chief's directory, see
        ``find_checkpoint``) if any; returns the global step (0 if none).

        Raises ``ValueError`` when the checkpoint's variables do not fit this network (another class count or
        architecture); ``trainer.job_folder`` checks the recorded configuration first and reports that in one line.
        """
        if found is None:
            found = find_checkpoint(self._source_dir(), self.what)
        if found:
            with readable_prefix(found.prefix) as prefix:
                self._checkpoint.restore(prefix).expect_partial()
            logger.info("resumed from %s at step %d", found.prefix, int(self.step.numpy()))
            self._kept = list(found.listed) + [found.step]
        self._last_saved = int(self.step.numpy())
        return self._last_saved

    def _source_dir(self) -> str:
        return self._directory if self._is_chief else self._chief_dir()

    def _chief_dir(self) -> str:
        return self._directory.rsplit("/.scratch-worker-", 1)[0]

    def _rel(self, names: Iterable[str]) -> list[str]:
        return [f"{self._owner_dir}/{n}" if self._owner_dir else n for n in names]

    def save(self) -> None:
        step = int(self.step.numpy())
        if step == self._last_saved:
            return
        name = f"ckpt-{step}"
        # What CheckpointManager.save writes (save_counter included), under a name chosen here.
        self._checkpoint.save_counter.assign_add(1)
        self._checkpoint.write(f"{self._directory}/{name}")
        if not self._is_chief:  # scratch copy only existed for the collective save
            tf.io.gfile.rmtree(self._directory)
            self._last_saved = step
            return
        files = checkpoint_files(folder_names(self._directory), step) + [STATE_FILE]
        self._written.update(files)
        if self._owner is not None:  # recorded before the state file names it: a later run may prune it
            self._owner.record(self._rel(files))
        older = [n for n in self._kept if n < step]
        kept = older[-(self._max_to_keep - 1) :] if self._max_to_keep > 1 else []
        kept.append(step)
        # The state file last: until it names ckpt-<step>, a restart resumes from the previous checkpoint.
        # The writer of the ``checkpoint`` state file that tf.train.CheckpointManager uses (atomic, relative paths).
        private_apis.tf_update_checkpoint_state()(
            self._directory,
            f"{self._directory}/{name}",
            [f"{self._directory}/ckpt-{n}" for n in kept],
            save_relative_paths=True,
        )
        self._last_saved = step
        stale = [n for n in self._kept if n not in kept]
        self._kept = kept
        self._delete_checkpoints(stale)

    def _delete_checkpoints(self, steps: list[int]) -> None:
        """Deletes the files of checkpoints ``steps``: those JOB's record lists (or, without an owner, those this
        object wrote), never another tool's file of the same name."""
        if not steps:
            return
        names = folder_names(self._directory)
        doomed = [n for step in steps for n in checkpoint_files(names, step)]
        if self._owner is not None:
            self._owner.delete(self._rel(doomed))
            return
        for name in doomed:
            if name in self._written:
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


class StopWhenInterrupted(keras.callbacks.Callback):
    """Ends the fit after the step (or validation step) during which the program was stopped (Ctrl-C, SIGTERM),
    with the stop's own exception, which ``trainer.training`` answers with a checkpoint. The signal handler raised
    it already, unless the main thread was running a finalizer then: Python drops an exception raised there, and
    the run would train on (``logs.raise_if_stopped``)."""

    def on_train_batch_end(self, batch, logs=None):
        program_logs.raise_if_stopped()

    def on_test_batch_end(self, batch, logs=None):
        program_logs.raise_if_stopped()


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


# A network this size trains at seconds per step on a laptop CPU (the default U-Net, 64 filters and depth 4,
# has ~31 M parameters: 6-8 minutes per Pet epoch on 2 cores), where the pet_cpu preset's ~4.4 M takes about
# 2 s (batch 16, 128x128).
LARGE_FOR_CPU_PARAMETERS = 10_000_000


class LargeModelOnCpu(keras.callbacks.Callback):
    """One warning when a network sized for accelerators trains on a CPU: after ``measured_steps`` steps (the
    first, which traces the graph, left out), the time per step and per epoch it measured, and the preset to use
    instead. Add it only when no GPU or TPU runs the step."""

    def __init__(self, model_name: str, parameters: int, steps_per_epoch: int, measured_steps: int = 4):
        super().__init__()
        self.model_name, self.parameters, self.steps_per_epoch = model_name, int(parameters), int(steps_per_epoch)
        self.measured_steps = measured_steps
        self._times: list[float] = []
        self._start: Optional[float] = None
        self.said: Optional[str] = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.said is not None or self._start is None:
            return
        self._times.append(time.perf_counter() - self._start)
        if len(self._times) < self.measured_steps + 1:
            return
        per_step = float(np.mean(self._times[1:]))
        self.said = (
            f"{self.model_name} has {self.parameters / 1e6:.1f} M parameters and trains on a CPU: "
            f"{per_step:.2f} s per step (measured over {self.measured_steps} steps), about "
            f"{per_step * self.steps_per_epoch / 60:.0f} min per epoch of {self.steps_per_epoch} steps; "
            f"--preset {CPU_PRESET} trains a model sized for a CPU (python -m trainer.task --help lists the presets)"
        )
        logger.warning("%s", self.said)


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
        owner=None,
        owner_dir: str = "checkpoints/best",
    ):
        keras.callbacks.Callback.__init__(self)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")  # 0: none yet
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_value")
        self.monitor = monitor
        self._checkpoint = tf.train.Checkpoint(model=network, best_epoch=self.step, best_value=self.best)
        self._record = tf.train.Checkpoint(best_epoch=self.step, best_value=self.best)
        self._setup(directory, is_chief, worker_id, 0, 1, owner, owner_dir)
        self.what = "best checkpoint"

    @property
    def epoch(self) -> int:
        """The best epoch so far (1-based), 0 when no epoch has been validated."""
        return int(self.step.numpy())

    @property
    def value(self) -> float:
        return float(self.best.numpy())

    def restore(self, found: Optional[Found] = None) -> int:
        """Reads which epoch was best and its figure (not its weights, which would overwrite the resumed
        network); returns that epoch (0 if none). A best checkpoint that is damaged throughout is reported and
        forgotten (the training checkpoints are what a resume needs): the next validated epoch is the best."""
        try:
            found = found or find_checkpoint(self._source_dir(), self.what)
        except CheckpointDamaged as e:
            logger.warning("%s: the best epoch so far is forgotten", e)
            found = None
        if found:
            with readable_prefix(found.prefix) as prefix:
                self._record.read(prefix).expect_partial()
            self._kept = list(found.listed) + [found.step]
        self._last_saved = self.epoch
        return self.epoch

    def restore_weights(self) -> bool:
        """Loads the best epoch's weights into the network; False when there is no best checkpoint."""
        try:
            found = find_checkpoint(self._source_dir(), self.what)
        except CheckpointDamaged as e:
            logger.warning("%s", e)
            return False
        if not found:
            return False
        with readable_prefix(found.prefix) as prefix:
            self._checkpoint.read(prefix).expect_partial()
        return True

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value) and value > self.value:  # ties keep the earlier epoch
            self.best.assign(float(value))
            self.step.assign(epoch + 1)
            self.save()
            logger.debug("best %s so far: %.4f at epoch %d", self.monitor, float(value), epoch + 1)
        if logs is not None and self.epoch:
            # Keras' epoch line (printed after this callback) shows it: "- best_val_miou: 0.6123", one line per
            # epoch rather than a log line of its own inside the progress bar; TensorBoard plots it too.
            logs[f"best_{self.monitor}"] = self.value

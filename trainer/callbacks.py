"""Training callbacks: resumable checkpoints (fault tolerance) and throughput measurement.

``ResumableCheckpoint`` plays the role of ``BackupAndRestore`` but resumes *mid-epoch*: it saves the model,
the optimizer and the global step every ``checkpoint_steps`` steps and at each epoch end, in TensorFlow's
checkpoint format (``ckpt-<step>.index``/``.data-*`` and the ``checkpoint`` state file, which
``tf.train.latest_checkpoint`` reads). The state file is written last (atomically), so a SIGKILL during a save
leaves the previous checkpoint valid. On restart ``trainer.training.run`` restores the latest one and skips the batches
already consumed, so the resumed run sees the same data stream. In multi-worker runs every worker saves (saving
may involve collectives) but only the chief writes to ``JOB/checkpoints``; the others write to a scratch
directory that they delete, the pattern ``tf.distribute`` documents.

``--job_dir`` is a literal path: ``tf.train.CheckpointManager`` and ``tf.train.latest_checkpoint`` find and
delete checkpoint files through glob patterns built from the directory, so in a ``job[1]`` they would miss this
job's checkpoints and delete ``job1``'s. Here checkpoints are found by reading the state file and checking the
exact file names, and old ones are deleted through JOB's owner record (``pipelines.shared.ownership``): only files a
segflow trainer wrote, never another tool's ``ckpt-3.index``.

A damaged checkpoint is never dropped silently (``find_checkpoint``): the state file is parsed here (TensorFlow
ignores an unreadable one and would restart from step 0 over the existing checkpoints), every candidate is read
back whole before it is resumed, and a damaged one is skipped with a warning naming the file and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Iterable, Iterator, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipelines.shared import private_apis
from pipelines.shared.tf_paths import TF_GLOB_CHARS
from trainer.data_dir import DataError

logger = logging.getLogger(__name__)


_CKPT_FILE_RE = re.compile(r"^ckpt-(\d+)\.(index|data-\d{5}-of-\d{5})$")


STATE_FILE = "checkpoint"  # the state file tf.train.latest_checkpoint reads


class CheckpointDamaged(DataError):
    """No checkpoint in the folder reads back whole, though some are there: resuming would lose them."""


@dataclasses.dataclass
class Found:
    """The checkpoint to resume: its prefix (``DIR/ckpt-<step>``), its step, and the other checkpoints the
    folder's state file lists (steps, older ones included), which pruning will later delete."""

    prefix: str
    step: int
    listed: list[int]


def _checkpoint_number(name: str) -> Optional[int]:
    m = re.fullmatch(r"ckpt-(\d+)", name)
    return int(m.group(1)) if m else None


def checkpoint_files(names: Iterable[str], step: int) -> list[str]:
    """Those of ``names`` (file names in a checkpoint folder) that are checkpoint ``ckpt-<step>``'s files."""
    return sorted(n for n in names if (m := _CKPT_FILE_RE.match(n)) and int(m.group(1)) == step)


def _listdir(directory: str) -> list[str]:
    try:
        return [n.rstrip("/") for n in tf.io.gfile.listdir(directory)]
    except tf.errors.NotFoundError:
        return []


def read_state(directory: str) -> tuple[Optional[list[int]], Optional[str]]:
    """The checkpoint steps the state file of ``directory`` names (newest last), and why it cannot be trusted
    (None when it can). ``(None, None)``: no state file. Paths in it are taken by their base name, so a JOB
    copied elsewhere still finds its checkpoints."""
    from google.protobuf import text_format

    path = f"{directory}/{STATE_FILE}"
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except tf.errors.NotFoundError:
        return None, None
    state = private_apis.tf_checkpoint_state_class()()
    try:
        text_format.Parse(data.decode("utf-8"), state)
    except (UnicodeDecodeError, text_format.ParseError) as e:
        return None, f"it is not a checkpoint state file ({' '.join(str(e).split())[:120]})"
    names = list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]
    steps = []
    for name in names:
        step = _checkpoint_number(name.replace("\\", "/").rsplit("/", 1)[-1]) if name else None
        if name and step is None:
            return None, f"it names {name!r}, not a segflow checkpoint"
        if step is not None and step not in steps:
            steps.append(step)
    if not steps:
        return None, "it names no checkpoint"
    last = steps.pop(steps.index(max(steps)))  # the newest is the one to resume
    return sorted(steps) + [last], None


def _why_unreadable(prefix: str, names: list[str]) -> Optional[tuple[str, str]]:
    """(the damaged file, why) when checkpoint ``prefix`` does not read back whole, else None. Every tensor is
    read: a truncated data file (an interrupted copy, a full disk) otherwise fails deep in the restore with an
    ``IndexError`` that names no file."""
    folder, name = prefix.rsplit("/", 1)
    step = int(name.rsplit("-", 1)[1])
    files = checkpoint_files(names, step)
    index = f"{name}.index"
    if index not in files:
        return f"{folder}/{index}", "missing"
    data = [f for f in files if f != index]
    if not data:
        return f"{folder}/{name}.data-00000-of-00001", "missing"
    with _readable_prefix(prefix) as readable:
        try:
            reader = tf.train.load_checkpoint(readable)
        except (tf.errors.OpError, ValueError) as e:
            return f"{folder}/{index}", _short(e)
        try:
            for variable in reader.get_variable_to_shape_map():
                reader.get_tensor(variable)
        except (tf.errors.OpError, IndexError, ValueError) as e:  # IndexError: "Read less bytes than requested"
            return f"{folder}/{data[0] if len(data) == 1 else name + '.data-*'}", _short(e)
    return None


def _short(error: BaseException) -> str:
    message = error.message if isinstance(error, tf.errors.OpError) else str(error)
    return " ".join((message or type(error).__name__).split())[:160]


def find_checkpoint(directory: str, what: str = "checkpoint") -> Optional[Found]:
    """The newest checkpoint in ``directory`` (taken literally) that reads back whole, or None when there is
    none. The state file decides which are complete (it is written after each checkpoint); when it is missing
    or damaged, every ``ckpt-<step>`` found in the folder is a candidate. A damaged candidate is skipped with a
    warning naming its file; when every candidate is damaged, ``CheckpointDamaged`` names the newest one's file
    (resuming nothing would restart from step 0 over them)."""
    names = _listdir(directory)
    listed, untrusted = read_state(directory)
    found_steps = sorted({int(m.group(1)) for m in map(_CKPT_FILE_RE.match, names) if m})
    if listed is None:
        if untrusted:
            logger.warning(
                "%s/%s is damaged (%s): looking for the checkpoints in the folder instead",
                directory,
                STATE_FILE,
                untrusted,
            )
        candidates = found_steps
    else:
        candidates = listed
    damaged = []
    for step in reversed(candidates):
        prefix = f"{directory}/ckpt-{step}"
        why = _why_unreadable(prefix, names)
        if why is None:
            for path, reason in damaged:
                logger.warning("skipped %s %s: %s is damaged (%s)", what, path.rsplit(".", 1)[0], path, reason)
            if damaged or untrusted:
                logger.warning("resuming from %s %s, the newest that reads back whole", what, prefix)
            return Found(prefix, step, [s for s in candidates if s < step])
        damaged.append(why)
    if damaged:
        path, reason = damaged[0]
        raise CheckpointDamaged(
            f"{what} {path} is damaged ({reason}) and no earlier one in {directory} reads back whole: move "
            f"{directory} away to start over, or use a new --job_dir"
        )
    return None


def latest_checkpoint(directory: str) -> Optional[str]:
    """The prefix of the newest checkpoint in ``directory`` that reads back whole, or None (see
    ``find_checkpoint``)."""
    found = find_checkpoint(directory)
    return found.prefix if found else None


def checkpoint_step(directory: str) -> int:
    """The global step of the newest whole checkpoint in ``directory`` (its ``ckpt-<step>`` number; 0 if none)."""
    found = find_checkpoint(directory)
    return found.step if found else 0


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
            with _readable_prefix(found.prefix) as prefix:
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
        files = checkpoint_files(_listdir(self._directory), step) + [STATE_FILE]
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
        names = _listdir(self._directory)
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
            with _readable_prefix(found.prefix) as prefix:
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
        with _readable_prefix(found.prefix) as prefix:
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

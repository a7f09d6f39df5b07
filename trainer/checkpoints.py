"""What a checkpoint folder holds and which checkpoint to resume: found by name, read back whole before it is trusted.

Checkpoints are TensorFlow's format (``ckpt-<step>.index``/``.data-*`` and the ``checkpoint`` state file, which
``tf.train.latest_checkpoint`` reads); ``trainer.callbacks`` writes them. ``--job_dir`` is a literal path:
``tf.train.CheckpointManager`` and ``tf.train.latest_checkpoint`` find and delete checkpoint files through glob
patterns built from the directory, so in a ``job[1]`` they would miss this job's checkpoints and delete ``job1``'s.
Here checkpoints are found by reading the state file and checking the exact file names.

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
from typing import Iterable, Iterator, Optional

import tensorflow as tf

from pipelines.shared import private_apis
from pipelines.shared.tf_paths import TF_GLOB_CHARS
from trainer.data_dir import DataError

# The name users have seen on these lines (skipped and resumed checkpoints): they belong to the resume the
# callbacks' restore does, wherever the folder is read from.
logger = logging.getLogger("trainer.callbacks")

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


def folder_names(directory: str) -> list[str]:
    """The names in ``directory`` (none when it is missing)."""
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
    with readable_prefix(prefix) as readable:
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
    names = folder_names(directory)
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


@contextlib.contextmanager
def readable_prefix(prefix: str) -> Iterator[str]:
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

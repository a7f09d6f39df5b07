"""Where a preprocess output keeps its records: the split names and the shard file-name rule.

A contract between preprocess (which writes ``DST/<split>-SSSSS-of-NNNNN.tfrecord.gz``) and the trainer (which
lists ``DST`` and matches names against the same rule). Written once, here, without TensorFlow, so the light
command-line modules (``--help`` must not import TensorFlow) read it too.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

__all__ = ["SHARD_NAME", "SPLITS", "ShardName", "is_shard_name", "parse_shard_name", "shard_name"]

# The dataset splits a record belongs to, in the order reports list them.
SPLITS: tuple[str, ...] = ("train", "val", "test")

# ``SHARD_NAME.format(split=..., index=..., count=...)``: the 0-based shard index and the split's shard count,
# five digits each (the ``-SSSSS-of-NNNNN`` convention of Beam's and TensorFlow's sharded writers).
SHARD_NAME = "{split}-{index:05d}-of-{count:05d}.tfrecord.gz"
_SHARD_NAME_RE = re.compile(r"^(" + "|".join(SPLITS) + r")-(\d{5})-of-(\d{5})\.tfrecord\.gz$")


class ShardName(NamedTuple):
    """A shard file name's parts; ``count`` is the split's number of shards."""

    split: str
    index: int
    count: int


def shard_name(split: str, index: int, count: int) -> str:
    """The file name of shard ``index`` (0-based) of ``count`` of ``split``."""
    return SHARD_NAME.format(split=split, index=index, count=count)


def parse_shard_name(name: str) -> Optional[ShardName]:
    """The parts of a shard file name (a base name, not a path); None for any other name."""
    match = _SHARD_NAME_RE.match(name)
    if not match:
        return None
    return ShardName(match.group(1), int(match.group(2)), int(match.group(3)))


def is_shard_name(name: str) -> bool:
    """True for a file name preprocess writes shards under."""
    return parse_shard_name(name) is not None

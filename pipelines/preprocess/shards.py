"""Deterministic sharded GZIP TFRecord output: ``DST/<split>-SSSSS-of-NNNNN.tfrecord.gz``.

Beam's ``WriteToTFRecord(num_shards=N)`` puts records into shards in whatever order bundles arrive, so two runs
of the same job differ byte for byte. Here a record's shard is a stable hash of its key, records inside a shard
are written sorted by key, and GZIP (zlib, no timestamp in the header) compresses them the same way every time:
same inputs and flags → identical files. Files are written through Beam ``FileSystems``, so ``gs://`` works.

Gathering a shard's records takes a ``GroupByKey``. On Dataflow the shuffle service holds them; a local runner
holds every grouped element in its own memory, so there, with a local ``spill_dir``, records are appended to
scratch files as they are made and only (shard, key, file, offset, length) pointers are grouped: the job's memory
stays flat however many records it writes. Both ways write identical shards.

The number of shards per split is ``--num_shards`` or, by default, one per ``TARGET_SHARD_BYTES`` of
estimated records, and at least enough for parallel reads (``PARALLEL_READ_SHARDS``, never below
``MIN_RECORDS_PER_SHARD`` records each), decided from the number of source examples per split. Shards left over
from an earlier run into the same directory (another shard count, a split that is now empty) are deleted when the
run publishes, by the folder's owner record (``pipelines.shared.ownership``), never by name pattern.
The transform's output names the shard files that now make up each split and how many records each holds.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from typing import Iterable, Iterator, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.common import storage, tfrecord
from pipelines.common.hashing import stable_int
from schemas.records import SHARD_NAME, SPLITS, is_shard_name  # the shard-name rule the trainer reads by

TARGET_SHARD_BYTES = 32 * 1024 * 1024
MAX_SHARDS = 1024
# GZIP inflates sequentially within a file: the trainer's interleave reads up to 8 shards at once and gives each
# multi-worker replica whole files, so a split of small records still gets several shards.
PARALLEL_READ_SHARDS = 16
MIN_RECORDS_PER_SHARD = 256


class Record(NamedTuple):
    """One serialized ``tf.train.Example`` and where it goes. ``key`` orders records inside a shard."""

    split: str
    key: str
    serialized: bytes


def shard_files(output_dir: str) -> dict[str, storage.ListedFile]:
    """The shard-named files directly in ``output_dir``, by file name: the folder listed literally (a glob built
    from ``out[1]`` would match ``out1``'s files)."""
    found = {}
    for listed in storage.list_folder(output_dir):
        name = listed.path.rsplit("/", 1)[-1]  # listings join with "/"; a backslash is part of a POSIX name
        if is_shard_name(name):
            found[name] = listed
    return found


class ShardsWritten(NamedTuple):
    """What ``WriteShards`` wrote: the plan (``{split: shard count}``), ``{shard file name: records}`` for
    every shard of the plan (0 for a shard no record hashed to)."""

    num_shards: dict[str, int]
    records: dict[str, int]

    def per_split(self, originals: Iterable[tuple[str, int, int]] = ()) -> tuple[dict[str, int], dict[str, int]]:
        """(records per split, source examples per split), summed over the shards; ``originals`` is
        ``WriteShards.per_shard`` (name, records, original records). The job counts its records here, where
        they are written, rather than with more transforms on every record."""
        records: dict[str, int] = {}
        sources: dict[str, int] = {}
        for name, n in self.records.items():
            split = name.split("-", 1)[0]
            records[split] = records.get(split, 0) + n
        for name, _, n in originals:
            split = name.split("-", 1)[0]
            sources[split] = sources.get(split, 0) + n
        return records, sources


ORIGINAL_SUFFIX = "#0000"  # the record key of augmentation copy 0 ends so (``record_key``)


def record_key(example_id: str, copy: int) -> str:
    """The sort key of a record: the source id, then the augmentation copy (original first)."""
    return f"{example_id}#{copy:04d}"


def shard_path(output_dir: str, split: str, index: int, count: int) -> str:
    return FileSystems.join(output_dir, SHARD_NAME.format(split=split, index=index, count=count))


def auto_num_shards(total_bytes: int, num_records: int = 0) -> int:
    """Default shard count of a split: ~``TARGET_SHARD_BYTES`` each, or more for parallel reads (up to
    ``PARALLEL_READ_SHARDS`` shards of at least ``MIN_RECORDS_PER_SHARD`` records); 1 to ``MAX_SHARDS``."""
    by_size = math.ceil(total_bytes / TARGET_SHARD_BYTES)
    for_parallel_reads = min(PARALLEL_READ_SHARDS, math.ceil(num_records / MIN_RECORDS_PER_SHARD))
    return max(1, min(MAX_SHARDS, max(by_size, for_parallel_reads)))


def shard_of(key: str, num_shards: int) -> int:
    return stable_int("shard", key) % num_shards


def write_tfrecord_file(path: str, serialized_records: Iterable[bytes]) -> int:
    """Writes records to one GZIP TFRecord file via ``FileSystems``; returns how many were written."""
    count = 0
    with FileSystems.create(
        path, mime_type="application/octet-stream", compression_type=CompressionTypes.GZIP
    ) as handle:
        for value in serialized_records:
            tfrecord.write_record(handle, value)
            count += 1
    return count


class _WriteShard(beam.DoFn):
    """(shard, items) → the shard file with the items' records in key order; items are ``(key, bytes)``."""

    def __init__(self, output_dir: str):
        self._output_dir = output_dir
        self._written = {}

    def setup(self) -> None:
        self._written = {split: Metrics.counter("segflow", f"records_written_{split}") for split in SPLITS}

    def process(self, element: tuple[tuple[str, int, int], Iterable[tuple]]) -> Iterator[tuple[str, int, int]]:
        (split, index, count), items = element
        # Items are small (a shard's records, or pointers to them), so sorting a shard's worth is bounded.
        ordered = sorted(items, key=lambda item: item[0])
        n = write_tfrecord_file(shard_path(self._output_dir, split, index, count), self._payloads(ordered))
        self._written[split].inc(n)
        originals = sum(1 for item in ordered if item[0].endswith(ORIGINAL_SUFFIX))
        yield SHARD_NAME.format(split=split, index=index, count=count), n, originals

    def _payloads(self, ordered: list) -> Iterator[bytes]:
        """The serialized records of ``ordered`` items, in order."""
        return (value for _, value in ordered)


class _Pointer(NamedTuple):
    """Where a spilled record's bytes are: ``length`` bytes at ``offset`` of the local file ``path``."""

    key: str  # first: shard writers sort items by their first field
    split: str
    path: str
    offset: int
    length: int


class _SpillRecords(beam.DoFn):
    """``Record`` → ``_Pointer``: appends the serialized record to this bundle's scratch file.

    Needs no side input, so it runs fused with whatever makes the records and they never sit in the runner's
    memory; only the small pointers are routed to shards and grouped. A fresh file name per bundle: a retried
    bundle never shares a file with its failed attempt.
    """

    def __init__(self, spill_dir: str):
        self._spill_dir = spill_dir
        self._file: Optional[list] = None

    def process(self, record: Record) -> Iterator[_Pointer]:
        if self._file is None:
            os.makedirs(self._spill_dir, exist_ok=True)
            path = os.path.join(self._spill_dir, f"{uuid.uuid4().hex}.spill")
            self._file = [path, open(path, "wb"), 0]
        path, handle, offset = self._file
        handle.write(record.serialized)
        self._file[2] = offset + len(record.serialized)
        yield _Pointer(record.key, record.split, path, offset, len(record.serialized))

    def finish_bundle(self) -> None:
        # Closed before the bundle commits, so the grouped pointers only ever name complete files.
        if self._file is not None:
            self._file[1].close()
            self._file = None


class _WriteShardFromSpill(_WriteShard):
    """(shard, pointers) → the shard file, its records read back from the scratch files in key order."""

    def _payloads(self, ordered: list[_Pointer]) -> Iterator[bytes]:
        handles: dict[str, object] = {}
        try:
            for pointer in ordered:
                handle = handles.get(pointer.path)
                if handle is None:
                    handle = handles[pointer.path] = open(pointer.path, "rb")
                handle.seek(pointer.offset)
                yield handle.read(pointer.length)
        finally:
            for handle in handles.values():
                handle.close()


def _shard_key(record, shards: dict[str, int]) -> tuple[str, int, int]:
    """(split, shard index, shard count) of a ``Record`` or ``_Pointer``."""
    count = shards[record.split]
    return record.split, shard_of(record.key, count), count


def _record_by_shard(record: Record, shards: dict[str, int]) -> tuple[tuple[str, int, int], tuple[str, bytes]]:
    return _shard_key(record, shards), (record.key, record.serialized)


def _pointer_by_shard(pointer: _Pointer, shards: dict[str, int]) -> tuple[tuple[str, int, int], _Pointer]:
    return _shard_key(pointer, shards), pointer


def _finalize(
    num_shards: dict[str, int], output_dir: str, spill_dir: Optional[str], written: list[tuple[str, int, int]]
) -> ShardsWritten:
    """Writes empty shards for shard indices no record hashed to and deletes the scratch files; returns what the
    split's shards now are."""
    records = {name: n for name, n, _ in written}
    for split, count in sorted(num_shards.items()):
        for index in range(count):
            name = SHARD_NAME.format(split=split, index=index, count=count)
            if name not in records:
                records[name] = write_tfrecord_file(shard_path(output_dir, split, index, count), [])
    # Shards an earlier run left (another count, a split now empty) are not deleted here: the run's publication
    # deletes them by the folder's owner record (pipelines.shared.ownership), never by name pattern.
    if spill_dir is not None:
        shutil.rmtree(spill_dir, ignore_errors=True)
    return ShardsWritten(dict(sorted(num_shards.items())), dict(sorted(records.items())))


def plan_shards(
    source_counts: dict[str, int], copies: dict[str, int], bytes_per_record: int, fixed: Optional[int] = None
) -> dict[str, int]:
    """Shards per split: ``fixed`` (``--num_shards``) or ~``TARGET_SHARD_BYTES`` of estimated records each.

    Decided from the number of source examples per split (known before any image is decoded), so records can
    be routed to their shard as they are made, without first holding them all to measure them.
    """
    return {
        split: fixed or auto_num_shards(n * copies.get(split, 1) * bytes_per_record, n * copies.get(split, 1))
        for split, n in source_counts.items()
        if n
    }


class WriteShards(beam.PTransform):
    """``Record``s → sharded GZIP TFRecords in ``output_dir``, given a one-element PCollection holding the
    ``{split: num_shards}`` plan (see ``plan_shards``).

    ``spill_dir``: a local scratch folder for runners on this machine (records are grouped as pointers into
    files there, see the module docstring); None groups the records themselves (remote runners' shuffle).
    Returns a PCollection with one element, a ``ShardsWritten``, emitted once every shard is written. After
    ``expand``, ``per_shard`` is the PCollection of ``(shard file name, records, original records)`` of every
    non-empty shard written (originals: augmentation copy 0, one per source example).
    """

    def __init__(self, output_dir: str, plan: beam.PCollection, spill_dir: Optional[str] = None):
        super().__init__()
        self._output_dir = output_dir
        self._plan = plan
        self._spill_dir = spill_dir

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        shards = beam.pvalue.AsSingleton(self._plan)
        if self._spill_dir is None:
            written = (
                records
                | "AssignShard" >> beam.Map(_record_by_shard, shards=shards)
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShard(self._output_dir))
            )
        else:
            written = (
                records
                | "SpillRecords" >> beam.ParDo(_SpillRecords(self._spill_dir))
                | "AssignShard" >> beam.Map(_pointer_by_shard, shards=shards)
                | "GroupPointersByShard" >> beam.GroupByKey()
                | "WriteShardFromSpill" >> beam.ParDo(_WriteShardFromSpill(self._output_dir))
            )
        self.per_shard = written
        return self._plan | "Finalize" >> beam.Map(
            _finalize, self._output_dir, self._spill_dir, written=beam.pvalue.AsList(written)
        )

"""``DST/metadata.json``: what it says about a preprocess run (``dataset_metadata``), writing it as the run's
last file (``write_metadata``), what ``run`` returns (``PreprocessResult``) and the summary for people."""

from __future__ import annotations

import dataclasses
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from pipelines import datasets
from pipelines.common import storage
from pipelines.preprocess.options import PreprocessConfig
from pipelines.preprocess.shards import ShardsWritten, shard_files
from schemas import labels
from schemas.metadata import DatasetMetadata, DatasetStats
from schemas.records import SPLITS

NO_TRAIN_REASON = (
    "no train records: the statistics and transform_fn/ come from the train split only, so this "
    "dataset can be evaluated or inferred on, not trained on"
)


def dataset_metadata(
    config: PreprocessConfig,
    counts: dict[str, int],
    source_counts: dict[str, int],
    dead_letters: int,
    num_shards: dict[str, int],
    stats: Optional[DatasetStats],
    shards: Optional[dict[str, dict[str, int]]] = None,
    stats_absent_reason: Optional[str] = None,
) -> DatasetMetadata:
    """The metadata of a run with ``config`` that wrote these records (per split), from these source examples,
    with ``dead_letters`` rejected inputs, into ``shards`` (``{name: {"records", "bytes"}}``)."""
    spec = config.label_spec
    return DatasetMetadata(
        dataset=config.dataset,
        label_mode=spec.mode,
        num_classes=spec.num_classes,
        class_names=list(spec.class_names),
        ignore_label=spec.ignore_label,
        image_size=list(config.image_size),
        resize_mode=config.resize_mode,
        image_format=config.image_format,
        counts={s: int(counts.get(s, 0)) for s in SPLITS},
        source_counts={s: int(source_counts.get(s, 0)) for s in SPLITS},
        dead_letter_count=int(dead_letters),
        inputs_seen=int(sum(source_counts.values()) + dead_letters),
        augment_copies=config.augment_copies,
        seed=config.seed,
        num_shards={s: int(n) for s, n in sorted(num_shards.items())},
        shards={
            name: {"records": int(e["records"]), "bytes": int(e["bytes"])} for name, e in sorted((shards or {}).items())
        },
        stats=stats,
        stats_absent_reason=stats_absent_reason,
        extra={"val_fraction": config.val_fraction, **dict(datasets.get(config.dataset).metadata_extra)},
        label_table=labels.label_table(spec),
    )


def write_metadata(
    _: object,
    config: PreprocessConfig,
    path: str,
    dead_letters: int,
    written: ShardsWritten,
    per_shard: list[tuple[str, int, int]],
    stats: list[Optional[DatasetStats]],
) -> Optional[str]:
    """Writes metadata.json to ``path``, the last file of a run: every shard, transform_fn/ and the dead letters
    are in place when this runs (its side inputs come after them). Returns ``path``.

    Names every shard with its record count and its size as stored, listed from DST now. When no input became
    a record (every one a dead letter) there is no dataset to describe: the empty shards are removed, DST keeps
    only ``dead_letter/``, no metadata.json is written, and this returns None.
    """
    counts, source_counts = written.per_split(per_shard)  # records and source examples per split, as written
    if not sum(counts.values()):
        storage.delete_files(FileSystems.join(config.output_dir, name) for name in written.records)
        return None
    on_storage = shard_files(config.output_dir)
    missing = sorted(set(written.records) - set(on_storage))
    if missing:  # the lease keeps other segflow runs out: something else deleted them
        raise RuntimeError(
            f"shard files this run wrote in {config.output_dir} are gone ({', '.join(missing[:3])}): was the "
            "folder changed by another program while preprocess ran? Rerun the same command"
        )
    manifest = {name: {"records": n, "bytes": on_storage[name].size} for name, n in written.records.items()}
    stat = stats[0] if stats else None
    metadata = dataset_metadata(
        config,
        counts,
        source_counts,
        dead_letters,
        written.num_shards,
        stat,
        manifest,
        None if stat is not None else NO_TRAIN_REASON,
    )
    storage.write_bytes(path, metadata.to_json().encode("utf-8"), "application/json")
    return path


def summary(metadata: DatasetMetadata, output_dir: str) -> str:
    """A short human-readable summary of a preprocess run: what it read and what it wrote."""
    total_bytes = sum(int(e["bytes"]) for e in metadata.shards.values())
    lines = [
        f"{metadata.dataset} → {output_dir}: {metadata.num_classes} classes "
        f"({', '.join(metadata.class_names)}), records {metadata.image_size[0]}x{metadata.image_size[1]}",
        "  records per split: "
        + ", ".join(f"{s}={metadata.counts.get(s, 0)}" for s in SPLITS)
        + "  (source examples: "
        + ", ".join(f"{s}={metadata.source_counts.get(s, 0)}" for s in SPLITS)
        + ")",
        f"  inputs seen {metadata.inputs_seen}, dead letters {metadata.dead_letter_count}"
        + (f" (see {FileSystems.join(output_dir, 'dead_letter')})" if metadata.dead_letter_count else ""),
        f"  wrote {len(metadata.shards)} shard files ({total_bytes} bytes), metadata.json, dead_letter/"
        + (", transform_fn/" if metadata.stats else ""),
    ]
    if metadata.stats:
        lines.append(f"  train channel mean {metadata.stats.channel_mean}, std {metadata.stats.channel_std}")
    else:
        lines.append(f"  no statistics and no transform_fn/: {metadata.stats_absent_reason}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class PreprocessResult:
    """What a run wrote: ``metadata`` as in ``output_dir/metadata.json`` (None when Beam only constructed the
    job, ``--dry_run=True``), its records per split and dead letters, and the job's Beam counters."""

    output_dir: str
    metadata: Optional[DatasetMetadata]
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    dead_letter_count: int = 0
    counters: dict[str, int] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for people: what the run read and wrote."""
        if self.metadata is None:
            return f"{self.output_dir}: the job was constructed, not run (--dry_run)"
        return summary(self.metadata, self.output_dir)

"""Oxford-IIIT Pet / Cityscapes → sharded GZIP TFRecords, metadata.json and a tensorflow-transform graph.

    python -m pipelines.preprocess --dataset pet --input_dir SRC --output_dir DST --image_size 128 \\
        [--num_shards N] [--augment_copies K] [--val_fraction F] [--seed S] [any Beam option]

Job flags are parsed here; every other flag goes to Beam (``--runner``, ``--direct_num_workers``,
``--project``, ``--temp_location``, ``--setup_file`` ...). Defaults run the DirectRunner in multi-processing
mode with one worker per core. From Python (e.g. a demo)::

    from pipelines.preprocess import job as preprocess
    metadata = preprocess.run(["--dataset", "pet", "--input_dir", src, "--output_dir", dst,
                               "--image_size", "128"])   # -> schemas.metadata.DatasetMetadata
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from typing import TYPE_CHECKING, Optional, Sequence

# Only what parsing the flags needs is imported here: ``--help`` and a bad job flag answer in well under a
# second. Beam, TensorFlow and the pipeline modules (~5 s of imports on 2 cores) load once the flags are
# parsed (``_pipeline_modules``), or when another module imports them.
from schemas import labels as schema_labels
from schemas.metadata import METADATA_FILE, DatasetMetadata, DatasetStats

if TYPE_CHECKING:
    import apache_beam as beam

    from pipelines.preprocess.records import RecordOptions
    from pipelines.preprocess.shards import ShardsWritten

_LOG = logging.getLogger("segflow.preprocess")
PROG = "python -m pipelines.preprocess"
# schemas.features.SPLITS and schemas.imaging.RESIZE_MODES, whose modules import TensorFlow (tests check they
# agree).
SPLITS = ("train", "val", "test")
RESIZE_MODES = ("stretch", "pad")


class UsageError(ValueError):
    """A bad flag or input; ``main`` prints it as one line and exits with status 2."""


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """The job's flags, validated."""

    dataset: str
    input_dir: str
    output_dir: str
    image_size: tuple[int, int]
    num_shards: Optional[int] = None
    augment_copies: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    resize_mode: str = "stretch"
    label_mode: str = "trimap"
    image_format: str = "png"
    jpeg_quality: int = 95
    analyze_batch_size: int = 64

    @property
    def label_spec(self) -> schema_labels.LabelSpec:
        return schema_labels.spec_for(self.dataset, self.label_mode if self.dataset == "pet" else None)

    def record_options(self) -> "RecordOptions":
        from pipelines.preprocess.records import RecordOptions

        return RecordOptions(dataset=self.dataset, image_size=self.image_size, resize_mode=self.resize_mode,
                             label_mode=self.label_mode, image_format=self.image_format,
                             jpeg_quality=self.jpeg_quality, augment_copies=self.augment_copies, seed=self.seed,
                             ignore_label=schema_labels.IGNORE_LABEL)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block, no traceback
        raise UsageError(f"{message} (see {PROG} --help)")


def _image_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image_size must be H or H,W in pixels, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8 or max(parts) > 4096:
        raise argparse.ArgumentTypeError(f"--image_size must be H or H,W with 8 <= each <= 4096, got {text!r}")
    return parts[0], parts[1]


def build_arg_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False,
                epilog="Every other flag is passed to Apache Beam (e.g. --runner, --direct_num_workers, "
                       "--project, --region, --temp_location, --setup_file).")
    p.add_argument("--dataset", choices=("pet", "cityscapes"), required=True, help="dataset layout to read")
    p.add_argument("--input_dir", required=True, help="dataset root (local path or gs://)")
    p.add_argument("--output_dir", required=True, help="where shards, metadata.json, transform_fn/ and "
                                                       "dead_letter/ go (local path or gs://)")
    p.add_argument("--image_size", type=_image_size, required=True, help="record size H or H,W in pixels")
    p.add_argument("--num_shards", type=int, default=0,
                   help="shards per split; 0 (default) = one per ~32 MiB of records")
    p.add_argument("--augment_copies", type=int, default=0,
                   help="extra augmented records per train example (flip, scale-and-crop, shift, colour)")
    p.add_argument("--val_fraction", type=float, default=0.1,
                   help="Pet: fraction of trainval carved out as val, by a stable hash of the id")
    p.add_argument("--test_fraction", type=float, default=0.2,
                   help="Pet without trainval.txt/test.txt: fraction of ids hashed into test")
    p.add_argument("--seed", type=int, default=0, help="seed of the offline augmentation")
    p.add_argument("--resize_mode", choices=RESIZE_MODES, default="stretch",
                   help="stretch to the size, or pad (keep aspect, pad images with 0 and masks with 255)")
    p.add_argument("--label_mode", choices=schema_labels.PET_LABEL_MODES, default="trimap",
                   help="Pet: trimap (pet/background/border), binary (pet/background), species "
                        "(background/cat/dog); ignored for Cityscapes")
    p.add_argument("--image_format", choices=("auto", "png", "jpeg"), default="auto",
                   help="record image encoding; auto (default) keeps the source's codec family: jpeg for Pet "
                        "(JPEG photos), png for Cityscapes (PNG frames)")
    p.add_argument("--jpeg_quality", type=int, default=95, help="with --image_format jpeg")
    p.add_argument("--analyze_batch_size", type=int, default=64,
                   help="JPEG records decoded per graph call for the statistics (PNG records need no decode)")
    return p


# --image_format auto: the source's codec family. Pet photos are JPEGs: a q95 4:4:4 JPEG record costs nothing a
# model can see, and decodes ~4x faster than a PNG of the same pixels on every training epoch. Cityscapes
# frames are PNGs: keep them lossless, as DeepLab's build_cityscapes_data does.
AUTO_IMAGE_FORMAT = {"pet": "jpeg", "cityscapes": "png"}


def record_image_format(dataset: str, requested: str) -> str:
    """The record image encoding for ``--image_format`` (``auto`` resolved per dataset)."""
    return AUTO_IMAGE_FORMAT[dataset] if requested == "auto" else requested


def parse_args(argv: Sequence[str]) -> tuple[PreprocessConfig, list[str]]:
    """Job flags → ``PreprocessConfig``; the rest is returned for Beam. Raises ``UsageError``."""
    args, beam_argv = build_arg_parser().parse_known_args(list(argv))
    if args.num_shards < 0 or args.num_shards > 10000:
        raise UsageError("--num_shards must be between 0 (automatic) and 10000")
    if not 0 <= args.augment_copies <= 64:
        raise UsageError("--augment_copies must be between 0 and 64")
    if not 0.0 <= args.val_fraction < 1.0:
        raise UsageError("--val_fraction must be in [0, 1)")
    if not 0.0 <= args.test_fraction < 1.0 or args.val_fraction + args.test_fraction >= 1.0:
        raise UsageError("--test_fraction must be in [0, 1) and leave room for train with --val_fraction")
    if not 1 <= args.jpeg_quality <= 100:
        raise UsageError("--jpeg_quality must be between 1 and 100")
    if args.analyze_batch_size < 1:
        raise UsageError("--analyze_batch_size must be positive")
    if args.dataset == "cityscapes" and args.label_mode != "trimap":
        raise UsageError("--label_mode applies to Pet only; Cityscapes always uses the 19 trainIds")
    # A mistyped Beam flag, from the list of the installed Beam's flags (pipelines.common.flags): no Beam import. Beam
    # itself checks them again below (and alone when the list describes another Beam version).
    from pipelines.common.flags import known_beam_flags

    known = known_beam_flags() if beam_argv else None
    unknown = [a.split("=", 1)[0] for a in beam_argv if a.startswith("--") and known is not None
               and a.split("=", 1)[0] not in known]
    if unknown:
        raise UsageError(f"unknown flag(s) {' '.join(unknown)}: not a flag of this job nor a Beam option "
                         f"(see {PROG} --help)")
    from pipelines.common import runner as runner_lib
    from pipelines.common import storage

    input_dir = args.input_dir.rstrip("/") or "/"
    output_dir = args.output_dir.rstrip("/") or "/"
    # Resolved paths (".", "..", links), both ways: DST inside SRC makes a rerun read its own outputs as inputs,
    # and SRC inside DST puts the dataset in the folder this job rewrites and cleans.
    out_in, in_out = storage.same_or_inside(output_dir, input_dir), storage.same_or_inside(input_dir, output_dir)
    if out_in:
        where = "the same folder as --input_dir" if in_out else f"inside --input_dir {input_dir}"
        raise UsageError(f"--output_dir {output_dir} is {where}: a rerun would read its own outputs as inputs; "
                         "choose an --output_dir outside the dataset")
    if in_out:
        raise UsageError(f"--input_dir {input_dir} is inside --output_dir {output_dir}, which preprocess rewrites "
                         "and cleans; choose an --output_dir outside the dataset")
    try:
        runner_lib.check_beam_flags(beam_argv)
    except ValueError as e:
        raise UsageError(f"{e} (see {PROG} --help)") from None
    config = PreprocessConfig(
        dataset=args.dataset, input_dir=input_dir, output_dir=output_dir, image_size=args.image_size,
        num_shards=args.num_shards or None, augment_copies=args.augment_copies, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, resize_mode=args.resize_mode,
        label_mode=args.label_mode, image_format=record_image_format(args.dataset, args.image_format),
        jpeg_quality=args.jpeg_quality,
        analyze_batch_size=args.analyze_batch_size)
    return config, list(beam_argv)


def check_input(config: PreprocessConfig) -> None:
    """Fails fast, before any worker starts, when the input holds nothing to read.

    The folder is listed literally (``storage.list_files``: no glob, links followed), as discovery does.
    """
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common import storage

    if config.dataset == "pet":
        folder, expected = FileSystems.join(config.input_dir, "images"), "images/<Breed_N>.jpg"
    else:
        folder = FileSystems.join(config.input_dir, "leftImg8bit")
        expected = "leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png"
    try:
        first = next(iter(storage.list_files(folder)), None)
    except Exception as e:  # e.g. a bucket that does not exist or cannot be read
        raise UsageError(f"cannot list {folder} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         "check --input_dir") from None
    if first is None:
        raise UsageError(f"no input files under {config.input_dir} (expected {config.dataset} layout: "
                         f"{expected}); check --input_dir")
    if first.error is not None and first.path == storage.printable_path(folder):  # the folder itself
        raise UsageError(f"{first.path}: {first.error}; check --input_dir")


def _metadata(config: PreprocessConfig, counts: dict[str, int], source_counts: dict[str, int],
              dead_letters: int, num_shards: dict[str, int], stats: Optional[DatasetStats],
              shards: Optional[dict[str, dict[str, int]]] = None,
              stats_absent_reason: Optional[str] = None) -> DatasetMetadata:
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
        shards={name: {"records": int(e["records"]), "bytes": int(e["bytes"])}
                for name, e in sorted((shards or {}).items())},
        stats=stats,
        stats_absent_reason=stats_absent_reason,
        extra={"val_fraction": config.val_fraction, "cityscapes_test": "image-only records"}
        if config.dataset == "cityscapes" else {"val_fraction": config.val_fraction},
    )


NO_TRAIN_REASON = ("no train records: the statistics and transform_fn/ come from the train split only, so this "
                   "dataset can be evaluated or inferred on, not trained on")


def _write_metadata(_: object, config: PreprocessConfig, dead_letters: int, written: "ShardsWritten",
                    per_shard: list[tuple[str, int, int]], stats: list[Optional[DatasetStats]]) -> Optional[str]:
    """Writes metadata.json, the last file of a run (see ``run``): every shard, the stale-shard deletion,
    transform_fn/ and the dead letters are in place when this runs (its side inputs come after them).

    Names every shard with its record count and its size as stored, listed from DST now. When no input became
    a record (every one a dead letter) there is no dataset to describe: the empty shards are removed, DST keeps
    only ``dead_letter/``, no metadata.json is written, and ``run`` says so.
    """
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common import storage
    from pipelines.preprocess.shards import shard_files

    counts, source_counts = written.per_split(per_shard)  # records and source examples per split, as written
    if not sum(counts.values()):
        storage.delete_files(FileSystems.join(config.output_dir, name) for name in written.records)
        return None
    on_storage = shard_files(config.output_dir)
    if set(on_storage) != set(written.records):
        # Only another process writing the same --output_dir at the same time can do this.
        raise RuntimeError(f"the shard files in {config.output_dir} changed while this run wrote them (expected "
                           f"{sorted(written.records)}, found {sorted(on_storage)}): is another preprocess run "
                           "writing the same --output_dir?")
    manifest = {name: {"records": n, "bytes": on_storage[name].size} for name, n in written.records.items()}
    stat = stats[0] if stats else None
    metadata = _metadata(config, counts, source_counts, dead_letters, written.num_shards, stat, manifest,
                         None if stat is not None else NO_TRAIN_REASON)
    path = FileSystems.join(config.output_dir, METADATA_FILE)
    storage.write_bytes(path, metadata.to_json().encode("utf-8"), "application/json")
    return path


def _estimated_record_bytes(config: PreprocessConfig) -> int:
    """A serialized record's rough size, for the default shard count (photos: PNG ~0.7 byte per RGB sample,
    JPEG ~0.2; masks compress well)."""
    pixels = config.image_size[0] * config.image_size[1]
    per_image = 3 * pixels * (0.7 if config.image_format == "png" else 0.2)
    per_masks = pixels * (0.1 if config.dataset == "pet" else 0.2)
    return int(per_image + per_masks) + 200


def build_pipeline(p: beam.Pipeline, config: PreprocessConfig, temp_dir: str) -> beam.PCollection:
    """Adds the whole job to ``p``; returns the PCollection holding the metadata.json path once written (None
    when every input was a dead letter).

    Nothing here touches the input: discovery happens when the pipeline runs, on whichever runner.
    """
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common import storage
    from pipelines.common.deadletter import WriteDeadLetters
    from pipelines.preprocess.records import ANALYZE_TAG, MakeRecords
    from pipelines.preprocess.shards import WriteShards, plan_shards
    from pipelines.preprocess.sources import DEAD_LETTER_TAG, DiscoverCityscapes, DiscoverPet

    if config.dataset == "pet":
        found = p | "DiscoverPet" >> DiscoverPet(config.input_dir, config.val_fraction, config.test_fraction)
    else:
        found = p | "DiscoverCityscapes" >> DiscoverCityscapes(config.input_dir)
    examples = found["examples"]
    copies = {"train": 1 + config.augment_copies, "val": 1, "test": 1}
    plan = (examples
            | "ExampleSplit" >> beam.Map(lambda e: e.split)
            | "CountExamples" >> beam.combiners.Count.PerElement()
            | "ExampleCounts" >> beam.combiners.ToDict()
            | "PlanShards" >> beam.Map(plan_shards, copies, _estimated_record_bytes(config), config.num_shards))
    made = (examples
            | "MakeRecords" >> beam.ParDo(MakeRecords(config.record_options())).with_outputs(
                DEAD_LETTER_TAG, ANALYZE_TAG, main="records"))
    records = made.records

    dead_count = ((found[DEAD_LETTER_TAG], made[DEAD_LETTER_TAG])
                  | "AllDeadLetters" >> beam.Flatten()
                  | "WriteDeadLetters" >> WriteDeadLetters(config.output_dir))
    # On this machine, shards are gathered through scratch files rather than the runner's memory.
    spill_dir = FileSystems.join(temp_dir, "spill") if storage.is_local(temp_dir) else None
    shard_writer = WriteShards(config.output_dir, plan, spill_dir)
    written = records | "WriteShards" >> shard_writer
    spec = config.label_spec
    stats = (made[ANALYZE_TAG]
             | "Statistics" >> _analyze(config, temp_dir, spec))
    return (p
            | "Metadata" >> beam.Create([None])
            | "WriteMetadata" >> beam.Map(
                _write_metadata, config,
                dead_letters=beam.pvalue.AsSingleton(dead_count),
                written=beam.pvalue.AsSingleton(written),
                per_shard=beam.pvalue.AsList(shard_writer.per_shard),
                stats=beam.pvalue.AsList(stats)))


def _analyze(config: PreprocessConfig, temp_dir: str, spec: schema_labels.LabelSpec) -> beam.PTransform:
    from pipelines.preprocess.stats import AnalyzeAndWriteTransform

    return AnalyzeAndWriteTransform(config.output_dir, temp_dir, config.image_size, spec.num_classes,
                                    spec.ignore_label, config.analyze_batch_size, config.image_format)


def _log_counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    counters: dict[str, int] = {}
    try:
        for c in result.metrics().query()["counters"]:
            if c.key.metric.namespace == "segflow":
                counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(c.committed or 0)
    except Exception as e:  # some runners do not report metrics; the job's outputs are what count
        _LOG.warning("could not query Beam metrics: %s", e)
    for name in sorted(counters):
        _LOG.info("counter %s = %d", name, counters[name])
    return counters


class NoRecordsError(RuntimeError):
    """Every input was rejected: the run wrote dead letters and nothing else. ``main``: one line, status 1."""


def _no_records_message(output_dir: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common.deadletter import DEAD_LETTER_DIR, DEAD_LETTER_FILE

    path = FileSystems.join(output_dir, DEAD_LETTER_DIR, DEAD_LETTER_FILE)
    try:
        with FileSystems.open(path) as handle:
            rejected = sum(1 for line in handle.read().splitlines() if line.strip())
    except Exception:  # the message must still point at the file
        rejected = "all"
    return (f"no records written: every input was rejected ({rejected} dead letters), so {output_dir} holds no "
            f"dataset (no shards, no metadata.json); see {path} for each file and why, fix or remove those "
            "inputs and rerun")


def run(argv: Sequence[str]) -> Optional[DatasetMetadata]:
    """Runs the job with command-line style ``argv``; returns the written ``DatasetMetadata``.

    Returns None when the runner only constructs the job (``--dry_run=True``). Raises ``UsageError`` for bad
    flags or an empty input, ``NoRecordsError`` when every input was a dead letter.

    Publication: before anything in DST changes, ``DST/metadata.json`` is deleted; it is written last, naming
    every shard (``build_pipeline``). So a reader that finds metadata.json finds the complete output it
    describes, and a run that fails or is killed leaves no metadata.json (never an old one beside new shards).
    """
    config, beam_argv = parse_args(argv)
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import TestOptions

    from pipelines.common import runner as runner_lib
    from pipelines.preprocess import scratch
    from pipelines.common import storage

    options = runner_lib.make_pipeline_options(beam_argv)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if not dry_run:
        check_input(config)
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    # A job on this machine keeps tensorflow-transform's scratch space on local disk: TensorFlow reaches gs://
    # only through its own GCS client, and local scratch is faster anyway. Remote runners need shared storage.
    remote = runner_lib.is_remote(options)
    temp_root = options.view_as(GoogleCloudOptions).temp_location or (
        config.output_dir if remote else tempfile.gettempdir())
    metadata_path = FileSystems.join(config.output_dir, METADATA_FILE)
    if not dry_run:
        storage.delete_files([metadata_path])
        scratch.remove_dead(temp_root, config.output_dir)  # what killed runs into this DST left behind
    temp_dir = scratch.new_folder(temp_root, config.output_dir, remote)
    try:
        with runner_lib.new_pipeline(options) as p:
            build_pipeline(p, config, temp_dir)
        result = p.result
        if dry_run:
            return None
        counters = _log_counters(result)
        if not FileSystems.exists(metadata_path):
            raise NoRecordsError(_no_records_message(config.output_dir))
        with FileSystems.open(metadata_path) as handle:
            metadata = DatasetMetadata.from_json(handle.read().decode("utf-8"))
        if counters:
            metadata.extra.setdefault("counters", counters)  # returned only; metadata.json stays deterministic
        return metadata
    finally:
        if not dry_run:
            try:
                storage.remove_tree(temp_dir)  # literally: a --temp_location may hold glob characters
            except Exception as e:  # cleaning a temp dir must never hide the job's own error
                _LOG.warning("could not delete %s: %s", temp_dir, e)


def summary(metadata: DatasetMetadata, output_dir: str) -> str:
    """A short human-readable summary of a preprocess run: what it read and what it wrote."""
    from apache_beam.io.filesystems import FileSystems

    total_bytes = sum(int(e["bytes"]) for e in metadata.shards.values())
    lines = [f"{metadata.dataset} → {output_dir}: {metadata.num_classes} classes "
             f"({', '.join(metadata.class_names)}), records {metadata.image_size[0]}x{metadata.image_size[1]}",
             "  records per split: " + ", ".join(f"{s}={metadata.counts.get(s, 0)}" for s in SPLITS)
             + "  (source examples: " + ", ".join(f"{s}={metadata.source_counts.get(s, 0)}" for s in SPLITS)
             + ")",
             f"  inputs seen {metadata.inputs_seen}, dead letters {metadata.dead_letter_count}"
             + (f" (see {FileSystems.join(output_dir, 'dead_letter')})" if metadata.dead_letter_count else ""),
             f"  wrote {len(metadata.shards)} shard files ({total_bytes} bytes), metadata.json, dead_letter/"
             + (", transform_fn/" if metadata.stats else "")]
    if metadata.stats:
        lines.append(f"  train channel mean {metadata.stats.channel_mean}, std {metadata.stats.channel_std}")
    else:
        lines.append(f"  no statistics and no transform_fn/: {metadata.stats_absent_reason}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "tensorflow", "absl", "tensorflow_transform"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Beam logs a failing DoFn's traceback, then re-raises the same exception to ``run``: main reports it (one
    # line for a storage outage, the traceback for anything else), so the log copy is only a duplicate.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        metadata = run(argv)
    except UsageError as e:
        print(f"preprocess: error: {e}", file=sys.stderr)
        return 2
    except NoRecordsError as e:
        print(f"preprocess: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a storage outage past the client's retries: one line, not a traceback
        from pipelines.common import storage

        line = storage.storage_failure_line("preprocess", e, "--output_dir holds no metadata.json, so nothing "
                                                             "half-written will be read")
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    if metadata is not None:
        config, _ = parse_args(argv)
        print(summary(metadata, config.output_dir))
    return 0


def _exit(code: int) -> None:
    """Ends the command: without the interpreter's teardown once Beam and TensorFlow are loaded
    (``runner.exit_process``); a plain exit when only the flags were parsed (``--help``, a bad flag), which
    must not import them just to leave."""
    if "apache_beam" in sys.modules:
        from pipelines.common import runner as runner_lib

        runner_lib.exit_process(code)
    sys.exit(code)

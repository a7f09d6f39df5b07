"""Oxford-IIIT Pet / Cityscapes → sharded GZIP TFRecords, metadata.json and a tensorflow-transform graph.

    python -m pipelines.preprocess --dataset pet --input_dir SRC --output_dir DST --image_size 128 \\
        [--num_shards N] [--augment_copies K] [--val_fraction F] [--seed S] [any Beam option]

Job flags are parsed here; every other flag goes to Beam (``--runner``, ``--direct_num_workers``,
``--project``, ``--temp_location``, ``--setup_file`` ...). Defaults run the DirectRunner in multi-processing
mode with one worker per core. From Python (e.g. a demo)::

    from pipelines.preprocess import job as preprocess
    metadata = preprocess.run(["--dataset=pet", "--input_dir", src, "--output_dir", dst,
                               "--image_size", "128"])   # -> schemas.metadata.DatasetMetadata
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from typing import TYPE_CHECKING, Optional, Sequence

# Only what parsing the flags needs is imported here: ``--help`` and a bad job flag answer in well under a
# second. Beam, TensorFlow and the pipeline modules (~5 s of imports on 2 cores) load once the flags are
# parsed (``_pipeline_modules``), or when another module imports them.
from pipelines import datasets
from pipelines.shared import cli
from schemas import labels as schema_labels
from schemas.errors import DataError, UsageError
from schemas.metadata import METADATA_FILE, DatasetMetadata, DatasetStats
from schemas.records import SPLITS

if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.preprocess.records import RecordOptions
    from pipelines.preprocess.shards import ShardsWritten
    from pipelines.shared import ownership

_LOG = logging.getLogger("segflow.preprocess")
NAME = "pipelines.preprocess"
PROG = f"python -m {NAME}"
# pipelines.shared.imaging.RESIZE_MODES, whose module imports TensorFlow (a test checks they agree).
RESIZE_MODES = ("stretch", "pad")
# tensorflow-transform's two output folders (tft.TFTransformOutput's names; a test checks they agree).
TRANSFORM_FOLDERS = ("transform_fn", "transformed_metadata")
# What the job's worker processes import (its DoFns' modules, tensorflow-transform's analyzers): their fork server
# loads these once, before the first worker starts (``pipelines.common.forkserver``).
WORKER_MODULES = (
    "pipelines.preprocess.records",
    "pipelines.preprocess.stats",
    "pipelines.preprocess.shards",
    "tensorflow_transform.beam",
)


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


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """The job's flags, validated: each field is the flag of the same name, its default,
    help and range written once, here."""

    dataset: str = cli.option(help="dataset layout to read", choices=datasets.names)
    input_dir: str = cli.option(help="dataset root (local path or gs://)")
    output_dir: str = cli.option(
        help="where shards, metadata.json, transform_fn/ and dead_letter/ go (local path "
        "or gs://); must lie outside --input_dir"
    )
    image_size: tuple[int, int] = cli.option(help="record size H or H,W in pixels, each 8 to 4096", parse=_image_size)
    num_shards: Optional[int] = cli.option(
        None, "shards per split (0: automatic)", minimum=0, maximum=10000, default_text="one per ~32 MiB of records"
    )
    augment_copies: int = cli.option(
        0, "extra augmented records per train example (flip, scale-and-crop, shift, colour)", minimum=0, maximum=64
    )
    val_fraction: float = cli.option(
        0.1,
        "Pet: fraction of trainval carved out as val, by a stable hash of the id",
        minimum=0.0,
        maximum=1.0,
        exclusive_max=True,
    )
    test_fraction: float = cli.option(
        0.2,
        "Pet without trainval.txt/test.txt: fraction of ids hashed into test (with --val_fraction, under 1)",
        minimum=0.0,
        maximum=1.0,
        exclusive_max=True,
    )
    seed: int = cli.option(0, "seed of the offline augmentation")
    resize_mode: str = cli.option(
        "stretch",
        "stretch to the size, or pad (keep aspect, pad images with 0 and masks with 255)",
        choices=RESIZE_MODES,
    )
    label_mode: str = cli.option(
        "trimap",
        "Pet: trimap (pet/background/border), binary (pet/background), "
        "species (background/cat/dog); Cityscapes always uses the 19 trainIds",
        choices=schema_labels.PET_LABEL_MODES,
    )
    image_format: str = cli.option(
        "auto",
        "record image encoding; auto keeps the source's codec family: jpeg "
        "for Pet (JPEG photos), png for Cityscapes (PNG frames)",
        choices=("auto", "png", "jpeg"),
    )
    jpeg_quality: int = cli.option(95, "JPEG quality, with --image_format jpeg", minimum=1, maximum=100)
    analyze_batch_size: int = cli.option(
        64, "JPEG records decoded per graph call for the statistics (PNG records need no decode)", minimum=1
    )

    def __post_init__(self) -> None:
        # The flags' spellings of "automatic", resolved once: num_shards 0 → None, image_format auto → a codec.
        if self.num_shards == 0:
            object.__setattr__(self, "num_shards", None)
        if self.image_format == "auto" and self.dataset in datasets.names():
            object.__setattr__(self, "image_format", record_image_format(self.dataset, self.image_format))

    @property
    def label_spec(self) -> schema_labels.LabelSpec:
        return datasets.get(self.dataset).label_spec(self.label_mode)

    def record_options(self) -> "RecordOptions":
        from pipelines.preprocess.records import RecordOptions

        return RecordOptions(
            dataset=self.dataset,
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            label_mode=self.label_mode,
            image_format=self.image_format,
            jpeg_quality=self.jpeg_quality,
            augment_copies=self.augment_copies,
            seed=self.seed,
            ignore_label=schema_labels.IGNORE_LABEL,
        )


def build_arg_parser() -> cli.Parser:
    """The job's flags (one per ``PreprocessConfig`` field) and the logging flags; every other flag must be a
    Beam option (checked from the installed Beam's flag list, without importing Beam)."""
    from pipelines.common.flags import beam_flag_names

    parser = cli.Parser(
        NAME,
        __doc__,
        passes_on=beam_flag_names,
        passes_on_label="Beam options",
        epilog="Every other flag is passed to Apache Beam (e.g. --runner, --direct_num_workers, "
        "--project, --region, --temp_location, --setup_file).",
    )
    cli.add_fields(parser, PreprocessConfig)
    parser.add_logging_flags()
    return parser


def record_image_format(dataset: str, requested: str) -> str:
    """The record image encoding for ``--image_format``: ``auto`` is the source's codec family, the dataset's
    ``record_image_format``."""
    return datasets.get(dataset).record_image_format if requested == "auto" else requested


def parse_flags(argv: Sequence[str]) -> tuple[PreprocessConfig, list[str]]:
    """Job flags → ``PreprocessConfig``, the rest for Beam, without touching storage or importing Beam (what
    ``--help`` and a bad flag need). Raises ``UsageError`` (``HelpShown`` for --help)."""
    args, beam_argv = build_arg_parser().parse_known_args(list(argv))
    config = cli.config_from(
        PreprocessConfig,
        args,
        input_dir=args.input_dir.rstrip("/") or "/",
        output_dir=args.output_dir.rstrip("/") or "/",
    )
    if config.val_fraction + config.test_fraction >= 1.0:
        raise UsageError("--test_fraction must leave room for train with --val_fraction (their sum under 1)")
    dataset = datasets.get(config.dataset)
    if not dataset.label_modes and config.label_mode != PreprocessConfig.__dataclass_fields__["label_mode"].default:
        with_modes = " and ".join(datasets.get(n).title for n in datasets.names() if datasets.get(n).label_modes)
        raise UsageError(f"--label_mode applies to {with_modes} only; {dataset.fixed_labels}")
    return config, list(beam_argv)


def parse_args(argv: Sequence[str]) -> tuple[PreprocessConfig, list[str]]:
    """``parse_flags``, then the checks that read storage or Beam: --output_dir outside --input_dir, every
    non-job flag a Beam option. Raises ``UsageError``."""
    config, beam_argv = parse_flags(argv)
    from pipelines.common import runner as runner_lib, storage

    input_dir, output_dir = config.input_dir, config.output_dir
    # Resolved paths (".", "..", links), both ways: DST inside SRC makes a rerun read its own outputs as inputs,
    # and SRC inside DST puts the dataset in the folder this job rewrites and cleans.
    out_in, in_out = storage.same_or_inside(output_dir, input_dir), storage.same_or_inside(input_dir, output_dir)
    if out_in:
        where = "the same folder as --input_dir" if in_out else f"inside --input_dir {input_dir}"
        raise UsageError(
            f"--output_dir {output_dir} is {where}: a rerun would read its own outputs as inputs; "
            "choose an --output_dir outside the dataset"
        )
    if in_out:
        raise UsageError(
            f"--input_dir {input_dir} is inside --output_dir {output_dir}, which preprocess rewrites "
            "and cleans; choose an --output_dir outside the dataset"
        )
    try:
        runner_lib.check_beam_flags(beam_argv)
    except ValueError as e:
        raise UsageError(f"{e} (see {PROG} --help)") from None
    return config, beam_argv


def check_input(config: PreprocessConfig, count_up_to: int = 0) -> int:
    """Fails fast, before any worker starts, when the input holds nothing to read; returns the bytes of the
    files in the dataset's input folder, counted up to ``count_up_to`` (the listing stops there).

    The folder is listed literally (``storage.list_files``: no glob, links followed), as discovery does.
    """
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common import storage

    dataset = datasets.get(config.dataset)
    folder, expected = FileSystems.join(config.input_dir, *dataset.input_folder), dataset.input_layout
    listed = iter(storage.list_files(folder))
    try:
        first = next(listed, None)
    except Exception as e:  # e.g. a bucket that does not exist or cannot be read
        raise UsageError(
            f"cannot list {folder} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); check --input_dir"
        ) from None
    if first is None:
        raise UsageError(
            f"no input files under {config.input_dir} (expected {config.dataset} layout: {expected}); check --input_dir"
        )
    if first.error is not None and first.path == storage.printable_path(folder):  # the folder itself
        raise UsageError(f"{first.path}: {first.error}; check --input_dir")
    total = first.size
    for entry in listed:
        if total >= count_up_to:
            break
        total += entry.size
    return total


def _metadata(
    config: PreprocessConfig,
    counts: dict[str, int],
    source_counts: dict[str, int],
    dead_letters: int,
    num_shards: dict[str, int],
    stats: Optional[DatasetStats],
    shards: Optional[dict[str, dict[str, int]]] = None,
    stats_absent_reason: Optional[str] = None,
) -> DatasetMetadata:
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
    )


NO_TRAIN_REASON = (
    "no train records: the statistics and transform_fn/ come from the train split only, so this "
    "dataset can be evaluated or inferred on, not trained on"
)


def _write_metadata(
    _: object,
    config: PreprocessConfig,
    path: str,
    dead_letters: int,
    written: "ShardsWritten",
    per_shard: list[tuple[str, int, int]],
    stats: list[Optional[DatasetStats]],
) -> Optional[str]:
    """Writes metadata.json, the last file of a run (see ``run``): every shard,
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
    missing = sorted(set(written.records) - set(on_storage))
    if missing:  # the lease keeps other segflow runs out: something else deleted them
        raise RuntimeError(
            f"shard files this run wrote in {config.output_dir} are gone ({', '.join(missing[:3])}): was the "
            "folder changed by another program while preprocess ran? Rerun the same command"
        )
    manifest = {name: {"records": n, "bytes": on_storage[name].size} for name, n in written.records.items()}
    stat = stats[0] if stats else None
    metadata = _metadata(
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


def _estimated_record_bytes(config: PreprocessConfig) -> int:
    """A serialized record's rough size, for the default shard count (photos: PNG ~0.7 byte per RGB sample,
    JPEG ~0.2; masks compress well)."""
    pixels = config.image_size[0] * config.image_size[1]
    per_image = 3 * pixels * (0.7 if config.image_format == "png" else 0.2)
    per_masks = pixels * datasets.get(config.dataset).mask_bytes_per_pixel
    return int(per_image + per_masks) + 200


def build_pipeline(
    p: beam.Pipeline, config: PreprocessConfig, temp_dir: str, metadata_path: Optional[str] = None
) -> beam.PCollection:
    """Adds the whole job to ``p``; returns the PCollection holding the metadata.json path once written (None
    when every input was a dead letter). ``metadata_path``: where metadata.json goes (default: in
    ``config.output_dir``; a run that writes in place puts it aside for its publication).

    Nothing here touches the input: discovery happens when the pipeline runs, on whichever runner.
    """
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common import storage
    from pipelines.common.deadletter import WriteDeadLetters
    from pipelines.datasets.base import DEAD_LETTER_TAG, SplitFractions
    from pipelines.datasets.discovery import Discover
    from pipelines.preprocess.records import ANALYZE_TAG, MakeRecords
    from pipelines.preprocess.shards import WriteShards, plan_shards

    dataset = datasets.get(config.dataset)
    found = p | f"Discover{dataset.title}" >> Discover(
        dataset, config.input_dir, SplitFractions(config.val_fraction, config.test_fraction)
    )
    examples = found["examples"]
    copies = {"train": 1 + config.augment_copies, "val": 1, "test": 1}
    plan = (
        examples
        | "ExampleSplit" >> beam.Map(lambda e: e.split)
        | "CountExamples" >> beam.combiners.Count.PerElement()
        | "ExampleCounts" >> beam.combiners.ToDict()
        | "PlanShards" >> beam.Map(plan_shards, copies, _estimated_record_bytes(config), config.num_shards)
    )
    made = examples | "MakeRecords" >> beam.ParDo(MakeRecords(config.record_options())).with_outputs(
        DEAD_LETTER_TAG, ANALYZE_TAG, main="records"
    )
    records = made.records

    dead_count = (
        (found[DEAD_LETTER_TAG], made[DEAD_LETTER_TAG])
        | "AllDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteDeadLetters(config.output_dir)
    )
    # On this machine, shards are gathered through scratch files rather than the runner's memory.
    spill_dir = FileSystems.join(temp_dir, "spill") if storage.is_local(temp_dir) else None
    shard_writer = WriteShards(config.output_dir, plan, spill_dir)
    written = records | "WriteShards" >> shard_writer
    spec = config.label_spec
    stats = made[ANALYZE_TAG] | "Statistics" >> _analyze(config, temp_dir, spec)
    return (
        p
        | "Metadata" >> beam.Create([None])
        | "WriteMetadata"
        >> beam.Map(
            _write_metadata,
            config,
            metadata_path or FileSystems.join(config.output_dir, METADATA_FILE),
            dead_letters=beam.pvalue.AsSingleton(dead_count),
            written=beam.pvalue.AsSingleton(written),
            per_shard=beam.pvalue.AsList(shard_writer.per_shard),
            stats=beam.pvalue.AsList(stats),
        )
    )


def _analyze(config: PreprocessConfig, temp_dir: str, spec: schema_labels.LabelSpec) -> beam.PTransform:
    from pipelines.preprocess.stats import AnalyzeAndWriteTransform

    return AnalyzeAndWriteTransform(
        config.output_dir,
        temp_dir,
        config.image_size,
        spec.num_classes,
        spec.ignore_label,
        config.analyze_batch_size,
        config.image_format,
    )


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


class NoRecordsError(DataError):
    """Every input was rejected: the run wrote dead letters and nothing else. ``main``: one line, status 1."""


def _no_records_message(output_dir: str, kept: Optional[str] = None) -> str:
    """The one line for a run whose every input was rejected; ``kept``: the DST that still holds its previous
    dataset (the dead letters are then in the run's staging folder ``output_dir``)."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common.deadletter import DEAD_LETTER_DIR, DEAD_LETTER_FILE

    path = FileSystems.join(output_dir, DEAD_LETTER_DIR, DEAD_LETTER_FILE)
    try:
        with FileSystems.open(path) as handle:
            rejected = sum(1 for line in handle.read().splitlines() if line.strip())
    except Exception:  # the message must still point at the file
        rejected = "all"
    if kept is not None:
        outcome = f"{kept} still holds its previous dataset, unchanged"
    else:
        outcome = f"{output_dir} holds no dataset (no shards, no metadata.json)"
    return (
        f"no records written: every input was rejected ({rejected} dead letters), so {outcome}; see {path} for "
        "each file and why, fix or remove those inputs and rerun"
    )


def _options(config: PreprocessConfig, beam_argv: list[str]) -> tuple[PipelineOptions, bool]:
    """The job's ``PipelineOptions`` and whether it only constructs the pipeline (``--dry_run``); checks the
    input (``check_input``) unless it only constructs it."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    from pipelines.common import runner as runner_lib

    dry_run = bool(PipelineOptions(beam_argv).view_as(TestOptions).dry_run)
    early = runner_lib.early_workers_possible()
    # Unless its workers start early, how much there is to read decides whether they are threads or processes.
    count_up_to = 0 if early else runner_lib.PROCESSES_FROM_INPUT_BYTES
    input_bytes = None if dry_run else check_input(config, count_up_to=count_up_to)
    return runner_lib.make_pipeline_options(beam_argv, input_bytes, early_workers=early), dry_run


def start_workers(argv: Sequence[str]) -> None:
    """``main``'s prestart: when the job's workers will be processes, their fork server starts importing what
    they need (``WORKER_MODULES``) before this process imports TensorFlow, so the two run at once. The flags
    are checked as ``run`` checks them; the input is left to ``run``."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    from pipelines.common import runner as runner_lib

    _, beam_argv = parse_args(argv)
    if PipelineOptions(beam_argv).view_as(TestOptions).dry_run or not runner_lib.early_workers_possible():
        return
    runner_lib.start_workers(runner_lib.make_pipeline_options(beam_argv, early_workers=True), WORKER_MODULES)


def run(argv: Sequence[str]) -> Optional[DatasetMetadata]:
    """Runs the job with command-line style ``argv``; returns the written ``DatasetMetadata``.

    Returns None when the runner only constructs the job (``--dry_run=True``). Raises ``UsageError`` for bad
    flags or an empty input, ``NoRecordsError`` when every input was a dead letter.

    Publication (``pipelines.shared.ownership``): DST is claimed first (refused when it holds files preprocess did not
    write, or while another run writes it). Locally the run writes into a staging folder inside DST and publishes
    by renames, metadata.json last: until then readers see the previous complete output, and a run that fails or
    is killed leaves it as it was. On gs:// the run writes in place: the previous metadata.json is deleted first
    and the new one written last, naming every shard. Files of the previous run that this one did not write
    (shards of another count) are deleted by the owner record.
    """
    from pipelines.common import runner as runner_lib

    try:
        return _run(*parse_args(argv))
    finally:
        runner_lib.discard_workers()  # a fork server no pipeline took: the job failed before its pipeline ran


def _run(config: PreprocessConfig, beam_argv: list[str]) -> Optional[DatasetMetadata]:
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    if PipelineOptions(beam_argv).view_as(TestOptions).dry_run:  # the job is only constructed: nothing written
        return _run_claimed(config, beam_argv, None)
    from pipelines.shared import ownership

    # DST is claimed before any input is read: a folder this job may not write is refused, and one it cannot
    # write fails here, before any work.
    with ownership.claim(
        config.output_dir, "preprocess", "--output_dir", adopt=previous_release_files, markers=[METADATA_FILE]
    ) as claim:
        return _run_claimed(config, beam_argv, claim)


def previous_release_files(where: "ownership.Folder", kind: str) -> Optional[set]:
    """What a preprocess run of the release before owner records wrote in ``where``: its metadata.json, the
    shards it names, its dead-letter file and tensorflow-transform's two folders; None when ``where`` holds no
    metadata.json of that release."""
    from pipelines.common.deadletter import DEAD_LETTER_DIR, DEAD_LETTER_FILE

    data = where.read(METADATA_FILE)
    if data is None:
        return None
    try:
        shards = set(json.loads(data)["shards"])
    except (ValueError, KeyError, TypeError):
        return None
    files = {METADATA_FILE, *shards}
    for rel in (f"{DEAD_LETTER_DIR}/{DEAD_LETTER_FILE}",):
        if where.is_file(rel):
            files.add(rel)
    for folder in TRANSFORM_FOLDERS:
        files.update(where.files(folder))
    return files


def _run_claimed(
    config: PreprocessConfig, beam_argv: list[str], claim: Optional["ownership.Claim"]
) -> Optional[DatasetMetadata]:
    """Runs the job into ``claim``'s staging folder (in place on gs://), then publishes it (see ``run``)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from pipelines.common import runner as runner_lib, storage
    from pipelines.preprocess import scratch

    options, dry_run = _options(config, beam_argv)
    if not dry_run:
        runner_lib.start_workers(options, WORKER_MODULES)  # unless main started them already

    # A job on this machine keeps tensorflow-transform's scratch space on local disk: TensorFlow reaches gs://
    # only through its own GCS client, and local scratch is faster anyway. Remote runners need shared storage.
    remote = runner_lib.is_remote(options)
    temp_root = options.view_as(GoogleCloudOptions).temp_location or (
        config.output_dir if remote else tempfile.gettempdir()
    )
    written = config if claim is None else dataclasses.replace(config, output_dir=claim.staging)
    if not dry_run:
        scratch.remove_dead(temp_root, config.output_dir)  # what killed runs into this DST left behind
    temp_dir = scratch.new_folder(temp_root, config.output_dir, remote)
    try:
        with runner_lib.new_pipeline(options) as p:
            build_pipeline(p, written, temp_dir, metadata_path=claim.write_path(METADATA_FILE) if claim else None)
        result = p.result
        if dry_run or claim is None:
            return None
        counters = _log_counters(result)
        metadata_path = claim.write_path(METADATA_FILE)
        metadata = None
        if FileSystems.exists(metadata_path):
            with FileSystems.open(metadata_path) as handle:
                metadata = DatasetMetadata.from_json(handle.read().decode("utf-8"))
        if metadata is None and claim.staged and METADATA_FILE in claim.previous:
            # Every input rejected is a failed rerun: DST keeps its previous dataset, and this run's dead letters
            # stay in its staging folder for the user to read (the next run into DST removes it).
            claim.keep_staging = True
            raise NoRecordsError(_no_records_message(claim.staging, kept=config.output_dir))
        claim.publish(written=None if claim.staged else _files_written(config.output_dir, metadata))
        if metadata is None:
            raise NoRecordsError(_no_records_message(config.output_dir))
        if counters:
            metadata.extra.setdefault("counters", counters)  # returned only; metadata.json stays deterministic
        return metadata
    finally:
        if not dry_run:
            try:
                storage.remove_tree(temp_dir)  # literally: a --temp_location may hold glob characters
            except Exception as e:  # cleaning a temp dir must never hide the job's own error
                _LOG.warning("could not delete %s: %s", temp_dir, e)


def _files_written(output_dir: str, metadata: Optional[DatasetMetadata]) -> set:
    """The files a run that wrote ``output_dir`` in place (gs://) wrote there: the shards its metadata names,
    its dead-letter file and tensorflow-transform's folders (written whole by this run)."""
    from pipelines.common import storage
    from pipelines.common.deadletter import DEAD_LETTER_DIR, DEAD_LETTER_FILE

    files = {f"{DEAD_LETTER_DIR}/{DEAD_LETTER_FILE}"}
    if metadata is not None:
        files.update(metadata.shards)
        if metadata.stats is not None:
            for folder in TRANSFORM_FOLDERS:
                files.update(f"{folder}/{rel}" for rel in storage.list_tree(f"{output_dir.rstrip('/')}/{folder}"))
    return files


def summary(metadata: DatasetMetadata, output_dir: str) -> str:
    """A short human-readable summary of a preprocess run: what it read and what it wrote."""
    from apache_beam.io.filesystems import FileSystems

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipelines.preprocess``: the exit status; one stderr line for a bad flag (2), no usable input
    or a storage outage (1); the summary on stdout."""
    # Beam logs a failing DoFn's traceback, then re-raises the same exception to ``run``: main reports it (one
    # line for a storage outage, the traceback for anything else), so the log copy is only a duplicate.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)

    def failure_line(error: BaseException) -> Optional[str]:
        from pipelines.common import storage

        return storage.storage_failure_line(
            NAME,
            error,
            "--output_dir keeps its last complete output (on gs://, once the run began writing there, it holds no "
            "metadata.json), so nothing half-written will be read",
        )

    def report(metadata: Optional[DatasetMetadata], args: list[str]) -> Optional[str]:
        return summary(metadata, parse_flags(args)[0].output_dir) if metadata is not None else None

    return cli.main(
        NAME,
        argv,
        run,
        check=parse_flags,
        summary=report,
        failure_line=failure_line,
        tensorflow=True,
        prestart=start_workers,
    )

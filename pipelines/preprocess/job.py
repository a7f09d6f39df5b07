"""The preprocess job: ``run(config)`` writes a DST (shards, metadata.json, dead letters, transform_fn/) and returns
a ``PreprocessResult``; ``main(argv)`` is the command line on top of it (``python -m pipelines.preprocess``).

    from pipelines.preprocess import PreprocessConfig, run
    result = run(PreprocessConfig(dataset="pet", input_dir=src, output_dir=dst, image_size=(128, 128)))

The flags and the config are ``options.py``'s, the steps ``transforms.py``'s, metadata.json ``metadata.py``'s.
Defaults run the DirectRunner in multi-processing mode with one worker per core; ``pipeline_args`` are Beam's
flags (``--runner``, ``--direct_num_workers``, ``--project``, ``--temp_location``, ``--setup_file`` ...).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from typing import TYPE_CHECKING, Optional, Sequence, Union

# Only what parsing the flags needs is imported here: ``--help`` and a bad job flag answer in well under a
# second. Beam, TensorFlow and the pipeline modules (~5 s of imports on 2 cores) load in the functions below that
# build or run the pipeline, once the flags are parsed.
from pipelines.preprocess.inputs import check_folders, check_input, check_pipeline_args
from pipelines.preprocess.options import NAME, PreprocessConfig, build_arg_parser, check_config, from_args
from pipelines.shared import cli
from schemas.errors import UsageError
from schemas.metadata import METADATA_FILE, DatasetMetadata

if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.shared import ownership

# Beside the job's own names, what its callers use with them: the config and the parser it is read by (options.py's),
# and the error ``parse_args`` and ``check`` raise.
__all__ = [
    "PreprocessConfig",
    "PreprocessResult",
    "UsageError",
    "build_arg_parser",
    "build_pipeline",
    "check",
    "check_input",
    "from_args",
    "main",
    "parse_args",
    "run",
    "start_workers",
]

_LOG = logging.getLogger("segflow.preprocess")
# What the job's worker processes import (its DoFns' modules, tensorflow-transform's analyzers): their fork server
# loads these once, before the first worker starts (``pipelines.common.forkserver``).
WORKER_MODULES = (
    "pipelines.preprocess.records",
    "pipelines.preprocess.stats",
    "pipelines.preprocess.shards",
    "tensorflow_transform.beam",
)


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
        from pipelines.preprocess.metadata import summary  # Beam's FileSystems: after the run, never for --help

        return summary(self.metadata, self.output_dir)


def check(config: PreprocessConfig, pipeline_args: Sequence[str] = ()) -> None:
    """Everything ``run`` refuses before it reads the input: a value out of range or flags that do not go
    together, the two folders inside each other, a flag Beam does not take. Raises ``UsageError``."""
    check_config(config)
    check_folders(config)
    check_pipeline_args(pipeline_args)


def parse_args(argv: Sequence[str]) -> tuple[PreprocessConfig, list[str]]:
    """``from_args``, then ``check``: a command line as ``run`` would take it. Raises ``UsageError``."""
    config, pipeline_args = from_args(argv)
    check(config, pipeline_args)
    return config, pipeline_args


def build_pipeline(
    p: beam.Pipeline, config: PreprocessConfig, temp_dir: str, metadata_path: Optional[str] = None
) -> beam.PCollection:
    """Adds the whole job to ``p`` (``transforms.ReadDataset`` then ``transforms.WriteDataset``); returns the
    PCollection holding the metadata.json path once written (None when every input was a dead letter).
    ``metadata_path``: where metadata.json goes (default: in ``config.output_dir``; a run that writes in place
    puts it aside for its publication). Nothing here touches the input: discovery happens when the pipeline
    runs, on whichever runner."""
    from pipelines import datasets
    from pipelines.datasets.base import DEAD_LETTER_TAG
    from pipelines.preprocess.transforms import EXAMPLES_TAG, ReadDataset, WriteDataset  # Beam: see the imports

    found = p | f"Discover{datasets.get(config.dataset).title}" >> ReadDataset.from_config(config)
    return (found[EXAMPLES_TAG], found[DEAD_LETTER_TAG]) | "WriteDataset" >> WriteDataset(
        config, temp_dir, metadata_path
    )


def run(
    config: Union[PreprocessConfig, Sequence[str]], pipeline_args: Optional[Sequence[str]] = None
) -> Union[PreprocessResult, Optional[DatasetMetadata]]:
    """Runs the job on ``config`` with Beam's ``pipeline_args``; returns a ``PreprocessResult``.

    Raises ``UsageError`` for a bad config or flag or an empty input, ``NoRecordsError`` when every input was a
    dead letter, ``SegflowError``s, never ``SystemExit``.

    Publication (``pipelines.shared.ownership``): DST is claimed first (refused when it holds files preprocess did
    not write, or while another run writes it). Locally the run writes into a staging folder inside DST and
    publishes by renames, metadata.json last: until then readers see the previous complete output, and a run that
    fails or is killed leaves it as it was. On gs:// the run writes in place: the previous metadata.json is
    deleted first and the new one written last, naming every shard. Files of the previous run that this one did
    not write (shards of another count) are deleted by the owner record.

    Transition: a command line (``run(argv)``) still runs and returns the ``DatasetMetadata`` (None for
    ``--dry_run``), with the Beam counters in ``extra["counters"]``, for callers not yet moved to the config.
    """
    from pipelines.common import runner as runner_lib  # Beam: see the imports

    try:
        if isinstance(config, PreprocessConfig):
            pipeline_args = list(pipeline_args or ())
            check(config, pipeline_args)
            return _run_checked(config, pipeline_args)
        config, pipeline_args = parse_args(config)
        result = _run_checked(config, pipeline_args)
        if result.metadata is not None and result.counters:
            result.metadata.extra.setdefault("counters", result.counters)
        return result.metadata
    finally:
        runner_lib.discard_workers()  # a fork server no pipeline took: the job failed before its pipeline ran


def _run_checked(config: PreprocessConfig, pipeline_args: list[str]) -> PreprocessResult:
    """``run`` on a checked config: claims DST (unless --dry_run) and runs the job into it."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    from pipelines.preprocess.publication import previous_release_files
    from pipelines.shared import ownership

    if PipelineOptions(pipeline_args).view_as(TestOptions).dry_run:  # only constructed: nothing written
        return _run_claimed(config, pipeline_args, None)
    # DST is claimed before any input is read: a folder this job may not write is refused, and one it cannot
    # write fails here, before any work.
    with ownership.claim(
        config.output_dir, "preprocess", "--output_dir", adopt=previous_release_files, markers=[METADATA_FILE]
    ) as claim:
        return _run_claimed(config, pipeline_args, claim)


def _options(config: PreprocessConfig, pipeline_args: list[str]) -> tuple[PipelineOptions, bool]:
    """The job's ``PipelineOptions`` and whether it only constructs the pipeline (``--dry_run``); checks the
    input (``check_input``) unless it only constructs it."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    from pipelines.common import runner as runner_lib

    dry_run = bool(PipelineOptions(pipeline_args).view_as(TestOptions).dry_run)
    early = runner_lib.early_workers_possible()
    # Unless its workers start early, how much there is to read decides whether they are threads or processes.
    count_up_to = 0 if early else runner_lib.PROCESSES_FROM_INPUT_BYTES
    input_bytes = None if dry_run else check_input(config, count_up_to=count_up_to)
    return runner_lib.make_pipeline_options(pipeline_args, input_bytes, early_workers=early), dry_run


def _run_claimed(
    config: PreprocessConfig, pipeline_args: list[str], claim: Optional["ownership.Claim"]
) -> PreprocessResult:
    """Runs the job into ``claim``'s staging folder (in place on gs://), then publishes it (see ``run``)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from pipelines.common import runner as runner_lib, storage
    from pipelines.preprocess import scratch
    from pipelines.preprocess.publication import NoRecordsError, files_written, no_records_message

    options, dry_run = _options(config, pipeline_args)
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
        if dry_run or claim is None:
            return PreprocessResult(config.output_dir, None)
        counters = _counters(p.result)
        metadata_path = claim.write_path(METADATA_FILE)
        metadata = None
        if FileSystems.exists(metadata_path):
            with FileSystems.open(metadata_path) as handle:
                metadata = DatasetMetadata.from_json(handle.read().decode("utf-8"))
        if metadata is None and claim.staged and METADATA_FILE in claim.previous:
            # Every input rejected is a failed rerun: DST keeps its previous dataset, and this run's dead letters
            # stay in its staging folder for the user to read (the next run into DST removes it).
            claim.keep_staging = True
            raise NoRecordsError(no_records_message(claim.staging, kept=config.output_dir))
        claim.publish(written=None if claim.staged else files_written(config.output_dir, metadata))
        if metadata is None:
            raise NoRecordsError(no_records_message(config.output_dir))
        return PreprocessResult(
            config.output_dir, metadata, dict(metadata.counts), metadata.dead_letter_count, counters
        )
    finally:
        if not dry_run:
            try:
                storage.remove_tree(temp_dir)  # literally: a --temp_location may hold glob characters
            except Exception as e:  # cleaning a temp dir must never hide the job's own error
                _LOG.warning("could not delete %s: %s", temp_dir, e)


def _counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The job's own Beam counters (namespace ``segflow``), logged."""
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


def start_workers(argv: Sequence[str]) -> None:
    """``main``'s prestart: when the job's workers will be processes, their fork server starts importing what
    they need (``WORKER_MODULES``) before this process imports TensorFlow, so the two run at once. The flags
    are checked as ``run`` checks them; the input is left to ``run``."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    from pipelines.common import runner as runner_lib

    _, pipeline_args = parse_args(argv)
    if PipelineOptions(pipeline_args).view_as(TestOptions).dry_run or not runner_lib.early_workers_possible():
        return
    runner_lib.start_workers(runner_lib.make_pipeline_options(pipeline_args, early_workers=True), WORKER_MODULES)


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

    def run_command(argv: list[str]) -> PreprocessResult:
        return run(*from_args(argv))

    def report(result: PreprocessResult, argv: list[str]) -> Optional[str]:
        return result.summary() if result.metadata is not None else None

    return cli.main(
        NAME,
        argv,
        run_command,
        check=from_args,
        summary=report,
        failure_line=failure_line,
        tensorflow=True,
        prestart=start_workers,
    )

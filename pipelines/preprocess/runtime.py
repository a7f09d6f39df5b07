"""Running the preprocess job on a checked config: claim DST, build the runner's options, keep the scratch space,
run the pipeline (``transforms.build_pipeline``) and publish (``job.run`` describes the publication).

Imported by ``job`` once the flags are parsed: Beam loads here, TensorFlow only as the pipeline is built.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, TestOptions

from pipelines.common import progress, runner as runner_lib, storage
from pipelines.preprocess import scratch
from pipelines.preprocess.inputs import check_input
from pipelines.preprocess.metadata import PreprocessResult
from pipelines.preprocess.options import PreprocessConfig
from pipelines.preprocess.publication import NoRecordsError, files_written, no_records_message, previous_release_files
from pipelines.shared import folders, ownership
from schemas.metadata import METADATA_FILE, DatasetMetadata

_LOG = logging.getLogger("segflow.preprocess")

# What the job's worker processes import (its DoFns' modules, tensorflow-transform's analyzers): their fork server
# loads these once, before the first worker starts (``pipelines.common.forkserver``).
WORKER_MODULES = (
    "pipelines.preprocess.records",
    "pipelines.preprocess.stats",
    "pipelines.preprocess.shards",
    "tensorflow_transform.beam",
)


def run_checked(config: PreprocessConfig, pipeline_args: list[str]) -> PreprocessResult:
    """``job.run`` on a checked config: claims DST (unless --dry_run) and runs the job into it. A fork server no
    pipeline took (the job failed before its pipeline ran) is ended."""
    try:
        return _run(config, pipeline_args)
    finally:
        runner_lib.discard_workers()


def _run(config: PreprocessConfig, pipeline_args: list[str]) -> PreprocessResult:
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

    dry_run = bool(PipelineOptions(pipeline_args).view_as(TestOptions).dry_run)
    early = runner_lib.early_workers_possible()
    # How much there is to read decides whether the workers are threads or processes (``default_running_mode``):
    # a small input runs in threads even where they could start early (``start_early_workers`` did not start
    # them), unless they already wait (a --direct_running_mode multi_processing named on the command line).
    count_up_to = runner_lib.THREADS_BELOW_INPUT_BYTES if early else runner_lib.PROCESSES_FROM_INPUT_BYTES
    input_bytes = None if dry_run else check_input(config, count_up_to=count_up_to)
    if early and _small(input_bytes) and not runner_lib.workers_waiting():
        early = False
    return runner_lib.make_pipeline_options(pipeline_args, input_bytes, early_workers=early), dry_run


def _small(input_bytes: Optional[int]) -> bool:
    return input_bytes is not None and input_bytes < runner_lib.THREADS_BELOW_INPUT_BYTES


def _run_claimed(
    config: PreprocessConfig, pipeline_args: list[str], claim: Optional[ownership.Claim]
) -> PreprocessResult:
    """Runs the job into ``claim``'s staging folder (in place on gs://), then publishes it (see ``run``)."""

    options, dry_run = _options(config, pipeline_args)  # checks the input first: a job with none ends here

    # The transforms' modules load TensorFlow: imported here, as the pipeline is built, so that importing this
    # module (main's prestart, ``start_early_workers``) starts the workers' fork server before TensorFlow loads,
    # and a job without input fails without loading it (0.4 s rather than 7 s on 2 cores).
    from pipelines.preprocess.transforms import build_pipeline

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
        # Discovery runs inside the pipeline: the number of examples is not known before, so count and rate only.
        shown = progress.shown("preprocess", None, "example", remote=remote, show=not dry_run)
        with shown as sink, runner_lib.new_pipeline(options) as p:
            metadata_path = claim.write_path(METADATA_FILE) if claim else None
            build_pipeline(p, written, temp_dir, metadata_path=metadata_path, sink=sink)
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


def start_early_workers(config: PreprocessConfig, pipeline_args: list[str]) -> None:
    """When the job's workers will be processes, their fork server starts importing what they need
    (``WORKER_MODULES``) now, before this process imports TensorFlow, so the two run at once. A local input of
    under ``THREADS_BELOW_INPUT_BYTES`` (counted with ``os`` calls, which stop there) runs in threads unless a
    flag names processes."""
    if PipelineOptions(pipeline_args).view_as(TestOptions).dry_run or not runner_lib.early_workers_possible():
        return
    input_bytes = None
    if not folders.is_remote(config.input_dir):
        input_bytes = check_input(config, count_up_to=runner_lib.THREADS_BELOW_INPUT_BYTES)
    options = runner_lib.make_pipeline_options(pipeline_args, input_bytes, early_workers=not _small(input_bytes))
    runner_lib.start_workers(options, WORKER_MODULES)

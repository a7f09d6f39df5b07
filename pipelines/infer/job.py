"""The infer job: ``run(config)`` (the Python API), the pipeline it runs (``build_pipeline``), and the command
line on top (``from_args``, ``main``; the package docstring is its --help).

The default ``--max_pixels`` (``pipelines.infer.options``): 32 Mpx (e.g. a 24-megapixel 6000x4000 photo passes;
Cityscapes frames are 2 Mpx). An image's memory grows with its own pixel count, not the model's input size: the
decoded image, the class ids, the instance and overlay copies, and with --postprocess graph the scores upsampled
to the original size (float32 per class). Measured peak RSS of the job on one 12 Mpx PNG with --instances
--overlay and the graph's postprocess, above its 0.8 GB start: 135 MB per Mpx with a 3-class Pet model, 286 MB
per Mpx with a 19-class Cityscapes one (a 144 Mpx image took 7.8 GB without them). The DirectRunner's default
here is one worker per core (pipelines.common.runner), so on 2 cores two full-size images are in flight at once:
2 x 32 Mpx x 286 MB = 18.3 GB + 0.8 GB stays under a 24 GB machine with ~5 GB to spare. More cores or a bigger
machine: raise the flag.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from pipelines.common import flags, progress, storage
from pipelines.common.deadletter import DEAD_LETTER_DIR, DEAD_LETTER_FILE, DeadLetter, WriteDeadLetters
from pipelines.common.runner import is_remote, make_pipeline_options, new_pipeline
from pipelines.infer import options as job_options, outputs
from pipelines.infer.inputs import MatchedInputs, check_output_dir, find_inputs
from pipelines.infer.model import ModelNotFound, load_model_once, read_model_info
from pipelines.infer.options import InferConfig, InferResult
from pipelines.infer.transforms import NAMESPACE, AssignOutputNames, SegmentImages, WritePredictions, label_spec
from pipelines.shared import folders, ownership
from schemas.errors import DataError
from schemas.model_contract import ModelInfo

SUMMARY_FILE = "summary.json"


def _write_summary(rows: list[dict], dead_letters: list[int], path: str, extra: dict[str, Any]) -> None:
    rows = sorted(rows, key=lambda r: r["stem"])
    doc = dict(extra)
    doc.update(
        {
            "images_written": len(rows),
            "dead_letters": int(sum(dead_letters)),
            "instances": int(sum(r["instances"] for r in rows)),
            "outputs": {r["path"]: r["stem"] for r in rows},
        }
    )
    doc["inputs_seen"] = doc["images_written"] + doc["dead_letters"]
    storage.write_json(path, doc)


# ---------------------------------------------------------------------------------------------- pipeline
def _count_dead_letter(letter: DeadLetter) -> DeadLetter:
    Metrics.counter(NAMESPACE, "inputs_matched").inc()
    return letter


def _count_input(path: str) -> str:
    Metrics.counter(NAMESPACE, "inputs_matched").inc()
    return path


def _file_path(metadata) -> Iterable[str]:
    if not metadata.path.endswith("/"):  # "folder/" placeholder objects some tools create are not inputs
        yield metadata.path


def build_pipeline(
    pipeline: beam.Pipeline,
    config: InferConfig,
    model_info: ModelInfo,
    matched: Optional[MatchedInputs] = None,
    summary_path: Optional[str] = None,
    sink: Optional[progress.Sink] = None,
) -> None:
    """Adds the inference job to ``pipeline``: the matched files → ``SegmentImages`` → ``WritePredictions``,
    dead letters and ``summary.json`` (``matched``: ``find_inputs`` of the config when not given;
    ``summary_path``: where summary.json goes, by default in ``config.output_dir``; ``sink``: counts each image
    written or dead-lettered, ``pipelines.common.progress``)."""
    matched = matched if matched is not None else _find_inputs(config)
    sources = []
    if matched.files or not matched.remote_patterns:
        sources.append(pipeline | "MatchedFiles" >> beam.Create(matched.files))
    if matched.remote_patterns:
        sources.append(
            pipeline
            | "Patterns" >> beam.Create(matched.remote_patterns)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.FlatMap(_file_path)
            | "EachFileOnce" >> beam.Distinct()
        )  # overlapping globs name a file once
    files = (
        sources | "AllFiles" >> beam.Flatten() | "CountInputs" >> beam.Map(_count_input) | "Name" >> AssignOutputNames()
    )
    segmented, unsegmented = files | "Segment" >> SegmentImages(
        config.model_dir,
        max_pixels=config.max_pixels,
        instances=config.instances,
        min_instance_area=config.min_instance_area,
        max_instances=config.max_instances,
        overlay=config.overlay,
        batch_size=config.batch_size,
        model_calls=config.model_calls,
        postprocess=config.postprocess,
        model_copies=config.model_copies,
        large_model=config.large_model,
        model_cache_dir=config.model_cache_dir,
        model_info=model_info,
    )
    written = segmented | "WritePredictions" >> beam.ParDo(WritePredictions(config.output_dir, model_info))
    dead_parts = [unsegmented]
    if matched.dead_letters:
        dead_parts.append(
            pipeline
            | "UnreadableMatches" >> beam.Create(matched.dead_letters)
            | "CountUnreadable" >> beam.Map(_count_dead_letter)
        )
    dead = dead_parts | "AllDeadLetters" >> beam.Flatten()
    # Each input ends as one written image or one dead letter: together, the job's progress.
    _ = (written, dead) | "EachInputDone" >> beam.Flatten() | "Progress" >> beam.ParDo(progress.CountDone(sink))
    dead_count = dead | "DeadLetters" >> WriteDeadLetters(config.output_dir, namespace=NAMESPACE)
    extra: dict[str, Any] = {
        "model_dir": config.model_dir,
        "dataset": model_info.dataset,
        "input": list(config.input or []),
    }
    if config.input_dir:  # only then: a run of --input globs writes the same summary.json as before
        extra.update(input_dir=config.input_dir, input_dataset=config.dataset)
    if config.split:
        extra.update(split=config.split, ids_without_image=list(matched.ids_without_image))
    _ = (
        written
        | "GatherSummaries" >> beam.combiners.ToList()
        | "WriteSummary"
        >> beam.Map(
            _write_summary,
            beam.pvalue.AsList(dead_count),
            summary_path or FileSystems.join(config.output_dir, SUMMARY_FILE),
            extra,
        )
    )


# ---------------------------------------------------------------------------------------------- the job
def _find_inputs(config: InferConfig) -> MatchedInputs:
    return find_inputs(config.input, config.input_dir, config.dataset, config.split, config.output_dir)


def from_args(argv: Optional[Sequence[str]] = None) -> tuple[InferConfig, list[str]]:
    """Flags → ``InferConfig`` and the Beam flags (their values checked by Beam); raises ``UsageError``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config, beam_argv = job_options.from_args(argv)
    flags.check_beam_argv(beam_argv, "python -m pipelines.infer")
    return config, beam_argv


def previous_release_files(where: folders.Folder, kind: str) -> Optional[set]:
    """What an infer run of the release before owner records wrote in ``where``: its summary.json, the outputs
    of every image it names, and its dead-letter file; None when ``where`` holds no summary.json."""
    data = where.read(SUMMARY_FILE)
    if data is None:
        return None
    try:
        stems = set(json.loads(data)["outputs"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return {SUMMARY_FILE} | _files_of(stems, where)


def _files_of(stems: set, where: folders.Folder) -> set:
    """The files under ``where``'s output folders that belong to the images ``stems`` (see
    ``pipelines.infer.outputs``), and the dead-letter file."""
    found = {f"{DEAD_LETTER_DIR}/{DEAD_LETTER_FILE}"} & set(where.files(DEAD_LETTER_DIR))
    for folder in (outputs.MASKS_DIR, outputs.COLOR_DIR, outputs.OVERLAY_DIR, outputs.INSTANCES_DIR):
        for rel in where.files(folder):
            if outputs.stem_of(rel[len(folder) + 1 :]) in stems:
                found.add(rel)
    return found


def run(config: InferConfig, pipeline_args: Optional[Sequence[str]] = None) -> InferResult:
    """Runs the job: segments the images ``config.input`` matches (or those of the dataset folder
    ``config.input_dir``, of ``config.split``) with the model in ``config.model_dir`` into ``config.output_dir``.
    ``pipeline_args``: Beam's flags (e.g. ``["--direct_num_workers", "2"]``; default: the DirectRunner as the
    command line runs it). Raises ``UsageError`` for a bad config value or a split the dataset folder does not
    have, ``DataError`` for a model, inputs or an output folder it cannot use (nothing written then)."""
    job_options.check(config)
    job_options.check_input_dir(config)
    beam_argv = list(pipeline_args or [])
    try:
        model_info = read_model_info(config.model_dir)
        label_spec(model_info)  # the model's label table, checked before any input is read
        load_model_once(config.model_dir, config.model_cache_dir)  # before any input is read or output cleared
    except (ModelNotFound, ValueError) as err:
        raise DataError(str(err)) from None
    options = make_pipeline_options(beam_argv)
    if options.view_as(TestOptions).dry_run:  # the job is only constructed (Dataflow's dry run): nothing written
        matched = _find_inputs(config)
        pipeline = new_pipeline(options)
        build_pipeline(pipeline, config, model_info, matched, sink=progress.Sink())
        result = pipeline.run()
    else:
        matched, result = _run_claimed(config, options, model_info)
    counters = _counters(result)
    # Local globs are counted here, as expanded; gs:// ones by the pipeline after matching them.
    matched_count = matched.count if matched.count is not None else counters.get("inputs_matched", 0)
    counters["inputs_matched"] = matched_count
    return InferResult(
        output_dir=config.output_dir,
        inputs_matched=matched_count,
        images_written=counters.get("images_written"),
        dead_letters=counters.get("dead_letters"),
        instances=counters.get("instances"),
        counters=counters,
        ids_without_image=matched.ids_without_image,
    )


def run_command(argv: Sequence[str]) -> InferResult:
    """``run`` from the command line's flags."""
    return run(*from_args(argv))


def _run_claimed(
    args: InferConfig, options: PipelineOptions, model_info: ModelInfo
) -> tuple[MatchedInputs, beam.runners.runner.PipelineResult]:
    """Runs the job into OUT, claimed before any input is read (a folder infer may not write is refused, one it
    cannot write fails here): the run writes into the claim's staging folder (in place on gs://) and publishes
    at the end."""
    with ownership.claim(
        args.output_dir, "infer", "--output_dir", adopt=previous_release_files, markers=[SUMMARY_FILE]
    ) as claim:
        matched = _find_inputs(args)
        check_output_dir(matched, args.output_dir, args.model_dir)
        pipeline = new_pipeline(options)
        with progress.shown("infer", matched.count, "image", remote=is_remote(options)) as sink:
            build_pipeline(
                pipeline,
                dataclasses.replace(args, output_dir=claim.staging),
                model_info,
                matched,
                summary_path=claim.write_path(SUMMARY_FILE),
                sink=sink,
            )
            result = pipeline.run()
            result.wait_until_finish()
        written = None
        if not claim.staged:
            summary = json.loads(claim.where.read(f"{ownership.RECORD_DIR}/{ownership.PENDING}/{SUMMARY_FILE}"))
            written = _files_of(set(summary["outputs"].values()), claim.where)
        claim.publish(written=written)
    return matched, result


def _counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    try:
        metrics = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # noqa: BLE001 - e.g. a Dataflow dry run has no metrics
        return {}
    out: dict[str, int] = {}
    for counter in metrics.get("counters", []):
        name = counter.key.metric.name
        out[name] = out.get(name, 0) + int(counter.committed or counter.attempted or 0)
    if "images_written" in out or "images_read" in out or "dead_letters" in out:
        out.setdefault("images_written", 0)
        out.setdefault("dead_letters", 0)
        out.setdefault("instances", 0)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipelines.infer``'s exit status (``pipelines.infer.options.main`` with this job's ``run``)."""
    return job_options.main(argv, run_command)

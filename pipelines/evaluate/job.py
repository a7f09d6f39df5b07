"""The evaluate job: ``run(config)`` (the Python API), the pipeline it runs (``build_pipeline``), and the command
line on top (``from_args``, ``main``; the package docstring is its --help)."""

from __future__ import annotations

import json
import posixpath
import shlex
import sys
from typing import Any, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import datasets
from pipelines.common import flags, progress, storage
from pipelines.common.runner import is_remote, make_pipeline_options, new_pipeline
from pipelines.datasets.base import Dataset
from pipelines.datasets.discovery import BeamFiles
from pipelines.evaluate import options as job_options
from pipelines.evaluate.inputs import (
    EvaluationInputs,
    example_id,
    gather_inputs,
    local_parent,
    split_ids,
    suggestion,
)
from pipelines.evaluate.options import EvaluateConfig, EvaluateResult
from pipelines.evaluate.transforms import NOT_AN_ID_MASK, PairByExampleId, ScoreMasks
from pipelines.infer import outputs
from pipelines.shared import folders, ownership
from schemas import labels, strict_json
from schemas.errors import DataError, UsageError

REPORT = "pipelines.evaluate.report"  # the command the summary tells the user to run next


def write_evaluation(path: str, doc: dict[str, Any]) -> None:
    """Writes the evaluation document as strict JSON: it is a report of figures, so one that could not be
    computed (the IoU of a class seen nowhere, the mIoU of no scored image) is ``null``, never a bare ``NaN``."""
    storage.write_json(path, strict_json.with_absent_as_null(doc))


def format_table(result: dict[str, Any]) -> str:
    """The printed report: one row per class, then mIoU and pixel accuracy."""
    width = max([len("pixel accuracy")] + [len(n) for n in result["class_names"]])
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'gt pixels':>12}", "-" * (width + 23)]
    for name in result["class_names"]:
        iou = result["per_class_iou"][name]
        shown = "    n/a" if iou is None else f"{iou:7.4f}"
        lines.append(f"{name:<{width}}  {shown}  {result['gt_pixels'][name]:>12d}")
    lines.append("-" * (width + 23))
    miou = result["mean_iou"]
    acc = result["pixel_accuracy"]
    lines.append(f"{'mIoU':<{width}}  {('    n/a' if miou is None else f'{miou:7.4f}')}")
    lines.append(f"{'pixel accuracy':<{width}}  {('    n/a' if acc is None else f'{acc:7.4f}')}")
    lines.append(
        f"images: {result['images']}, missing predictions: {result['missing_predictions']}, "
        f"predictions without ground truth: {result['unmatched_predictions']}, "
        f"errors: {len(result['errors'])}"
    )
    return "\n".join(lines)


def build_pipeline(
    pipeline: beam.Pipeline,
    inputs: EvaluationInputs,
    spec: labels.LabelSpec,
    output_file: str,
    extra: dict[str, Any],
    sink: Optional[progress.Sink] = None,
    dataset: Optional[Dataset] = None,
) -> None:
    """Pairs the listed files by id (``PairByExampleId``), scores the pairs (``ScoreMasks``: one confusion matrix
    per pair, summed); writes the document. ``sink`` counts each example id taken (``pipelines.common.progress``;
    ``example_count`` is their total). ``dataset``: the dataset as ``--ground_truth`` defines it
    (``Dataset.with_source``; default: ``spec.dataset``'s own)."""
    sides = {
        "gt": pipeline | "GroundTruthFiles" >> beam.Create(inputs.ground_truth),
        "pred": pipeline | "PredictionFiles" >> beam.Create(inputs.predictions),
    }
    extra = dict(extra, errors=inputs.errors, ignored_files=inputs.ignored)
    paired = sides | "PairByExampleId" >> PairByExampleId(spec.dataset, inputs.ids)
    # Each example id becomes one pair to score or one finding that did not pair: together, the job's progress.
    _ = paired | "EachIdTaken" >> beam.Flatten() | "Progress" >> beam.ParDo(progress.CountDone(sink))
    _ = (
        paired
        | "Score" >> ScoreMasks(dataset or spec.dataset, spec.mode, extra)
        | "Write" >> beam.Map(lambda doc: write_evaluation(output_file, doc))
    )


def example_count(inputs: EvaluationInputs, dataset: str) -> int:
    """The example ids the two sides name together: what ``build_pipeline`` pairs, one by one."""
    ids = inputs.ids or {}
    return len({ids.get(p) or example_id(p, dataset) for p in [*inputs.ground_truth, *inputs.predictions]})


def from_args(argv: Optional[Sequence[str]] = None) -> tuple[EvaluateConfig, list[str]]:
    """Flags → ``EvaluateConfig`` and the Beam flags (their values checked by Beam); raises ``UsageError``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config, beam_argv = job_options.from_args(argv)
    flags.check_beam_argv(beam_argv, "python -m pipelines.evaluate")
    return config, beam_argv


def output_file(config: EvaluateConfig) -> str:
    """Where the evaluation JSON goes: ``output_file``, else evaluation.json next to the predictions folder."""
    return config.output_file or FileSystems.join(predictions_parent(config.predictions), "evaluation.json")


def predictions_parent(predictions: str) -> str:
    """The folder holding the predictions folder: infer's OUT for ``OUT/masks``."""
    predictions = predictions.rstrip("/")
    return posixpath.dirname(predictions) if "://" in predictions else local_parent(predictions)


def run(config: EvaluateConfig, pipeline_args: Optional[Sequence[str]] = None) -> EvaluateResult:
    """Scores ``config.predictions`` against ``config.ground_truth``; returns the evaluation (also written to
    ``output_file(config)``). ``pipeline_args``: Beam's flags. Raises ``UsageError`` for a bad config value (a
    ``split`` the dataset does not have), ``DataError`` when the two folders hold nothing that pairs, and, after
    writing the document, when any file was an error or no image was scored: a score over what was left would
    be a wrong score."""
    job_options.check(config)
    try:  # a label table that comes with the data (folder: SRC/classes.json) is read from --ground_truth
        source = datasets.get(config.dataset).with_source(config.ground_truth, BeamFiles())
    except ValueError as err:
        raise DataError(str(err)) from None
    spec = source.label_spec(config.label_mode)
    predictions = config.predictions.rstrip("/")
    ids_of_split = split_ids(config.ground_truth, config.dataset, config.split)
    destination = output_file(config)
    # The folder of the JSON is claimed before any mask is read (refused while another command writes it), a
    # file of that name that evaluate did not write is never replaced, and the JSON goes to a staging folder and
    # is published by rename once whole.
    folder, name = destination.rstrip("/").rsplit("/", 1) if "/" in destination else (".", destination)
    with ownership.claim(
        folder or "/", "evaluate", "--output_file's folder", adopt=_previous_release_files(name), markers=[name]
    ) as claim:
        if name not in claim.previous and claim.where.is_file(name):
            raise ownership.OutputFolderRefused(
                f"--output_file {destination} exists and is not an evaluation segflow wrote; name another file"
            )
        doc = _evaluate(
            config, list(pipeline_args or []), spec, predictions, ids_of_split, claim.write_path(name), source
        )
        claim.publish(written=[name], replaces=[name])
    problem = unscored_line(doc, predictions, destination)
    if problem:
        raise DataError(problem)
    return EvaluateResult(destination, doc)


def run_command(argv: Sequence[str]) -> EvaluateResult:
    """``run`` from the command line's flags."""
    return run(*from_args(argv))


def _previous_release_files(name: str):
    """The adopter for ``ownership.claim``: the evaluation JSON ``name`` the release before owner records wrote
    (a JSON document with a ``mean_iou``), else None (nothing of evaluate's is there)."""

    def adopt(where: folders.Folder, kind: str) -> Optional[set]:
        data = where.read(name)
        try:
            if data is not None and "mean_iou" in json.loads(data):
                return {name}
        except (ValueError, TypeError):
            pass
        return None

    return adopt


def _evaluate(
    config: EvaluateConfig,
    beam_argv: list[str],
    spec: labels.LabelSpec,
    predictions: str,
    ids_of_split: Optional[frozenset[str]],
    write_to: str,
    dataset: Optional[Dataset] = None,
) -> dict[str, Any]:
    """Pairs and scores the masks; writes the document to ``write_to`` and returns it."""
    try:
        inputs = gather_inputs(predictions, config.ground_truth, dataset or config.dataset, config.split, ids_of_split)
    except UsageError:
        raise
    except ValueError as err:
        raise DataError(str(err)) from None
    extra = {
        "predictions": predictions,
        "ground_truth": config.ground_truth,
        "ground_truth_pattern": inputs.ground_truth_pattern,
    }
    if config.split:  # only then: a run without --split writes the same document as before
        extra["split"] = config.split
    if ids_of_split is not None:
        extra["predictions_outside_split"] = inputs.outside_split
    options = make_pipeline_options(beam_argv)
    pipeline = new_pipeline(options)
    total = example_count(inputs, spec.dataset)
    with progress.shown("evaluate", total, "image", remote=is_remote(options)) as sink:
        build_pipeline(pipeline, inputs, spec, write_to, extra, sink, dataset)
        pipeline.run().wait_until_finish()
    return json.loads(storage.read_bytes(write_to).decode("utf-8"))


def unscored_line(doc: dict[str, Any], predictions: str, destination: str) -> Optional[str]:
    """The one line for a run whose score cannot be trusted (any error, or no image scored), else None."""
    errors, images = doc["errors"], doc["images"]
    if not errors and images:
        return None
    if not errors:
        return f"no image was scored; see {destination}"
    first = errors[0]
    line = (
        f"{len(errors)} error{'' if len(errors) == 1 else 's'}, {images} image{'' if images == 1 else 's'} scored, "
        f"no score to trust (first: {first['path']}: {first['error']})"
    )
    if any(NOT_AN_ID_MASK in e["error"] for e in errors):
        line += (
            f"; --predictions must hold single-channel id masks: point it at infer's OUT/{outputs.MASKS_DIR}"
            f"{suggestion(predictions)}"
        )
    return f"{line}; every error is listed in {destination}"


def summary(result: EvaluateResult, argv: list[str]) -> str:
    """What stdout shows: the table, where the JSON went, and the command that draws the report of this run."""
    return f"{format_table(result.document)}\nevaluation written to {result.output_file}\n{report_line(result)}"


def report_line(result: EvaluateResult) -> str:
    """``report: python -m pipelines.evaluate.report ...`` for this run's OUT (the folder holding the predictions
    folder, where infer's summary.json is), dataset and ground truth; the report reads OUT/evaluation.json, so a
    run that wrote its JSON elsewhere is told so."""
    doc = result.document
    out = predictions_parent(doc["predictions"])
    line = (
        f"report: python -m {REPORT} --output_dir {shlex.quote(out)} --dataset {doc['dataset']} "
        f"--ground_truth {shlex.quote(doc['ground_truth'])}"
    )
    if result.output_file != FileSystems.join(out, "evaluation.json"):
        line += f" (it reads {out}/evaluation.json, not {result.output_file}: copy it there for per-image scores)"
    return line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipelines.evaluate``'s exit status (``pipelines.evaluate.options.main`` with this job)."""
    return job_options.main(argv, run_command, summary)

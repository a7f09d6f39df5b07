"""Beam RunInference over images: masks, colour images and instances written back to storage.

    python -m pipelines.infer --model_dir JOB/model --input 'data/pet/images/*.jpg' --output_dir out/pred \
        [--instances] [--overlay] [--batch_size 1,8] [--model_copies N] [any Beam option]

Stages: match the ``--input`` globs (``fileio``, local or gs://) → give every file a unique, safe output stem →
read and preprocess with the model's own ``preprocess`` signature → ``RunInference`` (``predict_resized``,
batched on the fixed model input size) → the model's ``postprocess`` at each image's original size →
instances (optional) → write masks/colour/overlay/instances through FileSystems. Files that cannot be read or
decoded go to ``OUT/dead_letter/``; every matched file ends in exactly one of the two places.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.utils import shared

from pipelines import outputs
from pipelines.deadletter import DeadLetter, WriteDeadLetters
from pipelines.instances import extract_instances
from pipelines.runner import BeamJobParser, exit_process, leave_parallelism_to_beam, make_pipeline_options, \
    new_pipeline
from pipelines.serving import MODEL_CALLS, ModelNotFound, SegflowModelHandler, acquire_model, read_model_info
from schemas.labels import spec_for

NAMESPACE = "segflow_infer"
SUMMARY_FILE = "summary.json"
_GLOB_CHARS = set("*?[")


# ---------------------------------------------------------------------------------------------- naming
def _key_by_stem(readable: fileio.ReadableFile) -> tuple[str, fileio.ReadableFile]:
    return outputs.base_stem(readable.metadata.path), readable


def _assign_names(group: tuple[str, Iterable[fileio.ReadableFile]]) -> Iterable[tuple[str, fileio.ReadableFile]]:
    _, files = group
    files = sorted(files, key=lambda f: f.metadata.path)
    names = outputs.unique_stems(f.metadata.path for f in files)
    for f in files:
        yield names[f.metadata.path], f


class AssignOutputNames(beam.PTransform):
    """ReadableFile → (stem, ReadableFile) with a stem unique across the whole job.

    Files are grouped by their plain stem (only names travel, not bytes), so two inputs called ``x.jpg`` in
    different folders get distinct, deterministic names.
    """

    def expand(self, files: beam.PCollection) -> beam.PCollection:
        return (files
                | "KeyByStem" >> beam.Map(_key_by_stem)
                | "GroupByStem" >> beam.GroupByKey()
                | "UniqueNames" >> beam.FlatMap(_assign_names))


# ---------------------------------------------------------------------------------------------- stages
class PreprocessImage(beam.DoFn):
    """(stem, ReadableFile) → ((stem, path, height, width), uint8 [Hm, Wm, 3]); unreadable → dead letter."""

    DEAD = "dead"

    def __init__(self, model_dir: str, handle: shared.Shared, cache_dir: Optional[str]):
        self._model_dir, self._handle, self._cache_dir = model_dir, handle, cache_dir
        self._images = Metrics.counter(NAMESPACE, "images_read")
        self._failed = Metrics.counter(NAMESPACE, "images_unreadable")

    def setup(self) -> None:
        leave_parallelism_to_beam()
        self._model = acquire_model(self._handle, self._model_dir, self._cache_dir)

    def process(self, element: tuple[str, fileio.ReadableFile]):
        stem, readable = element
        path = readable.metadata.path
        try:
            data = readable.read()
            if not data:
                raise ValueError("empty file")
            image, height, width = self._model.preprocess(data)
        except Exception as err:  # noqa: BLE001 - any unreadable input becomes a dead letter, never a crash
            self._failed.inc()
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            yield beam.pvalue.TaggedOutput(self.DEAD, DeadLetter(path, reason[:500], "preprocess"))
            return
        self._images.inc()
        yield (stem, path, height, width), image


class PostprocessAndWrite(beam.DoFn):
    """((stem, path, h, w), PredictionResult) → writes every output of the image; yields a summary dict."""

    DEAD = "dead"

    def __init__(self, model_dir: str, handle: shared.Shared, cache_dir: Optional[str], output_dir: str,
                 model_info: dict[str, Any], instances: bool, min_instance_area: int, overlay: bool):
        self._model_dir, self._handle, self._cache_dir = model_dir, handle, cache_dir
        self._output_dir = output_dir
        self._info = model_info
        self._instances, self._min_area, self._overlay = instances, min_instance_area, overlay
        self._written = Metrics.counter(NAMESPACE, "images_written")
        self._instance_count = Metrics.counter(NAMESPACE, "instances")
        self._failed = Metrics.counter(NAMESPACE, "postprocess_failed")

    def setup(self) -> None:
        leave_parallelism_to_beam()
        self._model = acquire_model(self._handle, self._model_dir, self._cache_dir)
        self._spec = spec_for(self._info["dataset"], self._info.get("label_mode"))
        names = list(self._spec.class_names)
        # Pet trimaps have a predicted border class: that is the model's own boundary evidence.
        self._border = names.index("border") if "border" in names else None

    def process(self, element):
        (stem, path, height, width), result = element
        try:
            class_ids, probabilities = self._model.postprocess(result.inference, height, width,
                                                               with_probabilities=self._instances)
            image = None
            if self._overlay:
                image = self._model_image(path)
            found = None
            if self._instances:
                found = extract_instances(class_ids, probabilities, self._spec.instance_train_ids,
                                          border_train_id=self._border, min_area=self._min_area)
        except Exception as err:  # noqa: BLE001 - one bad image must not stop the job
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, DeadLetter(path, f"postprocess failed: {err}"[:500],
                                                                 "postprocess"))
            return
        # Write errors are not caught: storage failures are retried by the runner, not turned into lost images.
        summary = outputs.write_prediction(self._output_dir, stem, class_ids, self._spec, image=image,
                                           instances=found, source_path=path)
        self._written.inc()
        self._instance_count.inc(summary["instances"])
        yield summary

    @staticmethod
    def _model_image(path: str) -> np.ndarray:
        import tensorflow as tf

        from schemas.imaging import decode_image_bytes

        return decode_image_bytes(tf.constant(outputs.read_bytes(path))).numpy()


def _write_summary(rows: list[dict], dead_letters: list[int], path: str, extra: dict[str, Any]) -> None:
    rows = sorted(rows, key=lambda r: r["stem"])
    doc = dict(extra)
    doc.update({"images_written": len(rows), "dead_letters": int(sum(dead_letters)),
                "instances": int(sum(r["instances"] for r in rows)),
                "outputs": {r["path"]: r["stem"] for r in rows}})
    doc["inputs_seen"] = doc["images_written"] + doc["dead_letters"]
    outputs.write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"), "application/json")


# ---------------------------------------------------------------------------------------------- pipeline
def build_pipeline(pipeline: beam.Pipeline, args: argparse.Namespace, model_info: dict[str, Any]) -> None:
    """Adds the inference graph to ``pipeline``."""
    handle = shared.Shared()
    min_batch, max_batch = args.batch_size
    handler = KeyedModelHandler(SegflowModelHandler(
        args.model_dir, cache_dir=args.model_cache_dir, shared_handle=handle, min_batch_size=min_batch,
        max_batch_size=max_batch, model_copies=args.model_copies, large_model=args.large_model,
        model_calls=args.model_calls))

    files = (pipeline
             | "Patterns" >> beam.Create(args.input)
             | "Match" >> fileio.MatchAll()
             | "Read" >> fileio.ReadMatches()
             | "Name" >> AssignOutputNames())
    prepared = files | "Preprocess" >> beam.ParDo(
        PreprocessImage(args.model_dir, handle, args.model_cache_dir)).with_outputs(PreprocessImage.DEAD,
                                                                                     main="ok")
    predicted = prepared.ok | "RunInference" >> RunInference(handler)
    written = predicted | "PostprocessAndWrite" >> beam.ParDo(PostprocessAndWrite(
        args.model_dir, handle, args.model_cache_dir, args.output_dir, model_info, args.instances,
        args.min_instance_area, args.overlay)).with_outputs(PostprocessAndWrite.DEAD, main="ok")
    dead = ((prepared[PreprocessImage.DEAD], written[PostprocessAndWrite.DEAD])
            | "AllDeadLetters" >> beam.Flatten())
    dead_count = dead | "DeadLetters" >> WriteDeadLetters(args.output_dir, namespace=NAMESPACE)
    extra = {"model_dir": args.model_dir, "dataset": model_info["dataset"], "input": list(args.input)}
    _ = (written.ok
         | "GatherSummaries" >> beam.combiners.ToList()
         | "WriteSummary" >> beam.Map(_write_summary, beam.pvalue.AsList(dead_count),
                                      FileSystems.join(args.output_dir, SUMMARY_FILE), extra))


# ---------------------------------------------------------------------------------------------- flags
def _batch_bounds(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch_size takes MAX or MIN,MAX (positive integers), got {text!r}")
    lo, hi = (1, parts[0]) if len(parts) == 1 else (parts[0], parts[1]) if len(parts) == 2 else (0, 0)
    if lo < 1 or hi < lo:
        raise argparse.ArgumentTypeError(f"--batch_size takes MAX or MIN,MAX with 1 <= MIN <= MAX, got {text!r}")
    return lo, hi


def _positive_or_none(text: str) -> Optional[int]:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--model_copies must be >= 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, list[str]]:
    parser = BeamJobParser(prog="python -m pipelines.infer", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="JOB/model exported by trainer.task (local or gs://)")
    parser.add_argument("--input", required=True, action="append",
                        help="glob of input images (local or gs://); repeat the flag for several globs")
    parser.add_argument("--output_dir", required=True, help="where masks/, color/, instances/ … go (local or gs://)")
    parser.add_argument("--instances", action="store_true",
                        help="also write instance masks (Cityscapes instance-level result format)")
    parser.add_argument("--min_instance_area", type=_non_negative, default=20,
                        help="drop instances with fewer pixels than this (default 20)")
    parser.add_argument("--overlay", action="store_true", help="also write input+colour blends to overlay/")
    parser.add_argument("--batch_size", type=_batch_bounds, default=(1, 8),
                        help="RunInference batch bounds: MAX or MIN,MAX (default 1,8)")
    parser.add_argument("--model_calls", choices=MODEL_CALLS, default="batch",
                        help="batch: one model call per RunInference batch, zero-padded to the largest batch size "
                             "so every call has one shape and reruns stay byte-identical (default); image: one "
                             "call per image (about 2x the CPU for the model step on CPU)")
    parser.add_argument("--vectorized_batches", dest="model_calls", action="store_const", const="batch",
                        help="deprecated: the same as --model_calls batch, now the default")
    parser.add_argument("--model_copies", type=_positive_or_none, default=None,
                        help="exact number of model copies per machine, shared across worker processes "
                             "(default: one per worker process)")
    parser.add_argument("--large_model", action="store_true",
                        help="share one model across the worker processes of a machine (memory-bound models)")
    parser.add_argument("--model_cache_dir", default=None,
                        help="local folder for copies of a remote --model_dir (default: the system temp dir)")
    return parser.parse_job_args(argv)


def _check_inputs(patterns: Sequence[str]) -> int:
    """Fails fast (one line) when a glob matches nothing; returns the number of matched files."""
    total = 0
    for pattern in patterns:
        try:
            found = len([m for m in FileSystems.match([pattern])[0].metadata_list if not m.path.endswith("/")])
        except Exception as err:  # noqa: BLE001
            raise SystemExit(f"pipelines.infer: error: cannot list --input {pattern}: {err}")
        if not found:
            hint = "" if _GLOB_CHARS & set(pattern) else " (a folder needs a glob, e.g. DIR/*.jpg)"
            raise SystemExit(f"pipelines.infer: error: --input {pattern} matches no files{hint}")
        total += found
    return total


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the job; returns the counters (images_written, dead_letters, instances) and the output dir."""
    args, beam_argv = parse_args(argv)
    try:
        model_info = read_model_info(args.model_dir)
        spec_for(model_info["dataset"], model_info.get("label_mode"))
    except (ModelNotFound, ValueError) as err:
        raise SystemExit(f"pipelines.infer: error: {err}")
    matched = _check_inputs(args.input)
    options = make_pipeline_options(beam_argv)
    pipeline = new_pipeline(options)
    build_pipeline(pipeline, args, model_info)
    result = pipeline.run()
    result.wait_until_finish()
    counters = _counters(result)
    counters.update({"inputs_matched": matched, "output_dir": args.output_dir})
    if counters.get("images_written") is not None:
        print(f"infer: {matched} inputs matched, {counters.get('images_written', 0)} written, "
              f"{counters.get('dead_letters', 0)} dead-lettered, {counters.get('instances', 0)} instances "
              f"-> {args.output_dir}")
    return counters


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


def quiet_beam_logs() -> None:
    """Keeps the DirectRunner's relayed worker chatter (one WARNING per worker start) off the console."""
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.worker").setLevel(logging.ERROR)


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    quiet_beam_logs()
    run(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
    exit_process(0)

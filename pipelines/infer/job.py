"""The infer job: its pipeline and ``run`` (its command line is ``pipelines.common.flags``; the package docstring
is its --help)."""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import re
import stat
import sys
import warnings
from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions
from apache_beam.utils import shared

from pipelines import datasets
from pipelines.common import flags, storage
from pipelines.common.deadletter import DEAD_LETTER_DIR, DEAD_LETTER_FILE, DeadLetter, WriteDeadLetters
from pipelines.common.runner import leave_parallelism_to_beam, make_pipeline_options, new_pipeline
from pipelines.infer import options as job_options, outputs, upsample
from pipelines.infer.instances import extract_instances
from pipelines.infer.model import (
    ModelNotFound,
    SegflowModelHandler,
    acquire_model,
    load_model_once,
    read_model_info,
)
from pipelines.shared import ownership
from schemas.errors import DataError
from schemas.model_contract import ModelInfo

NAMESPACE = "segflow_infer"
SUMMARY_FILE = "summary.json"
# The folders a run writes in OUT (a rerun replaces the files it wrote there, by OUT's owner record).
OUTPUT_FOLDERS = (outputs.MASKS_DIR, outputs.COLOR_DIR, outputs.OVERLAY_DIR, outputs.INSTANCES_DIR, DEAD_LETTER_DIR)
_GLOB_CHARS = storage.GLOB_CHARS

# Default --max_pixels (pipelines.common.flags): 32 Mpx (e.g. a 24-megapixel 6000x4000 photo passes; Cityscapes frames
# are 2 Mpx). An image's memory grows with its own pixel count, not the model's input size: the decoded image,
# the class ids, the instance and overlay copies, and with --postprocess graph the scores upsampled to the
# original size (float32 per class). Measured peak RSS of the job on one 12 Mpx PNG with --instances --overlay
# and the graph's postprocess, above its 0.8 GB start: 135 MB per Mpx with a 3-class Pet model, 286 MB per Mpx
# with a 19-class Cityscapes one (a 144 Mpx image took 7.8 GB without them). The DirectRunner's default here is
# one worker per core (pipelines.common.runner), so on 2 cores two full-size images are in flight at once: 2 x 32 Mpx x
# 286 MB = 18.3 GB + 0.8 GB stays under a 24 GB machine with ~5 GB to spare. More cores or a bigger machine:
# raise the flag.
DEFAULT_MAX_PIXELS = job_options.DEFAULT_MAX_PIXELS
DEFAULT_MAX_INSTANCES = job_options.DEFAULT_MAX_INSTANCES
# What one element in a RunInference batch holds: its model-size input (uint8 x 3) and scores (float32 x C).
# The default --batch_size MAX keeps a batch's elements within this (8 when they fit, as before: a 512x1024
# 19-class model's elements are 41 MB each); the full-size work happens after the batch, one image at a time.
BATCH_BYTES = 512 << 20
DEFAULT_MAX_BATCH = 8


# ---------------------------------------------------------------------------------------------- matching
class InputError(DataError):
    """``--input`` names nothing to read, or ``--output_dir`` would clear it; the message is the one line the
    user sees (exit status 1)."""


class MatchedInputs(NamedTuple):
    """What the ``--input`` globs name, each file once.

    ``files``: local files, sorted, deduplicated (the pipeline reads exactly these, never re-matches them);
    ``dead_letters``: local entries a glob matched that cannot be read (a name that is not UTF-8, a broken or
    looping link, a device), as dead letters naming them; ``remote_patterns``: ``gs://`` … globs, matched inside
    the pipeline (``fileio.MatchAll``, then each path once): on Dataflow a glob may name millions of objects,
    which the launcher should neither list nor ship in the job graph. ``count``: files matched, when known
    here (every pattern local).
    """

    files: list[str]
    dead_letters: list[DeadLetter]
    remote_patterns: list[str]

    @property
    def count(self) -> Optional[int]:
        return None if self.remote_patterns else len(self.files) + len(self.dead_letters)


def _classify_local(path: str) -> Union[str, DeadLetter, None]:
    """A path a local glob matched → the path (a readable regular file), a dead letter, or None (a folder)."""
    shown = storage.printable_path(path)
    if shown != path:
        return DeadLetter(shown, "file name is not valid UTF-8: rename it to be read", "match")
    try:
        entry = os.stat(path)  # follows links
    except OSError as err:
        if os.path.islink(path):
            kind = "symbolic link loop" if err.errno == 40 else "broken symbolic link"
            return DeadLetter(path, f"{kind} (-> {storage.printable_path(os.readlink(path))})", "match")
        return DeadLetter(path, f"cannot read ({err.strerror})", "match")
    if stat.S_ISDIR(entry.st_mode):
        return None
    if stat.S_ISREG(entry.st_mode):
        return path
    return DeadLetter(path, "not a regular file (a device, socket or pipe)", "match")


def _match_local(pattern: str) -> tuple[list[str], list[DeadLetter]]:
    """Python's glob rules (``glob.glob(pattern, recursive=True)``): ``*``, ``?`` and ``[...]`` never cross a
    ``/``; ``**`` as a whole path part matches any depth, zero folders included; ``\\`` is an ordinary character
    (a file name may hold one); names starting with ``.`` match only a pattern part starting with ``.``, as in a
    shell. Folders a glob matches are not inputs (``DIR/*`` skips ``DIR/sub``)."""
    local = storage.local_path(pattern)
    if not (_GLOB_CHARS & set(local)) and os.path.isdir(local):
        raise InputError(
            f"--input {pattern} is a folder, not a glob of files: give e.g. "
            f"'{local.rstrip('/')}/*.jpg' (or '{local.rstrip('/')}/**/*' for every file below it)"
        )
    files, dead, folders = [], [], 0
    for path in glob.glob(local, recursive=True):
        found = _classify_local(path)
        if found is None:
            folders += 1
        elif isinstance(found, DeadLetter):
            dead.append(found)
        else:
            files.append(found)
    if not files and not dead:
        if folders:
            raise InputError(
                f"--input {pattern} matches {folders} folder(s) and no files: "
                f"add the file part, e.g. '{local.rstrip('/')}/*.jpg'"
            )
        hint = " (a folder needs a glob, e.g. DIR/*.jpg)" if not (_GLOB_CHARS & set(local)) else ""
        if _GLOB_CHARS & set(local) and os.path.lexists(local):
            hint = (
                f" as a glob; a file of that literal name exists: write its glob characters in brackets, "
                f"e.g. {glob.escape(local)}"
            )
        raise InputError(f"--input {pattern} matches no files{hint}")
    return files, dead


def _check_remote(pattern: str) -> None:
    """Fails fast (one line) when a remote glob matches no object; lists one page at most."""
    try:
        found = FileSystems.match([pattern], limits=[1000])[0].metadata_list
    except Exception as err:  # noqa: BLE001 - storage errors become the one-line reason
        raise InputError(f"cannot list --input {pattern}: {err}") from None
    if not any(not m.path.endswith("/") for m in found):
        hint = "" if _GLOB_CHARS & set(pattern) else " (a folder needs a glob, e.g. DIR/*.jpg)"
        raise InputError(f"--input {pattern} matches no files{hint}")


def match_inputs(patterns: Sequence[str]) -> MatchedInputs:
    """The files the ``--input`` globs match, each once (overlapping globs name a file once); raises
    ``InputError`` when a glob matches nothing or names a folder."""
    files: dict[str, str] = {}  # one entry per file whatever the spelling (./a.jpg, a.jpg): absolute path → path
    dead: dict[str, DeadLetter] = {}
    remote: list[str] = []
    for pattern in patterns:
        if not storage.is_local(pattern):
            _check_remote(pattern)
            if pattern not in remote:
                remote.append(pattern)
            continue
        found, unreadable = _match_local(pattern)
        for path in found:
            key = os.path.abspath(path)
            files[key] = min(path, files.get(key, path), key=lambda p: (len(p), p))  # the plainest spelling
        for letter in unreadable:
            dead.setdefault(os.path.abspath(letter.path), letter)
    return MatchedInputs(sorted(set(files.values())), sorted(dead.values()), remote)


def _static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first glob character (what every match lies under)."""
    cut = min((pattern.index(c) for c in _GLOB_CHARS if c in pattern), default=len(pattern))
    head = pattern[:cut]
    return head if cut == len(pattern) else head[: head.rfind("/") + 1] or "."


def check_output_dir(matched: MatchedInputs, output_dir: str, model_dir: str) -> None:
    """Refuses (``InputError``) an ``--output_dir`` whose output folders hold inputs or the model: a rerun clears
    those folders before it reads anything."""
    folders = [FileSystems.join(output_dir, f) for f in OUTPUT_FOLDERS]
    # A file lies in a folder when its parent does (links resolved): a few parents stand for many files.
    parents = sorted({os.path.dirname(os.path.abspath(p)) for p in matched.files})
    named = (
        [("--model_dir", model_dir)]
        + [("--input", p) for p in parents]
        + [("--input", _static_prefix(p)) for p in matched.remote_patterns]
    )
    for flag, path in named:
        for folder in folders:
            if storage.same_or_inside(path, folder):
                raise InputError(
                    f"{flag} {path} is inside {folder}, which this run clears first: choose another --output_dir"
                )


# ---------------------------------------------------------------------------------------------- naming
def _key_by_stem(path: str) -> tuple[str, str]:
    return outputs.base_stem(path), path


def _assign_names(group: tuple[str, Iterable[str]]) -> Iterable[tuple[str, str]]:
    _, paths = group
    paths = sorted(paths)
    names = outputs.unique_stems(paths)
    for path in paths:
        yield names[path], path


class AssignOutputNames(beam.PTransform):
    """path → (stem, path) with a stem unique across the whole job.

    Files are grouped by their plain stem (only names travel, not bytes), so two inputs called ``x.jpg`` in
    different folders get distinct, deterministic names.
    """

    def expand(self, files: beam.PCollection) -> beam.PCollection:
        return (
            files
            | "KeyByStem" >> beam.Map(_key_by_stem)
            | "GroupByStem" >> beam.GroupByKey()
            | "UniqueNames" >> beam.FlatMap(_assign_names)
        )


# ---------------------------------------------------------------------------------------------- stages
_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")


def pixel_limit_reason(data: bytes, max_pixels: int) -> Optional[str]:
    """Why an image is over ``max_pixels`` (its size from the header: nothing is decoded), else None.

    Bytes PIL cannot identify pass (the model's decoder then gives its own reason).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:  # PIL's own cap, far above any sane --max_pixels
        found = _PIL_PIXELS.search(str(err))
        pixels = int(found.group(1)) if found else None
        if pixels is not None and pixels <= max_pixels:
            return None
        return f"image has {pixels or 'too many'} pixels, over --max_pixels {max_pixels}"
    except Exception:  # noqa: BLE001 - not an image PIL knows: left to the model's decoder
        return None
    if width * height > max_pixels:
        return (
            f"image is {width}x{height} = {width * height} pixels, over --max_pixels {max_pixels} "
            f"(raise the flag if the workers have the memory)"
        )
    return None


class PreprocessImage(beam.DoFn):
    """(stem, path) → ((stem, path, height, width), uint8 [Hm, Wm, 3]); unreadable or too large → dead letter."""

    DEAD = "dead"

    def __init__(
        self, model_dir: str, handle: shared.Shared, cache_dir: Optional[str], max_pixels: int = DEFAULT_MAX_PIXELS
    ):
        self._model_dir, self._handle, self._cache_dir = model_dir, handle, cache_dir
        self._max_pixels = max_pixels
        self._images = Metrics.counter(NAMESPACE, "images_read")
        self._failed = Metrics.counter(NAMESPACE, "images_unreadable")
        self._too_large = Metrics.counter(NAMESPACE, "images_too_large")

    def setup(self) -> None:
        leave_parallelism_to_beam()
        self._model = acquire_model(self._handle, self._model_dir, self._cache_dir)

    def process(self, element: tuple[str, str]):
        stem, path = element
        try:
            data = storage.read_bytes(path)
            if not data:
                raise ValueError("empty file")
            too_large = pixel_limit_reason(data, self._max_pixels)
            if too_large:
                self._too_large.inc()
                yield beam.pvalue.TaggedOutput(self.DEAD, DeadLetter(path, too_large, "preprocess"))
                return
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

    def __init__(
        self,
        model_dir: str,
        handle: shared.Shared,
        cache_dir: Optional[str],
        output_dir: str,
        model_info: ModelInfo,
        instances: bool,
        min_instance_area: int,
        overlay: bool,
        max_instances: Optional[int] = DEFAULT_MAX_INSTANCES,
        postprocess: str = "host",
    ):
        self._model_dir, self._handle, self._cache_dir = model_dir, handle, cache_dir
        self._output_dir = output_dir
        self._info = model_info
        self._instances, self._min_area, self._overlay = instances, min_instance_area, overlay
        self._max_instances = max_instances
        self._host = postprocess == "host"
        self._written = Metrics.counter(NAMESPACE, "images_written")
        self._instance_count = Metrics.counter(NAMESPACE, "instances")
        self._failed = Metrics.counter(NAMESPACE, "postprocess_failed")

    def setup(self) -> None:
        leave_parallelism_to_beam()
        self._model = acquire_model(self._handle, self._model_dir, self._cache_dir)
        self._spec = datasets.get(self._info.dataset).label_spec(self._info.label_mode)
        names = list(self._spec.class_names)
        # Pet trimaps have a predicted border class: that is the model's own boundary evidence.
        self._border = names.index("border") if "border" in names else None

    def process(self, element):
        (stem, path, height, width), result = element
        try:
            score = probabilities = None
            if self._host:
                # The signature's class ids and instance scores, bit for bit, without its [H, W, C] volume.
                scores = np.asarray(result.inference, dtype=np.float32)
                size, mode = self._info.image_size, self._info.resize_mode
                class_ids = upsample.class_ids(scores, height, width, size, mode)
                if self._instances:
                    score = upsample.mean_score(scores, height, width, size, mode)
            else:
                class_ids, probabilities = self._model.postprocess(
                    result.inference, height, width, with_probabilities=self._instances
                )
            image = None
            if self._overlay:
                image = self._model_image(path)
            found = None
            if self._instances:
                found = extract_instances(
                    class_ids,
                    probabilities,
                    self._spec.instance_train_ids,
                    border_train_id=self._border,
                    min_area=self._min_area,
                    max_instances=self._max_instances,
                    score=score,
                )
        except Exception as err:  # noqa: BLE001 - one bad image must not stop the job
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                self.DEAD, DeadLetter(path, f"postprocess failed: {err}"[:500], "postprocess")
            )
            return
        # Write errors are not caught: storage failures are retried by the runner, not turned into lost images.
        summary = outputs.write_prediction(
            self._output_dir, stem, class_ids, self._spec, image=image, instances=found, source_path=path
        )
        self._written.inc()
        self._instance_count.inc(summary["instances"])
        yield summary

    @staticmethod
    def _model_image(path: str) -> np.ndarray:
        import tensorflow as tf

        from pipelines.shared.imaging import decode_image_bytes

        return decode_image_bytes(tf.constant(storage.read_bytes(path))).numpy()


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
    args: job_options.InferOptions,
    model_info: ModelInfo,
    matched: Optional[MatchedInputs] = None,
    summary_path: Optional[str] = None,
) -> None:
    """Adds the inference graph to ``pipeline`` (``matched``: ``match_inputs(args.input)`` when not given;
    ``summary_path``: where summary.json goes, by default in ``args.output_dir``)."""
    matched = matched if matched is not None else match_inputs(args.input)
    handle = shared.Shared()
    min_batch, max_batch = args.batch_size or default_batch_bounds(model_info)
    handler = KeyedModelHandler(
        SegflowModelHandler(
            args.model_dir,
            cache_dir=args.model_cache_dir,
            shared_handle=handle,
            min_batch_size=min_batch,
            max_batch_size=max_batch,
            model_copies=args.model_copies,
            large_model=args.large_model,
            model_calls=args.model_calls,
        )
    )

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
    prepared = files | "Preprocess" >> beam.ParDo(
        PreprocessImage(args.model_dir, handle, args.model_cache_dir, args.max_pixels)
    ).with_outputs(PreprocessImage.DEAD, main="ok")
    predicted = prepared.ok | "RunInference" >> RunInference(handler)
    written = predicted | "PostprocessAndWrite" >> beam.ParDo(
        PostprocessAndWrite(
            args.model_dir,
            handle,
            args.model_cache_dir,
            args.output_dir,
            model_info,
            args.instances,
            args.min_instance_area,
            args.overlay,
            args.max_instances,
            args.postprocess,
        )
    ).with_outputs(PostprocessAndWrite.DEAD, main="ok")
    dead_parts = [prepared[PreprocessImage.DEAD], written[PostprocessAndWrite.DEAD]]
    if matched.dead_letters:
        dead_parts.append(
            pipeline
            | "UnreadableMatches" >> beam.Create(matched.dead_letters)
            | "CountUnreadable" >> beam.Map(_count_dead_letter)
        )
    dead = dead_parts | "AllDeadLetters" >> beam.Flatten()
    dead_count = dead | "DeadLetters" >> WriteDeadLetters(args.output_dir, namespace=NAMESPACE)
    extra = {"model_dir": args.model_dir, "dataset": model_info.dataset, "input": list(args.input)}
    _ = (
        written.ok
        | "GatherSummaries" >> beam.combiners.ToList()
        | "WriteSummary"
        >> beam.Map(
            _write_summary,
            beam.pvalue.AsList(dead_count),
            summary_path or FileSystems.join(args.output_dir, SUMMARY_FILE),
            extra,
        )
    )


# ---------------------------------------------------------------------------------------------- flags
def default_batch_bounds(model_info: ModelInfo) -> tuple[int, int]:
    """--batch_size when not given: 1 to ``DEFAULT_MAX_BATCH`` elements, fewer when ``BATCH_BYTES`` would not
    hold that many model-size inputs and scores (``image_size`` x (3 + 4 x ``num_classes``) bytes each)."""
    height, width = model_info.image_size
    per_element = height * width * (3 + 4 * model_info.num_classes)
    return 1, max(1, min(DEFAULT_MAX_BATCH, BATCH_BYTES // max(per_element, 1)))


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[job_options.InferOptions, list[str]]:
    """Flags → ``InferOptions`` and the Beam flags (values checked by Beam); raises ``UsageError``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options, beam_argv = job_options.parse_flags(argv)
    flags.check_beam_argv(beam_argv, "python -m pipelines.infer")
    return options, beam_argv


def previous_release_files(where: ownership.Folder, kind: str) -> Optional[set]:
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


def _files_of(stems: set, where: ownership.Folder) -> set:
    """The files under ``where``'s output folders that belong to the images ``stems`` (see
    ``pipelines.infer.outputs``), and the dead-letter file."""
    found = {f"{DEAD_LETTER_DIR}/{DEAD_LETTER_FILE}"} & set(where.files(DEAD_LETTER_DIR))
    for folder in (outputs.MASKS_DIR, outputs.COLOR_DIR, outputs.OVERLAY_DIR, outputs.INSTANCES_DIR):
        for rel in where.files(folder):
            if outputs.stem_of(rel[len(folder) + 1 :]) in stems:
                found.add(rel)
    return found


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the job; returns the counters (inputs_matched, images_written, dead_letters, instances) and the
    output dir. Raises ``UsageError`` for bad flags, ``DataError`` for a model, inputs or an output folder it
    cannot use (nothing written then); ``main`` prints them as one line."""
    args, beam_argv = parse_args(argv)
    try:
        model_info = read_model_info(args.model_dir)
        datasets.get(model_info.dataset).label_spec(model_info.label_mode)
        load_model_once(args.model_dir, args.model_cache_dir)  # before any input is read or output cleared
    except (ModelNotFound, ValueError) as err:
        raise DataError(str(err)) from None
    options = make_pipeline_options(beam_argv)
    if options.view_as(TestOptions).dry_run:  # the job is only constructed (Dataflow's dry run): nothing written
        matched = match_inputs(args.input)
        pipeline = new_pipeline(options)
        build_pipeline(pipeline, args, model_info, matched)
        result = pipeline.run()
    else:
        matched, result = _run_claimed(args, options, model_info)
    counters = _counters(result)
    # Local globs are counted here, as expanded; gs:// ones by the pipeline after matching them.
    matched_count = matched.count if matched.count is not None else counters.get("inputs_matched", 0)
    counters.update({"inputs_matched": matched_count, "output_dir": args.output_dir})
    return counters


def _run_claimed(
    args: job_options.InferOptions, options: PipelineOptions, model_info: ModelInfo
) -> tuple[MatchedInputs, beam.runners.runner.PipelineResult]:
    """Runs the job into OUT, claimed before any input is read (a folder infer may not write is refused, one it
    cannot write fails here): the run writes into the claim's staging folder (in place on gs://) and publishes
    at the end."""
    with ownership.claim(
        args.output_dir, "infer", "--output_dir", adopt=previous_release_files, markers=[SUMMARY_FILE]
    ) as claim:
        matched = match_inputs(args.input)
        check_output_dir(matched, args.output_dir, args.model_dir)
        pipeline = new_pipeline(options)
        build_pipeline(
            pipeline,
            dataclasses.replace(args, output_dir=claim.staging),
            model_info,
            matched,
            summary_path=claim.write_path(SUMMARY_FILE),
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


quiet_beam_logs = flags.quiet_beam_logs


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipelines.infer``'s exit status (``pipelines.infer.options.main`` with this job's ``run``)."""
    return job_options.main(argv, run)

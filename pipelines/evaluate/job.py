"""The evaluate job: its pipeline and ``run`` (its command line is ``pipelines.common.flags``; the package
docstring is its --help)."""

from __future__ import annotations

import io
import json
import math
import posixpath
import sys
from typing import Any, Callable, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from PIL import Image

from pipelines import datasets
from pipelines.common import flags, storage
from pipelines.common.decode import decode_label_map
from pipelines.common.runner import make_pipeline_options, new_pipeline
from pipelines.datasets.base import GroundTruthLayout
from pipelines.datasets.discovery import BeamFiles
from pipelines.evaluate import options as job_options
from pipelines.infer import outputs
from pipelines.shared import ownership
from schemas import labels, scores as segmentation_scores, strict_json
from schemas.errors import DataError, UsageError

NAMESPACE = "segflow_evaluate"


# -------------------------------------------------------------------------------------------- pure parts
def example_id(path: str, dataset: str) -> Optional[str]:
    """The id that pairs a prediction with its ground truth (``None`` when the name carries none)."""
    return datasets.get(dataset).example_id(outputs.base_stem(path))


def to_train_ids(native: np.ndarray, dataset: str, label_mode: str) -> np.ndarray:
    """Native annotation values → train ids (255 = not an evaluated class)."""
    return datasets.get(dataset).to_train_ids(native, label_mode)


def confusion_matrix(gt_train: np.ndarray, pred_train: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C + 1]: rows = ground-truth class, columns = predicted class, last column = any prediction that
    is not an evaluated class. Ground-truth pixels outside 0..C-1 (ignore) are not counted."""
    gt = np.asarray(gt_train).astype(np.int64).ravel()
    pred = np.asarray(pred_train).astype(np.int64).ravel()
    keep = gt < num_classes
    pred = np.where(pred < num_classes, pred, num_classes)[keep]
    return np.bincount(gt[keep] * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1)).reshape(
        num_classes, num_classes + 1
    )


def scores(matrix: np.ndarray) -> dict[str, Any]:
    """Per-class IoU and mIoU by ``schemas.scores``' rule (NaN for a class absent on both sides, left out of the
    mean), pixel accuracy."""
    matrix = np.asarray(matrix, dtype=np.int64)
    c = matrix.shape[0]
    tp = np.diag(matrix[:, :c]).astype(np.float64)
    iou = segmentation_scores.per_class_iou(matrix)
    total = matrix.sum()
    return {
        "iou": iou,
        "mean_iou": segmentation_scores.mean_iou(iou),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "gt_pixels": matrix.sum(axis=1),
    }


def _nan_to_none(value: float) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def write_evaluation(path: str, doc: dict[str, Any]) -> None:
    """Writes the evaluation document as strict JSON: it is a report of figures, so one that could not be
    computed (the IoU of a class seen nowhere, the mIoU of no scored image) is ``null``, never a bare ``NaN``."""
    storage.write_json(path, strict_json.with_absent_as_null(doc))


# ------------------------------------------------------------------------------------------ reading masks
# Pillow modes whose pixels are ids: 8-bit grey, 16/32-bit integer grey, 1-bit. A palette (P) image's pixels are
# colour indices: infer's color/ folder holds train ids painted in class colours, which for Cityscapes (train
# ids 0..18) are all valid labelIds and would be scored as a plausible, wrong mIoU.
ID_MASK_MODES = ("L", "I;16", "I;16B", "I;16L", "I", "1")
NOT_AN_ID_MASK = "expected a single-channel id mask"
_MODE_NAMES = {"P": "palette (colour) image", "PA": "palette (colour) image", "LA": "grey and alpha image"}


def _pillow_mode(data: bytes) -> Optional[str]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.mode
    except Exception:  # noqa: BLE001 - unreadable: decode_label_map says why, in its stable words
        return None


def read_prediction(data: bytes, dataset: str) -> np.ndarray:
    """A predicted mask's native ids ``[H, W]`` (uint8); ``ValueError`` saying what was found when the file is not
    a single-channel id mask or holds values outside the dataset's label set (``native_mask_problem``)."""
    mode = _pillow_mode(data)
    if mode is not None and mode not in ID_MASK_MODES:
        raise ValueError(f"{_MODE_NAMES.get(mode, f'{mode} image')}, {NOT_AN_ID_MASK}")
    native = decode_label_map(data, "prediction", bits=16)
    problem = datasets.get(dataset).mask_problem(native, "mask")
    if problem:
        raise ValueError(problem)
    return native.astype(np.uint8)  # every valid native id fits 8 bits


def read_ground_truth(data: bytes, dataset: str) -> np.ndarray:
    """A ground-truth mask's native ids ``[H, W]``, decoded and checked by the rule preprocess applies to the same
    file (a mask preprocess dead-letters is never scored); ``ValueError`` (the reason) otherwise."""
    native = decode_label_map(data, "ground truth")
    problem = datasets.get(dataset).mask_problem(native, "mask")
    if problem:
        raise ValueError(problem)
    return native


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


# -------------------------------------------------------------------------------------------- Beam parts
def _key_by_id(path: str, dataset: str) -> tuple[str, str]:
    return example_id(path, dataset), path


class CompareMasks(beam.DoFn):
    """(id, {'gt': [path], 'pred': [path]}) → ('matrix', [C, C+1]) | ('missing' | 'unmatched' | 'error', info)."""

    def __init__(self, dataset: str, label_mode: str, num_classes: int):
        self._dataset, self._mode, self._c = dataset, label_mode, num_classes
        self._images = Metrics.counter(NAMESPACE, "images_evaluated")

    def process(self, element):
        key, sides = element
        gts, preds = sorted(sides["gt"]), sorted(sides["pred"])
        if not preds:
            yield "missing", key
            return
        if not gts:
            yield "unmatched", preds[0]
            return
        if len(preds) > 1:
            yield "error", {"path": preds[0], "error": f"{len(preds)} predictions for {key}: {preds}"}
            return
        gt, gt_problem = self._read(gts[0], read_ground_truth)
        pred, pred_problem = self._read(preds[0], read_prediction)
        if gt is not None and pred is not None and gt.shape != pred.shape:
            pred_problem = f"size {pred.shape[1]}x{pred.shape[0]}, ground truth {gt.shape[1]}x{gt.shape[0]}"
        if gt_problem:
            yield "error", {"path": gts[0], "error": f"ground truth: {gt_problem}"}
        if pred_problem:
            yield "error", {"path": preds[0], "error": f"prediction: {pred_problem}"}
        if gt_problem or pred_problem:
            return
        matrix = confusion_matrix(
            to_train_ids(gt, self._dataset, self._mode), to_train_ids(pred, self._dataset, self._mode), self._c
        )
        self._images.inc()
        yield "matrix", matrix

    def _read(
        self, path: str, reader: Callable[[bytes, str], np.ndarray]
    ) -> tuple[Optional[np.ndarray], Optional[str]]:
        """(the mask, None) or (None, why it cannot be scored)."""
        try:
            return reader(storage.read_bytes(path), self._dataset), None
        except Exception as err:  # noqa: BLE001 - an error of this image, listed in the JSON; the run exits 1
            return None, " ".join(str(err).split())[:300] or type(err).__name__


class SumConfusion(beam.CombineFn):
    """Sums per-image confusion matrices and counts the unpaired/failed files."""

    def __init__(self, num_classes: int):
        self._c = num_classes

    def create_accumulator(self):
        # "missing": ground-truth ids without a prediction; "unmatched": prediction paths without ground truth.
        return {
            "matrix": np.zeros((self._c, self._c + 1), np.int64),
            "images": 0,
            "missing": [],
            "unmatched": [],
            "errors": [],
        }

    def add_input(self, acc, element):
        kind, payload = element
        if kind == "matrix":
            acc["matrix"] = acc["matrix"] + payload
            acc["images"] += 1
        else:
            acc["errors" if kind == "error" else kind].append(payload)
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out["matrix"] = out["matrix"] + acc["matrix"]
            out["images"] += acc["images"]
            for k in ("missing", "unmatched", "errors"):
                out[k].extend(acc[k])
        return out

    def extract_output(self, acc):
        acc["errors"] = sorted(acc["errors"], key=lambda e: e["path"])
        acc["missing"], acc["unmatched"] = sorted(acc["missing"]), sorted(acc["unmatched"])
        return acc


def summarise(acc: dict[str, Any], spec: labels.LabelSpec, extra: dict[str, Any]) -> dict[str, Any]:
    """The evaluation JSON document from the combined accumulator."""
    s = scores(acc["matrix"])
    names = list(spec.class_names)
    doc = {k: v for k, v in extra.items() if k != "errors"}
    doc.update(
        {
            "dataset": spec.dataset,
            "label_mode": spec.mode,
            "class_names": names,
            "images": int(acc["images"]),
            "missing_predictions": len(acc["missing"]),
            "missing_prediction_ids": acc["missing"],
            "unmatched_predictions": len(acc["unmatched"]),
            "unmatched_prediction_paths": acc["unmatched"],
            "errors": sorted(acc["errors"] + list(extra.get("errors", [])), key=lambda e: e["path"]),
            "per_class_iou": {n: _nan_to_none(float(v)) for n, v in zip(names, s["iou"])},
            "gt_pixels": {n: int(v) for n, v in zip(names, s["gt_pixels"])},
            "mean_iou": _nan_to_none(s["mean_iou"]),
            "pixel_accuracy": _nan_to_none(s["pixel_accuracy"]),
            "confusion_matrix": acc["matrix"].tolist(),
            "confusion_matrix_note": "rows: ground truth train id; columns: predicted train id, last = not evaluated",
        }
    )
    return doc


def _ground_truth_layouts(dataset: str, split: Optional[str]) -> list[GroundTruthLayout]:
    """The dataset's ground-truth layouts for ``split``; with a split, only those that name its folder where the
    dataset has any (a flat folder of masks cannot say which split a mask is of, so it would score them all)."""
    layouts = datasets.get(dataset).ground_truth_layouts(split)
    named = [layout for layout in layouts if split and split in layout.folder]
    return named or layouts


def ground_truth_patterns(root: str, dataset: str, split: Optional[str]) -> list[str]:
    """The layouts ``find_ground_truth`` looks for, as readable globs (for messages; ``root`` is literal)."""
    root = root.rstrip("/")
    return [FileSystems.join(root, *layout.pattern_parts()) for layout in _ground_truth_layouts(dataset, split)]


def _layouts(root: str, dataset: str, split: Optional[str]) -> list[tuple[str, int, str]]:
    """(folder, depth of the masks below it, file name suffix) per layout, in ``ground_truth_patterns`` order."""
    root = root.rstrip("/")
    return [
        (FileSystems.join(root, *layout.folder) if layout.folder else root, layout.depth, layout.suffix)
        for layout in _ground_truth_layouts(dataset, split)
    ]


def _under(folder: str, depth: int, suffix: str) -> list[storage.ListedFile]:
    """The files ``depth`` levels below the literal ``folder`` whose names end with ``suffix``, sorted."""
    prefix = storage.listing_prefix(folder)
    found = []
    for listed in storage.list_files(folder):
        rel = listed.path[len(prefix) :] if listed.path.startswith(prefix) else ""
        if rel.count("/") == depth - 1 and rel.endswith(suffix):
            found.append(listed)
    return found


def _hidden(path: str) -> bool:
    return posixpath.basename(path).startswith(".")


def find_ground_truth(root: str, dataset: str, split: Optional[str]) -> tuple[Optional[str], list[storage.ListedFile]]:
    """(the layout found, as a glob for messages; its masks) for the first layout under ``root`` holding any."""
    for pattern, (folder, depth, suffix) in zip(
        ground_truth_patterns(root, dataset, split), _layouts(root, dataset, split)
    ):
        found = _under(folder, depth, suffix)
        if found:
            return pattern, found
    return None, []


def _suggestion(predictions: str) -> str:
    """'; did you mean X?' for a sibling or child ``masks`` folder holding PNGs, else ''."""
    candidates = [FileSystems.join(predictions, outputs.MASKS_DIR)]
    parent = posixpath.dirname(predictions) if not storage.is_local(predictions) else _parent(predictions)
    if posixpath.basename(predictions) != outputs.MASKS_DIR:
        candidates.append(FileSystems.join(parent, outputs.MASKS_DIR))
    for candidate in candidates:
        if any(f.error is None and f.path.endswith(".png") for f in storage.list_folder(candidate)):
            return f"; did you mean --predictions {candidate}?"
    return ""


class EvaluationInputs(NamedTuple):
    """What the launcher found: the files to pair (sorted) and the entries reported without being read."""

    ground_truth_pattern: str  # the layout the ground truth was found in
    ground_truth: list[str]
    predictions: list[str]
    errors: list[dict[str, str]]  # unreadable entries, files whose name carries no id
    ignored: list[dict[str, str]]  # hidden files (e.g. macOS ._ metadata), never masks
    outside_split: int = 0  # predictions whose id the split's list does not name (left out, not scored)


def split_ids(ground_truth: str, dataset: str, split: Optional[str]) -> Optional[frozenset[str]]:
    """The ids of ``--split`` where the dataset lists them (Pet's list files), None where the split is a folder of
    the ground truth (or no split is asked for); ``UsageError`` when the dataset has no such split."""
    if not split:
        return None
    try:
        return datasets.get(dataset).evaluate_split_ids(split, ground_truth.rstrip("/"), BeamFiles())
    except ValueError as err:
        raise UsageError(str(err)) from None


def gather_inputs(
    predictions: str,
    ground_truth: str,
    dataset: str,
    split: Optional[str],
    ids_of_split: Optional[frozenset[str]] = None,
) -> EvaluationInputs:
    """Lists both sides literally and checks they pair; raises ``ValueError`` with the one line to show
    (``UsageError`` when ``split`` names a split folder the ground truth does not have). ``ids_of_split``
    (``split_ids``): only those ids are scored, and counted as missing."""
    errors: list[dict[str, str]] = []
    ignored: list[dict[str, str]] = []
    no_id = f"no example id ({datasets.get(dataset).example_id_hint}) in the name"

    def usable(files: list[storage.ListedFile]) -> list[str]:
        kept = []
        for listed in files:
            if _hidden(listed.path):
                ignored.append({"path": listed.path, "reason": "hidden file (name starts with '.')"})
            elif listed.error is not None:
                errors.append({"path": listed.path, "error": listed.error})
            elif example_id(listed.path, dataset) is None:
                errors.append({"path": listed.path, "error": no_id})
            else:
                kept.append(listed.path)
        return kept

    pred_listed = [f for f in storage.list_folder(predictions) if f.path.endswith(".png")]
    if not pred_listed:
        raise ValueError(f"no predicted masks (*.png) in {predictions}{_suggestion(predictions)}")
    pattern, gt_listed = find_ground_truth(ground_truth, dataset, split)
    looked_for = ", ".join(ground_truth_patterns(ground_truth, dataset, split))
    if pattern is None and split and ids_of_split is None:
        raise UsageError(
            f"--split {split}: no {dataset} ground truth of split {split} under {ground_truth} "
            f"(looked for {looked_for}); leave --split out or name a split folder it has"
        )
    if pattern is None:
        raise ValueError(f"no {dataset} ground-truth masks under {ground_truth} (looked for {looked_for})")
    preds, gts = usable(pred_listed), usable(gt_listed)
    outside_split = 0
    if ids_of_split is not None:
        gts = [p for p in gts if example_id(p, dataset) in ids_of_split]
        kept = [p for p in preds if example_id(p, dataset) in ids_of_split]
        outside_split, preds = len(preds) - len(kept), kept
        if not gts:
            raise ValueError(
                f"none of the {len(ids_of_split)} ids of split {split} has a ground-truth mask in {pattern}"
            )
    gt_ids = {example_id(p, dataset) for p in gts}
    paired = sum(1 for p in preds if example_id(p, dataset) in gt_ids)
    if not paired:
        raise ValueError(
            f"0 of {len(pred_listed)} predictions in {predictions} pair with the {len(gt_ids)} "
            f"ground-truth ids in {pattern}{_suggestion(predictions)}"
        )
    return EvaluationInputs(
        pattern,
        gts,
        preds,
        sorted(errors, key=lambda e: e["path"]),
        sorted(ignored, key=lambda e: e["path"]),
        outside_split,
    )


def build_pipeline(
    pipeline: beam.Pipeline, inputs: EvaluationInputs, spec: labels.LabelSpec, output_file: str, extra: dict[str, Any]
) -> None:
    """Pairs the listed files by id, one confusion matrix per pair, summed; writes the document."""

    def keyed(label: str, paths: list[str]):
        return pipeline | f"{label}Files" >> beam.Create(paths) | f"{label}Key" >> beam.Map(_key_by_id, spec.dataset)

    extra = dict(extra, errors=inputs.errors, ignored_files=inputs.ignored)
    _ = (
        {"gt": keyed("GroundTruth", inputs.ground_truth), "pred": keyed("Prediction", inputs.predictions)}
        | "Pair" >> beam.CoGroupByKey()
        | "Compare" >> beam.ParDo(CompareMasks(spec.dataset, spec.mode, spec.num_classes))
        | "Sum" >> beam.CombineGlobally(SumConfusion(spec.num_classes))
        | "Summarise" >> beam.Map(summarise, spec, extra)
        | "Write" >> beam.Map(lambda doc: write_evaluation(output_file, doc))
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[job_options.EvaluateOptions, list[str]]:
    """Flags → ``EvaluateOptions`` and the Beam flags (values checked by Beam); raises ``UsageError``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options, beam_argv = job_options.parse_flags(argv)
    flags.check_beam_argv(beam_argv, "python -m pipelines.evaluate")
    return options, beam_argv


def output_file(options: job_options.EvaluateOptions) -> str:
    """Where the evaluation JSON goes: ``--output_file``, else evaluation.json next to the predictions folder."""
    predictions = options.predictions.rstrip("/")
    return options.output_file or FileSystems.join(
        posixpath.dirname(predictions) if "://" in predictions else _parent(predictions), "evaluation.json"
    )


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the evaluation job; returns the evaluation document (also written to ``output_file``). Raises
    ``UsageError`` for bad flags (a ``--split`` the dataset does not have), ``DataError`` when the two folders
    hold nothing that pairs, and, after writing the document, when any file was an error or no image was
    scored: a score over what was left would be a wrong score."""
    args, beam_argv = parse_args(argv)
    spec = datasets.get(args.dataset).label_spec(args.label_mode)
    predictions = args.predictions.rstrip("/")
    ids_of_split = split_ids(args.ground_truth, args.dataset, args.split)
    destination = output_file(args)
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
        doc = _evaluate(args, beam_argv, spec, predictions, ids_of_split, claim.write_path(name), destination)
        claim.publish(written=[name], replaces=[name])
    problem = unscored_line(doc, predictions, destination)
    if problem:
        raise DataError(problem)
    return doc


def _previous_release_files(name: str):
    """The adopter for ``ownership.claim``: the evaluation JSON ``name`` the release before owner records wrote
    (a JSON document with a ``mean_iou``), else None (nothing of evaluate's is there)."""

    def adopt(where: ownership.Folder, kind: str) -> Optional[set]:
        data = where.read(name)
        try:
            if data is not None and "mean_iou" in json.loads(data):
                return {name}
        except (ValueError, TypeError):
            pass
        return None

    return adopt


def _evaluate(
    args: job_options.EvaluateOptions,
    beam_argv: list[str],
    spec: labels.LabelSpec,
    predictions: str,
    ids_of_split: Optional[set],
    write_to: str,
    destination: str,
) -> dict[str, Any]:
    """Pairs and scores the masks; writes the document to ``write_to`` and returns it."""
    try:
        inputs = gather_inputs(predictions, args.ground_truth, args.dataset, args.split, ids_of_split)
    except UsageError:
        raise
    except ValueError as err:
        raise DataError(str(err)) from None
    extra = {
        "predictions": predictions,
        "ground_truth": args.ground_truth,
        "ground_truth_pattern": inputs.ground_truth_pattern,
    }
    if args.split:  # only then: a run without --split writes the same document as before
        extra["split"] = args.split
    if ids_of_split is not None:
        extra["predictions_outside_split"] = inputs.outside_split
    pipeline = new_pipeline(make_pipeline_options(beam_argv))
    build_pipeline(pipeline, inputs, spec, write_to, extra)
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
            f"{_suggestion(predictions)}"
        )
    return f"{line}; every error is listed in {destination}"


def _parent(path: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(path))


def summary(doc: dict[str, Any], argv: list[str]) -> str:
    """What stdout shows: the table and where the JSON went."""
    return f"{format_table(doc)}\nevaluation written to {output_file(job_options.parse_flags(argv)[0])}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipelines.evaluate``'s exit status (``pipelines.evaluate.options.main`` with this job)."""
    return job_options.main(argv, run, summary)

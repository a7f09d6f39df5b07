"""Evaluate's Beam transforms and the arithmetic they apply, for the job and for a user's own pipeline.

``ScoreMasks(dataset)``: (prediction, ground truth) pairs → one evaluation document (per-class IoU, mIoU, pixel
accuracy, the confusion matrix; ``schemas.scores``' rule; and the same scores of each image, ``per_image``).
``PairByExampleId``: the job's listed files → those pairs, and what did not pair (a ground-truth id without a
prediction, a prediction without ground truth).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any, Callable, Iterable, Optional, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from PIL import Image

from pipelines import datasets
from pipelines.common import storage
from pipelines.datasets.base import Dataset
from pipelines.evaluate.inputs import example_id
from schemas import labels, scores as segmentation_scores

NAMESPACE = "segflow_evaluate"
# A side of a pair: a mask file's path (read through FileSystems) or its native ids as an array.
Mask = Union[str, np.ndarray]


def _dataset(dataset: Union[str, Dataset]) -> Dataset:
    """A dataset by name, or as given (bound to its source's label table: ``Dataset.with_source``)."""
    return datasets.get(dataset) if isinstance(dataset, str) else dataset


def to_train_ids(native: np.ndarray, dataset: Union[str, Dataset], label_mode: str) -> np.ndarray:
    """Native annotation values → train ids (255 = not an evaluated class)."""
    return _dataset(dataset).to_train_ids(native, label_mode)


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


def read_prediction(data: bytes, dataset: Union[str, Dataset]) -> np.ndarray:
    """A predicted mask's native ids ``[H, W]`` (uint8); ``ValueError`` saying what was found when the file is not
    a single-channel id mask or holds values outside the dataset's label set (``native_mask_problem``)."""
    mode = _pillow_mode(data)
    if mode is not None and mode not in ID_MASK_MODES:
        raise ValueError(f"{_MODE_NAMES.get(mode, f'{mode} image')}, {NOT_AN_ID_MASK}")
    native = _dataset(dataset).read_mask(data, "prediction", bits=16)
    problem = _dataset(dataset).mask_problem(native, "mask")
    if problem:
        raise ValueError(problem)
    return native.astype(np.uint8)  # every valid native id fits 8 bits


def read_ground_truth(data: bytes, dataset: Union[str, Dataset]) -> np.ndarray:
    """A ground-truth mask's native ids ``[H, W]``, decoded and checked by the rule preprocess applies to the same
    file (a mask preprocess dead-letters is never scored); ``ValueError`` (the reason) otherwise."""
    native = _dataset(dataset).read_mask(data, "ground truth")
    problem = _dataset(dataset).mask_problem(native, "mask")
    if problem:
        raise ValueError(problem)
    return native


# -------------------------------------------------------------------------------------------- Beam parts
def _mask(
    side: Mask, reader: Callable[[bytes, Union[str, Dataset]], np.ndarray], dataset: Union[str, Dataset]
) -> tuple[Optional[np.ndarray], Optional[str]]:
    """(the mask's native ids, None) or (None, why it cannot be scored)."""
    if not isinstance(side, str):
        return np.asarray(side), None
    try:
        return reader(storage.read_bytes(side), dataset), None
    except Exception as err:  # noqa: BLE001 - an error of this image, listed in the JSON; the run exits 1
        return None, " ".join(str(err).split())[:300] or type(err).__name__


def _named(side: Mask) -> str:
    return side if isinstance(side, str) else "(array)"


def compare_pair(
    pair: tuple[Mask, Mask], dataset: Union[str, Dataset], label_mode: str, num_classes: int
) -> Iterable[tuple]:
    """(prediction, ground truth[, example id]) → ('matrix', (example id or None, int64 [C, C+1])), or one
    ('error', {path, error}) per side that cannot be scored (unreadable, not an id mask, another size than the
    other side). Without the id, it is the one the ground truth's file name (else the prediction's) carries."""
    prediction, ground_truth, *paired_as = pair
    gt, gt_problem = _mask(ground_truth, read_ground_truth, dataset)
    pred, pred_problem = _mask(prediction, read_prediction, dataset)
    if gt is not None and pred is not None and gt.shape != pred.shape:
        pred_problem = f"size {pred.shape[1]}x{pred.shape[0]}, ground truth {gt.shape[1]}x{gt.shape[0]}"
    if gt_problem:
        yield "error", {"path": _named(ground_truth), "error": f"ground truth: {gt_problem}"}
    if pred_problem:
        yield "error", {"path": _named(prediction), "error": f"prediction: {pred_problem}"}
    if gt_problem or pred_problem:
        return
    matrix = confusion_matrix(
        to_train_ids(gt, dataset, label_mode), to_train_ids(pred, dataset, label_mode), num_classes
    )
    Metrics.counter(NAMESPACE, "images_evaluated").inc()
    image_id = paired_as[0] if paired_as else _pair_id(prediction, ground_truth, _dataset(dataset).name)
    yield "matrix", (image_id, matrix)


def _pair_id(prediction: Mask, ground_truth: Mask, dataset: str) -> Optional[str]:
    """The example id of a scored pair (from the ground truth's file name, else the prediction's); None for a
    pair of arrays, whose per-image entry then has no id."""
    for side in (ground_truth, prediction):
        if isinstance(side, str):
            found = example_id(side, dataset)
            if found:
                return found
    return None


def image_scores(image_id: Optional[str], matrix: np.ndarray) -> dict[str, Any]:
    """One image's entry of ``per_image``: its id, mIoU and pixel accuracy by ``scores`` (the global rule applied
    to this image's matrix alone), and its per-class IoUs in class-id order (None for a class absent on both
    sides of this image)."""
    s = scores(matrix)
    return {
        "id": image_id,
        "miou": _nan_to_none(s["mean_iou"]),
        "pixel_accuracy": _nan_to_none(s["pixel_accuracy"]),
        "iou": [_nan_to_none(float(v)) for v in s["iou"]],
    }


def _key_by_id(path: str, dataset: str, ids: Optional[dict[str, str]] = None) -> tuple[str, str]:
    return (ids[path] if ids and path in ids else example_id(path, dataset)), path


class _MatchPair(beam.DoFn):
    """(id, {'gt': [path], 'pred': [path]}) → (prediction, ground truth, id); what does not pair goes to
    ``REPORTED`` as ('missing', id) | ('unmatched', path) | ('error', {path, error})."""

    REPORTED = "reported"

    def process(self, element):
        key, sides = element
        gts, preds = sorted(sides["gt"]), sorted(sides["pred"])
        if not preds:
            yield beam.pvalue.TaggedOutput(self.REPORTED, ("missing", key))
        elif not gts:
            yield beam.pvalue.TaggedOutput(self.REPORTED, ("unmatched", preds[0]))
        elif len(preds) > 1:
            error = {"path": preds[0], "error": f"{len(preds)} predictions for {key}: {preds}"}
            yield beam.pvalue.TaggedOutput(self.REPORTED, ("error", error))
        else:
            yield preds[0], gts[0], key


class PairByExampleId(beam.PTransform):
    """{'pred': paths, 'gt': paths} (a dict of two PCollections of mask paths) → ``(pairs, reported)``:
    (prediction, ground truth, id) of one example id, and what did not pair (``_MatchPair.REPORTED``). ``ids``:
    path → id where the launcher resolved them (``pipelines.evaluate.inputs.pairing_ids``); else each path's
    ``example_id``."""

    def __init__(self, dataset: str, ids: Optional[dict[str, str]] = None):
        super().__init__()
        self._dataset = dataset
        self._ids = ids

    def expand(self, sides: dict[str, beam.PCollection]) -> tuple[beam.PCollection, beam.PCollection]:
        keyed = {
            name: sides[name] | f"Key{name.capitalize()}" >> beam.Map(_key_by_id, self._dataset, self._ids)
            for name in ("gt", "pred")
        }
        matched = (
            keyed
            | "Pair" >> beam.CoGroupByKey()
            | "Match" >> beam.ParDo(_MatchPair()).with_outputs(_MatchPair.REPORTED, main="pairs")
        )
        return matched.pairs, matched[_MatchPair.REPORTED]


class ScoreMasks(beam.PTransform):
    """(prediction, ground truth) pairs → a PCollection of one evaluation document: ``per_class_iou``,
    ``mean_iou``, ``pixel_accuracy``, ``gt_pixels``, ``confusion_matrix``, ``images``, ``errors``, ``per_image``
    ... (the fields of ``evaluation.json``; ``extra`` is merged in). ``per_image``: one
    ``{id, miou, pixel_accuracy, per_class_iou}`` per scored image, sorted by id (``id`` null for a pair of
    arrays).

    A side is a mask file's path (str; read through FileSystems, checked as the job checks it) or an array of
    the dataset's native ids (Pet trimap values, Cityscapes labelIds). The input may also be ``(pairs,
    reported)`` as ``PairByExampleId`` gives them: what did not pair is counted in the document."""

    def __init__(
        self, dataset: Union[str, Dataset], label_mode: Optional[str] = None, extra: Optional[dict[str, Any]] = None
    ):
        super().__init__()
        self._dataset = _dataset(dataset)
        self._spec = self._dataset.label_spec(label_mode)
        self._extra = dict(extra or {})

    def expand(self, pcoll) -> beam.PCollection:
        pairs, reported = pcoll if isinstance(pcoll, tuple) else (pcoll, None)
        spec = self._spec
        findings = pairs | "Compare" >> beam.FlatMap(compare_pair, self._dataset, spec.mode, spec.num_classes)
        if reported is not None:
            findings = (findings, reported) | "WithReported" >> beam.Flatten()
        return (
            findings
            | "Sum" >> beam.CombineGlobally(SumConfusion(spec.num_classes))
            | "Summarise" >> beam.Map(summarise, spec, self._extra)
        )


class SumConfusion(beam.CombineFn):
    """Sums per-image confusion matrices, keeps each image's scores (``image_scores``) and counts the
    unpaired/failed files.

    The per-image entries are kept whole: an entry is an id and C + 2 floats (about 1 KB for Cityscapes' 19
    classes), so even 100,000 images hold ~100 MB on the one worker that combines globally, and Cityscapes' 500
    val frames well under 1 MB; the list of missing ids, which the document already holds, grows the same way."""

    def __init__(self, num_classes: int):
        self._c = num_classes

    def create_accumulator(self):
        # "missing": ground-truth ids without a prediction; "unmatched": prediction paths without ground truth.
        return {
            "matrix": np.zeros((self._c, self._c + 1), np.int64),
            "images": 0,
            "per_image": [],
            "missing": [],
            "unmatched": [],
            "errors": [],
        }

    def add_input(self, acc, element):
        kind, payload = element
        if kind == "matrix":
            image_id, matrix = payload
            acc["matrix"] = acc["matrix"] + matrix
            acc["images"] += 1
            acc["per_image"].append(image_scores(image_id, matrix))
        else:
            acc["errors" if kind == "error" else kind].append(payload)
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out["matrix"] = out["matrix"] + acc["matrix"]
            out["images"] += acc["images"]
            for k in ("per_image", "missing", "unmatched", "errors"):
                out[k].extend(acc[k])
        return out

    def extract_output(self, acc):
        acc["errors"] = sorted(acc["errors"], key=lambda e: e["path"])
        acc["missing"], acc["unmatched"] = sorted(acc["missing"]), sorted(acc["unmatched"])
        # By id, so that the document does not depend on the order workers finished in; entries without an id
        # (pairs of arrays) last, ordered by their content.
        acc["per_image"].sort(key=lambda e: (e["id"] is None, e["id"] or "", json.dumps(e, sort_keys=True)))
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
            "per_image": [
                {
                    "id": e["id"],
                    "miou": e["miou"],
                    "pixel_accuracy": e["pixel_accuracy"],
                    "per_class_iou": dict(zip(names, e["iou"])),
                }
                for e in acc["per_image"]
            ],
        }
    )
    return doc

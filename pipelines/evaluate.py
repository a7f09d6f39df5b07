"""Beam job: per-class IoU, mIoU and pixel accuracy of predicted masks against ground truth.

    python -m pipelines.evaluate --predictions OUT/masks --ground_truth SRC --dataset {pet,cityscapes} \
        [--split val] [--output_file OUT/evaluation.json] [any Beam option]

Both sides are read in the dataset's native encoding (what ``pipelines.infer`` writes to ``OUT/masks``): Pet
trimaps (``SRC/annotations/trimaps/<id>.png``), Cityscapes labelIds (``SRC/gtFine/<split>/<city>/
<frame>_gtFine_labelIds.png``). Predictions pair with ground truth by example id (Pet: the file stem;
Cityscapes: ``<city>_<seq>_<frame>``). One confusion matrix per image, summed with ``CombineGlobally``.

The arithmetic is the official Cityscapes pixel-level one (``cityscapesscripts.evaluation.
evalPixelLevelSemanticLabeling``), so both give the same numbers on the same files: ground-truth pixels of ignored
classes count nowhere; a prediction of a class that is not evaluated counts as a false negative of the true
class; IoU = TP / (TP + FP + FN), NaN for a class absent from both sides, and mIoU averages the non-NaN IoUs.
"""
from __future__ import annotations

import argparse
import json
import math
import posixpath
import re
import sys
from typing import Any, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines import outputs
from pipelines.runner import BeamJobParser, exit_process, make_pipeline_options, new_pipeline
from schemas import labels

NAMESPACE = "segflow_evaluate"
_CITYSCAPES_ID = re.compile(r"([A-Za-z]+_\d{6}_\d{6})")


# -------------------------------------------------------------------------------------------- pure parts
def example_id(path: str, dataset: str) -> Optional[str]:
    """The id that pairs a prediction with its ground truth (``None`` when the name carries none)."""
    stem = outputs.base_stem(path)
    if dataset == "cityscapes":
        found = _CITYSCAPES_ID.search(stem)
        return found.group(1) if found else None
    return stem


def to_train_ids(native: np.ndarray, dataset: str, label_mode: str) -> np.ndarray:
    """Native annotation values → train ids (255 = not an evaluated class)."""
    if dataset == "cityscapes":
        return labels.cityscapes_label_ids_to_train_ids(native)
    return labels.pet_trimap_to_train_ids(native, label_mode)


def confusion_matrix(gt_train: np.ndarray, pred_train: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C + 1]: rows = ground-truth class, columns = predicted class, last column = any prediction that
    is not an evaluated class. Ground-truth pixels outside 0..C-1 (ignore) are not counted."""
    gt = np.asarray(gt_train).astype(np.int64).ravel()
    pred = np.asarray(pred_train).astype(np.int64).ravel()
    keep = gt < num_classes
    pred = np.where(pred < num_classes, pred, num_classes)[keep]
    return np.bincount(gt[keep] * (num_classes + 1) + pred,
                       minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


def scores(matrix: np.ndarray) -> dict[str, Any]:
    """Per-class IoU (NaN where a class is absent on both sides), mIoU over non-NaN classes, pixel accuracy."""
    matrix = np.asarray(matrix, dtype=np.int64)
    c = matrix.shape[0]
    tp = np.diag(matrix[:, :c]).astype(np.float64)
    fn = matrix.sum(axis=1) - tp
    fp = matrix[:, :c].sum(axis=0) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    valid = ~np.isnan(iou)
    total = matrix.sum()
    return {
        "iou": iou,
        "mean_iou": float(iou[valid].mean()) if valid.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "gt_pixels": matrix.sum(axis=1),
    }


def _nan_to_none(value: float) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


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
    lines.append(f"images: {result['images']}, missing predictions: {result['missing_predictions']}, "
                 f"predictions without ground truth: {result['unmatched_predictions']}, errors: {len(result['errors'])}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- Beam parts
class _KeyBy(beam.DoFn):
    def __init__(self, dataset: str):
        self._dataset = dataset

    def process(self, meta):
        key = example_id(meta.path, self._dataset)
        if key is not None:
            yield key, meta.path


class CompareMasks(beam.DoFn):
    """(id, {'gt': [path], 'pred': [path]}) → ('matrix', [C, C+1]) | ('missing' | 'unmatched' | 'error', info)."""

    def __init__(self, dataset: str, label_mode: str, num_classes: int):
        self._dataset, self._mode, self._c = dataset, label_mode, num_classes
        self._images = Metrics.counter(NAMESPACE, "images_evaluated")

    def process(self, element):
        key, sides = element
        gts, preds = sorted(sides["gt"]), sorted(sides["pred"])
        if not preds:
            yield "missing", gts[0]
            return
        if not gts:
            yield "unmatched", preds[0]
            return
        if len(preds) > 1:
            yield "error", {"path": preds[0], "error": f"{len(preds)} predictions for {key}: {preds}"}
            return
        try:
            gt = outputs.decode_png(outputs.read_bytes(gts[0]))
            pred = outputs.decode_png(outputs.read_bytes(preds[0]))
            if gt.ndim != 2 or pred.ndim != 2:
                raise ValueError("masks must be single-channel PNGs")
            if gt.shape != pred.shape:
                raise ValueError(f"size {pred.shape[1]}x{pred.shape[0]} differs from ground truth "
                                 f"{gt.shape[1]}x{gt.shape[0]}")
            matrix = confusion_matrix(to_train_ids(gt, self._dataset, self._mode),
                                      to_train_ids(pred, self._dataset, self._mode), self._c)
        except Exception as err:  # noqa: BLE001 - reported, not fatal
            yield "error", {"path": preds[0], "error": str(err)[:300]}
            return
        self._images.inc()
        yield "matrix", matrix


class SumConfusion(beam.CombineFn):
    """Sums per-image confusion matrices and counts the unpaired/failed files."""

    def __init__(self, num_classes: int):
        self._c = num_classes

    def create_accumulator(self):
        return {"matrix": np.zeros((self._c, self._c + 1), np.int64), "images": 0, "missing": 0, "unmatched": 0,
                "errors": []}

    def add_input(self, acc, element):
        kind, payload = element
        if kind == "matrix":
            acc["matrix"] = acc["matrix"] + payload
            acc["images"] += 1
        elif kind == "error":
            acc["errors"].append(payload)
        else:
            acc[kind] += 1
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out["matrix"] = out["matrix"] + acc["matrix"]
            for k in ("images", "missing", "unmatched"):
                out[k] += acc[k]
            out["errors"].extend(acc["errors"])
        return out

    def extract_output(self, acc):
        acc["errors"] = sorted(acc["errors"], key=lambda e: e["path"])
        return acc


def summarise(acc: dict[str, Any], spec: labels.LabelSpec, extra: dict[str, Any]) -> dict[str, Any]:
    """The evaluation JSON document from the combined accumulator."""
    s = scores(acc["matrix"])
    names = list(spec.class_names)
    doc = dict(extra)
    doc.update({
        "dataset": spec.dataset,
        "label_mode": spec.mode,
        "class_names": names,
        "images": int(acc["images"]),
        "missing_predictions": int(acc["missing"]),
        "unmatched_predictions": int(acc["unmatched"]),
        "errors": acc["errors"],
        "per_class_iou": {n: _nan_to_none(float(v)) for n, v in zip(names, s["iou"])},
        "gt_pixels": {n: int(v) for n, v in zip(names, s["gt_pixels"])},
        "mean_iou": _nan_to_none(s["mean_iou"]),
        "pixel_accuracy": _nan_to_none(s["pixel_accuracy"]),
        "confusion_matrix": acc["matrix"].tolist(),
        "confusion_matrix_note": "rows: ground truth train id; columns: predicted train id, last = not evaluated",
    })
    return doc


def _write_json(doc: dict[str, Any], path: str) -> None:
    outputs.write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"), "application/json")


def ground_truth_patterns(root: str, dataset: str, split: Optional[str]) -> list[str]:
    """Where ground-truth masks are looked for under ``root`` (the raw dataset, or a folder of masks)."""
    root = root.rstrip("/")
    join = FileSystems.join
    if dataset == "cityscapes":
        split_part = split or "*"
        return [join(root, "gtFine", split_part, "*", "*_gtFine_labelIds.png"),
                join(root, split_part, "*", "*_gtFine_labelIds.png"), join(root, "*_gtFine_labelIds.png")]
    return [join(root, "annotations", "trimaps", "*.png"), join(root, "trimaps", "*.png"), join(root, "*.png")]


def _first_matching(patterns: Sequence[str]) -> Optional[str]:
    for pattern in patterns:
        try:
            if FileSystems.match([pattern])[0].metadata_list:
                return pattern
        except Exception:  # noqa: BLE001 - a pattern under a missing folder simply matches nothing
            continue
    return None


def build_pipeline(pipeline: beam.Pipeline, gt_pattern: str, pred_pattern: str, spec: labels.LabelSpec,
                   output_file: str, extra: dict[str, Any]) -> None:
    def keyed(label: str, pattern: str):
        return (pipeline
                | f"{label}Pattern" >> beam.Create([pattern])
                | f"{label}Match" >> fileio.MatchAll()
                | f"{label}Key" >> beam.ParDo(_KeyBy(spec.dataset)))

    _ = ({"gt": keyed("GroundTruth", gt_pattern), "pred": keyed("Prediction", pred_pattern)}
         | "Pair" >> beam.CoGroupByKey()
         | "Compare" >> beam.ParDo(CompareMasks(spec.dataset, spec.mode, spec.num_classes))
         | "Sum" >> beam.CombineGlobally(SumConfusion(spec.num_classes))
         | "Summarise" >> beam.Map(summarise, spec, extra)
         | "Write" >> beam.Map(_write_json, output_file))


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, list[str]]:
    parser = BeamJobParser(prog="python -m pipelines.evaluate", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="folder of predicted masks (OUT/masks), local or gs://")
    parser.add_argument("--ground_truth", required=True,
                        help="the raw dataset root (SRC) or a folder of ground-truth masks, local or gs://")
    parser.add_argument("--dataset", required=True, choices=("pet", "cityscapes"))
    parser.add_argument("--label_mode", default=None, choices=("trimap", "binary"),
                        help="Pet: classes to score (default trimap: pet, background, border)")
    parser.add_argument("--split", default=None,
                        help="Cityscapes: gtFine split to score (default: every split found)")
    parser.add_argument("--output_file", default=None,
                        help="evaluation JSON (default: evaluation.json next to the predictions folder)")
    return parser.parse_job_args(argv)


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the evaluation job, prints the table and returns the evaluation document."""
    args, beam_argv = parse_args(argv)
    if args.dataset == "cityscapes" and args.label_mode:
        raise SystemExit("pipelines.evaluate: error: --label_mode applies to --dataset pet only")
    spec = labels.spec_for(args.dataset, args.label_mode)
    predictions = args.predictions.rstrip("/")
    pred_pattern = FileSystems.join(predictions, "*.png")
    if _first_matching([pred_pattern]) is None:
        raise SystemExit(f"pipelines.evaluate: error: no predicted masks (*.png) in {predictions}")
    gt_pattern = _first_matching(ground_truth_patterns(args.ground_truth, args.dataset, args.split))
    if gt_pattern is None:
        raise SystemExit(f"pipelines.evaluate: error: no {args.dataset} ground-truth masks under "
                         f"{args.ground_truth} (looked for {', '.join(ground_truth_patterns(args.ground_truth, args.dataset, args.split))})")
    output_file = args.output_file or FileSystems.join(
        posixpath.dirname(predictions) if "://" in predictions else _parent(predictions), "evaluation.json")
    extra = {"predictions": predictions, "ground_truth": args.ground_truth, "ground_truth_pattern": gt_pattern}
    pipeline = new_pipeline(make_pipeline_options(beam_argv))
    build_pipeline(pipeline, gt_pattern, pred_pattern, spec, output_file, extra)
    pipeline.run().wait_until_finish()
    doc = json.loads(outputs.read_bytes(output_file).decode("utf-8"))
    print(format_table(doc))
    print(f"evaluation written to {output_file}")
    return doc


def _parent(path: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(path))


def main(argv: Optional[Sequence[str]] = None) -> None:
    from pipelines.infer import quiet_beam_logs

    quiet_beam_logs()
    run(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
    exit_process(0)

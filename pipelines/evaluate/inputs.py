"""What evaluate reads, found on the launcher: the predicted masks and the ground truth, listed literally (both
folders are literal paths), each file's example id, and the check that the two sides pair (a run that pairs
nothing stops with one line before any work)."""

from __future__ import annotations

import os
import posixpath
from typing import NamedTuple, Optional

from apache_beam.io.filesystems import FileSystems

from pipelines import datasets
from pipelines.common import storage
from pipelines.datasets.base import GroundTruthLayout
from pipelines.datasets.discovery import BeamFiles
from pipelines.infer import outputs
from schemas.errors import UsageError


def example_id(path: str, dataset: str) -> Optional[str]:
    """The id that pairs a prediction with its ground truth (``None`` when the name carries none)."""
    return datasets.get(dataset).example_id(outputs.base_stem(path))


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


def suggestion(predictions: str) -> str:
    """'; did you mean X?' for a sibling or child ``masks`` folder holding PNGs, else ''."""
    candidates = [FileSystems.join(predictions, outputs.MASKS_DIR)]
    parent = posixpath.dirname(predictions) if not storage.is_local(predictions) else local_parent(predictions)
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
        raise ValueError(f"no predicted masks (*.png) in {predictions}{suggestion(predictions)}")
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
            f"ground-truth ids in {pattern}{suggestion(predictions)}"
        )
    return EvaluationInputs(
        pattern,
        gts,
        preds,
        sorted(errors, key=lambda e: e["path"]),
        sorted(ignored, key=lambda e: e["path"]),
        outside_split,
    )


def local_parent(path: str) -> str:
    """The folder a local ``path`` lies in (absolute)."""
    return os.path.dirname(os.path.abspath(path))

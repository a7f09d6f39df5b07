"""What evaluate reads, found on the launcher: the predicted masks and the ground truth, listed literally (both
folders are literal paths), each file's example id, and the check that the two sides pair (a run that pairs
nothing stops with one line before any work)."""

from __future__ import annotations

import json
import os
import posixpath
from typing import NamedTuple, Optional, Union

from apache_beam.io.filesystems import FileSystems

from pipelines import datasets
from pipelines.common import storage
from pipelines.datasets.base import Dataset, GroundTruthLayout
from pipelines.datasets.discovery import BeamFiles
from pipelines.infer import outputs
from schemas.errors import UsageError


def example_id(path: str, dataset: str) -> Optional[str]:
    """The id that pairs a prediction with its ground truth (``None`` when the name carries none)."""
    return datasets.get(dataset).example_id(outputs.base_stem(path))


def _source(dataset: Union[str, Dataset]) -> Dataset:
    """A dataset by name, or as given (bound to the ground truth's own table and layout: ``Dataset.with_source``)."""
    return datasets.get(dataset) if isinstance(dataset, str) else dataset


def _ground_truth_layouts(dataset: Union[str, Dataset], split: Optional[str]) -> list[GroundTruthLayout]:
    """The dataset's ground-truth layouts for ``split``; with a split, only those that name its folder where the
    dataset has any (a flat folder of masks cannot say which split a mask is of, so it would score them all)."""
    layouts = _source(dataset).ground_truth_layouts(split)
    named = [layout for layout in layouts if split and split in layout.folder]
    return named or layouts


def ground_truth_patterns(root: str, dataset: Union[str, Dataset], split: Optional[str]) -> list[str]:
    """The layouts ``find_ground_truth`` looks for, as readable globs (for messages; ``root`` is literal)."""
    root = root.rstrip("/")
    return [FileSystems.join(root, *layout.pattern_parts()) for layout in _ground_truth_layouts(dataset, split)]


def _layouts(root: str, dataset: Union[str, Dataset], split: Optional[str]) -> list[tuple[str, int, str]]:
    """(folder, depth of the masks below it, file name suffix) per layout, in ``ground_truth_patterns`` order."""
    root = root.rstrip("/")
    return [
        (FileSystems.join(root, *layout.folder) if layout.folder else root, layout.depth, layout.suffix)
        for layout in _ground_truth_layouts(dataset, split)
    ]


def _under(folder: str, depth: int, suffix: str) -> list[storage.ListedFile]:
    """The files ``depth`` levels below the literal ``folder`` (0: at any depth) whose names end with ``suffix``,
    sorted."""
    prefix = storage.listing_prefix(folder)
    found = []
    for listed in storage.list_files(folder):
        rel = listed.path[len(prefix) :] if listed.path.startswith(prefix) else ""
        if (depth == 0 or rel.count("/") == depth - 1) and rel.endswith(suffix):
            found.append(listed)
    return found


def _hidden(path: str) -> bool:
    return posixpath.basename(path).startswith(".")


def find_ground_truth(
    root: str, dataset: Union[str, Dataset], split: Optional[str]
) -> tuple[Optional[str], list[storage.ListedFile]]:
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
    ids: Optional[dict[str, str]] = None  # every listed path -> the example id it pairs by (``pairing_ids``)


def split_ids(ground_truth: str, dataset: str, split: Optional[str]) -> Optional[frozenset[str]]:
    """The ids of ``--split`` where the dataset lists them (Pet's list files), None where the split is a folder of
    the ground truth (or no split is asked for); ``UsageError`` when the dataset has no such split."""
    if not split:
        return None
    try:
        return datasets.get(dataset).evaluate_split_ids(split, ground_truth.rstrip("/"), BeamFiles())
    except ValueError as err:
        raise UsageError(str(err)) from None


def _predicted_inputs(predictions: str, dataset: str) -> tuple[dict[str, str], Optional[str]]:
    """(output stem -> the input image it was predicted from, the dataset folder infer read) from the
    ``summary.json`` infer wrote beside ``predictions`` when it read ``--input_dir`` of ``dataset``; ({}, None)
    for predictions of anything else (a glob, another tool)."""
    parent = posixpath.dirname(predictions.rstrip("/")) if "://" in predictions else local_parent(predictions)
    try:
        summary = json.loads(storage.read_bytes(FileSystems.join(parent, "summary.json")).decode("utf-8"))
        if summary.get("input_dataset") == dataset and summary.get("input_dir"):
            return {stem: path for path, stem in summary["outputs"].items()}, summary["input_dir"]
    except Exception:  # noqa: BLE001 - no (readable) summary: the ids come from the file names
        pass
    return {}, None


def pairing_ids(predictions: str, gts: list[str], preds: list[str], ground_truth: str, source: Dataset) -> dict:
    """Every listed path -> the id it pairs by. A dataset whose ids are paths (``Dataset.literal_id``: folder's
    ``site_a/0001``) gives the ground truth's id from its path below ``--ground_truth``, and a prediction's from
    the input image infer's ``summary.json`` names for it; so a file name repeated across sub-folders pairs with
    its own mask, never with another's. A prediction without one pairs by its file name where exactly one ground
    truth id ends with that name (else it stays unpaired: a guess could score the wrong mask). Other datasets:
    ``example_id`` of the file name, as before."""
    ids = {p: source.literal_id(p, ground_truth.rstrip("/"), "mask") or example_id(p, source.name) for p in gts}
    by_name = unique_names(set(ids.values()))
    inputs, input_dir = _predicted_inputs(predictions, source.name)
    for path in preds:
        image = inputs.get(posixpath.splitext(posixpath.basename(path))[0])
        found = source.literal_id(image, input_dir, "image") if image and input_dir else None
        if found is None:
            found = example_id(path, source.name) or ""
            found = by_name.get(found, found)
        ids[path] = found
    return ids


def unique_names(gt_ids: set[str]) -> dict[str, str]:
    """A path id's last part → the id, for the names exactly one ground-truth id ends with and that are no id
    themselves: how a prediction named without its folders (``0001``) still pairs where that is unambiguous."""
    by_name: dict[str, list[str]] = {}
    for gt_id in gt_ids:
        if "/" in gt_id:
            by_name.setdefault(gt_id.rsplit("/", 1)[1], []).append(gt_id)
    return {name: found[0] for name, found in by_name.items() if len(found) == 1 and name not in gt_ids}


def gather_inputs(
    predictions: str,
    ground_truth: str,
    dataset: Union[str, Dataset],
    split: Optional[str],
    ids_of_split: Optional[frozenset[str]] = None,
) -> EvaluationInputs:
    """Lists both sides literally and checks they pair; raises ``ValueError`` with the one line to show
    (``UsageError`` when ``split`` names a split folder the ground truth does not have). ``ids_of_split``
    (``split_ids``): only those ids are scored, and counted as missing."""
    errors: list[dict[str, str]] = []
    ignored: list[dict[str, str]] = []
    source = _source(dataset)
    dataset = source.name
    no_id = f"no example id ({source.example_id_hint}) in the name"

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
    # A split its list names is no folder of the masks (folder: splits/test.txt beside masks/site_a/...).
    folder_split = split if ids_of_split is None else None
    pattern, gt_listed = find_ground_truth(ground_truth, source, folder_split)
    looked_for = ", ".join(ground_truth_patterns(ground_truth, source, folder_split))
    if pattern is None and split and ids_of_split is None:
        raise UsageError(
            f"--split {split}: no {dataset} ground truth of split {split} under {ground_truth} "
            f"(looked for {looked_for}); leave --split out or name a split folder it has"
        )
    if pattern is None:
        raise ValueError(f"no {dataset} ground-truth masks under {ground_truth} (looked for {looked_for})")
    preds, gts = usable(pred_listed), usable(gt_listed)
    outside_split = 0
    ids = pairing_ids(predictions, gts, preds, ground_truth, source)
    if ids_of_split is not None:
        gts = [p for p in gts if ids[p] in ids_of_split]
        kept = [p for p in preds if ids[p] in ids_of_split]
        outside_split, preds = len(preds) - len(kept), kept
        if not gts:
            raise ValueError(
                f"none of the {len(ids_of_split)} ids of split {split} has a ground-truth mask in {pattern}"
            )
    gt_ids = {ids[p] for p in gts}
    paired = sum(1 for p in preds if ids[p] in gt_ids)
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
        {p: ids[p] for p in gts + preds},
    )


def local_parent(path: str) -> str:
    """The folder a local ``path`` lies in (absolute)."""
    return os.path.dirname(os.path.abspath(path))

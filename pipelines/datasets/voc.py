"""Pascal VOC 2012 (segmentation), as distributed: everything segflow knows about its layout, ids, labels and splits.

``--input_dir`` is the ``VOCdevkit/VOC2012`` folder of ``VOCtrainval_11-May-2012.tar``: ``JPEGImages/<id>.jpg``,
``SegmentationClass/<id>.png`` (palette PNGs whose *index* is the class: 0 background, 1..20 the objects, 255 the
void border, which is ignored) and ``ImageSets/Segmentation/{train,val}.txt`` (one id a line; ``trainval.txt`` is
their union and is not read). An example is an image and its mask, grouped on the id (the file stem).

Splits: an id in ``val.txt`` is val, one in ``train.txt`` train (val wins should a list name both: val is never
trained on). A ``test.txt`` (the separate ``VOC2012test.tar``, merged in) makes its ids image-only test records.
An image with a mask that no list names trains, counted as ``voc_unlisted_examples``: that is how SBD's extra
masks join (below). An image that has no mask and is in no list is one of VOC's ~14,000 detection and
classification images, not a segmentation input: counted (``voc_images_without_segmentation``), not read, as
Cityscapes' derived files are. Without any list file, ids are hashed into splits (``--val_fraction``,
``--test_fraction``).

The augmented set: when ``SegmentationClassAug/`` (SBD's masks as single-channel PNGs, 12,031 of them, as
DeepLab and mmsegmentation use it) lies beside ``SegmentationClass/``, its masks are read too, for every id
that has no ``SegmentationClass`` mask (that one is VOC's own, with the border; the Aug copy of it is counted
as ``voc_aug_masks_superseded``). With the official lists this gives the standard ``train_aug``: the 10,582
images of Aug outside ``val.txt`` train, and val stays VOC's 1,449.

Labels: ``schemas.labels`` VOC table (21 classes, ``voc_spec``); one label mode. ``SegmentationObject/`` (VOC's
instance masks) is not read.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import TYPE_CHECKING, Iterator, Optional, Union

import numpy as np

from pipelines.common.deadletter_record import DeadLetter
from pipelines.datasets.base import (
    IMAGE_EXTENSIONS,
    Assembled,
    Broken,
    Count,
    Dataset,
    Example,
    Fact,
    Files,
    GroundTruthLayout,
    Listed,
    SplitFractions,
    alone_because,
    basename,
    relative,
    split_from_hash,
)
from schemas import labels

if TYPE_CHECKING:
    from pipelines.common.storage import ListedFile

IMAGE_FOLDER, MASK_FOLDER, AUG_FOLDER = "JPEGImages", "SegmentationClass", "SegmentationClassAug"
FOLDERS = {"image": IMAGE_FOLDER, "mask": MASK_FOLDER, "aug": AUG_FOLDER}  # role -> folder under --input_dir
LISTS = ("ImageSets", "Segmentation")
# The list files read, <split>.txt, in precedence order: an id in val.txt is never trained on.
LIST_SPLITS = ("val", "test", "train")
EVALUATE_SPLITS = ("train", "val", "trainval", "test")
UNLISTED_COUNTER = "voc_unlisted_examples"
NO_MASK_COUNTER = "voc_images_without_segmentation"
SUPERSEDED_COUNTER = "voc_aug_masks_superseded"


# ------------------------------------------------------------------------------------------- discovery
def classify_voc_file(path: str, role: str) -> Union[tuple[str, tuple[str, str]], DeadLetter]:
    """A file directly in ``JPEGImages/`` (role ``image``), ``SegmentationClass/`` (``mask``) or
    ``SegmentationClassAug/`` (``aug``) → (id, (role, path)), or a dead letter for one that cannot be a part."""
    name, folder = basename(path), FOLDERS[role]
    if name.startswith("."):
        return DeadLetter(path, f"hidden file in {folder}/ (e.g. macOS metadata), not an image", "discover")
    stem, ext = posixpath.splitext(name)
    if ext.lower() not in (IMAGE_EXTENSIONS if role == "image" else (".png",)):
        what = "an image" if role == "image" else "a PNG mask"
        return DeadLetter(path, f"not {what} ({ext or 'no extension'}) in {folder}/", "discover")
    return stem, (role, path)


def voc_part(listed: ListedFile, folder: str, role: str) -> Iterator[Listed]:
    """One entry listed under a VOC folder → a keyed part and/or a dead letter. VOC files lie directly in their
    folder: one in a subfolder is a dead letter, never read (a nested copy would meet its original as a
    duplicate id)."""
    nested = "/" in relative(listed.path, folder)
    if listed.error is not None:
        named = classify_voc_file(listed.path, role)
        if not isinstance(named, DeadLetter) and not nested:
            yield named[0], ("broken", Broken(role, listed.path, listed.error))
        yield DeadLetter(listed.path, listed.error, "discover")
    elif nested:
        where = FOLDERS[role]
        yield DeadLetter(listed.path, f"in a subfolder of {where}/: VOC files lie directly in {where}/", "discover")
    else:
        yield classify_voc_file(listed.path, role)


def parse_voc_list(text: str, path: str) -> Iterator[Union[str, DeadLetter]]:
    """The ids of an ``ImageSets/Segmentation`` list (one a line); a line that is not one id → dead letter."""
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if len(fields) == 1:
            yield fields[0]
        elif fields:
            yield DeadLetter(f"{path}:{number}", f"list row {line.strip()!r} is not one image id", "discover")


def _list_files(folder: str, files: Files) -> dict[str, ListedFile]:
    """The split list files present in ``folder``: ``<split>.txt`` → its listing."""
    wanted = {f"{split}.txt" for split in LIST_SPLITS}
    return {basename(f.path): f for f in files.list_folder(folder) if basename(f.path) in wanted}


def read_voc_lists(folder: str, files: Files) -> Iterator[Listed]:
    """``ImageSets/Segmentation`` → keyed list rows ``(id, ("list", split))``, a ``Fact`` per list that exists,
    dead letters for unreadable lists and malformed rows."""
    present = _list_files(folder, files)
    for split in LIST_SPLITS:
        listed = present.get(f"{split}.txt")
        if listed is None:
            continue
        if listed.error is not None:  # e.g. a broken link: say so rather than ignore the list
            yield DeadLetter(listed.path, listed.error, "discover")
            continue
        yield Fact(split)
        for row in parse_voc_list(files.read(listed.path).decode("utf-8", errors="replace"), listed.path):
            yield row if isinstance(row, DeadLetter) else (row, ("list", split))


def _image_preference(path: str) -> tuple[int, str]:
    return (0 if posixpath.splitext(path)[1].lower() in (".jpg", ".jpeg") else 1, path)


def assemble_voc(
    example_id: str, parts: list[tuple[str, object]], lists: list[str], fractions: SplitFractions
) -> Iterator[Assembled]:
    """(id, parts) → an ``Example`` with its split, dead letters, or a count (module docstring). An id that is
    only listed (no files) yields nothing: nothing was read, so there is nothing to account for."""
    by_role: dict[str, list] = {}
    for role, value in parts:
        by_role.setdefault(role, []).append(value)
    images = sorted(by_role.get("image", []), key=_image_preference)
    masks, augs = sorted(by_role.get("mask", [])), sorted(by_role.get("aug", []))
    listed_in = set(by_role.get("list", []))
    broken: list[Broken] = by_role.get("broken", [])
    for extra in images[1:]:
        yield DeadLetter(extra, f"second image for id {example_id} (kept {basename(images[0])})", "pair")
    mask = (masks or augs or [None])[0]
    if not images:
        why = alone_because(broken, "image")
        for path in masks + augs:
            yield DeadLetter(path, f"mask without image (no readable {IMAGE_FOLDER}/{example_id}.jpg){why}", "pair")
        return
    if masks and augs:
        yield Count(SUPERSEDED_COUNTER)  # VOC's own mask (with the border) wins over SBD's copy
    if not lists:  # no list file at all: hashed splits, and an image without a mask is not an input
        split = split_from_hash(example_id, fractions.val_fraction, fractions.test_fraction) if mask else None
    else:
        split = next((s for s in LIST_SPLITS if s in listed_in), None)
    if mask is None:
        if split == "test":
            yield Example(example_id, split, images[0])  # VOC publishes no test masks: image-only records
        elif split is not None:
            why = alone_because(broken, "mask") or alone_because(broken, "aug")
            where = f"{'/'.join(LISTS)}/{split}.txt"
            yield DeadLetter(
                images[0], f"image listed in {where} without a {MASK_FOLDER}/{example_id}.png{why}", "pair"
            )
        else:
            yield Count(NO_MASK_COUNTER)  # a detection/classification image: not a segmentation input
        return
    if split is None:
        split = "train"
        yield Count(UNLISTED_COUNTER)
    yield Example(example_id, split, images[0], mask)


# --------------------------------------------------------------------------------------------- the dataset
@dataclasses.dataclass(frozen=True)
class Voc(Dataset):
    def label_spec(self, label_mode: Optional[str] = None) -> labels.LabelSpec:
        return labels.spec_for(self.name)

    def mask_problem(self, native: np.ndarray, kind: str) -> Optional[str]:
        return labels.native_mask_problem(self.name, native, kind)

    def train_id_luts(self, label_mode: str) -> dict[Optional[int], np.ndarray]:
        return {None: labels.voc_label_lut()}

    def discovery_sources(self) -> list[tuple]:
        return [("files", role, folder) for role, folder in FOLDERS.items()] + [("lists", "list", LISTS)]

    def list_source(self, source: tuple, input_dir: str, files: Files) -> Iterator[Listed]:
        kind, role, where = source
        if kind == "lists":
            yield from read_voc_lists(files.join(input_dir, *where), files)
            return
        folder = files.join(input_dir, where)
        for listed in files.list_files(folder):
            yield from voc_part(listed, folder, role)

    def assemble(
        self, key: str, parts: list[tuple[str, object]], facts: list[str], fractions: SplitFractions
    ) -> Iterator[Assembled]:
        return assemble_voc(key, parts, facts, fractions)

    def example_id(self, stem: str) -> Optional[str]:
        return stem

    def to_train_ids(self, native: np.ndarray, label_mode: str) -> np.ndarray:
        return np.take(labels.voc_label_lut(), np.asarray(native, dtype=np.uint8))

    def ground_truth_layouts(self, split: Optional[str]) -> list[GroundTruthLayout]:
        # Splits are lists (evaluate_split_ids), not folders: the same layouts for every split.
        return [
            GroundTruthLayout((MASK_FOLDER,), 1, ".png"),
            GroundTruthLayout((AUG_FOLDER,), 1, ".png"),
            GroundTruthLayout((), 1, ".png"),
        ]

    def evaluate_split_ids(self, split: str, ground_truth: str, files: Files) -> Optional[frozenset[str]]:
        if split not in EVALUATE_SPLITS:
            raise ValueError(
                f"VOC's splits are {', '.join(EVALUATE_SPLITS)} ({'/'.join(LISTS)}/<split>.txt), not {split!r}"
            )
        folder = files.join(ground_truth, *LISTS)
        present = _list_files(folder, files)
        ids: set[str] = set()
        for part in ("train", "val") if split == "trainval" else (split,):
            listed = present.get(f"{part}.txt")
            if listed is None or listed.error is not None:
                raise ValueError(
                    f"--split {split} needs VOC's list {files.join(folder, part + '.txt')}, which is not there (or "
                    "not readable): point at the VOC2012 folder holding ImageSets/Segmentation/, or leave --split out"
                )
            text = files.read(listed.path).decode("utf-8", errors="replace")
            ids.update(row for row in parse_voc_list(text, listed.path) if not isinstance(row, DeadLetter))
        return frozenset(ids)


DATASET = Voc(
    name="voc",
    title="VOC",
    label_modes=(),
    fixed_labels="VOC always uses its 21 classes",
    evaluate_label_modes=(),
    record_image_format="jpeg",  # VOC photos are JPEGs (see Pet's)
    mask_bytes_per_pixel=0.1,  # a few objects in large blobs, and their border
    input_folder=(IMAGE_FOLDER,),
    input_layout="VOCdevkit/VOC2012: JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ImageSets/Segmentation/",
    metadata_extra=(),
    example_id_hint="<year>_<number>, e.g. 2007_000032",
)

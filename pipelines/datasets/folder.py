"""The user's own dataset: a folder of images, a folder of masks and a ``classes.json`` (``--dataset folder``).

``SRC/images/**/<name>.<jpg|png|...>`` and ``SRC/masks/**/<name>.png`` pair by their path below the two folders
without the extension (nested folders work: ``images/site_a/0001.jpg`` ↔ ``masks/site_a/0001.png``); the example
id is that relative path. ``SRC/classes.json`` (``docs/datasets.md``) names the classes in train-id order, the
mask value of each, optionally its colour, and the values (or colours) that are ignore. Masks are single-channel
index PNGs (8 or 16 bit, palette PNGs by their indices) or RGB colour-coded masks mapped through the colours; a
value or colour outside the table makes the example a dead letter naming them. ``classes.json``'s parsing and
checks, the table it gives and the masks mapped by it are ``_folder_table.py``.

Splits: the first folder below ``images/`` when it is ``train``, ``val`` or ``test`` (``images/train/...``); else
list files ``SRC/splits/{train,val,test}.txt`` (one id per line) when any exists; else the stable hash of the id
(``--val_fraction``, ``--test_fraction``). An image without a mask is an image-only record in ``test``, a dead
letter in any other split; a mask without an image is a dead letter, and so is a list row naming no image.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Iterator, Optional

import numpy as np

from pipelines.common.deadletter_record import DeadLetter
from pipelines.datasets._folder_table import (
    CLASSES_FILE,
    FOLDERS,
    MASK_SUFFIX,
    FolderTable,
    map_mask,
    parse_classes,
)
from pipelines.datasets.base import (
    IMAGE_EXTENSIONS,
    Assembled,
    Broken,
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
from schemas.records import SPLITS

SPLITS_FOLDER = "splits"  # SRC/splits/<split>.txt
LABEL_MODE = "classes"


# ------------------------------------------------------------------------------------------- discovery
def file_id(rel: str, role: str, table: FolderTable) -> Optional[str]:
    """A file's id from its path below the images or masks folder: the path without the image's extension or the
    mask's suffix (literal, so ``site_a/0001`` and ``site_b/0001`` stay two ids); None when the name has neither."""
    if role == "image":
        stem, ext = posixpath.splitext(rel)
        return stem if ext.lower() in IMAGE_EXTENSIONS and stem and not stem.endswith("/") else None
    n = len(table.mask_suffix)
    return rel[:-n] if len(rel) > n and rel[-n:].lower() == table.mask_suffix.lower() else None


def folder_part(listed, root: str, role: str, table: FolderTable) -> Iterator[Listed]:
    """One file listed under the images or masks folder → ``(id, (role, path))``, or a dead letter for a stray."""
    folder = table.folder(role)
    rel = relative(listed.path, root)
    stem = file_id(rel, role, table)
    ext = posixpath.splitext(rel)[1]
    name = basename(listed.path)
    if name.startswith("."):
        yield DeadLetter(listed.path, f"hidden file in {folder}/, not read", "discover")
    elif stem is None and role == "image":
        yield DeadLetter(listed.path, f"not an image file ({ext or 'no extension'}) in {folder}/", "discover")
    elif stem is None:
        kind = f"a mask named <id>{table.mask_suffix}"
        yield DeadLetter(listed.path, f"not {kind} ({name}) in {folder}/", "discover")
    elif listed.error is not None:
        yield stem, ("broken", Broken(role, listed.path, listed.error))
        yield DeadLetter(listed.path, listed.error, "discover")
    else:
        yield stem, (role, listed.path)


def read_split_lists(root: str, files: Files) -> Iterator[Listed]:
    """``splits/<split>.txt`` → a ``Fact`` per list and ``(id, ("list", (split, "<path>:<line>")))`` per row."""
    for listed in files.list_folder(files.join(root, SPLITS_FOLDER)):
        split = posixpath.splitext(basename(listed.path))[0]
        if not listed.path.endswith(".txt") or split not in SPLITS:
            yield DeadLetter(listed.path, f"not a split list ({', '.join(s + '.txt' for s in SPLITS)})", "discover")
            continue
        if listed.error is not None:
            yield DeadLetter(listed.path, listed.error, "discover")
            continue
        yield Fact(split)
        for number, line in enumerate(files.read(listed.path).decode("utf-8", errors="replace").splitlines(), 1):
            example_id = posixpath.splitext(line.strip())[0]
            if example_id and not example_id.startswith("#"):
                yield example_id, ("list", (split, f"{listed.path}:{number}"))


def assemble_folder(
    key: str, parts: list, lists: list[str], fractions: SplitFractions, table: Optional[FolderTable] = None
) -> Iterator[Assembled]:
    """Every part of one id → its ``Example``, or dead letters (module docstring)."""
    by_role: dict[str, list] = {}
    for role, value in parts:
        by_role.setdefault(role, []).append(value)
    images, masks = sorted(by_role.get("image", [])), sorted(by_role.get("mask", []))
    rows = sorted(by_role.get("list", []))
    broken = by_role.get("broken", [])
    for extra in images[1:]:
        yield DeadLetter(extra, f"second image for id {key} (kept {basename(images[0])})", "pair")
    first = key.split("/", 1)[0]
    images_dir, masks_dir = (table.images, table.masks) if table else (FOLDERS["image"], FOLDERS["mask"])
    suffix = table.mask_suffix if table else MASK_SUFFIX
    if not images:
        for path in masks:
            yield DeadLetter(
                path, f"mask without image (no readable {images_dir}/{key}.*)" + alone_because(broken, "image"), "pair"
            )
        for _, where in rows:
            yield DeadLetter(where, f"lists {key}, which has no image", "pair")
        return
    splits = sorted({split for split, _ in rows})
    if "/" in key and first in SPLITS:
        split = first
    elif lists:
        if len(splits) != 1:
            why = (
                f"in the split lists {', '.join(splits)}"
                if splits
                else f"in none of the split lists ({SPLITS_FOLDER}/)"
            )
            for path in images + masks:
                yield DeadLetter(path, f"id {key} is {why}: name it in exactly one", "pair")
            return
        split = splits[0]
    else:
        split = split_from_hash(key, fractions.val_fraction, fractions.test_fraction)
    if masks:
        yield Example(key, split, images[0], masks[0])
    elif split == "test":
        yield Example(key, split, images[0])  # a test image without a mask: an image-only record
    else:
        yield DeadLetter(
            images[0],
            f"{split} image without mask (no readable {masks_dir}/{key}{suffix})" + alone_because(broken, "mask"),
            "pair",
        )


# --------------------------------------------------------------------------------------------- the dataset
_DEFAULT_LAYOUT = FolderTable((), (), (), False, (), ())  # the folder names before classes.json is read


@dataclasses.dataclass(frozen=True)
class Folder(Dataset):
    table: Optional[FolderTable] = None  # from SRC/classes.json (``with_source``); None until then

    def with_source(self, input_dir: str, files: Files) -> "Folder":
        path = files.join(input_dir, CLASSES_FILE)
        try:
            text = files.read(path).decode("utf-8")
        except Exception:  # noqa: BLE001 - missing or unreadable: the one line says what to do
            raise ValueError(
                f"no readable {path}: the folder dataset's classes come from SRC/{CLASSES_FILE} (see docs/datasets.md)"
            ) from None
        table = parse_classes(text, path)
        # The images folder classes.json names is where infer's --input_dir finds the images.
        return dataclasses.replace(self, table=table, input_folder=tuple(table.images.split("/")))

    def _table(self) -> FolderTable:
        if self.table is None:
            raise ValueError(f"the folder dataset's classes come from {CLASSES_FILE} in its folder: with_source first")
        return self.table

    def label_spec(self, label_mode: Optional[str] = None) -> labels.LabelSpec:
        t = self._table()
        spec = labels.spec_from_table(
            self.name,
            LABEL_MODE,
            t.names,
            labels.IGNORE_LABEL,
            {
                "palette": [list(c) for c in t.colours],
                "native_values": list(t.values),
                "native_ignore": t.ignore_values[0] if t.ignore_values else labels.IGNORE_LABEL,
            },
        )
        return spec

    def read_mask(self, data: bytes, what: str = "mask", bits: int = 8) -> np.ndarray:
        from pipelines.common.decode import DecodeError, decode_label_map  # PIL: not for --help

        try:
            native = decode_label_map(data, what, bits=16)
        except DecodeError as err:
            if "colour image" not in str(err):
                raise
            import io

            from PIL import Image

            native = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        try:
            return map_mask(native, self._table())
        except ValueError as err:
            raise DecodeError(str(err)) from None

    def mask_problem(self, native: np.ndarray, kind: str) -> Optional[str]:
        # read_mask already mapped the masks to train ids, and refused what classes.json does not list.
        return None

    def train_id_luts(self, label_mode: str) -> dict[Optional[int], np.ndarray]:
        n = len(self._table().names)
        return {None: np.asarray([v if v < n else labels.IGNORE_LABEL for v in range(256)], dtype=np.uint8)}

    def discovery_sources(self) -> list[tuple]:
        return [("files", "image"), ("files", "mask"), ("lists", SPLITS_FOLDER)]

    def list_source(self, source: tuple, input_dir: str, files: Files) -> Iterator[Listed]:
        if source[0] == "lists":
            yield from read_split_lists(input_dir, files)
            return
        table = self._table()
        root = files.join(input_dir, table.folder(source[1]))
        for listed in files.list_files(root):
            yield from folder_part(listed, root, source[1], table)

    def assemble(self, key: str, parts: list, facts: list[str], fractions: SplitFractions) -> Iterator[Assembled]:
        return assemble_folder(key, parts, facts, fractions, self._table())

    def example_id(self, stem: str) -> Optional[str]:
        return stem

    def to_train_ids(self, native: np.ndarray, label_mode: str) -> np.ndarray:
        return np.take(self.train_id_luts(label_mode)[None], np.asarray(native, dtype=np.uint8))

    def ground_truth_layouts(self, split: Optional[str]) -> list[GroundTruthLayout]:
        table = self.table or _DEFAULT_LAYOUT
        below = tuple(table.masks.split("/")) + ((split,) if split else ())
        # Masks nest as freely as the images do (masks/site_a/..., masks/val/site_b/...): every mask below, at any
        # depth; the first fixed depth holding any would leave the deeper ones out.
        return [GroundTruthLayout(below, 0, table.mask_suffix)]

    def evaluate_split_ids(self, split: str, ground_truth: str, files: Files) -> Optional[frozenset[str]]:
        lists = [f for f in files.list_folder(files.join(ground_truth, SPLITS_FOLDER)) if f.error is None]
        found = [f for f in lists if basename(f.path) == f"{split}.txt"]
        if not found:
            return None  # the split is a folder, masks/<split>/
        rows = files.read(found[0].path).decode("utf-8", errors="replace").splitlines()
        # The rows as discovery reads them: literal ids, nesting kept (site_a/0001 is not site_b/0001).
        return frozenset(posixpath.splitext(r.strip())[0] for r in rows if r.strip() and not r.strip().startswith("#"))

    def literal_id(self, path: str, root: str, role: str) -> Optional[str]:
        # Ids are paths below the images/masks folder, so a name repeated across sub-folders stays two ids.
        table = self.table or _DEFAULT_LAYOUT
        local = root[len("file://") :] if root.startswith("file://") else root
        prefix = posixpath.join(local.rstrip("/") or "/", table.folder(role)) + "/"
        return file_id(path[len(prefix) :], role, table) if path.startswith(prefix) else None


DATASET = Folder(
    name="folder",
    title="Folder",
    label_modes=(),
    fixed_labels=f"the folder dataset's classes come from SRC/{CLASSES_FILE}",
    evaluate_label_modes=(),
    record_image_format="png",  # the user's images may be anything: keep them lossless
    mask_bytes_per_pixel=0.15,
    input_folder=(FOLDERS["image"],),
    input_layout=f"images/**/<name>.<jpg|png> with masks/**/<name>.png and {CLASSES_FILE} (or the folders it names)",
    metadata_extra=(),
    example_id_hint="<name>",
    labels_file=CLASSES_FILE,
)

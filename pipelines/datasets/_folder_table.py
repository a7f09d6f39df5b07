"""The folder dataset's ``classes.json``: its parsing and checks, the table it gives, and masks read through it.

``classes.json`` (``docs/datasets.md``) names the classes in train-id order, the mask value of each, optionally
its colour, the values (or colours) that are ignore, and the layout: the images and masks folders under SRC and
the masks' name ending (mmseg's ``img_dir`` / ``seg_map_dir`` / ``seg_map_suffix``). ``parse_classes`` turns its
text into a ``FolderTable`` or one ``ValueError`` line; ``map_mask`` maps a decoded mask to train ids by that
table. The dataset itself (discovery, splits, evaluate's layouts) is ``folder.py``; this module's name starts
with ``_`` so the registry does not take it for a dataset.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from schemas import labels

CLASSES_FILE = "classes.json"
FOLDERS = {"image": "images", "mask": "masks"}  # role -> folder under SRC, unless classes.json names others
MASK_SUFFIX = ".png"  # what follows the id in a mask's name, unless classes.json's "mask_suffix" says otherwise
# classes.json's keys for the layout (mmseg's img_dir / seg_map_dir / seg_map_suffix): role -> key
LAYOUT_KEYS = {"image": "images", "mask": "masks"}
MAX_CLASSES = labels.IGNORE_LABEL  # train ids 0..254; 255 is ignore
_MAX_VALUE = 65535  # a 16-bit PNG's largest value


class FolderTable(NamedTuple):
    """``classes.json``, checked: train id i is ``names[i]``, drawn in masks as ``values[i]`` (or ``colours[i]``)."""

    names: tuple[str, ...]
    values: tuple[int, ...]
    colours: tuple[tuple[int, int, int], ...]
    colours_given: bool  # False: the palette is made up for pictures, and RGB masks cannot be read
    ignore_values: tuple[int, ...]
    ignore_colours: tuple[tuple[int, int, int], ...]
    images: str = FOLDERS["image"]  # the folders under SRC ("/"-separated), and the masks' name ending
    masks: str = FOLDERS["mask"]
    mask_suffix: str = MASK_SUFFIX

    def folder(self, role: str) -> str:
        return self.images if role == "image" else self.masks


def _default_colour(i: int) -> tuple[int, int, int]:
    # The VOC devkit's bit-spread colour map: distinct, stable colours for any number of classes.
    rgb, value = [0, 0, 0], i
    for bit in range(7, -1, -1):
        for channel in range(3):
            rgb[channel] |= ((value >> channel) & 1) << bit
        value >>= 3
    return (rgb[0], rgb[1], rgb[2])


def _colour(value: object, where: str) -> tuple[int, int, int]:
    if not (isinstance(value, list) and len(value) == 3 and all(type(c) is int and 0 <= c <= 255 for c in value)):
        raise ValueError(f"{where} must be [r, g, b] with each 0..255, got {json.dumps(value)}")
    return (value[0], value[1], value[2])


def _value(value: object, where: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_VALUE:
        raise ValueError(f"{where} must be a mask value 0..{_MAX_VALUE}, got {json.dumps(value)}")
    return value


def _layout(raw: dict, where: str) -> tuple[str, str, str]:
    """classes.json's optional "images", "masks" (folders under SRC) and "mask_suffix" (the masks' name ending)."""
    found = []
    for role, key in LAYOUT_KEYS.items():
        name = raw.get(key, FOLDERS[role])
        parts = name.strip("/").split("/") if isinstance(name, str) else []
        if not parts or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or name.startswith("/"):
            raise ValueError(
                f'{where} "{key}" must be a folder below SRC such as "{FOLDERS[role]}", got {json.dumps(name)}'
            )
        found.append("/".join(parts))
    images, masks = found
    if images == masks or images.startswith(masks + "/") or masks.startswith(images + "/"):
        raise ValueError(
            f'{where}: "images" ({images}) and "masks" ({masks}) must be two folders, neither inside the other'
        )
    suffix = raw.get("mask_suffix", MASK_SUFFIX)
    if not isinstance(suffix, str) or not suffix.lower().endswith(".png") or "/" in suffix:
        raise ValueError(
            f'{where} "mask_suffix" must end with .png (masks are PNGs), e.g. "_mask.png", got {json.dumps(suffix)}'
        )
    return images, masks, suffix


def parse_classes(text: str, where: str = CLASSES_FILE) -> FolderTable:
    """``classes.json``'s text → its ``FolderTable``; ``ValueError`` (one line naming ``where``) otherwise."""
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{where} is not JSON ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list) or len(raw["classes"]) < 2:
        raise ValueError(f'{where} must be an object with "classes": a list of at least 2 classes')
    known = ("classes", "ignore", "ignore_colors", *LAYOUT_KEYS.values(), "mask_suffix")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; it takes {', '.join(known)}")
    images, masks, suffix = _layout(raw, where)
    if len(raw["classes"]) > MAX_CLASSES:
        raise ValueError(f"{where} has {len(raw['classes'])} classes; at most {MAX_CLASSES}")
    names, values, colours = [], [], []
    for i, entry in enumerate(raw["classes"]):
        at = f"{where} classes[{i}]"
        if not isinstance(entry, dict) or not set(entry) <= {"name", "value", "color"} or "name" not in entry:
            raise ValueError(f'{at} must be {{"name": ..., "value": ..., "color": [r, g, b]}} ("color" optional)')
        if not isinstance(entry["name"], str) or not entry["name"].strip():
            raise ValueError(f"{at} name must be a non-empty string")
        names.append(entry["name"])
        values.append(_value(entry.get("value"), f"{at} value"))
        colours.append(_colour(entry["color"], f"{at} color") if "color" in entry else None)
    given = [c is not None for c in colours]
    if any(given) and not all(given):
        raise ValueError(f"{where}: give a color for every class or for none")
    ignore = tuple(_value(v, f"{where} ignore") for v in raw.get("ignore", []))
    ignore_colours = tuple(_colour(c, f"{where} ignore_colors") for c in raw.get("ignore_colors", []))
    for what, items in (("name", names), ("value", values + list(ignore))):
        repeated = sorted({str(x) for x in items if items.count(x) > 1})
        if repeated:
            raise ValueError(f"{where}: the {what}s {', '.join(repeated)} appear more than once")
    if all(given):
        seen = [c for c in colours if c is not None] + list(ignore_colours)
        if len(set(seen)) != len(seen):
            raise ValueError(f"{where}: two classes (or a class and an ignore colour) share a color")
    return FolderTable(
        tuple(names),
        tuple(values),
        tuple(c if c is not None else _default_colour(i) for i, c in enumerate(colours)),
        all(given),
        ignore,
        ignore_colours,
        images,
        masks,
        suffix,
    )


def _shown(items: list) -> str:
    return "[" + ", ".join(str(x) for x in items[:10]) + (", ..." if len(items) > 10 else "") + "]"


def map_mask(array: np.ndarray, table: FolderTable) -> np.ndarray:
    """A decoded mask (values [H, W] or RGB [H, W, 3]) → uint8 train ids (255 = ignore); ``ValueError`` naming the
    values or colours the table does not have."""
    if array.ndim == 3:
        if not table.colours_given:
            raise ValueError(f"mask is an RGB image, but {CLASSES_FILE} gives no colors to read it by")
        codes = (array[..., 0].astype(np.int64) << 16) | (array[..., 1].astype(np.int64) << 8) | array[..., 2]
        keys = [(r << 16) | (g << 8) | b for r, g, b in table.colours]
        ignore = [(r << 16) | (g << 8) | b for r, g, b in table.ignore_colours]
        found, inverse = np.unique(codes, return_inverse=True)
        what = "colors"

        def show(code: int) -> str:
            return f"({code >> 16}, {(code >> 8) & 255}, {code & 255})"
    else:
        keys, ignore = list(table.values), list(table.ignore_values)
        found, inverse = np.unique(array.astype(np.int64), return_inverse=True)
        what, show = "values", str
    train = {k: i for i, k in enumerate(keys)}
    train.update({k: labels.IGNORE_LABEL for k in ignore})
    bad = [int(v) for v in found if int(v) not in train]
    if bad:
        raise ValueError(f"mask has {what} {_shown([show(v) for v in bad])} that {CLASSES_FILE} does not list")
    lut = np.asarray([train[int(v)] for v in found], dtype=np.uint8)
    return lut[inverse.reshape(array.shape[:2])]

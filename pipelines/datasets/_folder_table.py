"""The folder dataset's ``classes.json``: its parsing and checks, the table it gives, and masks read through it.

``classes.json`` (``docs/datasets.md``) names the classes in train-id order, the mask value of each, optionally
its colour, the values (or colours) that are ignore, and the layout: the images and masks folders under SRC and
the masks' name ending (mmseg's ``img_dir`` / ``seg_map_dir`` / ``seg_map_suffix``). ``parse_classes`` turns its
text into a ``FolderTable`` or one ``ValueError`` line; ``map_mask`` maps a decoded mask to train ids by that
table. The dataset itself (discovery, splits, evaluate's layouts) is ``folder.py``; this module's name starts
with ``_`` so the registry does not take it for a dataset.
"""

from __future__ import annotations

import functools
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


def _packed(array: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] → one uint32 code a pixel, (r << 16) | (g << 8) | b."""
    codes = array[..., 0].astype(np.uint32)
    codes <<= 8
    codes |= array[..., 1]
    codes <<= 8
    codes |= array[..., 2]
    return codes


class _Lookup(NamedTuple):
    """One table's keys (mask values or packed colours) → train ids, in the forms ``map_mask`` indexes."""

    train: dict[int, int]  # key → train id (255 for the ignore keys)
    values: np.ndarray  # uint8 [65536]: a mask value's train id; ``sentinel`` where classes.json lists none
    sentinel: int  # a train id no listed value has (the class count), or -1 when all 256 are taken
    known: np.ndarray  # bool [65536]: the value is listed (only read when there is no sentinel)
    # Colours: a perfect multiplicative hash, slot = (code * multiplier mod 2**32) >> shift, distinct for each
    # listed colour. Each slot holds (code << 8) | train id, so one look-up gives both the colour to compare
    # with and the id; an empty slot holds a colour that hashes elsewhere, which no code landing in it can equal.
    multiplier: np.uint32
    shift: np.uint32
    slots: np.ndarray  # uint32 [2 ** (32 - shift)]


def _perfect_hash(codes: list[int]) -> tuple[int, int]:
    """(multiplier, shift) putting each code in a slot of its own, with as few slots as a few tries find."""
    bits = max(1, (len(codes) - 1).bit_length())
    while True:
        for attempt in range(64):
            multiplier = (0x9E3779B1 + 2 * attempt) & 0xFFFFFFFF  # odd: Knuth's golden-ratio constant, then near
            if len({((c * multiplier) & 0xFFFFFFFF) >> (32 - bits) for c in codes}) == len(codes):
                return multiplier, 32 - bits
        bits += 1


@functools.lru_cache(maxsize=16)
def _lookup(table: FolderTable, rgb: bool) -> _Lookup:
    if rgb:
        keys = [(r << 16) | (g << 8) | b for r, g, b in table.colours]
        ignore = [(r << 16) | (g << 8) | b for r, g, b in table.ignore_colours]
    else:
        keys, ignore = list(table.values), list(table.ignore_values)
    train = {k: i for i, k in enumerate(keys)}
    train.update({k: labels.IGNORE_LABEL for k in ignore})
    n = len(keys)
    sentinel = n if n < labels.IGNORE_LABEL else -1
    values = np.full(_MAX_VALUE + 1, max(sentinel, 0), dtype=np.uint8)
    known = np.zeros(_MAX_VALUE + 1, dtype=bool)
    multiplier, shift, slots = 0, 31, np.zeros(2, np.uint32)
    if rgb:
        multiplier, shift = _perfect_hash(list(train))
        entries = [(code << 8) | i for code, i in train.items()]
        at = [((code * multiplier) & 0xFFFFFFFF) >> shift for code in train]
        slots = np.full(1 << (32 - shift), entries[0], dtype=np.uint32)
        slots[at] = entries
    else:
        values[list(train)] = list(train.values())
        known[list(train)] = True
    return _Lookup(train, values, sentinel, known, np.uint32(multiplier), np.uint32(shift), slots)


def map_mask(array: np.ndarray, table: FolderTable) -> np.ndarray:
    """A decoded mask (values [H, W] or uint8 RGB [H, W, 3]) → uint8 train ids (255 = ignore); ``ValueError``
    naming the values or colours the table does not have.

    Look-up tables cached per table, not ``np.unique``: a sort of every pixel cost 12-25 ms a 640x480 mask, more
    than the rest of an example's preprocessing (docs/benchmarks.md). Values index a 65536-entry table; colours,
    packed into one code, a perfect hash table (``_Lookup``)."""
    rgb = array.ndim == 3
    if rgb:
        if not table.colours_given:
            raise ValueError(f"mask is an RGB image, but {CLASSES_FILE} gives no colors to read it by")
        if array.dtype != np.uint8:  # PIL's RGB is 8-bit; another dtype's codes would overlap
            if array.size and (array.min() < 0 or array.max() > 255):
                raise ValueError("mask has RGB channels outside 0..255; colour masks are 8-bit RGB PNGs")
            array = array.astype(np.uint8)
        codes = _packed(array)
        look = _lookup(table, True)
        # In place where it can be: each fresh 1 MiB array costs page faults that cost more than the arithmetic.
        at = codes * look.multiplier  # uint32, wrapping: the hash's mod 2**32
        at >>= look.shift
        entries = np.take(look.slots, at, mode="clip")  # every slot is in range; "clip" skips the checked copy
        np.right_shift(entries, 8, out=at)
        at ^= codes  # zero where the slot holds the pixel's own colour
        ok = not at.any()
        ids = entries.astype(np.uint8) if ok else None  # the low byte: the train id
    else:
        codes = array if array.dtype.kind in "iu" else array.astype(np.int64)
        look = _lookup(table, False)
        in_range = codes.dtype in (np.uint8, np.uint16) or codes.size == 0
        ok = in_range or (codes.min() >= 0 and codes.max() <= _MAX_VALUE)
        ids = np.take(look.values, codes) if ok else None
        if ok and look.sentinel >= 0:
            ok = not np.any(ids == look.sentinel)
        elif ok:
            ok = bool(np.all(np.take(look.known, codes)))
    if ok:
        return ids
    # Only a refused mask pays for the sort: its unlisted keys in ascending order, as the message has named them.
    found = np.unique(codes.astype(np.int64))
    bad = found[~np.isin(found, np.fromiter(look.train, dtype=np.int64))].tolist()
    if rgb:
        shown = [f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in bad]
        raise ValueError(f"mask has colors {_shown(shown)} that {CLASSES_FILE} does not list")
    raise ValueError(f"mask has values {_shown(bad)} that {CLASSES_FILE} does not list")

"""A small sample in the ``folder`` layout (``pipelines/datasets/folder.py``), for tests and for trying it out.

``write_folder_dataset(root)`` writes ``classes.json`` (3 classes with values and colours, ignore 255 / white),
nested folders (``images/site_a/`` with 8-bit index masks, ``images/site_b/`` JPEGs with RGB colour-coded masks),
splits as list files (``splits/*.txt``), sub-folders (``images/train/...``) or none (the stable hash), and what
must end as a dead letter or an image-only record: a test image without a mask, a mask with a value outside the
table, a mask without an image. ``write_folder_images(root, n)`` writes ``n`` valid examples at a photo's size (the
benchmarks').
"""

from __future__ import annotations

import io
import json
import os
from typing import Optional

import numpy as np
from PIL import Image

from pipelines.datasets import folder as folder_dataset
from schemas.records import SPLITS

CLASSES = {
    "classes": [
        {"name": "background", "value": 0, "color": [0, 0, 0]},
        {"name": "road", "value": 1, "color": [128, 64, 128]},
        {"name": "car", "value": 7, "color": [0, 0, 142]},
    ],
    "ignore": [255],
    "ignore_colors": [[255, 255, 255]],
}
# id (relative path without extension) -> split, for the list-file and sub-folder layouts
SPLIT_OF = {
    "site_a/a0": "train",
    "site_a/a1": "train",
    "site_a/a2": "val",
    "site_a/a3": "train",  # its mask holds a value classes.json does not list: a dead letter
    "site_b/b0": "train",
    "site_b/b1": "train",
    "site_b/b2": "val",
    "site_b/b3": "test",  # no mask: an image-only test record
}
STRAY_VALUE = 9
ORPHAN_MASK = "site_a/orphan"  # a mask without an image: a dead letter


def _save(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _example(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An image whose class regions differ in colour, and its mask of class indices 0/1/2 (255 at one corner)."""
    h, w = size
    index = np.zeros((h, w), np.uint8)
    index[h // 2 :, :] = 1  # road: the lower half
    top, left = int(rng.integers(0, h // 3)), int(rng.integers(0, w // 2))
    index[top : top + h // 3, left : left + w // 3] = 2  # a car
    index[:2, :2] = 255  # an ignore corner
    base = np.array([[90, 140, 60], [110, 110, 110], [200, 30, 30], [250, 250, 250]], np.float32)
    image = base[np.where(index == 255, 3, index)] + rng.normal(0, 8, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), index


def write_folder_dataset(
    root: str,
    size: tuple[int, int] = (24, 32),
    splits: str = "lists",
    seed: int = 0,
    classes: Optional[dict] = None,
    layout: Optional[dict[str, str]] = None,
) -> dict[str, str]:
    """Writes the sample under ``root``; ``splits``: ``lists`` (``splits/*.txt``), ``folders`` (``images/<split>/``)
    or ``hash`` (none: ``--val_fraction``/``--test_fraction``). ``layout``: classes.json's folder names and mask
    suffix (e.g. ``{"images": "img_dir", "masks": "ann_dir", "mask_suffix": "_mask.png"}``), written there and
    used for the files. Returns {id: split} as ``SPLIT_OF`` (ids under ``<split>/`` with ``folders``)."""
    rng = np.random.default_rng(seed)
    table = dict(classes or CLASSES, **(layout or {}))
    images_dir, masks_dir = table.get("images", "images"), table.get("masks", "masks")
    suffix = table.get("mask_suffix", ".png")
    _save(os.path.join(root, "classes.json"), (json.dumps(table, indent=2) + "\n").encode("utf-8"))
    values = [c["value"] for c in table["classes"]]
    colours = [c["color"] for c in table["classes"]]
    written = {}
    for example_id, split in sorted(SPLIT_OF.items()):
        key = f"{split}/{example_id}" if splits == "folders" else example_id
        image, index = _example(rng, size)
        rgb = example_id.startswith("site_b")  # site_b: JPEG photos, RGB colour-coded masks
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG" if rgb else "PNG", quality=90)
        _save(os.path.join(root, images_dir, key + (".jpg" if rgb else ".png")), buf.getvalue())
        written[key] = split
        if example_id == "site_b/b3":
            continue
        if rgb:
            palette = np.array(colours + [[0, 0, 0]] * (255 - len(colours)) + [table["ignore_colors"][0]], np.uint8)
            mask = palette[index]
        else:
            lut = np.zeros(256, np.uint8)
            lut[: len(values)] = values
            lut[255] = 255
            mask = lut[index]
            if example_id == "site_a/a3":
                mask[-1, -1] = STRAY_VALUE
        _save(os.path.join(root, masks_dir, key + suffix), _png(mask))
    _save(os.path.join(root, masks_dir, ORPHAN_MASK + suffix), _png(np.zeros(size, np.uint8)))
    if splits == "lists":
        for split in SPLITS:
            rows = [i for i, s in sorted(SPLIT_OF.items()) if s == split]
            _save(os.path.join(root, "splits", f"{split}.txt"), ("\n".join(rows) + "\n").encode("utf-8"))
    return written


def write_folder_images(root: str, n: int, size: tuple[int, int] = (480, 640), seed: int = 0) -> list[str]:
    """``n`` valid examples in the folder layout for the benchmarks: ``classes.json`` (``CLASSES``), even ids as PNG
    images with 8-bit index masks under ``site_a/``, odd ones as JPEGs with RGB colour-coded masks under
    ``site_b/`` (both paths of the mask mapping), no split lists (the stable hash). Returns the ids."""
    _save(os.path.join(root, "classes.json"), (json.dumps(CLASSES, indent=2) + "\n").encode("utf-8"))
    values = np.zeros(256, np.uint8)
    values[: len(CLASSES["classes"])] = [c["value"] for c in CLASSES["classes"]]
    values[255] = 255
    colours = np.zeros((256, 3), np.uint8)
    colours[: len(CLASSES["classes"])] = [c["color"] for c in CLASSES["classes"]]
    colours[255] = CLASSES["ignore_colors"][0]
    ids = []
    for i in range(n):
        image, index = _example(np.random.default_rng([seed, i]), size)
        rgb = i % 2 == 1
        example_id = f"site_{'b' if rgb else 'a'}/{i:06d}"
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG" if rgb else "PNG", quality=90)
        _save(os.path.join(root, "images", example_id + (".jpg" if rgb else ".png")), buf.getvalue())
        _save(os.path.join(root, "masks", example_id + ".png"), _png(colours[index] if rgb else values[index]))
        ids.append(example_id)
    return ids


def write_from_args(args) -> None:
    """``python -m pipelines.tools.synthetic --dataset folder``: the sample at ``--height``/``--width``."""
    size = (args.height or 240, args.width or 320)
    written = write_folder_dataset(args.output_dir, size=size, seed=args.seed)
    print(f"wrote {len(written)} folder-layout images (and classes.json, splits/) under {args.output_dir}")


NAME = folder_dataset.DATASET.name  # the --dataset value this sample is for

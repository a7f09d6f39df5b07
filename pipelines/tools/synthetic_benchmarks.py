"""Small datasets in the layouts of Pascal VOC 2012 and ADE20K SceneParsing, as their authors ship them.

``pipelines.tools.synthetic`` offers them as ``--dataset voc`` and ``--dataset ade20k``; the tests and the
benchmarks call the writers directly. Scenes are a background class with a few blobs of object classes, each
class drawn in its palette colour plus noise, so a model can learn them.

- VOC (``write_voc_dataset``): the ``VOCdevkit/VOC2012`` folder: ``JPEGImages/<id>.jpg``, ``SegmentationClass/
  <id>.png`` as *palette* PNGs (the index is the class, the colour is the devkit's colour map; every object has
  the 255 void border VOC draws), ``ImageSets/Segmentation/{train,val,trainval}.txt``, and, as in the real
  release, a few detection-only JPEGs that no list names and that have no mask. ``sbd=N`` adds SBD's
  ``SegmentationClassAug/`` (grey PNGs without the border): a copy for every listed id and ``N`` more images
  in no list (the ``train_aug`` extras).
- ADE20K (``write_ade20k_dataset``): ``images/{training,validation}/ADE_{train,val}_<n>.jpg`` and
  ``annotations/<split>/ADE_..._<n>.png`` (grey PNGs, 1..150 the classes, 0 = other), and the release's
  ``sceneCategories.txt``, which segflow does not read.

    python -m pipelines.tools.synthetic --dataset voc --output_dir data/VOCdevkit/VOC2012 --num_examples 20
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from pipelines.datasets import ade20k, voc
from schemas import label_tables, labels

VOC_VOID_WIDTH = 2  # pixels of void border around each VOC object (the real border is ~5 px at 500x375)


def _save(path: str, image: Image.Image, **params: object) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **params)


def _scene(
    rng: np.random.Generator, height: int, width: int, background: int, objects: Sequence[int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A class map of ``background`` with one ellipse per class of ``objects``; returns it and each object's area."""
    mask = np.full((height, width), background, dtype=np.uint8)
    areas = []
    for cls in objects:
        h, w = int(height * rng.uniform(0.3, 0.6)), int(width * rng.uniform(0.3, 0.6))
        y0, x0 = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        layer = Image.new("L", (width, height), 0)
        ImageDraw.Draw(layer).ellipse((x0, y0, x0 + w, y0 + h), fill=1)
        area = np.asarray(layer, dtype=bool)
        mask[area] = cls
        areas.append(area)
    return mask, areas


def _photo(rng: np.random.Generator, classes: np.ndarray, palette: np.ndarray) -> Image.Image:
    """An RGB picture of a class map: each class in its colour, plus noise."""
    image = palette[classes].astype(np.float32) + rng.normal(0, 12, size=classes.shape + (3,))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def _border(area: np.ndarray, width: int) -> np.ndarray:
    """The band of ``width`` pixels just inside the edge of ``area`` (where VOC draws its void border)."""
    inner = area.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return area & ~inner


def voc_example(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """(photo, VOC mask with the void border, the same mask without it, as SBD's)."""
    objects = rng.choice(np.arange(1, labels.VOC_NUM_CLASSES), size=int(rng.integers(1, 3)), replace=False)
    clean, areas = _scene(rng, height, width, 0, objects)
    mask = clean.copy()
    for area in areas:
        mask[_border(area, VOC_VOID_WIDTH)] = labels.VOC_VOID
    photo = _photo(rng, clean, np.asarray(labels.voc_colour_map(), dtype=np.float32))
    return photo, mask, clean


def voc_palette_png(mask: np.ndarray) -> Image.Image:
    """A VOC ``SegmentationClass`` PNG: mode P, the devkit's colour map as its palette."""
    image = Image.fromarray(mask, "P")
    image.putpalette([c for colour in labels.voc_colour_map() for c in colour])
    return image


def write_voc_dataset(
    root: str,
    *,
    per_split: Optional[dict[str, int]] = None,
    size: Sequence[int] = (60, 80),
    seed: int = 0,
    detection_only: int = 2,
    sbd: int = 0,
) -> dict[str, list[str]]:
    """Writes a VOC2012-layout folder at ``root``; returns the ids per list (``train``, ``val``, and ``sbd`` for
    the Aug extras, ``detection`` for the images without a mask)."""
    per_split = per_split or {"train": 4, "val": 2}
    height, width = size
    out: dict[str, list[str]] = {}
    number = 0

    def next_id() -> str:
        nonlocal number
        number += 1
        return f"2007_{number:06d}"

    for split, n in [*per_split.items(), ("sbd", sbd), ("detection", detection_only)]:
        out[split] = []
        for _ in range(n):
            example_id = next_id()
            photo, mask, clean = voc_example(np.random.default_rng([seed, number]), height, width)
            _save(os.path.join(root, voc.IMAGE_FOLDER, f"{example_id}.jpg"), photo, format="JPEG", quality=90)
            if split != "detection":
                if split != "sbd":
                    _save(os.path.join(root, voc.MASK_FOLDER, f"{example_id}.png"), voc_palette_png(mask))
                if sbd:
                    _save(os.path.join(root, voc.AUG_FOLDER, f"{example_id}.png"), Image.fromarray(clean, "L"))
            out[split].append(example_id)
    lists = os.path.join(root, *voc.LISTS)
    os.makedirs(lists, exist_ok=True)
    for name, ids in [(s, out[s]) for s in per_split] + [("trainval", out.get("train", []) + out.get("val", []))]:
        with open(os.path.join(lists, f"{name}.txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{i}\n" for i in ids))
    return out


def ade20k_example(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, np.ndarray]:
    """(photo, ADE20K annotation): a stuff class behind a few objects, and a patch of 0 ("other")."""
    stuff = int(rng.choice(label_tables.ADE20K_STUFF))
    things = [v for v in range(1, labels.ADE20K_NUM_CLASSES + 1) if v not in label_tables.ADE20K_STUFF]
    annotation, _ = _scene(rng, height, width, stuff, rng.choice(things, size=int(rng.integers(1, 4)), replace=False))
    annotation[: height // 8, : width // 4] = labels.ADE20K_OTHER
    palette = np.zeros((256, 3), dtype=np.float32)
    palette[1 : labels.ADE20K_NUM_CLASSES + 1] = label_tables.ADE20K_PALETTE
    return _photo(rng, annotation, palette), annotation


def write_ade20k_dataset(
    root: str, *, per_split: Optional[dict[str, int]] = None, size: Sequence[int] = (64, 80), seed: int = 0
) -> dict[str, list[str]]:
    """Writes an ``ADEChallengeData2016``-layout folder at ``root``; returns the ids per split (train/val)."""
    per_split = per_split or {"train": 4, "val": 2}
    height, width = size
    out: dict[str, list[str]] = {}
    scenes = []
    for split, n in per_split.items():
        folder = ade20k.FOLDER_OF_SPLIT[split]
        out[split] = []
        for i in range(1, n + 1):
            example_id = f"ADE_{split}_{i:08d}"
            photo, annotation = ade20k_example(np.random.default_rng([seed, len(scenes)]), height, width)
            _save(os.path.join(root, ade20k.IMAGE_FOLDER, folder, f"{example_id}.jpg"), photo, format="JPEG")
            _save(
                os.path.join(root, ade20k.ANNOTATION_FOLDER, folder, f"{example_id}.png"), Image.fromarray(annotation)
            )
            out[split].append(example_id)
            scenes.append(f"{example_id} synthetic\n")
    with open(os.path.join(root, "sceneCategories.txt"), "w", encoding="utf-8") as handle:
        handle.write("".join(scenes))
    return out


# ---------------------------------------------------------------------------------- the command line
def _write_voc(args: argparse.Namespace) -> None:
    size = (args.height or 375, args.width or 500)  # VOC's typical photo
    n = args.num_examples
    ids = write_voc_dataset(args.output_dir, per_split={"train": n, "val": max(1, n // 2)}, size=size, seed=args.seed)
    print(
        f"wrote VOC2012-layout images under {args.output_dir}: "
        + ", ".join(f"{k}={len(v)}" for k, v in ids.items() if v)
    )


def _write_ade20k(args: argparse.Namespace) -> None:
    size = (args.height or 512, args.width or 683)  # ADE20K's typical image: the short side 512
    n = args.num_examples
    ids = write_ade20k_dataset(
        args.output_dir, per_split={"train": n, "val": max(1, n // 2)}, size=size, seed=args.seed
    )
    print(
        f"wrote ADEChallengeData2016-layout images under {args.output_dir}: "
        + ", ".join(f"{k}={len(v)}" for k, v in ids.items() if v)
    )


# ``pipelines.tools.synthetic``'s writers for these layouts, by registry name.
WRITERS = {voc.DATASET.name: _write_voc, ade20k.DATASET.name: _write_ade20k}

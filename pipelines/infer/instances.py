"""Instance masks from a semantic prediction: pure numpy/scipy, no TensorFlow, no Beam.

Two kinds of boundary evidence, used in this order:
  * a predicted **border class** (Oxford-IIIT Pet trimaps: 3 = "not classified", the ring around each pet):
    interior components of the object class are separated wherever the model painted border between them, so
    each connected interior component is one object; border pixels touching an object are then given to the
    nearest object, so instance masks cover the whole animal.
  * **shape** (Cityscapes, Pet without a border class): connected components per instance class, each split by a
    distance-transform watershed when it has several clearly separate "cores" joined by a neck — the typical
    look of two touching cars or people merged into one blob. A split is kept only where the neck is narrow
    relative to the objects (``neck_ratio``), so one convex object is never cut in two.

Everything here works on one image in memory: ``class_ids`` int [H, W] (train ids) and ``probabilities``
float [H, W, C]. Output order is deterministic (by class, then top-left first pixel).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import ndimage

# 8-connectivity: diagonal neighbours belong to the same object (thin diagonal parts are not split off).
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclasses.dataclass
class Instance:
    """One object: its train id, pixel count, bbox, confidence and its mask, kept as the bbox crop.

    bbox is ``[x_min, y_min, width, height]`` in pixels (COCO convention); score is the mean probability of the
    instance's class over its pixels (the Cityscapes instance evaluator ranks by it). ``crop``: bool
    [height, width] of the bbox; ``shape``: the image's [H, W]. ``mask`` builds the full-size boolean mask
    (an instance of a 2048x1024 frame is usually a few thousand pixels: the crop is what is kept and written).
    """

    train_id: int
    area: int
    bbox: list[int]
    score: float
    crop: np.ndarray
    shape: tuple[int, int]

    @property
    def box(self) -> tuple[slice, slice]:
        x, y, w, h = self.bbox
        return slice(y, y + h), slice(x, x + w)

    @property
    def mask(self) -> np.ndarray:
        full = np.zeros(self.shape, dtype=bool)
        full[self.box] = self.crop
        return full


def split_touching(
    component: np.ndarray, neck_ratio: float = 0.7, min_core: float = 2.0, levels: int = 48, max_pixels: int = 1 << 16
) -> np.ndarray:
    """Splits one connected boolean region into objects joined by narrow necks; int32 labels [H, W], 0 outside.

    Distance-transform watershed: every regional maximum of the distance to the region's edge seeds a basin
    (flooded by immersion over ``levels`` distance levels); two adjacent basins are merged back unless the
    "saddle" between them (the widest point of their shared boundary, as distance to the edge) is below
    ``neck_ratio`` times the smaller basin's peak. Basins whose peak is below ``min_core`` pixels (slivers)
    are always merged into a neighbour.
    """
    component = np.asarray(component, dtype=bool)
    labels = np.zeros(component.shape, dtype=np.int32)
    if not component.any():
        return labels
    ys, xs = np.nonzero(component)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = component[y0:y1, x0:x1]
    # Necks are judged relative to object size, so a large blob can be split at a coarser grid: this keeps
    # full-resolution Cityscapes frames (2048x1024) fast without changing where splits happen.
    step = int(np.ceil(np.sqrt(crop.size / max_pixels))) if crop.size > max_pixels else 1
    small = crop[::step, ::step] if step > 1 else crop
    parts = _split_core(small, neck_ratio, min_core / step, levels)
    if step > 1:
        parts = np.repeat(np.repeat(parts, step, axis=0), step, axis=1)[: crop.shape[0], : crop.shape[1]]
        parts = np.where(crop, parts, 0)
        missing = crop & (parts == 0)
        if missing.any() and parts.any():
            _, (iy, ix) = ndimage.distance_transform_edt(parts == 0, return_indices=True)
            parts[missing] = parts[iy[missing], ix[missing]]
        parts = _renumber(parts)
    labels[y0:y1, x0:x1] = parts
    return labels


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Renumbers positive labels 1..k in order of first pixel (row-major), for deterministic output."""
    flat = labels.ravel()
    values, first = np.unique(flat, return_index=True)
    order = [int(v) for _, v in sorted(zip(first, values)) if v > 0]
    remap = np.zeros(int(flat.max()) + 1 if flat.size else 1, dtype=np.int32)
    for k, value in enumerate(order, start=1):
        remap[value] = k
    return remap[labels]


def _split_core(crop: np.ndarray, neck_ratio: float, min_core: float, levels: int) -> np.ndarray:
    """``split_touching`` on a tight crop, at whatever resolution it is given."""
    # A one-pixel frame so the distance transform sees the region's edge on every side. Holes are filled
    # first: a hole inside an object is not evidence of two objects.
    crop = np.pad(crop, 1)
    dist = ndimage.distance_transform_edt(ndimage.binary_fill_holes(crop)) * crop
    basins = _immersion(dist, crop, levels)
    n = int(basins.max())
    if n <= 1:
        return crop[1:-1, 1:-1].astype(np.int32)
    peak = ndimage.maximum(dist, basins, index=np.arange(n + 1))
    # Saddle between adjacent basins: the largest min(dist) over pairs of neighbouring pixels across the border.
    saddle_table = np.full((n + 1) * (n + 1), -1.0)
    h, w = basins.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ya, yb = slice(dy, h), slice(0, h - dy)
        xa, xb = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
        a, b = basins[ya, xa], basins[yb, xb]
        border = (a != b) & (a > 0) & (b > 0)
        if border.any():
            lo, hi = np.minimum(a[border], b[border]), np.maximum(a[border], b[border])
            np.maximum.at(saddle_table, lo * (n + 1) + hi, np.minimum(dist[ya, xa], dist[yb, xb])[border])
    saddles = {(int(k) // (n + 1), int(k) % (n + 1)): float(saddle_table[k]) for k in np.nonzero(saddle_table >= 0)[0]}
    # Merge the weakest necks first (highest saddle relative to the smaller peak), union-find style.
    parent = list(range(n + 1))
    top = [float(p) for p in peak]

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (la, lb), saddle in sorted(
        saddles.items(), key=lambda kv: -kv[1] / max(min(peak[kv[0][0]], peak[kv[0][1]]), 1e-6)
    ):
        ra, rb = find(la), find(lb)
        if ra == rb:
            continue
        if saddle >= neck_ratio * min(top[ra], top[rb]) or min(top[ra], top[rb]) < min_core:
            parent[rb] = ra
            top[ra] = max(top[ra], top[rb])
    roots = np.array([find(i) for i in range(n + 1)], dtype=np.int32)
    merged = roots[basins]
    merged[~crop] = 0
    return _renumber(merged)[1:-1, 1:-1]


def _immersion(dist: np.ndarray, region: np.ndarray, levels: int) -> np.ndarray:
    """Watershed by immersion on ``-dist``: int32 basin labels over ``region`` (0 outside).

    Going down from the highest distance level, existing basins grow into the newly submerged pixels they
    touch (conditional dilation until stable), and submerged components touching no basin start new basins.
    """
    labels = np.zeros(dist.shape, dtype=np.int32)
    top = float(dist.max())
    count = 0
    # The submerged sets only grow as t falls, so a level that submerges no new pixel finds every submerged pixel
    # labelled already and changes nothing: skipped (a small object's few distinct distances make most of the
    # 48 levels such no-ops).
    inside = np.sort(dist[region])
    seen = -1
    for t in np.linspace(top, 0.0, num=max(2, levels), endpoint=False):
        submerged_count = inside.size - int(np.searchsorted(inside, t, side="left"))
        if submerged_count == seen:
            continue
        seen = submerged_count
        submerged = region & (dist >= t)
        while True:
            free = submerged & (labels == 0)
            if not free.any():
                break
            grown = ndimage.grey_dilation(labels, footprint=_EIGHT)
            take = free & (grown > 0)
            if not take.any():
                break
            labels[take] = grown[take]
        fresh, k = ndimage.label(submerged & (labels == 0), structure=_EIGHT)
        if k:
            labels[fresh > 0] = fresh[fresh > 0] + count
            count += k
    # Anything left (dist between 0 and the last level) joins the nearest basin.
    rest = region & (labels == 0)
    if rest.any() and count:
        _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        labels[rest] = labels[iy[rest], ix[rest]]
    return labels


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labelled, n = ndimage.label(mask, structure=_EIGHT)
    return labelled.astype(np.int32), int(n)


def _grow_into_border(objects: np.ndarray, border: np.ndarray) -> np.ndarray:
    """Gives each border pixel of a border region that touches an object to its nearest object."""
    if not objects.any() or not border.any():
        return objects
    regions, n = _components(border)
    touching = np.unique(regions[ndimage.binary_dilation(objects > 0, structure=_EIGHT) & border])
    reach = np.isin(regions, touching[touching > 0])
    _, (iy, ix) = ndimage.distance_transform_edt(objects == 0, return_indices=True)
    grown = objects.copy()
    grown[reach] = objects[iy[reach], ix[reach]]
    return grown


ScoreFn = Callable[[int, np.ndarray, np.ndarray], float]


def mean_probability(probabilities: np.ndarray) -> ScoreFn:
    """Score from a full [H, W, C] probability map: the class's mean probability over the pixels (ys, xs)."""
    return lambda train_id, ys, xs: float(probabilities[ys, xs, train_id].mean())


def extract_instances(
    class_ids: np.ndarray,
    probabilities: Optional[np.ndarray],
    instance_train_ids: Sequence[int],
    *,
    border_train_id: Optional[int] = None,
    min_area: int = 0,
    neck_ratio: float = 0.7,
    max_instances: Optional[int] = None,
    score: Optional[ScoreFn] = None,
) -> list[Instance]:
    """Instances of every class in ``instance_train_ids`` from a semantic map.

    Args:
      class_ids: int [H, W] predicted train ids.
      probabilities: float [H, W, C] class probabilities (for scores); ``None`` gives score 1.0 (unless
        ``score`` is given).
      instance_train_ids: train ids that are countable objects.
      border_train_id: the train id of a predicted boundary class (Pet trimap border), or ``None`` to split by
        shape (watershed).
      min_area: instances with fewer pixels are dropped (specks).
      neck_ratio: see ``split_touching``.
      max_instances: keep at most this many, the highest scores (ties: the earlier in the order below); ``None``
        keeps all.
      score: ``score(train_id, ys, xs)`` → the instance's score from its pixels (row-major order), instead of
        ``probabilities`` (inference computes the upsampled probabilities at those pixels only).
    Returns:
      Instances ordered by train id, then by first pixel in row-major order.
    """
    class_ids = np.asarray(class_ids)
    shape = (int(class_ids.shape[0]), int(class_ids.shape[1]))
    if score is None and probabilities is not None:
        score = mean_probability(probabilities)
    out: list[Instance] = []
    for train_id in instance_train_ids:
        mask = class_ids == train_id
        if not mask.any():
            continue
        if border_train_id is not None:
            # The model's border separates objects: interior components are the objects.
            objects, n = _components(mask)
            objects = _grow_into_border(objects, class_ids == border_train_id)
        else:
            objects = np.zeros(mask.shape, dtype=np.int32)
            components, count = _components(mask)
            n = 0
            for slc_index, slc in enumerate(ndimage.find_objects(components), start=1):
                if slc is None:
                    continue
                piece = components[slc] == slc_index
                if int(piece.sum()) < max(1, min_area):
                    continue  # every part of it would be smaller still, and dropped below
                parts = split_touching(piece, neck_ratio=neck_ratio)
                objects[slc][parts > 0] = parts[parts > 0] + n
                n += int(parts.max())
        del mask
        # Each object is handled inside its bounding box: the work is its size, not the frame's.
        for k, slc in enumerate(ndimage.find_objects(objects), start=1):
            if slc is None:
                continue
            crop = objects[slc] == k
            area = int(crop.sum())
            if area < max(1, min_area):
                continue
            ys, xs = np.nonzero(crop)
            y0, x0 = int(ys.min()), int(xs.min())
            bbox = [int(slc[1].start + x0), int(slc[0].start + y0), int(xs.max() - x0 + 1), int(ys.max() - y0 + 1)]
            crop = crop[y0 : y0 + bbox[3], x0 : x0 + bbox[2]]
            value = score(int(train_id), ys + slc[0].start, xs + slc[1].start) if score is not None else 1.0
            out.append(Instance(int(train_id), area, bbox, float(value), crop, shape))
    if max_instances is not None and len(out) > max_instances:
        # Highest scores first, the earlier instance on a tie; then back in the deterministic order.
        keep = sorted(sorted(range(len(out)), key=lambda i: -out[i].score)[:max_instances])
        out = [out[i] for i in keep]
    return out


def instance_id_map(instances: Sequence[Instance], native_semantic: np.ndarray, to_native: np.ndarray) -> np.ndarray:
    """The Cityscapes ``*_instanceIds.png`` encoding: uint16 [H, W].

    Pixels of an instance carry ``labelId * 1000 + k`` (k counts from 0 per class, in ``instances`` order);
    every other pixel carries its semantic native id (labelId), as in the official ground truth.
    """
    ids = np.asarray(native_semantic, dtype=np.uint16).copy()
    per_class: dict[int, int] = {}
    for inst in instances:
        native = int(to_native[inst.train_id])
        k = per_class.get(native, 0)
        per_class[native] = k + 1
        ids[inst.box][inst.crop] = native * 1000 + k
    return ids

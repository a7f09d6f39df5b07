"""The model's ``postprocess`` on the host, without the full-resolution score volume: class ids bit-identical.

The exported ``postprocess`` signature upsamples the model-size probabilities ``[Hm, Wm, C]`` bilinearly to the
image's own size and takes the argmax there. At Cityscapes size that is a ``2048 x 1024 x 19`` float32 volume
(160 MB) per image, and ~0.36 s of CPU for a 128x256 model, most of a frame's cost. Most output pixels do not need
it: bilinear interpolation is a convex combination of the four source pixels around it, so where those four agree
on the winning class *with a margin* (``MARGIN`` above the runner-up at every corner, far above float32 rounding)
the interpolated winner is that class too. Only the remaining pixels (near class boundaries) are interpolated, with
TensorFlow's own arithmetic (``tf.image.resize`` bilinear, half-pixel centres: the same float32 operations in the
same order, checked bit for bit by tests/test_upsample.py), and their argmax taken as ``pixels_graph.argmax_channels``
takes it (the first maximum wins). The result equals the signature's ``class_ids`` for every pixel.

Instances need the upsampled probability of one class over an instance's pixels (its score): ``channel_at``
interpolates that one channel at those pixels only, with the same arithmetic, so scores are bit-identical too.

Pure numpy; nothing here imports TensorFlow or Beam.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

# A corner's winner must beat every other class by this much for the shortcut. Interpolating values in [0, 1]
# takes six float32 roundings (two lerps of three operations), each at most 2**-24 of a value <= 1: a computed
# score is within 4e-7 of the exact convex combination, two scores' difference within 8e-7. 1e-5 is > 10x that.
MARGIN = np.float32(1e-5)
# Uncertain pixels are interpolated this many at a time, bounding the temporary [n, C] arrays (~20 MB at C = 19).
CHUNK = 1 << 16


class Axis(NamedTuple):
    """Per output row (or column): the two source indices and the weight of the second, as TF computes them."""

    lower: np.ndarray  # int64 [out]
    upper: np.ndarray  # int64 [out]
    lerp: np.ndarray  # float32 [out]


def axis_weights(in_size: int, out_size: int) -> Axis:
    """TF's bilinear weights (``compute_interpolation_weights`` with half-pixel centres), float32 throughout:
    ``in = (x + 0.5) * (in_size / out_size) - 0.5``, lower = max(floor(in), 0), upper = min(ceil(in), in - 1),
    lerp = in - floor(in)."""
    scale = np.float32(in_size) / np.float32(out_size)
    centre = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(centre)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(centre), in_size - 1).astype(np.int64)
    return Axis(lower, upper, (centre - floor).astype(np.float32))


class Geometry(NamedTuple):
    """Where an image's content lies in the model-size scores and how it maps to the image's own size."""

    content: np.ndarray  # float32 [h, w, C]: the content box of the model-size scores (all of it in stretch mode)
    rows: Axis
    cols: Axis


def geometry(probabilities: np.ndarray, height: int, width: int, size: Sequence[int], mode: str) -> Geometry:
    """``pixels_graph.restore_size``'s crop and weights for an image of ``height`` x ``width``."""
    from pipelines.shared.pixels_host import content_box_host  # the same float32 arithmetic as the graph's content_box

    top, left, h, w = content_box_host(height, width, size, mode)
    content = np.asarray(probabilities, dtype=np.float32)[top : top + h, left : left + w, :]
    return Geometry(content, axis_weights(content.shape[0], int(height)), axis_weights(content.shape[1], int(width)))


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    # TF's compute_lerp step: a + (b - a) * t, each operation rounded to float32 (no fused multiply-add).
    return a + (b - a) * t


def _argmax_first(values: np.ndarray) -> np.ndarray:
    """``pixels_graph.argmax_channels`` on [n, C]: compare-and-keep over the channels, the first maximum wins; a NaN
    never wins a comparison and, as the running maximum, stops later channels from winning (as in the graph)."""
    best = values[:, 0].copy()
    ids = np.zeros(values.shape[0], dtype=np.uint8)
    for channel in range(1, values.shape[1]):
        candidate = values[:, channel]
        ids[candidate > best] = channel
        np.maximum(best, candidate, out=best)  # propagates a NaN, as tf.maximum does: nothing beats it after
    return ids


def _interpolate(geo: Geometry, ys: np.ndarray, xs: np.ndarray, channel=None) -> np.ndarray:
    """Bilinear scores at output pixels (ys, xs) with TF's arithmetic: [n, C] for every channel, or [n] for one
    channel per pixel (``channel``: an int, or an int array [n])."""
    src = geo.content
    rows, cols = geo.rows, geo.cols
    y0, y1, x0, x1 = rows.lower[ys], rows.upper[ys], cols.lower[xs], cols.upper[xs]
    x_lerp, y_lerp = cols.lerp[xs], rows.lerp[ys]
    if channel is None:
        x_lerp, y_lerp = x_lerp[:, None], y_lerp[:, None]
        corners = src[y0, x0], src[y0, x1], src[y1, x0], src[y1, x1]
    else:
        corners = src[y0, x0, channel], src[y0, x1, channel], src[y1, x0, channel], src[y1, x1, channel]
    top = _lerp(corners[0], corners[1], x_lerp)
    bottom = _lerp(corners[2], corners[3], x_lerp)
    return _lerp(top, bottom, y_lerp)


def _cells(src: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per source cell (r..r+1, c..c+1, clipped at the edges): which classes can win anywhere inside it.

    Inside a cell every interpolated score is a convex combination of its four corners, so class k's score lies
    between its corner minimum and maximum. A class whose maximum is below the best corner minimum of any class,
    by ``MARGIN``, can never be the computed winner there. Returns (count, candidates, fill) over [h, w]:
    how many classes can win (0 where a NaN is involved), their indices in increasing order [h, w, K] (slots past
    ``count`` repeat the last one), and the only class where ``count`` is 1.
    """
    down = np.concatenate([src[1:], src[-1:]], axis=0)
    right = np.concatenate([src[:, 1:], src[:, -1:]], axis=1)
    diagonal = np.concatenate([down[:, 1:], down[:, -1:]], axis=1)
    high = np.maximum(np.maximum(src, right), np.maximum(down, diagonal))
    low = np.minimum(np.minimum(src, right), np.minimum(down, diagonal))
    del down, right, diagonal
    possible = high >= low.max(axis=-1, keepdims=True) - MARGIN  # a NaN anywhere: no candidate, exact path
    count = possible.sum(axis=-1).astype(np.int16)
    widest = max(int(count.max()), 1)
    # Stable sort of "not possible": the possible classes first, in increasing index order.
    order = np.argsort(~possible, axis=-1, kind="stable")[..., :widest].astype(np.int16)
    slot = np.minimum(np.arange(widest, dtype=np.int16), np.maximum(count, 1)[..., None] - 1)
    candidates = np.take_along_axis(order, slot.astype(np.intp), axis=-1)
    return count, candidates, candidates[..., 0]


def class_ids(probabilities: np.ndarray, height: int, width: int, size: Sequence[int], mode: str) -> np.ndarray:
    """uint8 [height, width]: the ``postprocess`` signature's ``class_ids`` (the argmax of the upsampled scores),
    computed without the upsampled volume. ``probabilities``: float32 [Hm, Wm, C], C <= 255."""
    geo = geometry(probabilities, height, width, size, mode)
    src = geo.content
    num = src.shape[-1]
    if num > 255:
        raise ValueError(f"{num} classes do not fit uint8 class ids")
    rows, cols = geo.rows, geo.cols
    count, candidates, only = _cells(src)
    # Each output pixel reads the cell at (its lower source row, its lower source column): upper is lower or
    # lower + 1, clipped at the last row/column as the cell is.
    code = np.where(count == 1, only, np.int16(-1))
    ids = code[:, cols.lower][rows.lower].astype(np.uint8)  # cells with several candidates are filled below
    # The output pixels of a cell form a block: the rows whose lower source row is r (lower is non-decreasing,
    # so they are contiguous) by the columns whose lower source column is c.
    row_start, row_len = _blocks(rows.lower, src.shape[0])
    col_start, col_len = _blocks(cols.lower, src.shape[1])
    has_pixels = (row_len[:, None] > 0) & (col_len[None, :] > 0)
    nan_cells = (count == 0) & has_pixels
    if nan_cells.any():  # NaN scores: every channel at each pixel, compared as the graph compares them
        ys, xs = np.nonzero(nan_cells[:, cols.lower][rows.lower])
        for start in range(0, ys.size, CHUNK):
            y, x = ys[start : start + CHUNK], xs[start : start + CHUNK]
            ids[y, x] = _argmax_first(_interpolate(geo, y, x))
    for n in np.unique(count[(count > 1) & has_pixels]):
        cell_rows, cell_cols = np.nonzero((count == n) & has_pixels)
        per_cell = int(row_len.max()) * int(col_len.max())
        step = max(1, CHUNK // per_cell)
        for start in range(0, cell_rows.size, step):
            r, c = cell_rows[start : start + step], cell_cols[start : start + step]
            _fill_blocks(ids, src, geo, r, c, candidates[r, c, : int(n)], row_start, row_len, col_start, col_len)
    return ids


def _blocks(lower: np.ndarray, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per source index: the first output index whose lower source index it is, and how many there are."""
    first = np.searchsorted(lower, np.arange(in_size), side="left")
    last = np.searchsorted(lower, np.arange(in_size), side="right")
    return first, last - first


def _fill_blocks(
    ids: np.ndarray,
    src: np.ndarray,
    geo: Geometry,
    r: np.ndarray,
    c: np.ndarray,
    channels: np.ndarray,
    row_start: np.ndarray,
    row_len: np.ndarray,
    col_start: np.ndarray,
    col_len: np.ndarray,
) -> None:
    """Interpolates the candidate ``channels`` [m, n] (increasing) over the output blocks of cells (r, c) [m]
    with TF's arithmetic and writes the first maximum's class into ``ids``.

    The corners are the cell's (r or r + 1, c or c + 1, clipped). A pixel whose upper source index is r + 1
    has that row's values; one whose upper index equals its lower one (the first rows before the first source
    centre, the last after the last, integral positions) has TF's a + (a - a) * t, exactly a: its "top" value.
    """
    h, w = src.shape[:2]
    r1, c1 = np.minimum(r + 1, h - 1), np.minimum(c + 1, w - 1)
    by, bx = int(row_len[r].max()), int(col_len[c].max())
    ys = row_start[r][:, None] + np.arange(by)  # [m, by]; past the block's length: padding, not written
    xs = col_start[c][:, None] + np.arange(bx)
    y_ok, x_ok = np.arange(by) < row_len[r][:, None], np.arange(bx) < col_len[c][:, None]
    ys_in, xs_in = np.minimum(ys, geo.rows.lerp.size - 1), np.minimum(xs, geo.cols.lerp.size - 1)
    y_lerp = geo.rows.lerp[ys_in][:, :, None]  # [m, by, 1]
    x_lerp = geo.cols.lerp[xs_in]  # [m, bx]
    one_row = (geo.rows.upper[ys_in] == geo.rows.lower[ys_in])[:, :, None]  # [m, by, 1]
    one_col = geo.cols.upper[xs_in] == geo.cols.lower[xs_in]  # [m, bx]
    best = winner = None
    for k in range(channels.shape[1]):
        ch = channels[:, k]
        tl, tr, bl, br = src[r, c, ch], src[r, c1, ch], src[r1, c, ch], src[r1, c1, ch]
        top = np.where(one_col, tl[:, None], _lerp(tl[:, None], tr[:, None], x_lerp))[:, None, :]  # [m, 1, bx]
        bottom = np.where(one_col, bl[:, None], _lerp(bl[:, None], br[:, None], x_lerp))[:, None, :]
        value = np.where(one_row, top, _lerp(top, bottom, y_lerp))  # [m, by, bx]
        if best is None:
            best, winner = value, np.broadcast_to(ch[:, None, None], value.shape).copy()
        else:  # increasing channel order: a later channel wins only when strictly greater
            better = value > best
            winner[better] = np.broadcast_to(ch[:, None, None], value.shape)[better]
            np.maximum(best, value, out=best)
    ok = y_ok[:, :, None] & x_ok[:, None, :]
    ids[np.broadcast_to(ys[:, :, None], ok.shape)[ok], np.broadcast_to(xs[:, None, :], ok.shape)[ok]] = winner[
        ok
    ].astype(np.uint8)


def channel_at(
    probabilities: np.ndarray,
    height: int,
    width: int,
    size: Sequence[int],
    mode: str,
    channel: int,
    ys: np.ndarray,
    xs: np.ndarray,
) -> np.ndarray:
    """float32 [n]: the upsampled probability of ``channel`` at output pixels (ys, xs), bit-identical to the
    signature's ``probabilities[ys, xs, channel]``."""
    geo = geometry(probabilities, height, width, size, mode)
    return _interpolate(geo, np.asarray(ys), np.asarray(xs), int(channel))


def mean_score(
    probabilities: np.ndarray, height: int, width: int, size: Sequence[int], mode: str
) -> Callable[[int, np.ndarray, np.ndarray], float]:
    """An instance score function for ``instances.extract_instances``: the mean upsampled probability of the
    class over the instance's pixels, as ``probabilities[ys, xs, c].mean()`` of the signature's output."""
    geo = geometry(probabilities, height, width, size, mode)
    return lambda train_id, ys, xs: float(_interpolate(geo, np.asarray(ys), np.asarray(xs), int(train_id)).mean())

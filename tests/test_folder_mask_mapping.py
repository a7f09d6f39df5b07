"""The folder dataset's ``map_mask`` (``pipelines/datasets/_folder_table.py``): lookup tables instead of a sort of
every pixel, with the same train ids and the same refusals, byte for byte, as the ``np.unique`` mapping it
replaced (kept below as the reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.datasets import _folder_table
from pipelines.datasets._folder_table import CLASSES_FILE, FolderTable, map_mask, parse_classes
from schemas import labels


def reference_map_mask(array: np.ndarray, table: FolderTable) -> np.ndarray:
    """``map_mask`` as it was before the lookup tables (one ``np.unique`` over every pixel)."""
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
        shown = [show(v) for v in bad]
        listed = "[" + ", ".join(shown[:10]) + (", ..." if len(shown) > 10 else "") + "]"
        raise ValueError(f"mask has {what} {listed} that {CLASSES_FILE} does not list")
    lut = np.asarray([train[int(v)] for v in found], dtype=np.uint8)
    return lut[inverse.reshape(array.shape[:2])]


def make_table(rng: np.random.Generator, n: int, n_ignore: int) -> FolderTable:
    values = rng.choice(65536, size=n + n_ignore, replace=False).tolist()
    colours = rng.choice(1 << 24, size=n + n_ignore, replace=False).tolist()
    rgb = [[c >> 16, (c >> 8) & 255, c & 255] for c in colours]
    classes = [{"name": f"c{i}", "value": values[i], "color": rgb[i]} for i in range(n)]
    return parse_classes(json.dumps({"classes": classes, "ignore": values[n:], "ignore_colors": rgb[n:]}))


def outcome(fn, array: np.ndarray, table: FolderTable) -> tuple:
    try:
        out = fn(array, table)
    except ValueError as err:
        return ("refused", str(err))
    return (out.dtype.str, out.shape, out.tobytes())


def test_random_masks_map_byte_identical_to_the_np_unique_mapping():
    rng = np.random.default_rng(7)
    for n, n_ignore in ((2, 0), (3, 1), (40, 2), (254, 1), (255, 0)):  # 255: every uint8 train id is taken
        table = make_table(rng, n, n_ignore)
        values = np.asarray(table.values + table.ignore_values)
        colours = np.asarray(table.colours + table.ignore_colours, dtype=np.uint8)
        picks = rng.integers(0, len(values), size=(37, 53))
        masks = [values[picks].astype(np.int32), values[picks].astype(np.uint16), colours[picks]]
        if values.max() < 256:
            masks.append(values[picks].astype(np.uint8))
        masks += [m[:0] for m in masks]  # empty masks too
        for mask in masks:
            expected = outcome(reference_map_mask, mask, table)
            assert expected[0] != "refused", expected
            assert outcome(map_mask, mask, table) == expected, (n, mask.dtype, mask.shape)
            # One stray pixel (a value or colour the table lacks) is refused with the same message.
            stray = mask.copy()
            if stray.size:
                listed = set(values.tolist()) if mask.ndim == 2 else {tuple(c) for c in colours.tolist()}
                unlisted = (v if mask.ndim == 2 else (0, v >> 8, v & 255) for v in range(256 * 256))
                stray[5, 7] = next(v for v in unlisted if v not in listed)
                refused = outcome(reference_map_mask, stray, table)
                assert refused[0] == "refused" and outcome(map_mask, stray, table) == refused


def test_a_large_mask_with_many_stray_values_names_them_and_valid_masks_need_no_sort(monkeypatch):
    rng = np.random.default_rng(11)
    table = parse_classes(
        json.dumps(
            {
                "classes": [
                    {"name": "a", "value": 0, "color": [0, 0, 0]},
                    {"name": "b", "value": 1, "color": [128, 64, 128]},
                    {"name": "c", "value": 7, "color": [0, 0, 142]},
                ],
                "ignore": [255],
                "ignore_colors": [[255, 255, 255]],
            }
        )
    )
    index = rng.integers(0, 65536, size=(480, 640)).astype(np.int32)  # ~65,000 distinct values, all but 4 stray
    palette = rng.integers(0, 256, size=(5000, 3), dtype=np.uint8)
    rgb = palette[rng.integers(0, len(palette), size=(480, 640))]  # ~5000 distinct colours, all but ~0 stray
    signed = index.copy()
    signed[0, :3] = [-5, 70000, 1 << 30]  # outside any 16-bit PNG's values: refused, named first/last as before
    for mask in (index, rgb, signed, index.astype(np.uint16)):
        expected = outcome(reference_map_mask, mask, table)
        assert expected[0] == "refused" and expected[1].endswith(", ...] that classes.json does not list")
        assert outcome(map_mask, mask, table) == expected
    assert str(pytest.raises(ValueError, map_mask, signed, table).value).startswith("mask has values [-5, 2, 3, ")
    # A valid mask is mapped by table look-ups alone: no sort of its pixels (the 12-25 ms np.unique it replaced).
    valid_index = rng.choice(np.array([0, 1, 7, 255], np.int32), size=(480, 640))
    valid_rgb = np.asarray(table.colours + table.ignore_colours, np.uint8)[rng.integers(0, 4, size=(480, 640))]
    expected = [reference_map_mask(m, table) for m in (valid_index, valid_rgb)]

    def no_sort(*args, **kwargs):
        raise AssertionError("map_mask sorted a valid mask's pixels")

    monkeypatch.setattr(_folder_table.np, "unique", no_sort)
    for mask, ids in zip((valid_index, valid_rgb), expected):
        out = map_mask(mask, table)
        assert out.dtype == np.uint8 and out.tobytes() == ids.tobytes()

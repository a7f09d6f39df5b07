"""The pixel rules on the host (PIL and numpy): what preprocess runs in the Beam workers when it makes records.

The rules and their parameters are ``pipelines.shared.pixel_rules``; each function here is the twin of the graph
op of the same name without ``_host`` in ``pipelines.shared.pixels_graph`` (what the SavedModel serves with), and
tests/test_pixel_rules.py pins each pair to the same pixels. No TensorFlow here: evaluate's and preprocess's
processes use these without paying TensorFlow's import.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from PIL import Image

from pipelines.shared.pixel_rules import (
    EXIF_HEADER,
    EXIF_ORIENTATION_TAG,
    JPEG_APP0,
    JPEG_APP15,
    JPEG_COM,
    JPEG_DRAFT_RATIOS,
    JPEG_MAGIC,
    MAX_JPEG_SEGMENTS,
    TIFF_SHORT,
    check_resize_mode,
)


def jpeg_draft_ratio_host(height: int, width: int, size: Sequence[int]) -> int:
    """The 1/ratio scale at which preprocess decodes a ``height`` x ``width`` JPEG for the ``size`` canvas.

    This is PIL's ``Image.draft`` rule (``pipelines.common.decode.decode_rgb``): the largest of 8, 4, 2, 1 that is at
    most ``min(width // size[1], height // size[0])`` (1 for an image smaller than the canvas), so the decoded
    image still covers the canvas.
    """
    scale = min(int(width) // int(size[1]), int(height) // int(size[0]))
    return next((r for r in reversed(JPEG_DRAFT_RATIOS) if scale >= r), 1)


def content_box_host(height: int, width: int, size: Sequence[int], mode: str) -> tuple[int, int, int, int]:
    """``content_box`` in plain Python: (top, left, h, w) ints, the same float32 arithmetic, the same result."""
    check_resize_mode(mode)
    target_h, target_w = int(size[0]), int(size[1])
    if mode == "stretch":
        return 0, 0, target_h, target_w
    h, w = np.float32(height), np.float32(width)
    scale = min(np.float32(target_h) / h, np.float32(target_w) / w)
    # tf.round rounds half to even, like np.rint.
    new_h = int(np.clip(np.rint(h * scale), 1, target_h))
    new_w = int(np.clip(np.rint(w * scale), 1, target_w))
    return (target_h - new_h) // 2, (target_w - new_w) // 2, new_h, new_w


def _pad_host(array: np.ndarray, top: int, left: int, size: Sequence[int], fill: int) -> np.ndarray:
    h, w = array.shape[:2]
    pad = [(top, int(size[0]) - h - top), (left, int(size[1]) - w - left)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="constant", constant_values=fill)


def resize_image_host(
    image: np.ndarray | Image.Image,
    size: Sequence[int],
    mode: str = "stretch",
    content_hw: Sequence[int] | None = None,
) -> np.ndarray | Image.Image:
    """uint8 RGB ``[H, W, 3]`` → uint8 ``[size[0], size[1], 3]``: ``resize_image`` on the host (±1 grey level).

    ``image`` may also be an RGB ``PIL.Image``; the result is then one too. A preprocess record goes from decode
    to encode as a PIL image: each hop through numpy copies the frame while holding the GIL, which is what
    limits a threaded runner.

    ``content_hw``: the size that decides the ``pad`` geometry when ``image`` is a downscaled decode of a larger
    original (JPEG draft decoding); defaults to the image's own size.
    """
    as_image = isinstance(image, Image.Image)
    source = image if as_image else Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    ref_h, ref_w = content_hw if content_hw is not None else (source.height, source.width)
    top, left, h, w = content_box_host(ref_h, ref_w, size, mode)
    resized = source.resize((w, h), Image.Resampling.BILINEAR)
    if mode != "pad":
        return resized if as_image else np.asarray(resized)
    padded = _pad_host(np.asarray(resized), top, left, size, 0)
    return Image.fromarray(padded, "RGB") if as_image else padded


@functools.lru_cache(maxsize=256)
def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source row/column of each output pixel, exactly as TF's nearest-neighbour resize picks it
    (half-pixel centres, float32 scale, floor, clamped). Cached (a job resizes to one size from a few source
    sizes), so the array is read-only."""
    scale = np.float32(in_size) / np.float32(out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
    indices = np.minimum(np.floor(centres).astype(np.int64), in_size - 1)
    indices.flags.writeable = False
    return indices


def resize_mask_host(
    mask: np.ndarray,
    size: Sequence[int],
    mode: str = "stretch",
    ignore_label: int = 255,
    content_hw: Sequence[int] | None = None,
) -> np.ndarray:
    """Label map ``[H, W]`` → same dtype ``[size[0], size[1]]``: ``resize_mask`` on the host, pixel-identical."""
    ref_h, ref_w = content_hw if content_hw is not None else mask.shape[:2]
    top, left, h, w = content_box_host(ref_h, ref_w, size, mode)
    # Rows, then columns: two contiguous gathers, ~2.5x faster than one broadcast 2-D fancy index.
    resized = mask.take(nearest_indices(mask.shape[0], h), axis=0).take(nearest_indices(mask.shape[1], w), axis=1)
    return _pad_host(resized, top, left, size, ignore_label) if mode == "pad" else resized


def composite_on_black_host(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``composite_on_black`` on the host: uint8 ``(c * a + 127) // 255`` for colour ``[..., 3]``, alpha ``[...]``."""
    return ((rgb.astype(np.uint32) * alpha.astype(np.uint32)[..., None] + 127) // 255).astype(np.uint8)


def sixteen_to_eight_host(samples: np.ndarray) -> np.ndarray:
    """16-bit samples (any int dtype, clipped to 0..65535) → uint8 high byte, the rule's ``v >> 8``."""
    return (np.clip(samples, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)


def cmyk_to_rgb_host(cmyk: np.ndarray, adobe: bool) -> np.ndarray:
    """Pillow's CMYK array of a JPEG (Pillow hands out the samples inverted) → uint8 RGB by the rule.

    ``adobe``: the file has an APP14 "Adobe" marker (inverted samples: 255 = no ink).
    """
    values = cmyk.astype(np.uint32)
    # Pillow inverts every CMYK JPEG's samples; libjpeg's (TF's) are 255 - values. In Adobe polarity the rule
    # multiplies those, in plain polarity their inverse, which is Pillow's values.
    ink = 255 - values if adobe else values
    return (ink[..., :3] * ink[..., 3:4] // 255).astype(np.uint8)


def exif_orientation_host(data: bytes) -> int:
    """``exif_orientation`` in Python: the same walk, the same answer (1..8; 1 when there is none)."""
    size = len(data)
    if data[:3] != JPEG_MAGIC:
        return 1
    pos, tiff, end = 2, -1, -1
    for _ in range(MAX_JPEG_SEGMENTS):
        if (
            pos + 4 > size
            or data[pos] != 0xFF
            or not (JPEG_APP0 <= data[pos + 1] <= JPEG_APP15 or data[pos + 1] == JPEG_COM)
        ):
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            break
        if data[pos + 1] == 0xE1 and pos + 10 <= size and data[pos + 4 : pos + 10] == EXIF_HEADER:
            tiff, end = pos + 10, min(pos + 2 + length, size)
            break
        pos += 2 + length
    if tiff < 0 or tiff + 8 > end or data[tiff : tiff + 2] not in (b"II", b"MM"):
        return 1
    order = "little" if data[tiff : tiff + 2] == b"II" else "big"

    def uint(at: int, n: int) -> int:
        return int.from_bytes(data[at : at + n], order)

    ifd = tiff + uint(tiff + 4, 4)
    if uint(tiff + 2, 2) != 42 or ifd + 2 > end:
        return 1
    for k in range(max(0, min(uint(ifd, 2), (end - ifd - 2) // 12))):
        entry = ifd + 2 + 12 * k
        if uint(entry, 2) == EXIF_ORIENTATION_TAG:
            value = uint(entry + 8, 2) if uint(entry + 2, 2) == TIFF_SHORT and uint(entry + 4, 4) == 1 else 1
            return value if 1 <= value <= 8 else 1
    return 1


def orientation_swaps_axes(orientation: int) -> bool:
    """Whether EXIF ``orientation`` turns the image by 90 degrees (displayed height = stored width)."""
    return orientation >= 5


def apply_orientation_host(array: np.ndarray, orientation: int) -> np.ndarray:
    """``apply_orientation`` on the host for ``[H, W, ...]`` arrays (``PIL.ImageOps.exif_transpose``)."""
    if orientation >= 5:
        array = array.swapaxes(0, 1)
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    flips = {1: (), 2: (1,), 3: (0, 1), 4: (0,)}.get(orientation, ())
    return np.ascontiguousarray(np.flip(array, flips) if flips else array)

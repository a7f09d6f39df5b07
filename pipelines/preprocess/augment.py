"""Seeded offline augmentation: extra training records per example, reproducible from (seed, id, copy).

Geometric ops (horizontal flip, scale-and-crop, small shifts) are expressed as one crop window in normalised
coordinates plus a flip, applied identically to the image and its masks *before* they are resized to the
record size, so image and labels stay aligned whatever resolution each was decoded at; masks are cropped,
never interpolated. Colour jitter (brightness, contrast, saturation) touches the image only.

The ranges are ``pipelines.shared.augmentation.AUGMENTATION``, which the trainer's online augmentation reads too.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.common.hashing import stable_int
from pipelines.shared.augmentation import AUGMENTATION


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One copy's augmentation. ``box`` = (top, left, bottom, right) as fractions of the image."""

    flip: bool
    box: tuple[float, float, float, float]
    brightness: float  # added, in 0..255 pixel units
    contrast: float  # multiplies the distance from the image mean
    saturation: float  # multiplies the distance from the pixel's grey value


IDENTITY = AugmentParams(False, (0.0, 0.0, 1.0, 1.0), 0.0, 1.0, 1.0)


def augment_params(
    seed: int,
    example_id: str,
    copy: int,
    *,
    min_scale: float = AUGMENTATION.offline_min_crop,
    max_shift: float = AUGMENTATION.offline_max_shift,
) -> AugmentParams:
    """The parameters of copy ``copy`` (>= 1) of ``example_id``; copy 0 is the original (identity)."""
    if copy == 0:
        return IDENTITY
    rng = np.random.default_rng([seed & 0xFFFFFFFF, stable_int("augment", example_id) & 0xFFFFFFFF, copy])
    scale = float(rng.uniform(min_scale, 1.0))
    # A window of `scale` x `scale`, placed at random inside the image, then nudged by a small shift; the
    # shift may push it past the edge, which is clamped (a shift that loses a sliver rather than padding).
    top = float(rng.uniform(0.0, 1.0 - scale)) + float(rng.uniform(-max_shift, max_shift))
    left = float(rng.uniform(0.0, 1.0 - scale)) + float(rng.uniform(-max_shift, max_shift))
    top = min(max(top, 0.0), 1.0 - scale)
    left = min(max(left, 0.0), 1.0 - scale)
    return AugmentParams(
        flip=bool(rng.uniform() < AUGMENTATION.flip_probability),
        box=(top, left, top + scale, left + scale),
        brightness=float(rng.uniform(-AUGMENTATION.max_brightness_delta, AUGMENTATION.max_brightness_delta)),
        contrast=float(rng.uniform(AUGMENTATION.min_contrast, AUGMENTATION.max_contrast)),
        saturation=float(rng.uniform(AUGMENTATION.min_saturation, AUGMENTATION.max_saturation)),
    )


def crop_box_pixels(height: int, width: int, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Normalised box → integer (top, left, bottom, right) on a ``height`` x ``width`` array, never empty."""
    top = min(int(round(box[0] * height)), height - 1)
    left = min(int(round(box[1] * width)), width - 1)
    bottom = max(int(round(box[2] * height)), top + 1)
    right = max(int(round(box[3] * width)), left + 1)
    return top, left, min(bottom, height), min(right, width)


def apply_geometry(array: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Crops and flips an image ``[h, w, c]`` or a mask ``[h, w]`` (no interpolation: labels stay exact)."""
    if params == IDENTITY:
        return array
    top, left, bottom, right = crop_box_pixels(array.shape[0], array.shape[1], params.box)
    out = array[top:bottom, left:right]
    if params.flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def apply_colour(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Colour jitter of a uint8 RGB image ``[h, w, 3]`` (image only, never masks)."""
    if params.brightness == 0.0 and params.contrast == 1.0 and params.saturation == 1.0:
        return image
    x = image.astype(np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = grey[..., None] + (x - grey[..., None]) * params.saturation
    x = x.mean() + (x - x.mean()) * params.contrast + params.brightness
    return np.clip(np.round(x), 0, 255).astype(np.uint8)

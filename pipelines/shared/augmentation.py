"""The one augmentation parameter set, read by preprocess's offline copies and the trainer's online batches.

Both paths draw a horizontal flip, a geometric crop and colour jitter (brightness, contrast, saturation) from the
same ranges below. They differ in *which* geometric transform they apply, so each keeps its own explicitly named
numbers (changing either would change its outputs):

- offline (``pipelines.preprocess.augment``): a crop window of ``offline_min_crop``..1 of the source image's sides,
  nudged by up to ``offline_max_shift`` of a side, cut from the full-resolution source before it is resized to the
  record size (masks cropped, never interpolated);
- online (``trainer.data.augment``): the record is zoomed by ``online_min_zoom``..``online_max_zoom`` (image
  bilinear, labels nearest) and a record-size window is cut at random.

Light: no TensorFlow, no numpy; the trainer may import it (``pipelines.shared``).
"""

from __future__ import annotations

import dataclasses

__all__ = ["AUGMENTATION", "AugmentationParameters"]


@dataclasses.dataclass(frozen=True)
class AugmentationParameters:
    """Ranges of the seeded augmentation draws. Colour values are in 0..255 pixel units / factors."""

    flip_probability: float = 0.5
    max_brightness_delta: float = 20.0  # added to every channel, drawn from [-delta, delta]
    min_contrast: float = 0.8  # the distance from the image mean is multiplied by [min, max]
    max_contrast: float = 1.2
    min_saturation: float = 0.8  # the distance from the pixel's grey value is multiplied by [min, max]
    max_saturation: float = 1.2
    # Offline: the crop window's side as a fraction of the source's, and the random shift of its corner.
    offline_min_crop: float = 0.75
    offline_max_shift: float = 0.08
    # Online: the zoom factor of the record before a record-size window is cut from it.
    online_min_zoom: float = 1.0
    online_max_zoom: float = 1.3


AUGMENTATION = AugmentationParameters()

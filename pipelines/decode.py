"""Content-based decoding of dataset files with PIL, and encoding of record images and masks.

Files are decoded by what their bytes are, never by their extension: the real Oxford-IIIT Pet archive has PNG
(RGBA) and GIF (palette) images named ``.jpg``, grayscale and CMYK JPEGs, truncated JPEGs and ``.mat`` files
among the images. Every mode becomes RGB; anything PIL cannot fully decode raises ``DecodeError`` with a
one-line reason that ends up in the dead letter.

Large JPEGs are downscaled while decoding (``Image.draft``: the codec skips DCT coefficients and decodes at
1/2, 1/4 or 1/8 scale), never below the size the record needs, which is most of the speed-up over decoding at
full size and resizing afterwards.
"""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageFile

# PIL must never silently pad a truncated file with grey: a truncated image is a dead letter.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pet photos are small, Cityscapes frames are 2 Mpx; anything vastly larger is suspicious rather than data.
Image.MAX_IMAGE_PIXELS = 200_000_000

# zlib level of record PNGs: 3 encodes photos about twice as fast as the default 6 for ~15% larger files;
# PNG encoding is the largest per-record cost, so this is the better trade for a preprocessing job.
PNG_COMPRESS_LEVEL = 3

IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")


class DecodeError(ValueError):
    """An input file that is not a readable image/mask; the message is the dead-letter reason."""


def _open(data: bytes, what: str) -> Image.Image:
    if not data:
        raise DecodeError(f"empty {what} file")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as e:  # PIL raises UnidentifiedImageError, SyntaxError, ... on garbage
        raise DecodeError(f"not a readable {what} ({type(e).__name__}: {e})") from None
    if image.format not in IMAGE_FORMATS:
        raise DecodeError(f"unsupported {what} format {image.format}")
    return image


def _load(image: Image.Image, what: str) -> None:
    try:
        image.load()
    except Exception as e:  # OSError "image file is truncated", zlib errors, broken palette ...
        raise DecodeError(f"corrupt or truncated {what} {image.format} ({type(e).__name__}: {e})") from None


def decode_rgb(data: bytes, min_size: Optional[Sequence[int]] = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decodes image bytes (any supported format, any mode) to uint8 RGB ``[h, w, 3]``.

    Args:
      data: the file's bytes.
      min_size: (height, width) the caller will resize to; JPEGs are decoded at the smallest 1/2^k scale that
        still covers it in both dimensions.

    Returns:
      The RGB array (possibly draft-downscaled) and the image's full (height, width) as stored in the file,
      which is what must match its mask.
    """
    image = _open(data, "image")
    full_size = (image.height, image.width)
    if image.format == "JPEG" and min_size is not None:
        # draft() takes (width, height) and keeps the result at least that large.
        image.draft("RGB", (int(min_size[1]), int(min_size[0])))
    _load(image, "image")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels composited on black, so their (arbitrary) stored colour does not leak in.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        # CMYK (Adobe-inverted or not, PIL handles both), L, P, I;16 ... → RGB.
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8), full_size


def decode_label_map(data: bytes, what: str = "mask", bits: int = 8) -> np.ndarray:
    """Decodes a single-channel label map (PNG of ids) to ``[h, w]`` uint8 (``bits=8``) or int32 (16)."""
    image = _open(data, what)
    _load(image, what)
    if image.mode in ("RGB", "RGBA"):
        raise DecodeError(f"{what} is a colour image ({image.mode}), expected a single-channel label map")
    if image.mode == "P":
        # A palette PNG's pixel values are the indices, which is what label maps store.
        array = np.asarray(image)
    else:
        array = np.asarray(image)
    if array.ndim != 2:
        raise DecodeError(f"{what} has shape {array.shape}, expected [height, width]")
    if bits == 8:
        if array.max(initial=0) > 255:
            raise DecodeError(f"{what} has values above 255")
        return array.astype(np.uint8)
    return array.astype(np.int32)


def encode_image(array: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
    """uint8 RGB ``[h, w, 3]`` → PNG or JPEG bytes (deterministic: fixed settings, no timestamps)."""
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(array, "RGB").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif image_format == "jpeg":
        Image.fromarray(array, "RGB").save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
        raise ValueError(f"unknown image format {image_format!r}")
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """uint8 ``[h, w]`` train ids → single-channel 8-bit PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), "L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_instance_mask(instances: np.ndarray) -> bytes:
    """Cityscapes instance ids ``[h, w]`` (< 65536) → 16-bit single-channel PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(instances, dtype=np.uint16)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()

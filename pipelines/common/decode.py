"""Content-based decoding of dataset files with PIL, and encoding of record images and masks.

Files are decoded by what their bytes are, never by their extension: the real Oxford-IIIT Pet archive has PNG
(RGBA) and GIF (palette) images named ``.jpg``, grayscale and CMYK JPEGs, truncated JPEGs and ``.mat`` files
among the images. Every mode becomes 8-bit RGB by the one pixel conversion rule of ``pipelines.shared.pixel_rules``
(16-bit samples keep their high byte, alpha is composited on black with ``(c * a + 127) // 255``, CMYK by libjpeg's
rule, JPEG EXIF orientation applied), which the serving graph's TF decoder follows pixel for pixel; anything PIL
cannot fully decode raises ``DecodeError`` with a one-line reason that ends up in the dead letter. Reasons never
carry object addresses (PIL names the ``BytesIO`` it was given), so dead letters are byte-identical across runs.

Large JPEGs are downscaled while decoding (``Image.draft``: the codec skips DCT coefficients and decodes at
1/2, 1/4 or 1/8 scale), never below the size the record needs, which is most of the speed-up over decoding at
full size and resizing afterwards.
"""

from __future__ import annotations

import io
import re
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageFile

from pipelines.common.label_png import encode_label_png
from pipelines.shared import pixels_host

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


# "<_io.BytesIO object at 0x7f…>" and the like: a different text on every run.
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable_reason(text: object) -> str:
    """``text`` without object reprs/addresses, so the same bad file gives the same reason on every run."""
    return _ADDRESS.sub("", _OBJECT_REPR.sub("", str(text)))


def _open(data: bytes, what: str) -> Image.Image:
    if not data:
        raise DecodeError(f"empty {what} file")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as e:  # PIL raises UnidentifiedImageError, SyntaxError, ... on garbage
        raise DecodeError(f"not a readable {what} ({type(e).__name__}: {stable_reason(e)})") from None
    if image.format not in IMAGE_FORMATS:
        raise DecodeError(f"unsupported {what} format {image.format}")
    return image


def _load(image: Image.Image, what: str) -> None:
    try:
        image.load()
    except Exception as e:  # OSError "image file is truncated", zlib errors, broken palette ...
        raise DecodeError(
            f"corrupt or truncated {what} {image.format} ({type(e).__name__}: {stable_reason(e)})"
        ) from None


def _has_alpha(image: Image.Image) -> bool:
    """Whether the rule composites ``image`` on black: an alpha band, or a palette's transparency (PNG tRNS of a
    palette, a GIF's transparent index); not a PNG grey/RGB colour key, not a BMP's fourth byte."""
    if image.format == "BMP":
        return False
    if image.mode in ("RGBA", "LA", "PA"):
        return True
    return "transparency" in image.info and (image.mode == "P" or (image.format == "GIF" and image.mode == "L"))


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """A loaded PIL image → uint8 RGB ``[h, w, 3]`` by the rule of ``pipelines.shared.pixel_rules`` (orientation
    aside)."""
    if image.mode == "CMYK":
        return pixels_host.cmyk_to_rgb_host(np.asarray(image), adobe="adobe" in image.info)
    if image.mode.startswith("I;16") or image.mode == "I":
        # Pillow clips 16-bit grey to 255 when converting; the rule keeps the high byte instead.
        grey = pixels_host.sixteen_to_eight_host(np.asarray(image))
        return np.repeat(grey[..., None], 3, axis=2)
    if _has_alpha(image):
        rgba = np.asarray(image.convert("RGBA"))
        return pixels_host.composite_on_black_host(rgba[..., :3], rgba[..., 3])
    # 1, L, P, RGB, YCbCr, ... (16-bit colour PNGs arrive as 8-bit RGB/RGBA: Pillow keeps the high byte).
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def decode_rgb_image(data: bytes, min_size: Optional[Sequence[int]] = None) -> tuple[Image.Image, tuple[int, int]]:
    """``decode_rgb``, as an 8-bit RGB ``PIL.Image`` without metadata (``info``: nothing of the source file's
    travels into an image encoded from it).

    An RGB source already displayed upright (most photos) is returned as decoded, without a copy through numpy.
    """
    image = _open(data, "image")
    orientation = pixels_host.exif_orientation_host(data) if image.format == "JPEG" else 1
    swaps = pixels_host.orientation_swaps_axes(orientation)
    full_size = (image.width, image.height) if swaps else (image.height, image.width)
    if image.format == "JPEG" and min_size is not None:
        # draft() takes the stored image's (width, height) and keeps the result at least that large; a turned
        # image's canvas turns with it (the serving graph picks its decode scale the same way).
        need_h, need_w = int(min_size[0]), int(min_size[1])
        image.draft("RGB", (need_h, need_w) if swaps else (need_w, need_h))
    _load(image, "image")
    if image.mode == "RGB" and orientation == 1 and not _has_alpha(image):
        image.info = {}
        return image, full_size
    rgb = pixels_host.apply_orientation_host(to_rgb_array(image), orientation)
    return Image.fromarray(rgb, "RGB"), full_size


def decode_rgb(data: bytes, min_size: Optional[Sequence[int]] = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decodes image bytes (any supported format, any mode) to uint8 RGB ``[h, w, 3]``, as displayed.

    Args:
      data: the file's bytes.
      min_size: (height, width) the caller will resize to; JPEGs are decoded at the smallest 1/2^k scale that
        still covers it in both dimensions.

    Returns:
      The RGB array (possibly draft-downscaled), turned by its EXIF orientation, and the image's full (height,
      width) as displayed (the stored size, swapped for orientations 5..8), which is what must match its mask.
    """
    image, full_size = decode_rgb_image(data, min_size)
    return np.asarray(image), full_size


def decode_label_map(data: bytes, what: str = "mask", bits: int = 8) -> np.ndarray:
    """Decodes a single-channel label map (PNG of ids) to ``[h, w]`` uint8 (``bits=8``) or int32 (16)."""
    image = _open(data, what)
    _load(image, what)
    if image.mode in ("RGB", "RGBA"):
        raise DecodeError(f"{what} is a colour image ({image.mode}), expected a single-channel label map")
    # A palette PNG's pixel values are the indices, which is what label maps store.
    array = np.asarray(image)
    if array.ndim != 2:
        raise DecodeError(f"{what} has shape {array.shape}, expected [height, width]")
    if bits == 8:
        if array.dtype == np.uint8:  # modes L and P, every 8-bit label PNG: nothing to check or convert
            return array
        if array.max(initial=0) > 255:
            raise DecodeError(f"{what} has values above 255")
        return array.astype(np.uint8)
    return array.astype(np.int32)


def encode_image(image: np.ndarray | Image.Image, image_format: str, jpeg_quality: int = 95) -> bytes:
    """uint8 RGB ``[h, w, 3]``, or an RGB ``PIL.Image`` without metadata (``decode_rgb_image``), → PNG or JPEG
    bytes (deterministic: fixed settings, no timestamps)."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image, "RGB")
    elif image.mode != "RGB" or image.info:
        raise ValueError(f"encode_image takes RGB images without metadata, got {image.mode} with {sorted(image.info)}")
    buf = io.BytesIO()
    if image_format == "png":
        image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif image_format == "jpeg":
        image.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
        raise ValueError(f"unknown image format {image_format!r}")
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """uint8 ``[h, w]`` train ids → single-channel 8-bit PNG, by ``label_png`` (the writer inference's masks use:
    faster than Pillow on label maps and about as small). ``ValueError`` for another dtype."""
    return encode_label_png(mask)


def encode_instance_mask(instances: np.ndarray) -> bytes:
    """Cityscapes instance ids ``[h, w]`` (< 65536) → 16-bit single-channel PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(instances, dtype=np.uint16)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()

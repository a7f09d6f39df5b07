"""The pixel rules segflow applies to every image, and their parameters: defined once, applied twice.

Preprocess brings images to the model's size on the host (``pipelines.shared.pixels_host``: PIL and numpy, in the
Beam workers, where a TF op call per image cost more than decoding the image); the exported SavedModel and the
trainer do it in TensorFlow graph ops (``pipelines.shared.pixels_graph``). The two paths are the same geometry and
the same kernels, pinned by tests/test_pixel_rules.py: the content box is identical, nearest-neighbour masks are
identical pixel for pixel, and images differ by at most one grey level of rounding (PIL's BILINEAR *is* the
antialiased triangle filter that ``tf.image.resize(..., antialias=True)`` applies). This module holds what both
read (the modes, the file signatures, the EXIF walk's bounds, the JPEG draft scales) and imports nothing heavy.

Resize modes:
  ``stretch``: scale height and width independently to the target size.
  ``pad``: keep the aspect ratio, scale to fit inside the target, centre, pad images with 0 and masks with the
    ignore label (so padding contributes to no loss and no metric).

Pixel conversion rule (every decoded image becomes 8-bit RGB the same way in preprocess, with PIL and the
``*_host`` functions, and in the serving graph, with TF ops; pinned pixel for pixel by tests, mode by mode):
  * 16-bit samples (16-bit grey, grey+alpha, RGB, RGBA PNGs) keep their high byte: ``v8 = v16 >> 8``. That is
    what Pillow and libpng already do for 16-bit colour PNGs, it maps 0..65535 onto the whole 0..255 range (Pillow
    alone clips 16-bit grey, so 75% of a full-range image became white), and it undoes 8→16-bit expansion
    (``v * 257``) exactly.
  * Alpha (RGBA, LA, a PNG palette's tRNS alpha, a GIF's or a palette's transparent index, WebP alpha) is
    composited on black: ``c8 = (c * a + 127) // 255``. A transparent pixel's stored colour is arbitrary (often
    left-over drawing colour) and must not reach the model; black is also what ``pad`` mode fills with, and it is
    what records have always been made with. A PNG grey/RGB colour key (tRNS on a non-palette image) and a BMP's
    fourth byte are not alpha: neither Pillow's BMP reader nor TF's PNG decoder reads them as transparency.
  * Grey (1-bit, 2/4/8-bit grey) is replicated to R = G = B, 1/2/4-bit values scaled to 0..255 (``v * 255 /
    (2**bits - 1)``, exact); palettes are looked up.
  * CMYK JPEGs: ``r = c * k // 255`` (likewise g from m, b from y) on the samples in Adobe polarity (255 = no
    ink), which is how Adobe tools store them (APP14 "Adobe" marker); a CMYK JPEG without that marker stores
    plain polarity (0 = no ink) and is inverted first. This is libjpeg's/TF's rule; Pillow alone assumed Adobe
    polarity always and rounds differently.
  * EXIF orientation (JPEG only: tag 0x0112 of IFD0 in the first APP1 "Exif" segment among the APPn/COM
    segments that open the file, either byte order, one SHORT with a value 1..8; anything else means 1) is
    applied as ``PIL.ImageOps.exif_transpose`` does, so the image has its displayed size and pixels, the size its
    mask is drawn at. Masks are never rotated (label maps carry no orientation). PNG eXIf, TIFF and WebP EXIF are
    not applied, on either path.
"""

from __future__ import annotations

RESIZE_MODES = ("stretch", "pad")


def check_resize_mode(mode: str) -> None:
    """Raises ``ValueError`` for a resize mode that is not one of ``RESIZE_MODES``."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")


# The first bytes of every JPEG file (SOI marker + the next marker's 0xFF): what PIL and TF recognise one by.
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A WebP file is a RIFF container ("RIFF", 4 size bytes, "WEBP").
WEBP_MAGIC = (b"RIFF", b"WEBP")
# EXIF orientation: the IFD0 tag, and which of its values 1..8 turn the image by 90 degrees (swap height/width).
EXIF_ORIENTATION_TAG = 0x0112
TIFF_SHORT = 3
EXIF_HEADER = b"Exif\x00\x00"
# The Exif segment is looked for among the APPn/COM segments that open a JPEG, where the Exif standard and every
# writer put it (right after SOI, or after JFIF's APP0), not past the tables: ~0.2 ms of graph time per segment
# walked. A bound on those segments (real files have a handful).
JPEG_APP0, JPEG_APP15, JPEG_COM = 0xE0, 0xEF, 0xFE
MAX_JPEG_SEGMENTS = 64
# libjpeg's decode-time scales (1/1 … 1/8), largest reduction last.
JPEG_DRAFT_RATIOS = (1, 2, 4, 8)

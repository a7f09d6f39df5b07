"""Pixels: one conversion rule and EXIF orientation on both decode paths, impossible mask values,
deterministic dead-letter reasons.

The rules are ``pipelines.shared.pixel_rules``; they run on two paths, side by side: preprocess decodes with PIL
(``pipelines.common.decode.decode_rgb``, on ``pipelines.shared.pixels_host``), the exported SavedModel with TF ops
(``pipelines.shared.pixels_graph.decode_image_for_model`` / ``decode_image_bytes``); every case below writes a file
and runs both paths on the same bytes.
"""

from __future__ import annotations

import io
import json
import pathlib
import struct
import zlib

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image, ImageOps

from pipelines.common.decode import DecodeError, decode_rgb
from pipelines.shared import pixels_graph, pixels_host
from pipelines.tools import synthetic
from schemas import labels


# ------------------------------------------------------------------------------------------------ file makers
def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png16(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG (Pillow cannot write 16-bit colour): grey 0, RGB 2, grey+alpha 4, RGBA 6."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _png_grey_low_bits(values: np.ndarray, bits: int) -> bytes:
    """A 2- or 4-bit grey PNG of ``values`` (0 .. 2**bits - 1), which Pillow cannot write."""
    height, width = values.shape
    per_byte = 8 // bits
    padded = np.zeros((height, -(-width // per_byte) * per_byte), np.uint8)
    padded[:, :width] = values
    groups = padded.reshape(height, -1, per_byte)
    packed = sum(groups[..., i].astype(np.uint16) << (8 - bits * (i + 1)) for i in range(per_byte)).astype(np.uint8)
    rows = b"".join(b"\x00" + packed[y].tobytes() for y in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _without_adobe_marker(jpeg: bytes) -> bytes:
    at = jpeg.index(b"\xff\xee")
    return jpeg[:at] + jpeg[at + 2 + struct.unpack(">H", jpeg[at + 2 : at + 4])[0] :]


def _smooth(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    coarse = rng.integers(0, 256, size=(height // 6 + 2, width // 6 + 2, channels)).astype(np.uint8)
    return np.stack(
        [
            np.asarray(Image.fromarray(coarse[..., c]).resize((width, height), Image.Resampling.BILINEAR))
            for c in range(channels)
        ],
        axis=-1,
    )


def _mode_files() -> dict[str, bytes]:
    """One small file per mode Pillow reads (named by format and mode)."""
    rng = np.random.default_rng(11)
    h, w = 23, 37
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    alpha[:3] = 0
    alpha[3:6] = 255
    alpha[6:8] = 128
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    palette = Image.fromarray(rng.integers(0, 6, (h, w), dtype=np.uint8), "P")
    palette.putpalette([10, 20, 30, 200, 100, 50, 70, 80, 90, 255, 255, 255, 0, 0, 0, 1, 2, 3] + [0] * 750)
    files = {
        "png_1": _save(Image.fromarray(grey > 128), "PNG"),
        "png_L": _save(Image.fromarray(grey, "L"), "PNG"),
        "png_L2": _png_grey_low_bits(grey % 4, 2),
        "png_L4": _png_grey_low_bits(grey % 16, 4),
        "png_P4": _save(palette, "PNG", bits=4),
        "png_LA": _save(Image.fromarray(np.stack([grey, alpha], -1), "LA"), "PNG"),
        "png_I16": _png16(rng.integers(0, 65536, (h, w, 1), dtype=np.uint16), 0),
        "png_RGB16": _png16(rng.integers(0, 65536, (h, w, 3), dtype=np.uint16), 2),
        "png_LA16": _png16(rng.integers(0, 65536, (h, w, 2), dtype=np.uint16), 4),
        "png_RGBA16": _png16(rng.integers(0, 65536, (h, w, 4), dtype=np.uint16), 6),
        "png_P": _save(palette, "PNG"),
        "png_P_tRNS": _save(palette, "PNG", transparency=bytes([0, 128, 255, 64, 1, 254])),
        "png_P_index": _save(palette, "PNG", transparency=1),
        "png_L_colour_key": _save(Image.fromarray(grey, "L"), "PNG", transparency=int(grey[0, 0])),
        "png_RGB": _save(Image.fromarray(rgb), "PNG"),
        "png_RGB_colour_key": _save(Image.fromarray(rgb), "PNG", transparency=tuple(int(v) for v in rgb[0, 0])),
        "png_RGBA": _save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"),
        "gif_P_transparent": _save(palette, "GIF", transparency=1),
        "gif_P": _save(palette, "GIF"),
        "bmp_RGB": _save(Image.fromarray(rgb), "BMP"),
        "bmp_RGBA": _save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "BMP"),
        "bmp_L": _save(Image.fromarray(grey, "L"), "BMP"),
        "webp_RGBA": _save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "WEBP", lossless=True),
        "webp_RGB": _save(Image.fromarray(rgb), "WEBP", quality=80),
        "jpeg_RGB": _save(Image.fromarray(_smooth(rng, h, w)), "JPEG", quality=90),
        "jpeg_L": _save(Image.fromarray(grey, "L"), "JPEG", quality=90),
        "jpeg_CMYK_adobe": _save(
            Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "CMYK"), "JPEG", quality=90
        ),
    }
    files["jpeg_CMYK_plain"] = _without_adobe_marker(files["jpeg_CMYK_adobe"])
    return files


def _tiff_orientation(orientation: int, order: str) -> bytes:
    """A TIFF header + IFD0 with a few tags, the orientation one of them, in ``order`` ('II' or 'MM')."""
    end = "<" if order == "II" else ">"
    entries = [
        (0x010F, 2, 4, b"abc\x00"),
        (0x0112, 3, 1, struct.pack(end + "HH", orientation, 0)),
        (0x011A, 4, 1, struct.pack(end + "I", 72)),
    ]
    ifd = struct.pack(end + "H", len(entries)) + b"".join(
        struct.pack(end + "HHI", tag, kind, count) + value for tag, kind, count, value in entries
    )
    return order.encode() + struct.pack(end + "HI", 42, 8) + ifd + struct.pack(end + "I", 0)


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``payload`` right after its SOI."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _oriented_jpeg(array: np.ndarray, orientation: int, order: str = "II", **kwargs) -> bytes:
    return _with_app1(
        _save(Image.fromarray(array), "JPEG", **kwargs), b"Exif\x00\x00" + _tiff_orientation(orientation, order)
    )


_GRAPHS: dict = {}


def _served(data: bytes, size=None) -> tuple[np.ndarray, tuple[int, int]]:
    """The serving decode as the SavedModel runs it: traced into a graph (static shapes unknown), then called."""
    if size not in _GRAPHS:
        spec = [tf.TensorSpec([], tf.string)]
        _GRAPHS[size] = tf.function(
            pixels_graph.decode_image_bytes
            if size is None
            else (lambda encoded: pixels_graph.decode_image_for_model(encoded, size)),
            input_signature=spec,
        )
    if size is None:
        image = _GRAPHS[size](tf.constant(data)).numpy()
        return image, image.shape[:2]
    image, height, width = _GRAPHS[size](tf.constant(data))
    return image.numpy(), (int(height), int(width))


# ----------------------------------------------------------------------------------- item 5: conversion rule
def test_every_mode_decodes_to_the_same_pixels_in_preprocess_and_serving():
    """For every mode Pillow reads, preprocess's PIL decode and the serving graph's TF decode of the same bytes
    give the same uint8 RGB pixels at full size. Before, a 16-bit grey PNG was clipped (75% white) in records but
    scaled at serving, alpha was composited on black in records but dropped at serving, and a CMYK JPEG without an
    Adobe marker had inverted colours at serving."""
    files = _mode_files()
    modes = {name: Image.open(io.BytesIO(data)).mode for name, data in files.items()}
    # The files really are the modes this test is about.
    assert {
        modes["png_1"],
        modes["png_L"],
        modes["png_LA"],
        modes["png_I16"],
        modes["png_P"],
        modes["png_RGB"],
        modes["png_RGBA"],
        modes["jpeg_CMYK_adobe"],
        modes["jpeg_L"],
    } == {"1", "L", "LA", "I;16", "P", "RGB", "RGBA", "CMYK"}
    assert "transparency" in Image.open(io.BytesIO(files["png_P_tRNS"])).info
    mismatched = []
    for name, data in files.items():
        expected, full_hw = decode_rgb(data)
        try:
            served, served_hw = _served(data)
        except tf.errors.InvalidArgumentError as err:
            mismatched.append((name, err.message.splitlines()[0][:120]))
            continue
        assert served_hw == full_hw == expected.shape[:2], name
        if not np.array_equal(served, expected):
            mismatched.append((name, f"differs by up to {np.abs(served.astype(int) - expected).max()}"))
    assert not mismatched, mismatched


def test_the_conversion_rule_is_the_documented_integer_formula():
    """16-bit samples keep their high byte (so a full-range 16-bit grey PNG has mean ~128, not 75% white), alpha
    is composited on black with ``(c * a + 127) // 255``, a colour key and a BMP's fourth byte are no alpha."""
    rng = np.random.default_rng(5)
    grey16 = rng.integers(0, 65536, (20, 30, 1), dtype=np.uint16)
    image, _ = decode_rgb(_png16(grey16, 0))
    np.testing.assert_array_equal(image, np.repeat((grey16 >> 8).astype(np.uint8), 3, axis=2))
    assert 120 < image.mean() < 136 and (image == 255).mean() < 0.01

    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[0, 2, 3] = 0, 255, 128
    expected = ((rgba[..., :3].astype(int) * rgba[..., 3:].astype(int) + 127) // 255).astype(np.uint8)
    for data in (_save(Image.fromarray(rgba, "RGBA"), "PNG"), _png16(rgba.astype(np.uint16) * 257, 6)):
        for decoded in (decode_rgb(data)[0], _served(data)[0]):
            np.testing.assert_array_equal(decoded, expected)
    assert not expected[0, 0].any() and (expected[0, 1] == rgba[0, 1, :3]).all()

    rgb = rgba[..., :3]
    for data in (
        _save(Image.fromarray(rgb), "PNG", transparency=tuple(int(v) for v in rgb[0, 0])),
        _save(Image.fromarray(rgba, "RGBA"), "BMP"),
    ):
        np.testing.assert_array_equal(decode_rgb(data)[0], rgb)


@pytest.mark.slow  # the model is a training (pet_job_dir)
def test_sixteen_bit_grey_and_rgba_reach_the_model_as_in_records(pet_job_dir):
    """Through the resize path and through a real exported SavedModel's ``preprocess`` signature (what
    ``pipelines.infer`` calls): the served model input is the record image (the records' PIL resize vs the
    graph's TF resize: at most one grey level of rounding, as for every image)."""
    from pipelines.infer.model import SegflowModel

    model = SegflowModel(str(pet_job_dir / "model"))
    rng = np.random.default_rng(6)
    size = (32, 32)
    grey16 = _png16(rng.integers(0, 65536, (90, 70, 1), dtype=np.uint16), 0)
    rgba = np.dstack([_smooth(rng, 60, 80), np.full((60, 80), 128, np.uint8)])
    for data in (
        grey16,
        _save(Image.fromarray(rgba, "RGBA"), "PNG"),
        _without_adobe_marker(_save(Image.fromarray(_smooth(rng, 40, 50, 4), "CMYK"), "JPEG")),
    ):
        decoded, full_hw = decode_rgb(data, size)
        record_image = pixels_host.resize_image_host(decoded, size, "stretch", content_hw=full_hw)
        graph_image = pixels_graph.resize_image(*_served(data, size)[:1], size, "stretch", content_hw=full_hw).numpy()
        served, height, width = model.preprocess(data)
        assert (height, width) == full_hw
        for image in (graph_image, served):
            assert np.abs(image.astype(int) - record_image).max() <= 1
            assert abs(float(image.mean()) - float(record_image.mean())) < 0.5


# ------------------------------------------------------------------------------------- item 6: orientation
def test_exif_orientation_is_applied_on_both_paths_for_all_eight():
    """All 8 EXIF orientations, both TIFF byte orders: preprocess and serving give PIL's ``exif_transpose``
    pixels and the displayed size, at full size and through the JPEG draft decode (the draft scale is chosen
    on the stored size against the turned canvas). Before, both ignored the tag."""
    rng = np.random.default_rng(7)
    stored = _smooth(rng, 96, 160)  # stored 96 x 160: orientations 5..8 are displayed 160 x 96
    size = (40, 24)  # a canvas as tall as the displayed image of orientations 5..8
    for orientation in range(1, 9):
        for order in ("II", "MM"):
            data = _oriented_jpeg(stored, orientation, order, quality=92)
            displayed = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
            assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == orientation
            swapped = orientation >= 5
            want_hw = (160, 96) if swapped else (96, 160)
            image, full_hw = decode_rgb(data)
            np.testing.assert_array_equal(image, np.asarray(displayed.convert("RGB")))
            served, served_hw = _served(data)
            assert full_hw == served_hw == want_hw, (orientation, order)
            np.testing.assert_array_equal(served, image, err_msg=str((orientation, order)))
            # Draft decode: stored 96x160 for a 40x24 canvas → 1/4 scale both ways when turned, 1/2 when not.
            drafted, draft_hw = decode_rgb(data, size)
            served_draft, served_draft_hw = _served(data, size)
            assert draft_hw == served_draft_hw == want_hw
            assert drafted.shape[:2] == ((40, 24) if swapped else (48, 80)), (orientation, drafted.shape)
            np.testing.assert_array_equal(served_draft, drafted, err_msg=str((orientation, order)))
            assert (
                pixels_host.exif_orientation_host(data)
                == int(pixels_graph.exif_orientation(tf.constant(data)))
                == orientation
            )


def test_exif_parsing_agrees_on_odd_files():
    """The host and graph parsers are one rule: no EXIF, XMP before EXIF, a truncated or malformed EXIF, a value
    out of range, a non-SHORT tag, PNG/GIF bytes → the same orientation from both."""
    jpeg = _save(Image.fromarray(np.zeros((16, 16, 3), np.uint8)), "JPEG")
    tiff6 = _tiff_orientation(6, "MM")
    dqt = jpeg.index(b"\xff\xdb")
    after_dqt = dqt + 2 + struct.unpack(">H", jpeg[dqt + 2 : dqt + 4])[0]
    cases = {
        "none": (jpeg, 1),
        "xmp first": (_with_app1(_with_app1(jpeg, b"Exif\x00\x00" + tiff6), b"http://ns.adobe.com/xap/1.0/\x00x"), 6),
        "two exif, first wins": (
            _with_app1(_with_app1(jpeg, b"Exif\x00\x00" + _tiff_orientation(3, "II")), b"Exif\x00\x00" + tiff6),
            6,
        ),
        "truncated ifd": (_with_app1(jpeg, b"Exif\x00\x00" + tiff6[:20]), 1),
        "bad magic": (_with_app1(jpeg, b"Exif\x00\x00" + b"MM\x00\x2b" + tiff6[4:]), 1),
        "value 9": (_oriented_jpeg(np.zeros((8, 8, 3), np.uint8), 9), 1),
        "value 0": (_oriented_jpeg(np.zeros((8, 8, 3), np.uint8), 0), 1),
        "LONG type": (_with_app1(jpeg, b"Exif\x00\x00" + tiff6.replace(b"\x01\x12\x00\x03", b"\x01\x12\x00\x04")), 1),
        "ifd offset past the end": (_with_app1(jpeg, b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0"), 1),
        "file ends in a segment": (jpeg[:2] + b"\xff\xe1\x00", 1),
        "png": (_save(Image.fromarray(np.zeros((4, 4), np.uint8)), "PNG"), 1),
        "comment first": (
            _with_app1(jpeg, b"Exif\x00\x00" + tiff6)[:2]
            + b"\xff\xfe\x00\x04hi"
            + _with_app1(jpeg, b"Exif\x00\x00" + tiff6)[2:],
            6,
        ),
        "exif past the tables": (
            jpeg[:after_dqt]
            + b"\xff\xe1"
            + struct.pack(">H", len(tiff6) + 8)
            + b"Exif\x00\x00"
            + tiff6
            + jpeg[after_dqt:],
            1,
        ),
    }
    graph = tf.function(pixels_graph.exif_orientation, input_signature=[tf.TensorSpec([], tf.string)])
    for name, (data, want) in cases.items():
        assert pixels_host.exif_orientation_host(data) == want, name
        assert int(pixels_graph.exif_orientation(tf.constant(data))) == want, name
        assert int(graph(tf.constant(data))) == want, name


def _pet_layout(root: pathlib.Path, examples: dict[str, tuple[bytes, np.ndarray]]) -> None:
    for example_id, (image, trimap) in examples.items():
        synthetic.write_file(str(root / "images" / f"{example_id}.jpg"), image)
        synthetic.write_file(str(root / "annotations" / "trimaps" / f"{example_id}.png"), synthetic.encode_png(trimap))


def _records_of(examples, options, scratch: pathlib.Path) -> tuple[list, list]:
    """``MakeRecords`` on the real DirectRunner: (records, dead letters), gathered through files in ``scratch``."""
    import hashlib
    import pickle

    from pipelines.datasets.base import DEAD_LETTER_TAG
    from pipelines.preprocess.records import MakeRecords

    def keep(tag):
        def fn(element):
            data = pickle.dumps(tuple(element))
            (scratch / f"{tag}-{hashlib.sha1(data).hexdigest()}.pkl").write_bytes(data)

        return fn

    scratch.mkdir(parents=True, exist_ok=True)
    opts = PipelineOptions(["--direct_running_mode", "in_memory", "--direct_num_workers", "1"])
    with beam.Pipeline("DirectRunner", options=opts) as p:
        out = p | beam.Create(examples) | beam.ParDo(MakeRecords(options)).with_outputs(DEAD_LETTER_TAG, main="records")
        _ = out.records | "KeepRecords" >> beam.Map(keep("records"))
        _ = out[DEAD_LETTER_TAG] | "KeepDead" >> beam.Map(keep("dead"))

    def load(tag, kind):
        return [kind(*pickle.loads(path.read_bytes())) for path in sorted(scratch.glob(f"{tag}-*.pkl"))]

    from pipelines.common.deadletter import DeadLetter
    from pipelines.preprocess.shards import Record

    return load("records", Record), load("dead", DeadLetter)


def _record(serialized: bytes) -> tuple[np.ndarray, np.ndarray]:
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    image = np.asarray(Image.open(io.BytesIO(feature["image/encoded"].bytes_list.value[0])))
    mask = np.asarray(Image.open(io.BytesIO(feature["image/segmentation/class/encoded"].bytes_list.value[0])))
    return image, mask


def _pet_scene(rng) -> tuple[np.ndarray, np.ndarray]:
    """A displayed 64 x 48 (h x w) image: a bright pet on a dark background, and its trimap drawn on it."""
    image = np.full((64, 48, 3), 20, np.uint8)
    trimap = np.full((64, 48), 2, np.uint8)
    image[4:40, 6:30] = 230  # the pet: top-left, not symmetric under any turn or mirror
    trimap[4:40, 6:30] = 1
    return image, trimap


def test_preprocess_record_of_a_turned_jpeg_agrees_with_its_mask(tmp_path):
    """A JPEG stored 48 x 64 with orientation 6 whose trimap was drawn on the image as displayed (64 x 48): the
    record's image and mask agree (bright pixels are pet). Before, the example was a dead letter for the size
    mismatch, or, for a square image, image and mask disagreed silently."""
    from pipelines.datasets.base import Example
    from pipelines.preprocess.records import RecordOptions

    displayed, trimap = _pet_scene(np.random.default_rng(8))
    stored = np.rot90(displayed, k=1)  # what a camera turned 90 degrees writes: displayed = stored turned clockwise
    assert stored.shape[:2] == (48, 64)
    path = tmp_path / "images" / "Abyssinian_1.jpg"
    mask_path = tmp_path / "annotations" / "trimaps" / "Abyssinian_1.png"
    _pet_layout(tmp_path, {"Abyssinian_1": (_oriented_jpeg(np.ascontiguousarray(stored), 6, quality=95), trimap)})
    example = Example("Abyssinian_1", "val", str(path), str(mask_path), class_label=0, species=0)
    # The same image with a trimap drawn on its stored, unturned pixels: a dead letter that says so.
    unturned = tmp_path / "annotations" / "trimaps" / "Abyssinian_2.png"
    synthetic.write_file(str(unturned), synthetic.encode_png(np.ascontiguousarray(np.rot90(trimap, k=1))))
    other = Example("Abyssinian_2", "val", str(path), str(unturned), class_label=0, species=0)
    records, dead = _records_of([example, other], RecordOptions(dataset="pet", image_size=(32, 24)), tmp_path / "out")
    assert len(dead) == 1 and "EXIF orientation 6" in dead[0].error and "stored, unturned" in dead[0].error, dead
    assert len(records) == 1
    image, mask = _record(records[0].serialized)
    pet = mask == 0
    assert pet.any() and (mask == 1).any()
    assert image[pet].mean() > 200 and image[mask == 1].mean() < 50


@pytest.mark.slow  # the model is a training (pet_job_dir)
def test_served_model_reports_the_displayed_size(pet_job_dir):
    """Through a real exported SavedModel's ``preprocess`` signature: a JPEG stored 48 x 64 with orientation 6 is
    64 x 48 (what infer writes the mask at), and the model input is the turned image."""
    from pipelines.infer.model import SegflowModel

    displayed, _ = _pet_scene(np.random.default_rng(9))
    data = _oriented_jpeg(np.ascontiguousarray(np.rot90(displayed, k=1)), 6, quality=95)
    image, height, width = SegflowModel(str(pet_job_dir / "model")).preprocess(data)
    assert (height, width) == (64, 48)
    decoded, full_hw = decode_rgb(data, (32, 32))
    assert full_hw == (64, 48)
    assert np.abs(image.astype(int) - pixels_host.resize_image_host(decoded, (32, 32), content_hw=full_hw)).max() <= 1
    assert image[:16, :16].mean() > 150 and image[24:, 24:].mean() < 60  # pet top-left, as displayed


# ---------------------------------------------------------------------------------- item 7: mask values
def test_native_mask_values_outside_the_label_set_are_named():
    assert labels.native_mask_problem("pet", np.array([[1, 2, 3]], np.uint8)) is None
    assert (
        labels.native_mask_problem("pet", np.array([[0, 1, 2]], np.uint8)) == "trimap has values [0] outside {1, 2, 3}"
    )
    assert (
        labels.native_mask_problem("pet", np.array([[0, 4, 200, 1]], np.uint8))
        == "trimap has values [0, 4, 200] outside {1, 2, 3}"
    )
    assert labels.native_mask_problem("cityscapes", np.array([[0, 7, 33]], np.uint8)) is None
    assert "[34, 255]" in labels.native_mask_problem("cityscapes", np.array([[7, 34, 255]], np.uint8))
    ok = np.array([[0, 7, 26001, 24000, 33]], np.int32)
    assert labels.native_mask_problem("cityscapes", ok, "instances") is None
    problem = labels.native_mask_problem("cityscapes", np.array([[7, 40, 34001, 26002]], np.int32), "instances")
    assert problem.startswith("instanceIds has values [40, 34001] ")


def test_synthetic_datasets_hold_only_valid_values(tmp_path):
    synthetic.write_pet_dataset(str(tmp_path / "pet"), 6, size=(30, 40), seed=1)
    for path in sorted((tmp_path / "pet" / "annotations" / "trimaps").glob("*.png")):
        assert labels.native_mask_problem("pet", np.asarray(Image.open(path))) is None, path
    synthetic.write_cityscapes_dataset(
        str(tmp_path / "cs"), frames_per_split={"train": 2, "val": 1, "test": 1}, size=(32, 64), seed=1
    )
    for path in sorted((tmp_path / "cs" / "gtFine").rglob("*_gtFine_labelIds.png")):
        assert labels.native_mask_problem("cityscapes", np.asarray(Image.open(path))) is None, path
    for path in sorted((tmp_path / "cs" / "gtFine").rglob("*_gtFine_instanceIds.png")):
        assert (
            labels.native_mask_problem("cityscapes", np.asarray(Image.open(path)).astype(np.int32), "instances") is None
        ), path


@pytest.mark.slow
def test_preprocess_dead_letters_impossible_trimaps(tmp_path):
    """Through a real preprocess run: a zero-based trimap (0/1/2) and one with 0/4/200 are dead letters
    naming the values found; the valid examples become records. Before, both became records silently
    (background learned as pet, the rest ignored)."""
    from pipelines.preprocess import PreprocessConfig, run

    rng = np.random.default_rng(10)
    examples = {}
    for i in range(4):
        image, trimap = synthetic.pet_example(rng, 30, 40)
        examples[f"Abyssinian_{i + 1}"] = (synthetic.encode_jpeg(image), trimap)
    image, trimap = synthetic.pet_example(rng, 30, 40)
    examples["Bengal_1"] = (synthetic.encode_jpeg(image), trimap - 1)  # saved zero-based
    odd = np.where(trimap == 1, 4, np.where(trimap == 2, 0, 200)).astype(np.uint8)
    examples["Bengal_2"] = (synthetic.encode_jpeg(image), odd)
    _pet_layout(tmp_path / "src", examples)
    dst = tmp_path / "dst"
    config = PreprocessConfig("pet", str(tmp_path / "src"), str(dst), image_size=(16, 16))
    run(config, ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"])
    lines = (dst / "dead_letter" / "dead_letter-00000-of-00001.jsonl").read_text().splitlines()
    reasons = {pathlib.Path(json.loads(line)["path"]).name: json.loads(line)["error"] for line in lines}
    assert set(reasons) == {"Bengal_1.jpg", "Bengal_2.jpg"}, reasons
    assert reasons["Bengal_1.jpg"].endswith("trimap has values [0] outside {1, 2, 3}")
    assert reasons["Bengal_2.jpg"].endswith("trimap has values [0, 4, 200] outside {1, 2, 3}")
    assert "Bengal_1.png" in reasons["Bengal_1.jpg"]


def test_cityscapes_dead_letters_unknown_label_and_instance_ids(tmp_path):
    """``MakeRecords`` on the real DirectRunner: labelIds outside the official table and instanceIds whose
    class part is no labelId are dead letters with the values; a valid frame is a record."""
    from pipelines.datasets.base import Example
    from pipelines.preprocess.records import RecordOptions

    rng = np.random.default_rng(12)
    examples = []
    for name, label_change, instance_change in (
        ("good", None, None),
        ("badlabel", 34, None),
        ("badinstance", None, 35001),
    ):
        image, label, instance = synthetic.cityscapes_frame(rng, 32, 64)
        if label_change is not None:
            label[5:7, 5:7] = label_change
        if instance_change is not None:
            instance[5:7, 5:7] = instance_change
        paths = [tmp_path / f"{name}_{kind}.png" for kind in ("leftImg8bit", "labelIds", "instanceIds")]
        paths[0].write_bytes(synthetic.encode_png(image))
        paths[1].write_bytes(synthetic.encode_png(label))
        paths[2].write_bytes(_save(Image.fromarray(instance.astype(np.uint16)), "PNG"))
        examples.append(Example(name, "train", str(paths[0]), str(paths[1]), str(paths[2])))
    records, dead = _records_of(examples, RecordOptions(dataset="cityscapes", image_size=(16, 32)), tmp_path / "out")
    reasons = {pathlib.Path(d.path).name: d.error for d in dead}
    assert set(reasons) == {"badlabel_leftImg8bit.png", "badinstance_leftImg8bit.png"}, reasons
    assert "labelIds has values [34] outside the Cityscapes label table {0..33}" in reasons["badlabel_leftImg8bit.png"]
    assert "instanceIds has values [35001]" in reasons["badinstance_leftImg8bit.png"]
    assert len(records) == 1


# ------------------------------------------------------------------------------ item 15a: stable reasons
def test_dead_letter_reasons_carry_no_object_addresses():
    """PIL's "cannot identify image file <_io.BytesIO object at 0x…>" made every rerun's dead letters differ."""
    reasons = set()
    for _ in range(3):
        with pytest.raises(DecodeError) as caught:
            decode_rgb(b"MATLAB 5.0 MAT-file" + bytes(100))
        reasons.add(str(caught.value))
    assert len(reasons) == 1 and " at 0x" not in reasons.pop()
    from pipelines.common.decode import stable_reason

    assert (
        stable_reason("cannot identify image file <_io.BytesIO object at 0x7f3a2c1d5e40>")
        == "cannot identify image file"
    )
    assert stable_reason("bad <Foo at 0xdeadbeef> and <function f at 0x1234abcd>") == "bad and"

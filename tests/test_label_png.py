"""pipelines.common.label_png: standard 8-bit greyscale PNGs that every decoder reads back exactly."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.common.label_png import encode_label_png
from pipelines.infer import outputs


def _label_map(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blocky class ids with ragged edges: what a predicted mask looks like."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 19, size=(height // 16 + 1, width // 16 + 1), dtype=np.uint8)
    labels = np.kron(coarse, np.ones((16, 16), dtype=np.uint8))[:height, :width]
    edges = rng.random((height, width)) < 0.02
    labels[edges] = rng.integers(0, 256, size=int(edges.sum()), dtype=np.uint8)
    return labels


CASES = {
    "label map": _label_map(375, 500),
    "one pixel": np.array([[7]], dtype=np.uint8),
    "one row": np.arange(256, dtype=np.uint8)[None],
    "one column": np.arange(256, dtype=np.uint8)[:, None],
    "noise (every Up difference wraps)": np.random.default_rng(1).integers(0, 256, (61, 83), dtype=np.uint8),
    "strided view": _label_map(200, 300, seed=2)[3::3, 180:7:-2],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pillow_and_tensorflow_read_back_the_exact_map(name):
    labels = CASES[name]
    data = encode_label_png(labels)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "L" and image.size == (labels.shape[1], labels.shape[0])
    np.testing.assert_array_equal(np.asarray(image), labels)
    np.testing.assert_array_equal(tf.io.decode_png(data, channels=0).numpy()[..., 0], labels)


def test_the_file_is_a_plain_greyscale_png_with_valid_chunks():
    data = encode_label_png(CASES["label map"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        if kind == b"IHDR":
            assert struct.unpack(">IIBBBBB", body) == (500, 375, 8, 0, 0, 0, 0)
        kinds.append(kind)
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_same_map_same_bytes_and_no_bigger_than_pillows():
    labels = _label_map(375, 500, seed=3)
    assert encode_label_png(labels) == encode_label_png(labels.copy())
    buf = io.BytesIO()
    Image.fromarray(labels, "L").save(buf, format="PNG", compress_type=zlib.Z_RLE)
    assert len(encode_label_png(labels)) <= 1.1 * len(buf.getvalue())


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.uint16),
        np.zeros((4, 4), np.int32),
        np.zeros((4, 4, 1), np.uint8),
        np.zeros((0, 4), np.uint8),
        np.zeros(4, np.uint8),
    ],
)
def test_anything_but_a_uint8_map_is_refused(bad):
    with pytest.raises(ValueError, match="uint8"):
        encode_label_png(bad)


def test_inference_outputs_use_it_for_8_bit_maps_and_pillow_for_16_bit():
    labels = CASES["label map"]
    assert outputs.encode_png(labels) == encode_label_png(labels)
    instance_ids = labels.astype(np.uint16) * 1000 + 7
    image = Image.open(io.BytesIO(outputs.encode_png(instance_ids)))
    assert image.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(image), instance_ids)


@pytest.mark.parametrize("name", sorted(CASES))
def test_record_masks_use_it_and_keep_every_pixel(name):
    """``decode.encode_mask`` (record masks) is the label-PNG writer now; the trainer's decoder
    (``schemas.features.decode_mask``) reads from its bytes exactly the pixels it read from Pillow's before."""
    from pipelines.common import decode
    from schemas import features

    labels = CASES[name]
    data = decode.encode_mask(labels)
    assert data == encode_label_png(labels)
    before = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(labels), "L").save(before, format="PNG", compress_level=6)  # the old writer
    height, width = labels.shape
    read = [
        features.decode_mask(
            {
                features.MASK_ENCODED: tf.constant(png),
                features.IMAGE_HEIGHT: tf.constant(height),
                features.IMAGE_WIDTH: tf.constant(width),
            },
            255,
        ).numpy()
        for png in (data, before.getvalue())
    ]
    np.testing.assert_array_equal(read[0], labels)
    np.testing.assert_array_equal(read[0], read[1])
    with pytest.raises(ValueError, match="uint8"):
        decode.encode_mask(labels.astype(np.int32))  # never wrapped silently

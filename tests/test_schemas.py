"""Label tables and record building/parsing."""

import numpy as np
import tensorflow as tf
from cityscapesscripts.helpers import labels as cs_labels

from schemas import features, labels


def test_cityscapes_train_ids_match_official_table():
    lut = labels.cityscapes_label_id_to_train_id()
    for label in cs_labels.labels:
        if label.id < 0:
            continue  # license plate has id -1 and is never in a labelIds image
        expected = label.trainId if 0 <= label.trainId < 255 else 255
        assert lut[label.id] == expected, label.name
    spec = labels.cityscapes_spec()
    assert spec.num_classes == 19
    assert spec.class_names[0] == "road" and spec.class_names[-1] == "bicycle"
    # trainId -> labelId -> trainId round-trips for every evaluated class.
    assert all(lut[spec.to_native[t]] == t for t in range(19))
    assert [spec.class_names[t] for t in spec.instance_train_ids] == [
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ]


def test_pet_trimap_modes_follow_the_dataset_readme():
    trimap = np.array([[1, 2, 3, 0]], dtype=np.uint8)  # 1 pet, 2 background, 3 border, 0 never valid
    np.testing.assert_array_equal(labels.pet_trimap_to_train_ids(trimap, "trimap"), [[0, 1, 2, 255]])
    np.testing.assert_array_equal(labels.pet_trimap_to_train_ids(trimap, "binary"), [[0, 1, 255, 255]])
    np.testing.assert_array_equal(labels.pet_trimap_to_train_ids(trimap, "species", species=1), [[2, 0, 255, 255]])
    spec = labels.pet_spec("trimap")
    assert spec.class_names == ("pet", "background", "border")
    np.testing.assert_array_equal(spec.to_native[[0, 1, 2]], [1, 2, 3])


def test_record_round_trip_with_plain_parse_single_example():
    image = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    mask = np.array([[0, 1, 2, 255, 0, 1]] * 4, dtype=np.uint8)
    example = features.build_example(
        image_encoded=tf.io.encode_png(image).numpy(),
        image_format="png",
        height=4,
        width=6,
        source_id="Abyssinian_1",
        mask_png=tf.io.encode_png(mask[..., None]).numpy(),
        class_label=0,
        species=0,
    )
    parsed = tf.io.parse_single_example(
        example.SerializeToString(),
        {
            features.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
            features.IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string),
            features.MASK_ENCODED: tf.io.FixedLenFeature([], tf.string),
            features.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        },
    )
    assert parsed[features.IMAGE_FILENAME].numpy() == b"Abyssinian_1"
    ours = features.parse_example(example.SerializeToString())
    np.testing.assert_array_equal(features.decode_image(ours).numpy(), image)
    np.testing.assert_array_equal(features.decode_mask(ours).numpy(), mask)


def test_image_only_record_decodes_to_ignore_mask():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    example = features.build_example(
        image_encoded=tf.io.encode_png(image).numpy(),
        image_format="png",
        height=2,
        width=3,
        source_id="berlin_000000_000019",
    )
    parsed = features.parse_example(example.SerializeToString())
    assert (features.decode_mask(parsed).numpy() == 255).all()


def test_host_resize_twins_match_the_serving_graph():
    """Preprocess resizes with PIL/numpy, serving with TF ops: same content box, identical nearest-neighbour
    masks, images within one grey level (rounding), in both resize modes, shrinking and enlarging."""
    from pipelines.shared import pixel_rules, pixels_graph, pixels_host

    rng = np.random.default_rng(0)
    for trial in range(60):
        height, width = (int(v) for v in rng.integers(5, 300, size=2))
        size = tuple(int(v) for v in rng.integers(8, 160, size=2))
        for mode in pixel_rules.RESIZE_MODES:
            assert pixels_host.content_box_host(height, width, size, mode) == tuple(
                int(v) for v in pixels_graph.content_box(height, width, size, mode)
            )
            mask = rng.integers(0, 20, size=(height, width)).astype(np.uint8)
            np.testing.assert_array_equal(
                pixels_host.resize_mask_host(mask, size, mode),
                pixels_graph.resize_mask(tf.constant(mask), size, mode).numpy(),
            )
            if trial % 6 == 0:  # noise images: the worst case for rounding differences
                image = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
                diff = pixels_host.resize_image_host(image, size, mode).astype(int) - pixels_graph.resize_image(
                    image, size, mode
                ).numpy().astype(int)
                assert np.abs(diff).max() <= 1, (height, width, size, mode)
    # A draft-decoded image (half size) lands on the full-size image's content box.
    image = rng.integers(0, 256, size=(50, 100, 3)).astype(np.uint8)
    out = pixels_host.resize_image_host(image, (64, 64), "pad", content_hw=(100, 200))
    assert out.shape == (64, 64, 3) and not out[:16].any() and not out[48:].any()


def test_serving_decoder_is_bit_identical_to_the_records_decoder():
    """The serving graph decodes a raw file as preprocess decoded it for its records: JPEGs at the same
    decode-time scale (PIL's ``draft`` rule) with the same IDCT, for every JPEG flavour, so the pixels match bit
    for bit; other formats at full size. Before, serving decoded JPEGs at full size with TF's default IDCT and
    its model input differed from the records' by up to ~80 grey levels."""
    import io

    from PIL import Image

    from pipelines.common.decode import decode_rgb
    from pipelines.shared import pixels_graph, pixels_host

    rng = np.random.default_rng(1)
    ratios = set()
    for trial in range(36):
        height, width = (int(v) for v in rng.integers(20, 700, size=2))
        size = tuple(int(v) for v in rng.integers(8, 160, size=2))
        smooth = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
        image = Image.fromarray(smooth).resize((width, height), Image.Resampling.BILINEAR)
        flavour = trial % 6
        buf = io.BytesIO()
        if flavour == 0:
            image.save(buf, "JPEG", quality=90)  # 4:2:0
        elif flavour == 1:
            image.save(buf, "JPEG", quality=75, subsampling=0)  # 4:4:4
        elif flavour == 2:
            image.convert("L").save(buf, "JPEG", quality=90)  # grayscale
        elif flavour == 3:
            image.save(buf, "JPEG", quality=80, progressive=True)
        elif flavour == 4:
            image.convert("CMYK").save(buf, "JPEG", quality=90)
        else:
            image.save(buf, "PNG")
        data = buf.getvalue()
        expected, full_hw = decode_rgb(data, size)
        decoded, served_h, served_w = pixels_graph.decode_image_for_model(tf.constant(data), size)
        assert (int(served_h), int(served_w)) == full_hw == (height, width)
        np.testing.assert_array_equal(decoded.numpy(), expected, err_msg=str((trial, height, width, size)))
        if flavour < 5:
            ratio = pixels_host.jpeg_draft_ratio_host(height, width, size)
            assert expected.shape[:2] == (-(-height // ratio), -(-width // ratio))
            ratios.add(ratio)
    assert ratios == {1, 2, 4, 8}  # every decode-time scale was exercised


def test_argmax_channels_is_tf_argmax():
    from pipelines.shared import pixels_graph

    rng = np.random.default_rng(2)
    for channels in (1, 2, 3, 19):
        scores = tf.constant(rng.integers(0, 3, size=(7, 9, channels)).astype(np.float32))  # many ties
        np.testing.assert_array_equal(
            pixels_graph.argmax_channels(scores).numpy(), tf.argmax(scores, axis=-1, output_type=tf.int32).numpy()
        )


def test_segflow_programs_load_one_keras_and_run_tensorflow_with_onednn():
    """A segflow program's ``main`` makes ``tf.keras`` the Keras 2 (``tf_keras``) that the trainer and
    tensorflow-transform use, so TensorFlow does not also load Keras 3 (and matplotlib through it) in every
    run, and on x86-64 turns on TensorFlow's oneDNN kernels, which TensorFlow itself turns on only on CPUs with
    AVX-512 VNNI/BF16 or AMX; the settings are the program's, undone when its ``main`` returns (importing segflow
    sets nothing)."""
    import platform
    import subprocess
    import sys

    x86 = platform.machine().lower() in ("x86_64", "amd64")
    code = (
        "import os, sys\n"
        "from pipelines.shared import cli\n"
        "def run(argv):\n"
        "    import pipelines.preprocess, trainer.data, tensorflow as tf\n"
        "    from tensorflow.python.util import _pywrap_util_port\n"
        "    assert os.environ['TF_USE_LEGACY_KERAS'] == '1'\n"
        "    assert 'keras.src' not in sys.modules and 'matplotlib.pyplot' not in sys.modules, sorted(sys.modules)\n"
        "    assert tf.keras.__name__.startswith('tf_keras'), tf.keras.__name__\n"
        f"    assert _pywrap_util_port.IsMklEnabled() is {x86}, 'oneDNN'\n"
        "assert cli.main('probe', [], run) == 0\n"
        "assert 'TF_USE_LEGACY_KERAS' not in os.environ and 'TF_ENABLE_ONEDNN_OPTS' not in os.environ\n"
    )
    unset = ("TF_USE_LEGACY_KERAS", "TF_ENABLE_ONEDNN_OPTS")
    env = {k: v for k, v in __import__("os").environ.items() if k not in unset}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]

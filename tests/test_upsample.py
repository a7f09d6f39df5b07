"""The host postprocess (pipelines.infer.upsample) equals the exported graph's, bit for bit; instance outputs stay
bounded (``--max_instances``, 1-bit PNGs the official evaluator reads)."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.common.label_png import encode_bitmask_png
from pipelines.infer import upsample
from pipelines.infer.instances import extract_instances
from pipelines.shared import pixels_graph


def graph_postprocess(probabilities, height, width, size, mode):
    """What the exported ``postprocess`` signature computes (trainer.export: restore_size, argmax_channels)."""
    restored = pixels_graph.restore_size(
        tf.constant(probabilities), tf.constant(height), tf.constant(width), size, mode
    )
    return pixels_graph.argmax_channels(restored).numpy(), restored.numpy()


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


CASES = [  # (model size, image size, classes, mode)
    ((32, 64), (1024, 2048), 19, "stretch"),
    ((64, 64), (375, 500), 3, "stretch"),
    ((64, 64), (375, 500), 3, "pad"),
    ((33, 47), (100, 301), 5, "stretch"),
    ((64, 64), (40, 50), 3, "stretch"),  # downscaling
    ((48, 40), (123, 61), 4, "pad"),
    ((16, 16), (1, 1), 2, "stretch"),
]


@pytest.mark.parametrize("size,image,classes,mode", CASES)
@pytest.mark.parametrize("kind", ["smooth", "noise", "ties"])
def test_class_ids_equal_the_graph_bit_for_bit(size, image, classes, mode, kind):
    rng = np.random.default_rng([size[0], image[1], classes, len(kind)])
    if kind == "smooth":  # blobby regions with boundaries, as a trained model gives
        coarse = rng.normal(size=(size[0] // 4 + 1, size[1] // 4 + 1, classes)) * 4
        logits = np.kron(coarse, np.ones((4, 4, 1)))[: size[0], : size[1]]
        probabilities = softmax(logits + rng.normal(size=logits.shape) * 0.3)
    elif kind == "noise":  # an untrained model: every cell near a tie
        probabilities = softmax(rng.normal(size=(*size, classes)) * 0.05)
    else:  # exact ties and quantised values: the first maximum must win, as in the graph
        probabilities = (rng.integers(0, 3, size=(*size, classes)) / 4).astype(np.float32)
    expected, restored = graph_postprocess(probabilities, image[0], image[1], size, mode)
    got = upsample.class_ids(probabilities, image[0], image[1], size, mode)
    assert got.dtype == np.uint8 and got.shape == image
    np.testing.assert_array_equal(got, expected.astype(np.uint8))
    # Instance scores: one channel at a set of pixels, bit-identical to the graph's upsampled volume.
    ys, xs = np.nonzero(expected == expected.flat[0])
    values = upsample.channel_at(probabilities, image[0], image[1], size, mode, 1 % classes, ys, xs)
    np.testing.assert_array_equal(values.view(np.uint32), restored[ys, xs, 1 % classes].view(np.uint32))


def near_tie_scores(rng, size, classes):
    """Scores whose two leading classes tie, or differ by a few float32 steps or by about the shortcut's margin,
    at every source pixel, so the interpolated winner at many output pixels is decided by float32 rounding."""
    scores = rng.random((*size, classes)).astype(np.float32) * np.float32(0.3)
    first, second = rng.choice(classes, 2, replace=False)
    lead = (np.float32(0.4) + rng.random(size).astype(np.float32) * np.float32(0.2)).astype(np.float32)
    steps = np.spacing(lead) * rng.integers(-3, 4, size)
    near_margin = (rng.random(size).astype(np.float32) - np.float32(0.5)) * (4 * upsample.MARGIN)
    gap = np.where(rng.random(size) < 0.5, steps, near_margin).astype(np.float32)
    scores[..., first], scores[..., second] = lead, (lead + gap).astype(np.float32)
    # Mirrored corners: in exact arithmetic the two classes tie half-way between source pixels.
    scores[1::2, :, [first, second]] = scores[1::2, :, [second, first]]
    return scores


@pytest.mark.parametrize("seed", range(6))
def test_near_ties_at_interpolation_points_follow_the_graph_bit_for_bit(seed):
    """Over many random model and image sizes (up- and downscaling, both resize modes), the host's winner equals
    the graph's at every pixel of score maps full of near-ties, where one float32 rounding decides."""
    rng = np.random.default_rng([22, seed])
    for _ in range(25):
        size = tuple(int(v) for v in rng.integers(2, 33, 2))
        height, width = (int(v) for v in rng.integers(1, 260, 2))
        classes = int(rng.integers(2, 20))
        mode = str(rng.choice(["stretch", "pad"]))
        scores = near_tie_scores(rng, size, classes)
        expected, restored = graph_postprocess(scores, height, width, size, mode)
        got = upsample.class_ids(scores, height, width, size, mode)
        differ = np.argwhere(got != expected)
        assert differ.size == 0, f"{size} -> {(height, width)} {mode}, {classes} classes: first at {differ[:1]}"
        ys, xs = np.nonzero(expected == expected.flat[0])
        channel = int(expected.flat[0])
        values = upsample.channel_at(scores, height, width, size, mode, channel, ys, xs)
        np.testing.assert_array_equal(values.view(np.uint32), restored[ys, xs, channel].view(np.uint32))


def test_nan_scores_follow_the_graph():
    probabilities = softmax(np.random.default_rng(0).normal(size=(16, 16, 4)))
    probabilities[3:5, 6:9, 2] = np.nan
    expected, _ = graph_postprocess(probabilities, 50, 70, (16, 16), "stretch")
    np.testing.assert_array_equal(upsample.class_ids(probabilities, 50, 70, (16, 16), "stretch"), expected)


def test_instance_scores_from_the_host_equal_the_volume_mean():
    rng = np.random.default_rng(1)
    coarse = rng.normal(size=(9, 17, 19)) * 4
    probabilities = softmax(np.kron(coarse, np.ones((4, 4, 1)))[:32, :64])
    ids, restored = graph_postprocess(probabilities, 256, 512, (32, 64), "stretch")
    instance_ids = (11, 13)
    from_volume = extract_instances(ids, restored, instance_ids)
    from_host = extract_instances(
        upsample.class_ids(probabilities, 256, 512, (32, 64), "stretch"),
        None,
        instance_ids,
        score=upsample.mean_score(probabilities, 256, 512, (32, 64), "stretch"),
    )
    assert from_volume and [(i.train_id, i.area, i.bbox, i.score) for i in from_host] == [
        (i.train_id, i.area, i.bbox, i.score) for i in from_volume
    ]


def test_max_instances_keeps_the_highest_scores_in_order():
    class_ids = np.zeros((40, 200), dtype=np.int32)
    probabilities = np.zeros((40, 200, 14), dtype=np.float32)
    for k in range(10):  # ten separate squares; square k scores k / 10
        class_ids[10:20, 20 * k : 20 * k + 10] = 13
        probabilities[10:20, 20 * k : 20 * k + 10, 13] = k / 10
    every = extract_instances(class_ids, probabilities, (13,))
    assert len(every) == 10
    kept = extract_instances(class_ids, probabilities, (13,), max_instances=3)
    assert [i.bbox[0] for i in kept] == [140, 160, 180]  # the best three, left to right as before
    assert [i.bbox for i in extract_instances(class_ids, probabilities, (13,), max_instances=None)] == [
        i.bbox for i in every
    ]


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (1024, 2048)])
def test_bitmask_png_is_full_size_one_bit_and_reads_back_as_the_evaluator_reads_it(shape):
    rng = np.random.default_rng(shape[1])
    h, w = rng.integers(1, shape[0] + 1), rng.integers(1, shape[1] + 1)
    top, left = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
    crop = rng.uniform(size=(h, w)) < 0.6
    full = np.zeros(shape, dtype=bool)
    full[top : top + h, left : left + w] = crop
    data = encode_bitmask_png(crop, int(top), int(left), shape)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "1" and image.size == (shape[1], shape[0])
    # evalInstanceLevelSemanticLabeling: Image.open(p).convert("L"), then != 0.
    np.testing.assert_array_equal(np.asarray(image.convert("L")) != 0, full)
    decoded = tf.io.decode_png(data).numpy()[..., 0]
    np.testing.assert_array_equal(decoded != 0, full)


def test_official_instance_reader_accepts_one_bit_masks(tmp_path):
    official = pytest.importorskip("cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling")
    import inspect

    # The reader's own lines: open, convert("L"), compare with 0.
    source = inspect.getsource(official.assignGt2Preds)
    assert 'convert("L")' in source and "!= 0" in source
    crop = np.ones((3, 5), dtype=bool)
    path = tmp_path / "m.png"
    path.write_bytes(encode_bitmask_png(crop, 2, 4, (8, 16)))
    pred = np.array(Image.open(str(path)).convert("L")) != 0
    assert pred.sum() == 15 and pred[2:5, 4:9].all()

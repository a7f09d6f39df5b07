"""Unit checks of the preprocess building blocks: decoding by content, augmentation, splits, shards, flags."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipelines.common import decode
from pipelines.common.hashing import stable_fraction
from pipelines.datasets import base, cityscapes, pet
from pipelines.preprocess import augment, shards, stats
from pipelines.preprocess.job import UsageError, parse_args


def _encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = np.random.default_rng(0).integers(0, 255, size=(40, 60, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "mode,fmt",
    [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "GIF"), ("L", "PNG"), ("RGB", "BMP")],
)
def test_decode_by_content_to_rgb(mode, fmt):
    data = _encoded(Image.fromarray(RGB).convert(mode), fmt)
    image, full = decode.decode_rgb(data)
    assert image.dtype == np.uint8 and image.shape == (40, 60, 3) and full == (40, 60)


def test_decode_rejects_garbage_and_truncation():
    jpeg = _encoded(Image.fromarray(RGB), "JPEG")
    with pytest.raises(decode.DecodeError, match="truncated"):
        decode.decode_rgb(jpeg[: len(jpeg) // 2])
    with pytest.raises(decode.DecodeError, match="not a readable image"):
        decode.decode_rgb(b"MATLAB 5.0 MAT-file" + bytes(100))
    with pytest.raises(decode.DecodeError, match="empty"):
        decode.decode_rgb(b"")


def test_jpeg_draft_downscales_but_never_below_the_target():
    big = np.random.default_rng(1).integers(0, 255, size=(400, 600, 3), dtype=np.uint8)
    data = _encoded(Image.fromarray(big), "JPEG")
    image, full = decode.decode_rgb(data, min_size=(64, 64))
    assert full == (400, 600)
    assert image.shape[0] >= 64 and image.shape[1] >= 64 and image.shape[0] < 400  # decoded at 1/2^k scale
    image, _ = decode.decode_rgb(data, min_size=(300, 500))
    assert image.shape[:2] == (400, 600)


def test_label_maps_8_and_16_bit():
    mask = np.random.default_rng(2).integers(0, 4, size=(10, 12), dtype=np.uint8)
    np.testing.assert_array_equal(decode.decode_label_map(decode.encode_mask(mask)), mask)
    instances = np.array([[0, 26000, 26001], [24000, 7, 33999]], np.int32)
    np.testing.assert_array_equal(decode.decode_label_map(decode.encode_instance_mask(instances), bits=16), instances)
    with pytest.raises(decode.DecodeError, match="colour"):
        decode.decode_label_map(_encoded(Image.fromarray(RGB), "PNG"))


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize(
    "fmt,extra",
    [("PNG", {}), ("PNG", {"icc_profile": "srgb"}), ("JPEG", {"comment": b"camera note", "icc_profile": "srgb"})],
)
@pytest.mark.parametrize("record_format", ["png", "jpeg"])
@pytest.mark.parametrize("mode", ["stretch", "pad"])
def test_record_image_goes_decode_to_encode_as_pil_with_the_array_paths_bytes(fmt, extra, record_format, mode):
    """An RGB original stays a PIL image from decode to encode (no copy through numpy, see
    ``decode.decode_rgb_image``); what it encodes to is byte for byte what the array path gives, and nothing of
    the source file's metadata (an ICC profile, a comment) reaches the record."""
    from pipelines.shared import pixels_host

    extra = {k: (_srgb_profile() if v == "srgb" else v) for k, v in extra.items()}
    data = _encoded(Image.fromarray(RGB), fmt, **extra)
    image, full = decode.decode_rgb_image(data, (24, 30))
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.info == {}
    array, array_full = decode.decode_rgb(data, (24, 30))
    assert full == array_full and np.array_equal(np.asarray(image), array)
    resized = pixels_host.resize_image_host(image, (24, 30), mode, content_hw=full)
    assert isinstance(resized, Image.Image)
    via_array = pixels_host.resize_image_host(array, (24, 30), mode, content_hw=full)
    assert np.array_equal(np.asarray(resized), via_array)
    encoded = decode.encode_image(resized, record_format)
    assert encoded == decode.encode_image(via_array, record_format)
    assert "icc_profile" not in Image.open(io.BytesIO(encoded)).info
    if extra:  # a PIL image that still carries its file's metadata is refused, not encoded with it
        with pytest.raises(ValueError, match="without metadata"):
            decode.encode_image(Image.open(io.BytesIO(data)).convert("RGB"), record_format)


def test_augmentation_is_seeded_and_aligned():
    a = augment.augment_params(3, "Abyssinian_1", 1)
    assert a == augment.augment_params(3, "Abyssinian_1", 1)
    assert a != augment.augment_params(4, "Abyssinian_1", 1) and a != augment.augment_params(3, "Abyssinian_1", 2)
    assert augment.augment_params(3, "x", 0) == augment.IDENTITY
    # An image whose red channel *is* its label map stays aligned with the mask under every copy's geometry.
    mask = np.random.default_rng(5).integers(0, 3, size=(30, 40), dtype=np.uint8)
    image = np.dstack([mask * 80, mask, mask]).astype(np.uint8)
    for copy in range(1, 20):
        p = augment.augment_params(0, f"id{copy}", copy)
        np.testing.assert_array_equal(augment.apply_geometry(image, p)[..., 0] // 80, augment.apply_geometry(mask, p))
        assert set(np.unique(augment.apply_geometry(mask, p))) <= {0, 1, 2}
    jittered = augment.apply_colour(RGB, augment.augment_params(0, "c", 1))
    assert jittered.dtype == np.uint8 and jittered.shape == RGB.shape


def test_hash_splits_are_stable_and_proportional():
    ids = [f"id_{i}" for i in range(4000)]
    splits = [base.split_from_hash(i, 0.1, 0.2) for i in ids]
    assert splits == [base.split_from_hash(i, 0.1, 0.2) for i in ids]
    assert abs(splits.count("val") / 4000 - 0.1) < 0.02 and abs(splits.count("test") / 4000 - 0.2) < 0.02
    # Same id, same split, in a fresh interpreter (no reliance on Python's salted hash()).
    code = (
        "from pipelines.common.hashing import stable_fraction as f; print([f('split', f'id_{i}') for i in range(50)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([stable_fraction("split", f"id_{i}") for i in range(50)])


def test_list_files_with_comment_headers():
    text = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n\nAbyssinian_1 1 1 1\nbeagle_2 13 2 1\nbad x\n"
    rows = list(pet.parse_pet_list(text, "list", "list.txt"))
    assert rows[0] == ("Abyssinian_1", ("list", pet.ListRow("list", 0, 0)))
    assert rows[1] == ("beagle_2", ("list", pet.ListRow("list", 12, 1)))
    assert rows[2].path == "list.txt:6" and "malformed" in rows[2].error


def test_stray_files_classified():
    assert pet.classify_pet_file("/d/images/._Abyssinian_1.jpg", "image").path.endswith("._Abyssinian_1.jpg")
    assert "not an image" in pet.classify_pet_file("/d/images/Abyssinian_1.mat", "image").error
    assert pet.classify_pet_file("/d/images/Abyssinian_1.jpg", "image") == (
        "Abyssinian_1",
        ("image", "/d/images/Abyssinian_1.jpg"),
    )
    root = "/d"
    assert cityscapes.classify_cityscapes_file(
        "/d/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png", root, "gtFine"
    ) == ("train/aachen_000000_000019", ("labelIds", "/d/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"))
    assert (
        cityscapes.classify_cityscapes_file(
            "/d/gtFine/train/aachen/aachen_000000_000019_gtFine_color.png", root, "gtFine"
        )
        is None
    )
    assert (
        "unexpected" in cityscapes.classify_cityscapes_file("/d/leftImg8bit/train/notes.txt", root, "leftImg8bit").error
    )


def test_shard_assignment_is_stable():
    keys = [shards.record_key(f"id_{i}", 0) for i in range(1000)]
    assigned = [shards.shard_of(k, 8) for k in keys]
    assert assigned == [shards.shard_of(k, 8) for k in keys] and set(assigned) == set(range(8))
    # 3000 records of 50 kB: 150 MB is 5 shards by size, but 3000 records make 12 shards of 250 for parallel reads.
    assert shards.plan_shards({"train": 1000, "val": 0}, {"train": 3}, 50_000) == {"train": 12}
    assert shards.plan_shards({"train": 100_000}, {}, 50_000) == {"train": 150}  # by size: 5 GB / 32 MiB
    assert shards.plan_shards({"train": 100, "val": 10}, {}, 50_000) == {"train": 1, "val": 1}
    assert shards.plan_shards({"train": 10, "test": 4}, {}, 50_000, fixed=4) == {"train": 4, "test": 4}


@pytest.mark.parametrize("mode", ["in_memory", pytest.param("multi_processing", marks=pytest.mark.slow)])
def test_spilled_shards_equal_grouped_shards(tmp_path, mode):
    """The local spill path (pointers grouped, records in scratch files) writes the very bytes the plain
    GroupByKey path does, and cleans its scratch files up."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    records = [
        shards.Record(split, shards.record_key(f"id_{i:03d}", c), f"{split}-{i}-{c}".encode() * (i % 7 + 1))
        for i in range(120)
        for c in range(2)
        for split in (("train",) if i % 4 else ("val", "test"))
    ]
    plan = {"train": 3, "val": 2, "test": 1}
    writers = {"grouped": None, "spilled": str(tmp_path / "spill")}
    # Both paths in one pipeline (one set of worker processes), each from the same records and plan.
    with beam.Pipeline(options=PipelineOptions(["--direct_running_mode", mode, "--direct_num_workers", "2"])) as p:
        plan_pc = p | "Plan" >> beam.Create([plan])
        created = p | beam.Create(records, reshuffle=False)
        for name, spill in writers.items():
            _ = created | name >> shards.WriteShards(str(tmp_path / name), plan_pc, spill)
    outputs = {name: {f.name: f.read_bytes() for f in sorted((tmp_path / name).iterdir())} for name in writers}
    assert len(outputs["grouped"]) == 6 and outputs["spilled"] == outputs["grouped"]
    assert not (tmp_path / "spill").exists()  # scratch files removed once every shard is written


def test_median_frequency_weights():
    from schemas.class_balance import class_balance

    freq, weights = class_balance([10, 30, 0, 60])
    np.testing.assert_allclose(freq, [0.1, 0.3, 0.0, 0.6])
    np.testing.assert_allclose(weights, [3.0, 1.0, 0.0, 0.5])


def test_median_frequency_weights_of_no_pixels_are_one_rule_for_preprocess_and_trainer():
    """No labelled pixel at all: every weight 1.0 (unweighted) in metadata.json and in the trainer alike; all-zero
    weights would make a weighted loss 0/0."""
    from schemas.class_balance import class_balance
    from trainer.data_dir import median_frequency_weights

    freq, weights = class_balance([0, 0, 0])
    assert freq == [0.0, 0.0, 0.0] and weights == [1.0, 1.0, 1.0]
    assert median_frequency_weights(np.zeros(3, np.int64)) == weights
    assert stats.dataset_stats([1.0] * 3, [1.0] * 3, [0, 0, 0]).class_weights == weights
    assert stats.dataset_stats([1.0] * 3, [1.0] * 3, [10, 30, 60]).class_weights == pytest.approx(
        median_frequency_weights(np.array([10, 30, 60]))
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--dataset", "coco"], "--dataset must be one of pet, cityscapes, .*got .coco."),
        (["--image_size", "big"], "--image_size must be"),
        (["--image_size", "4"], "--image_size must be"),
        (["--num_shards", "-1"], "--num_shards"),
        (["--val_fraction", "1.5"], "--val_fraction"),
        (["--augment_copies", "1000"], "--augment_copies"),
        (["--num_shard", "3"], "unknown flag --num_shard (did you mean --num_shards"),
        (["--label_mode", "binary", "--dataset", "cityscapes"], "Pet only"),
    ],
)
def test_bad_flags_raise_usage_error(argv, message):
    base = {"--dataset": "pet", "--input_dir": "in", "--output_dir": "out", "--image_size": "32"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = [x for kv in base.items() for x in kv]
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_args(args)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_size": (4, 64)}, "--image_size must be H or H,W with 8 <= each <= 4096"),
        ({"image_size": (64,)}, "--image_size must be (H, W)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "--test_fraction must leave room for train"),
        ({"augment_copies": 65}, "--augment_copies"),
        ({"dataset": "cityscapes", "label_mode": "binary"}, "Pet only"),
        ({"output_dir": "IN/records"}, "inside --input_dir"),
        ({"pipeline_args": ["--runer", "x"]}, "unknown flag(s) --runer"),
    ],
)
def test_a_config_built_in_python_is_checked_as_flags_are(tmp_path, change, message):
    """``run(config)`` refuses what the command line refuses, before it claims or reads anything."""
    from pipelines.preprocess import PreprocessConfig, run

    src = tmp_path / "src"
    fields = {"dataset": "pet", "input_dir": str(src), "output_dir": str(tmp_path / "out"), "image_size": (64, 64)}
    pipeline_args = change.pop("pipeline_args", [])
    fields.update({k: v.replace("IN", str(src)) if isinstance(v, str) else v for k, v in change.items()})
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(PreprocessConfig(**fields), pipeline_args)
    assert not (tmp_path / "out").exists() and not (src / "records").exists()


def test_good_flags_pass_beam_options_through():
    config, beam_argv = parse_args(
        [
            "--dataset",
            "cityscapes",
            "--input_dir",
            "gs://b/cs/",
            "--output_dir",
            "gs://b/out",
            "--image_size",
            "256,512",
            "--runner",
            "DirectRunner",
            "--direct_num_workers",
            "2",
            "--temp_location",
            "gs://b/tmp",
        ]
    )
    assert config.image_size == (256, 512) and config.input_dir == "gs://b/cs"
    assert beam_argv == ["--runner", "DirectRunner", "--direct_num_workers", "2", "--temp_location", "gs://b/tmp"]


def test_analysis_batches_decode_like_the_trainer():
    """JPEG records reach the statistics as bytes and are decoded a batch at a time with the trainer's decoder
    (not PIL's, which differs by a few grey levels) into one histogram per batch; PNG records arrive already
    counted and pass through; the totals' moments equal numpy's over the same pixels."""
    import tensorflow as tf

    from pipelines.preprocess.records import AnalysisInput, channel_histogram, label_histogram

    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(5)]
    labels = [rng.integers(0, 3, (16, 24), dtype=np.uint8) for _ in range(5)]
    jpegs = [decode.encode_image(a, "jpeg", 90) for a in arrays]
    decoder = stats.DecodeAnalysisBatch("jpeg", (16, 24))
    decoder.setup()
    expected = np.stack([tf.io.decode_jpeg(j, channels=3).numpy() for j in jpegs])
    np.testing.assert_array_equal(decoder.decode(jpegs), expected)
    pil = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])
    assert not np.array_equal(expected, pil)  # the reason the trainer's decoder is used at all

    batch = [AnalysisInput(1, None, j, label_histogram(m)) for j, m in zip(jpegs, labels)]
    batch.append(AnalysisInput(1, channel_histogram(arrays[0]), None, label_histogram(labels[0])))  # a PNG one
    (out,) = list(decoder.process(batch))
    assert out.examples == 6 and out.image_encoded is None
    fn = stats.TotalsFn()
    totals = fn.extract_output(
        fn.merge_accumulators([fn.add_input(fn.create_accumulator(), out), fn.create_accumulator()])
    )
    pixels = np.concatenate([expected.reshape(-1, 3), arrays[0].reshape(-1, 3)]).astype(np.float64)
    mean, std = totals.exact_moments()
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-9)
    all_labels = np.concatenate([np.stack(labels).ravel(), labels[0].ravel()])
    assert totals.class_pixel_counts(3, 255) == [int((all_labels == c).sum()) for c in range(3)]
    assert totals.pixels == pixels.shape[0] and totals.examples == 6


def test_analysis_carries_histograms_not_frames(cityscapes_raw_dir):
    """What MakeRecords sends to the statistics is a few KiB of histograms whatever the record size, never the
    record's pixels: the local runner holds every element that crosses a stage, so frames sent there grew the
    job's memory with the dataset (~70 MiB per full-size Cityscapes frame)."""
    import apache_beam as beam

    from pipelines.datasets.base import Example
    from pipelines.preprocess.records import ANALYZE_TAG, AnalysisInput, MakeRecords, RecordOptions

    image = next((cityscapes_raw_dir / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))
    gt = str(image).replace("leftImg8bit", "gtFine", 1)[: -len("leftImg8bit.png")] + "gtFine_"
    example = Example(
        split="train",
        example_id=image.name[: -len("_leftImg8bit.png")],
        image_path=str(image),
        mask_path=gt + "labelIds.png",
        instance_path=gt + "instanceIds.png",
    )
    for size in ((64, 128), (256, 512)):
        fn = MakeRecords(RecordOptions(dataset="cityscapes", image_size=size))
        fn.setup()
        analysis = [
            o.value for o in fn.process(example) if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == ANALYZE_TAG
        ]
        assert len(analysis) == 1 and isinstance(analysis[0], AnalysisInput)
        element = analysis[0]
        assert element.image_encoded is None and element.image_histogram.shape == (3, 256)
        assert element.image_histogram.sum() == 3 * size[0] * size[1]
        assert element.label_histogram.sum() == size[0] * size[1]
        assert element.image_histogram.nbytes + element.label_histogram.nbytes <= 8192


def test_statistics_give_tensorflow_transform_totals_not_data(tmp_path):
    """tensorflow-transform gets the train split's totals as its analyzer cache and reads no dataset: the job
    has no stage that batches images for it (Arrow RecordBatches of float32 pixels) or runs the analysis graph
    over them, and the four sums the graph needs are the ones fed."""
    import apache_beam as beam

    from pipelines.common import runner
    from pipelines.preprocess import job as preprocess

    config, beam_argv = parse_args(
        [
            "--dataset",
            "cityscapes",
            "--input_dir",
            str(tmp_path / "src"),
            "--output_dir",
            str(tmp_path / "out"),
            "--image_size",
            "8,16",
        ]
    )
    pipeline = beam.Pipeline(options=runner.make_pipeline_options(beam_argv))
    preprocess.build_pipeline(pipeline, config, str(tmp_path / "tmp"))
    names = [t.unique_name for t in pipeline.to_runner_api().components.transforms.values()]
    assert not [n for n in names if "ApplySavedModel" in n or "ToRecordBatch" in n or "Statistics/Decode" in n]
    step = "WriteDataset/Statistics/Accumulator["
    assert sorted(n for n in names if n.startswith(step) and n.count("/") == 2) == [
        f"{step}{name}]" for name in ("sum", "sum_1", "sum_2", "sum_3")
    ]


def test_histograms_count_every_pixel_like_bincount():
    from pipelines.preprocess.records import channel_histogram, label_histogram

    rng = np.random.default_rng(1)
    for shape in [(5, 7, 3), (2, 5, 7, 3), (1, 1, 3), (300, 3)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        ref = np.stack([np.bincount(a.reshape(-1, 3)[:, c], minlength=256) for c in range(3)])
        np.testing.assert_array_equal(channel_histogram(a), ref)
        np.testing.assert_array_equal(channel_histogram(a[..., ::-1]), ref[::-1])  # a non-contiguous view
    for shape in [(5, 7), (3, 5, 7), (9,)]:
        m = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(label_histogram(m), np.bincount(m.ravel(), minlength=256))


def test_label_files_of_another_size_are_dead_letters_that_name_both_sizes(tmp_path):
    """A mask or instance map whose size is not the image's is a dead letter whose reason names both sizes (the
    mask's path too): the messages records._records gave before it was split into named steps."""
    import apache_beam as beam

    from pipelines.common.decode import encode_instance_mask, encode_mask
    from pipelines.datasets.base import DEAD_LETTER_TAG, Example
    from pipelines.preprocess.records import MakeRecords, RecordOptions

    image = tmp_path / "a_000001_000002_leftImg8bit.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    good_mask, bad_mask = tmp_path / "good_labelIds.png", tmp_path / "bad_labelIds.png"
    good_mask.write_bytes(encode_mask(np.full((20, 30), 7, np.uint8)))
    bad_mask.write_bytes(encode_mask(np.full((10, 30), 7, np.uint8)))
    bad_instances = tmp_path / "bad_instanceIds.png"
    bad_instances.write_bytes(encode_instance_mask(np.full((20, 31), 26001, np.int32)))
    fn = MakeRecords(RecordOptions(dataset="cityscapes", image_size=(16, 32)))
    fn.setup()

    def reason(example):
        out = [
            o.value for o in fn.process(example) if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == DEAD_LETTER_TAG
        ]
        assert len(out) == 1 and out[0].path == str(image)
        return out[0].error

    base = dict(split="train", example_id="a_000001_000002", image_path=str(image))
    assert reason(Example(**base, mask_path=str(bad_mask))) == (
        f"image is 30x20 but its mask {bad_mask} is 30x10 (width x height)"
    )
    assert reason(Example(**base, mask_path=str(good_mask), instance_path=str(bad_instances))) == (
        "image is 30x20 but its instance mask is 31x20"
    )

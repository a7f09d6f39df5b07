"""Pipeline-level checks of ``python -m pipelines.preprocess`` (real DirectRunner, real files).

Session fixtures (tests/fixtures/data.py) hold the Pet and Cityscapes runs; the tests here add a run on a
dataset with every quirk of the real Pet archive, three for determinism (the command twice, multi-processing,
and the same flags in this process), and one for stale shards.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.common.deadletter import read_dead_letters
from pipelines.datasets.base import split_from_hash
from pipelines.shared import pixel_rules, pixels_graph
from pipelines.tools import synthetic
from schemas import features, labels
from schemas.metadata import DatasetMetadata

pytestmark = pytest.mark.slow


def _run(argv: list[str]) -> DatasetMetadata:
    from pipelines.preprocess import from_args, run

    return run(*from_args(argv)).metadata


def _metadata(dst) -> DatasetMetadata:
    return DatasetMetadata.from_json((pathlib.Path(dst) / "metadata.json").read_text())


def _shards(dst, split: str) -> list[str]:
    return sorted(str(p) for p in pathlib.Path(dst).glob(f"{split}-*-of-*.tfrecord.gz"))


def _parsed(dst, split: str) -> list[dict]:
    """Every record of a split, parsed with plain tf.io.parse_single_example on the contract keys."""
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/segmentation/class/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "image/segmentation/class/format": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "image/segmentation/instance/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "image/class/species": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "image/augmentation/copy": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }
    out = []
    for raw in tf.data.TFRecordDataset(_shards(dst, split), compression_type="GZIP"):
        parsed = tf.io.parse_single_example(raw, spec)
        out.append({k: v.numpy() for k, v in parsed.items()})
    return out


def _image(record: dict) -> np.ndarray:
    return tf.io.decode_image(record["image/encoded"], expand_animations=False).numpy()


def _mask(record: dict) -> np.ndarray:
    return tf.io.decode_png(record["image/segmentation/class/encoded"]).numpy()[..., 0]


# ------------------------------------------------------------------------------------------ the Pet fixture
def test_pet_records_parse_on_contract_keys(pet_records_dir):
    meta = _metadata(pet_records_dir)
    assert (meta.dataset, meta.num_classes, meta.class_names) == ("pet", 3, ["pet", "background", "border"])
    assert meta.image_size == [32, 32] and meta.ignore_label == 255
    for split in features.SPLITS:
        records = _parsed(pet_records_dir, split)
        assert len(records) == meta.counts[split] > 0
        for r in records:
            assert (r["image/height"], r["image/width"]) == (32, 32)
            # --image_format auto: Pet records keep the photos' codec (JPEG); masks are always PNG.
            assert r["image/format"] == b"jpeg" and r["image/segmentation/class/format"] == b"png"
            assert _image(r).shape == (32, 32, 3)
            # Nearest-neighbour resize of a trimap never invents a value: only 0/1/2 appear.
            assert set(np.unique(_mask(r))) <= {0, 1, 2}
            assert 0 <= r["image/class/label"] < 37 and r["image/class/species"] in (0, 1)
            name = r["image/filename"].decode()
            assert r["image/class/species"] == (0 if name[0].isupper() else 1)


def test_pet_counts_add_up(pet_records_dir, pet_raw_dir):
    meta = _metadata(pet_records_dir)
    assert meta.dead_letter_count == 0 and read_dead_letters(str(pet_records_dir)) == []
    assert meta.inputs_seen == sum(meta.source_counts.values()) + meta.dead_letter_count == 24
    assert meta.counts == meta.source_counts  # no augmentation
    assert len(list((pet_raw_dir / "images").iterdir())) == 24


def test_pet_splits_follow_list_files_and_hash(pet_records_dir, pet_raw_dir):
    test_ids = {
        line.split()[0]
        for line in (pet_raw_dir / "annotations" / "test.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    seen: dict[str, str] = {}
    for split in features.SPLITS:
        for r in _parsed(pet_records_dir, split):
            name = r["image/filename"].decode()
            assert name not in seen, f"{name} in both {seen.get(name)} and {split}"
            seen[name] = split
    assert len(seen) == 24
    for name, split in seen.items():
        expected = "test" if name in test_ids else split_from_hash(name, 0.1)
        assert split == expected


def test_transform_fn_matches_train_records(pet_records_dir):
    """metadata.json stats = the tft graph's constants = numpy over the train records' pixels."""
    import tensorflow_transform as tft

    meta = _metadata(pet_records_dir)
    train = _parsed(pet_records_dir, "train")
    pixels = np.concatenate([_image(r).reshape(-1, 3) for r in train]).astype(np.float64)
    np.testing.assert_allclose(meta.stats.channel_mean, pixels.mean(0), rtol=1e-4)
    np.testing.assert_allclose(meta.stats.channel_std, pixels.std(0), rtol=1e-3)
    counts = np.bincount(np.concatenate([_mask(r).ravel() for r in train]), minlength=3)[:3]
    assert meta.stats.class_pixel_counts == counts.tolist()
    freq = counts / counts.sum()
    np.testing.assert_allclose(meta.stats.class_weights, np.median(freq) / freq, rtol=1e-4)
    # The published graph normalises with those constants.
    output = tft.TFTransformOutput(str(pet_records_dir))
    image = tf.constant(_image(train[0])[None].astype(np.float32))
    out = output.transform_raw_features({"image": image, "label": tf.zeros([1, 32, 32], tf.int64)})
    expected = (image.numpy() - np.array(meta.stats.channel_mean)) / np.array(meta.stats.channel_std)
    np.testing.assert_allclose(out["image"].numpy(), expected, atol=1e-3)


# ----------------------------------------------------------------------------------- the Cityscapes fixture
def test_cityscapes_records(cityscapes_records_dir, cityscapes_raw_dir):
    meta = _metadata(cityscapes_records_dir)
    assert meta.counts == meta.source_counts == {"train": 4, "val": 2, "test": 1}
    assert meta.num_classes == 19 and meta.image_size == [32, 64] and meta.dead_letter_count == 0
    lut = labels.cityscapes_label_id_to_train_id()
    for split in ("train", "val"):
        for r in _parsed(cityscapes_records_dir, split):
            name = r["image/filename"].decode()
            city = name.split("_")[0]
            raw = np.asarray(Image.open(cityscapes_raw_dir / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"))
            expected = pixels_graph.resize_mask(tf.constant(lut[raw]), (32, 64)).numpy()
            np.testing.assert_array_equal(_mask(r), expected)  # labelIds → trainIds, nearest, exactly
            instances = tf.io.decode_png(r["image/segmentation/instance/encoded"], dtype=tf.uint16).numpy()
            assert instances.shape == (32, 64, 1) and instances.max() >= 24000  # person/car ids kept, 16-bit
    (test_record,) = _parsed(cityscapes_records_dir, "test")
    # Cityscapes test ships placeholder labels: image-only records.
    assert test_record["image/segmentation/class/encoded"] == b""
    assert _image(test_record).shape == (32, 64, 3)


def test_resize_never_invents_labels():
    rng = np.random.default_rng(0)
    values = np.array([0, 1, 2, 7, 18, 255], np.uint8)
    mask = values[rng.integers(0, len(values), size=(37, 53))]
    for size in ((16, 16), (32, 64), (100, 80), (37, 53)):
        for mode in pixel_rules.RESIZE_MODES:
            out = pixels_graph.resize_mask(tf.constant(mask), size, mode).numpy()
            assert out.shape == size and set(np.unique(out)) <= set(values.tolist())


# ------------------------------------------------------------------------------- quirks of the real archive
@pytest.fixture(scope="module")
def quirks_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pet_quirks")
    expected = synthetic.write_pet_quirks_dataset(str(root / "src"))
    dst = root / "dst"
    meta = _run(
        [
            "--dataset",
            "pet",
            "--input_dir",
            str(root / "src"),
            "--output_dir",
            str(dst),
            "--image_size",
            "24,32",
            "--resize_mode",
            "pad",
            "--direct_running_mode",
            "in_memory",
        ]
    )
    return root / "src", dst, meta, expected


def test_every_quirk_routed(quirks_run):
    src, dst, meta, expected = quirks_run
    got_records = {}
    for split in features.SPLITS:
        for r in _parsed(dst, split):
            got_records[r["image/filename"].decode()] = (split, r)
    assert set(got_records) == set(expected["records"])
    for name, split in expected["records"].items():
        assert got_records[name][0] == (split or split_from_hash(name, 0.1))
        r = got_records[name][1]
        assert _image(r).shape == (24, 32, 3)  # RGBA, palette GIF, grayscale and CMYK all became RGB
        listed = expected["listed"].get(name)
        assert (r["image/class/label"], r["image/class/species"]) == (listed or (-1, -1))
        # pad mode: padding rows are labelled ignore, content keeps trimap classes only.
        assert set(np.unique(_mask(r))) <= {0, 1, 2, 255}
    dead = {pathlib.Path(d["path"]).relative_to(src).as_posix(): d["error"] for d in read_dead_letters(str(dst))}
    assert set(dead) == set(expected["dead_letters"])
    for path, reason in expected["dead_letters"].items():
        assert reason.lower() in dead[path].lower(), (path, dead[path])
    # Every input file ends in exactly one place, and the counts say so.
    assert meta.dead_letter_count == len(dead)
    assert meta.inputs_seen == sum(meta.source_counts.values()) + meta.dead_letter_count
    assert sum(meta.counts.values()) == len(got_records) == sum(meta.source_counts.values())


def test_grayscale_record_is_grey(quirks_run):
    _, dst, _, _ = quirks_run
    (r,) = [r for r in _parsed(dst, "test") if r["image/filename"] == b"Bombay_7"]
    image = _image(r).astype(int)
    assert np.abs(image[..., 0] - image[..., 1]).max() <= 1 and np.abs(image[..., 1] - image[..., 2]).max() <= 1


# ---------------------------------------------------------------------------------------------- determinism
def _files(dst) -> dict[str, bytes]:
    out = {}
    for p in sorted(pathlib.Path(dst).rglob("*")):
        rel = p.relative_to(dst).as_posix()
        if p.is_file() and (rel.endswith(".tfrecord.gz") or rel == "metadata.json" or rel.startswith("dead_")):
            out[rel] = p.read_bytes()
    return out


def _command(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_the_command_gives_the_same_bytes_every_run_in_processes_or_in_one(pet_raw_dir, tmp_path):
    """The command itself, twice, with augmentation, multi-processing (2 workers): it exits 0 with its summary
    on stdout (it ends the process without the interpreter's teardown, ``runner.exit_process``, so the summary
    must still get there) and every output complete; the second run's outputs are byte-identical to the
    first's, the tensorflow-transform graph included, except fingerprint.pb (a random UUID on every save).
    The same flags run in one process (``in_memory``, in this test process) give the same records, metadata
    and dead letters, and a graph that computes the same bits."""
    flags = [
        "--dataset",
        "pet",
        "--input_dir",
        str(pet_raw_dir),
        "--image_size",
        "32",
        "--augment_copies",
        "2",
        "--seed",
        "7",
        "--num_shards",
        "2",
    ]
    processes = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    for name in ("a", "again"):
        result = _command(*flags, "--output_dir", str(tmp_path / name), *processes)
        assert result.returncode == 0, result.stderr
        assert "records per split" in result.stdout and "dead letters" in result.stdout
    written = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert written["inputs_seen"] == sum(written["source_counts"].values()) + written["dead_letter_count"]
    assert (tmp_path / "a" / "transform_fn" / "saved_model.pb").exists()

    def every_file(root):
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "fingerprint.pb"
        }

    first, second = every_file(tmp_path / "a"), every_file(tmp_path / "again")
    assert set(first) == set(second) and "transform_fn/saved_model.pb" in first
    for name in first:
        assert first[name] == second[name], name

    meta_a = _metadata(tmp_path / "a")
    meta_b = _run(flags + ["--output_dir", str(tmp_path / "b"), "--direct_running_mode", "in_memory"])
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(files_a) == set(files_b) and len(_shards(tmp_path / "a", "train")) == 2
    for name in files_a:
        assert files_a[name] == files_b[name], name
    # The tft graphs were traced in different processes (function names differ), but their analysed constants
    # are exact integer sums, so what they compute is bit for bit the same however the examples were batched.
    import tensorflow_transform as tft

    image = tf.constant(_image(_parsed(tmp_path / "a", "train")[0])[None].astype(np.float32))
    out_a = tft.TFTransformOutput(str(tmp_path / "a")).transform_raw_features({"image": image})
    out_b = tft.TFTransformOutput(str(tmp_path / "b")).transform_raw_features({"image": image})
    assert set(out_a) == set(out_b)
    for key in out_a:
        np.testing.assert_array_equal(out_a[key].numpy(), out_b[key].numpy(), err_msg=key)
    # Counts: augmented copies only in train; sources and splits as without augmentation.
    assert meta_a.counts["train"] == 3 * meta_a.source_counts["train"]
    assert meta_a.counts["val"] == meta_a.source_counts["val"] and meta_a.counts["test"] == meta_a.source_counts["test"]
    assert meta_a.inputs_seen == 24 and meta_b.counts == meta_a.counts
    train = _parsed(tmp_path / "a", "train")
    by_id: dict[str, dict[int, dict]] = {}
    for r in train:
        by_id.setdefault(r["image/filename"].decode(), {})[int(r["image/augmentation/copy"])] = r
    assert all(sorted(copies) == [0, 1, 2] for copies in by_id.values())
    some = next(iter(by_id.values()))
    assert not np.array_equal(_image(some[0]), _image(some[1]))  # copies really differ from the original
    for copies in by_id.values():
        for r in copies.values():
            assert set(np.unique(_mask(r))) <= {0, 1, 2}  # crops and flips never invent labels


def test_rerun_leaves_no_stale_shards_and_no_file_it_did_not_write_is_deleted(pet_records_dir, pet_raw_dir, tmp_path):
    dst = tmp_path / "dst"
    shutil.copytree(pet_records_dir, dst)
    # Named like a shard, but not written by segflow (not in DST's owner record): never deleted by its name.
    (dst / "val-00007-of-00009.tfrecord.gz").write_bytes(b"someone else's")
    assert "train-00000-of-00001.tfrecord.gz" in {p.name for p in dst.glob("*.tfrecord.gz")}
    meta = _run(
        [
            "--dataset",
            "pet",
            "--input_dir",
            str(pet_raw_dir),
            "--output_dir",
            str(dst),
            "--image_size",
            "32",
            "--num_shards",
            "3",
            "--direct_running_mode",
            "in_memory",
        ]
    )
    names = {p.name for p in dst.glob("*.tfrecord.gz")} - {"val-00007-of-00009.tfrecord.gz"}
    assert names == {f"{s}-{i:05d}-of-00003.tfrecord.gz" for s in features.SPLITS for i in range(3)}
    assert (dst / "val-00007-of-00009.tfrecord.gz").read_bytes() == b"someone else's"
    (dst / "val-00007-of-00009.tfrecord.gz").unlink()  # not a record file: out of the way of the glob below
    assert meta.num_shards == {"train": 3, "val": 3, "test": 3}
    # Shards no record hashed to are still valid (empty) GZIP TFRecord files.
    assert {s: len(_parsed(dst, s)) for s in features.SPLITS} == meta.counts
    assert not list(dst.glob(".segflow-tmp-*")), "temporary files left behind"

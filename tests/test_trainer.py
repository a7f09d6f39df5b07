"""The trainer end to end on tiny records: input pipeline, learning, export parity, fault tolerance,
multi-worker training with two real processes, and clear errors for bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tests.fixtures.model import TINY_UNET
from trainer import data, export, losses, models, normalization, task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **extra}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None) if "TF_CONFIG" not in extra else None
    return env


def _cmd(data_dir, job_dir, *extra) -> list[str]:
    return [sys.executable, "-m", "trainer.task", "--data_dir", str(data_dir), "--job_dir", str(job_dir),
            "--model", "unet", "--base_filters", "4", "--depth", "2", "--verbose", "2", *map(str, extra)]


# ------------------------------------------------------------------------------------------ input pipeline
def test_pipeline_is_seeded_and_resume_skips_exactly(pet_records_dir):
    info = data.load_dataset_info(str(pet_records_dir))
    kw = dict(training=True, seed=3, augment_images=True, deterministic=True, shuffle_buffer=64)
    stream = [b for b in data.make_dataset(info, "train", 4, **kw).take(5)]
    again = [b for b in data.make_dataset(info, "train", 4, **kw).take(5)]
    resumed = [b for b in data.make_dataset(info, "train", 4, start_step=3, **kw).take(2)]
    for (x1, y1), (x2, y2) in zip(stream, again):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    for (x1, y1), (x2, y2) in zip(stream[3:], resumed):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    images, labels = stream[0]
    # Raw uint8 out of the pipeline; the model's first layer normalises.
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.uint8 and labels.dtype == tf.uint8
    assert set(np.unique(labels.numpy())) <= {0, 1, 2, 255}
    # The tft layer normalises with the transform's statistics: roughly zero-mean, unit-variance.
    normalised = normalization.TransformNormalization(info.data_dir)(images)
    assert normalised.dtype == tf.float32
    assert abs(float(tf.reduce_mean(normalised))) < 1.0 and 0.3 < float(tf.math.reduce_std(normalised)) < 3.0


def test_eval_pipeline_pads_each_worker_to_the_same_steps(pet_records_dir):
    info = data.load_dataset_info(str(pet_records_dir))
    n = info.count("train")
    steps = data.eval_steps(info, "train", 4)
    labelled = 0
    for worker in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        batches = list(data.make_dataset(info, "train", 2, training=False, input_context=ctx, steps=steps)
                       .take(steps + 1))
        assert all(x.shape[0] == 2 for x, _ in batches)
        labelled += sum(int(np.any(y.numpy() != 255, axis=(1, 2)).sum()) for _, y in batches[:steps])
    assert labelled == n  # every record once across workers; padding is all-ignore


# ------------------------------------------------------------------------------------------------ learning
def test_overfitting_one_batch_makes_the_loss_fall(pet_records_dir):
    info = data.load_dataset_info(str(pet_records_dir))
    images, labels = next(iter(data.make_dataset(info, "train", 4, training=True, seed=0)))
    keras.utils.set_random_seed(0)
    network = models.build_model("unet", (32, 32, 3), info.num_classes, base_filters=8, depth=2)
    model = normalization.with_transform(network, info.data_dir, (32, 32, 3))
    # Serialisable (TensorBoard writes the model's JSON): the tft layer's config is its directory.
    assert f'"transform_output_dir": "{info.data_dir}"' in model.to_json()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.SegmentationLoss("ce"), jit_compile=False)
    history = [float(model.train_on_batch(images, labels)) for _ in range(40)]
    assert history[-1] < 0.5 * history[0], history


# ------------------------------------------------------------------------------------------------- export
def test_export_parity_raw_bytes_vs_training_graph(pet_job_dir, pet_records_dir):
    """Ids the SavedModel computes from a record's raw image bytes == the training graph's on that record."""
    info = data.load_dataset_info(str(pet_records_dir))
    network = models.build_model("unet", (32, 32, 3), 3, base_filters=TINY_UNET["base_filters"],
                                 depth=TINY_UNET["depth"])
    ckpt = tf.train.Checkpoint(model=network)
    ckpt.restore(tf.train.latest_checkpoint(str(pet_job_dir / "checkpoints"))).assert_existing_objects_matched(
    ).expect_partial()
    # The training graph: raw uint8 → tft layer → network, on the record's decoded image.
    model = normalization.with_transform(network, info.data_dir, (32, 32, 3))

    raw = [r.numpy() for r in tf.data.TFRecordDataset(info.shards["val"] + info.shards["test"], "GZIP")]
    images = tf.stack([data.decode_record(tf.constant(r), info.image_size, 255)[0] for r in raw])
    expected = tf.argmax(model(images, training=False), -1).numpy()
    # The pixels the trainer decoded, as lossless bytes: serving decodes JPEG files with PIL's (accurate) IDCT,
    # the trainer decodes its q95 record JPEGs with TF's faster default, and the two differ by a grey level or so.
    encoded = [tf.io.encode_png(image).numpy() for image in images]

    served = tf.saved_model.load(str(pet_job_dir / "model")).signatures["serving_default"]
    out = served(image_bytes=tf.constant(encoded))
    assert out["class_ids"].shape == expected.shape
    np.testing.assert_array_equal(out["height"].numpy(), 32)
    np.testing.assert_array_equal(out["class_ids"].numpy(), expected)


def test_served_model_input_is_the_record_image(pet_job_dir, pet_raw_dir):
    """No train/serve skew at the input: the SavedModel's ``preprocess`` turns a raw file into the pixels
    preprocess put in that file's record before encoding it (decode, then the records' PIL resize vs the graph's
    TF resize: at most one grey level of rounding), for every file of the raw dataset and for large JPEGs that
    both decode at a reduced scale, in both resize modes."""
    import io

    from PIL import Image

    from pipelines.common.decode import DecodeError, decode_rgb
    from schemas import imaging

    size = (32, 32)
    preprocess = tf.saved_model.load(str(pet_job_dir / "model")).signatures["preprocess"]
    rng = np.random.default_rng(3)
    files = {path.name: path.read_bytes() for path in sorted((pet_raw_dir / "images").iterdir())}
    for height, width in ((300, 400), (130, 300), (700, 90)):
        buf = io.BytesIO()
        smooth = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
        Image.fromarray(smooth).resize((width, height), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=90)
        files[f"large_{height}x{width}.jpg"] = buf.getvalue()
    compared = 0
    for name, raw in files.items():
        try:
            decoded, full_hw = decode_rgb(raw, size)
        except DecodeError:
            continue  # a dead letter in preprocess, and one in inference
        record_image = imaging.resize_image_host(decoded, size, "stretch", content_hw=full_hw)
        served = preprocess(image_bytes=tf.constant(raw))
        assert (int(served["height"]), int(served["width"])) == full_hw, name
        assert np.abs(served["image"].numpy().astype(int) - record_image).max() <= 1, name
        compared += 1
    assert compared >= 10
    # Pad mode: the content box comes from the full size, also when the JPEG was decoded at half scale.
    server = export.SegmentationServer(keras.Sequential([keras.layers.Input((32, 32, 3))]), size, "pad", 3)
    raw = files["large_700x90.jpg"]
    decoded, full_hw = decode_rgb(raw, size)
    record_image = imaging.resize_image_host(decoded, size, "pad", content_hw=full_hw)
    assert np.abs(server.preprocess(tf.constant(raw))["image"].numpy().astype(int) - record_image).max() <= 1


def test_serving_returns_each_image_at_its_own_size(pet_job_dir):
    import io

    from PIL import Image

    def encode(h, w, fmt):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(h).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
        return buf.getvalue()

    loaded = tf.saved_model.load(str(pet_job_dir / "model"))
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([encode(40, 50, "PNG"),
                                                                         encode(21, 70, "JPEG")]))
    ids, probs = out["class_ids"].numpy(), out["probabilities"].numpy()
    assert ids.shape == (2, 40, 70) and probs.shape == (2, 40, 70, 3)
    assert list(out["height"].numpy()) == [40, 21] and list(out["width"].numpy()) == [50, 70]
    assert ids[0, :, 50:].max() == ids[0, :, 50:].min() == 255 and ids[1, 21:].min() == 255
    assert ids[1, :21].max() < 3 and probs[1, 21:].max() == 0.0
    np.testing.assert_allclose(probs[0, :40, :50].sum(-1), 1.0, rtol=1e-5)
    # serving_default = preprocess → predict_resized → postprocess.
    sig = loaded.signatures
    pre = sig["preprocess"](image_bytes=tf.constant(encode(21, 70, "JPEG")))
    p = sig["predict_resized"](images=pre["image"][tf.newaxis])["probabilities"][0]
    post = sig["postprocess"](probabilities=p, height=pre["height"], width=pre["width"])
    np.testing.assert_array_equal(post["class_ids"].numpy(), ids[1, :21, :70])


# ------------------------------------------------------------------------------------------- bad input
def test_bad_data_dir_is_one_clear_line(tmp_path, capsys):
    assert task.main(["--data_dir", str(tmp_path / "nope"), "--model", "unet", "--job_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err and "pipelines.preprocess" in err
    (tmp_path / "empty").mkdir()
    assert task.main(["--data_dir", str(tmp_path / "empty"), "--model", "unet", "--job_dir", str(tmp_path)]) == 1
    assert "no metadata.json" in capsys.readouterr().err


def test_mismatched_transform_is_refused(pet_records_dir, cityscapes_records_dir, tmp_path, capsys):
    dst = tmp_path / "mixed"
    shutil.copytree(pet_records_dir, dst)
    for name in ("transform_fn", "transformed_metadata"):
        shutil.rmtree(dst / name)
        shutil.copytree(cityscapes_records_dir / name, dst / name)
    assert task.main(["--data_dir", str(dst), "--model", "unet", "--job_dir", str(tmp_path / "job")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not match" in err and "rerun preprocess" in err


def test_bad_flags_fail_fast(pet_records_dir, tmp_path, capsys):
    base = ["--data_dir", str(pet_records_dir), "--job_dir", str(tmp_path / "job")]
    assert task.main(base + ["--model", "vgg"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert task.main(base + ["--model", "unet", "--batch_size", "0"]) == 2
    assert "--batch_size must be >= 1" in capsys.readouterr().err
    assert task.main(base + ["--model", "unet", "--depth", "6"]) == 2  # 32 px records, stride 64
    assert "multiples of 64" in capsys.readouterr().err
    assert task.main(base + ["--model", "unet", "--class_weights", "1,2"]) == 2
    assert "3 classes" in capsys.readouterr().err
    assert not (tmp_path / "job").exists()


def test_parser_accepts_every_documented_flag():
    args = task.build_parser().parse_args([
        "--data_dir", "gs://b/dst", "--model", "fcn8s", "--job_dir", "gs://b/job", "--epochs", "3",
        "--batch_size", "16", "--strategy", "multi_worker", "--loss", "ce_dice", "--class_weights",
        "--learning_rate", "0.01", "--deterministic", "--augment", "--mixed_precision",
        "--backbone_weights", "/w.h5", "--base_filters", "64", "--depth", "4", "--steps_per_epoch", "5",
        "--validation_steps", "2", "--seed", "7", "--shuffle_buffer", "8", "--checkpoint_steps", "10",
        "--eval_split", "val"])
    assert args.class_weights == "auto" and args.strategy == "multi_worker" and args.mixed_precision


# ---------------------------------------------------------------------------------------- fault tolerance
def _latest_step(job) -> int:
    path = tf.train.latest_checkpoint(str(job / "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else 0


@pytest.mark.slow
def test_sigkilled_run_resumes_from_its_last_checkpoint(pet_records_dir, tmp_path):
    job = tmp_path / "job"
    # 18 train records / batch 2 = 9 steps per epoch; 3 epochs; a checkpoint every step.
    cmd = _cmd(pet_records_dir, job, "--epochs", 3, "--validation_steps", 1, "--batch_size", 2, "--checkpoint_steps", 1,
               "--deterministic")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.time() + 240
    while _latest_step(job) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _latest_step(job)
    assert 4 <= killed_at < 27 and not (job / "model").exists()

    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["resumed_from_step"] >= killed_at and metrics["steps"] == 27
    assert _latest_step(job) == 27 and (job / "model" / "saved_model.pb").exists()
    assert "resumed from" in done.stderr


# ------------------------------------------------------------------------------------------- multi-worker
def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_worker_processes_train_and_export_once(pet_records_dir, tmp_path):
    job = tmp_path / "job"
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            _cmd(pet_records_dir, job, "--epochs", 1, "--batch_size", 4, "--strategy", "auto",
                 "--checkpoint_steps", 2, "--validation_steps", 1),
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO))
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=400)[0])
        finally:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert "strategy: multi_worker" in outputs[0] and "2 replica(s) in sync, 2 task(s)" in outputs[0]
    assert outputs[0].count("exported SavedModel") == 1 and "exported SavedModel" not in outputs[1]
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["replicas"] == 2 and metrics["steps"] == 18 // 4
    assert (job / "model" / "saved_model.pb").exists()
    assert sorted(p.name for p in (job / "checkpoints").iterdir() if p.name.startswith(".")) == []

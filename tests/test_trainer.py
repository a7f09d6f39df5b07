"""The trainer end to end on tiny records: input pipeline, learning, export parity, fault tolerance,
multi-worker training with two real processes, and clear errors for bad input."""

from __future__ import annotations

import json
import logging
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

from tests.fixtures import warm
from tests.fixtures.model import TINY_UNET, save_random_notop, train_tiny
from trainer import data, export, losses, models, normalization, task
from trainer.data_dir import load_dataset_info

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **extra}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None) if "TF_CONFIG" not in extra else None
    return env


def _cmd(data_dir, job_dir, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainer.task",
        "--data_dir",
        str(data_dir),
        "--job_dir",
        str(job_dir),
        "--model",
        "unet",
        "--base_filters",
        "4",
        "--depth",
        "2",
        "--verbose",
        "2",
        "--tflite",  # the tests here are about training and the SavedModel; tests/test_tflite.py converts
        "none",
        *map(str, extra),
    ]


# ------------------------------------------------------------------------------------------ input pipeline
def test_pipeline_is_seeded_and_resume_skips_exactly(pet_records_dir):
    info = load_dataset_info(str(pet_records_dir))
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
    info = load_dataset_info(str(pet_records_dir))
    n = info.count("train")
    steps = data.eval_steps(info, "train", 4)
    labelled = 0
    for worker in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        batches = list(
            data.make_dataset(info, "train", 2, training=False, input_context=ctx, steps=steps).take(steps + 1)
        )
        assert all(x.shape[0] == 2 for x, _ in batches)
        labelled += sum(int(np.any(y.numpy() != 255, axis=(1, 2)).sum()) for _, y in batches[:steps])
    assert labelled == n  # every record once across workers; padding is all-ignore


# ------------------------------------------------------------------------------------------------ learning
@pytest.mark.slow
def test_overfitting_one_batch_makes_the_loss_fall(pet_records_dir):
    info = load_dataset_info(str(pet_records_dir))
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
    info = load_dataset_info(str(pet_records_dir))
    network = models.build_model(
        "unet", (32, 32, 3), 3, base_filters=TINY_UNET["base_filters"], depth=TINY_UNET["depth"]
    )
    # The export holds the best validated epoch's weights (--export best), which need not be the last epoch's.
    exported_epoch = json.loads((pet_job_dir / "metrics.json").read_text())["exported_epoch"]
    checkpoints = pet_job_dir / "checkpoints"
    exported = checkpoints if exported_epoch == TINY_UNET["epochs"] else checkpoints / "best"
    ckpt = tf.train.Checkpoint(model=network)
    ckpt.restore(tf.train.latest_checkpoint(str(exported))).assert_existing_objects_matched().expect_partial()
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


@pytest.mark.parametrize(
    "name,kw,convention",
    [
        ("mobilenetv2_unet", dict(base_filters=4, alpha=0.35), "mobilenetv2"),
        ("fcn8s", dict(base_filters=2), "vgg16"),
        ("mobilenetv2_unet", dict(base_filters=4, alpha=0.35), "tft"),
        ("deeplabv3plus", dict(base_filters=2), "tft"),
    ],
)
@pytest.mark.slow
def test_export_parity_for_each_model_and_input_convention(name, kw, convention, pet_records_dir, tmp_path):
    """The same parity for every network behind every input convention it can have: the pretrained encoders'
    own (in the model, so the export takes raw bytes) and the tft graph (from scratch)."""
    info = load_dataset_info(str(pet_records_dir))
    keras.utils.set_random_seed(1)
    network = models.build_model(name, (32, 32, 3), 3, **kw)
    model = normalization.with_input_convention(network, convention, info.transform_root, (32, 32, 3))
    export.export_model(model, info, str(tmp_path / "model"), name)
    raw = [r.numpy() for r in tf.data.TFRecordDataset(info.shards["val"] + info.shards["test"], "GZIP")]
    images = tf.stack([data.decode_record(tf.constant(r), info.image_size, 255)[0] for r in raw])
    logits = model(images, training=False)
    served = tf.saved_model.load(str(tmp_path / "model"))
    out = served.signatures["serving_default"](image_bytes=tf.constant([tf.io.encode_png(i).numpy() for i in images]))
    np.testing.assert_array_equal(out["class_ids"].numpy(), tf.argmax(logits, -1).numpy())
    np.testing.assert_allclose(out["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-5)


def test_served_model_input_is_the_record_image(pet_job_dir, pet_raw_dir):
    """No train/serve skew at the input: the SavedModel's ``preprocess`` turns a raw file into the pixels
    preprocess put in that file's record before encoding it (decode, then the records' PIL resize vs the graph's
    TF resize: at most one grey level of rounding), for every file of the raw dataset and for large JPEGs that
    both decode at a reduced scale, in both resize modes."""
    import io

    from PIL import Image

    from pipelines.common.decode import DecodeError, decode_rgb
    from pipelines.shared import pixels_host

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
        record_image = pixels_host.resize_image_host(decoded, size, "stretch", content_hw=full_hw)
        served = preprocess(image_bytes=tf.constant(raw))
        assert (int(served["height"]), int(served["width"])) == full_hw, name
        assert np.abs(served["image"].numpy().astype(int) - record_image).max() <= 1, name
        compared += 1
    assert compared >= 10
    # Pad mode: the content box comes from the full size, also when the JPEG was decoded at half scale.
    server = export.SegmentationServer(keras.Sequential([keras.layers.Input((32, 32, 3))]), size, "pad", 3)
    raw = files["large_700x90.jpg"]
    decoded, full_hw = decode_rgb(raw, size)
    record_image = pixels_host.resize_image_host(decoded, size, "pad", content_hw=full_hw)
    assert np.abs(server.preprocess(tf.constant(raw))["image"].numpy().astype(int) - record_image).max() <= 1


def test_serving_returns_each_image_at_its_own_size(pet_job_dir):
    import io

    from PIL import Image

    def encode(h, w, fmt):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(h).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
        return buf.getvalue()

    loaded = tf.saved_model.load(str(pet_job_dir / "model"))
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([encode(40, 50, "PNG"), encode(21, 70, "JPEG")]))
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
    for flags, message in [
        (["--model", "unet", "--backbone_weights", "imagenet"], "unet trains from scratch"),
        (["--model", "mobilenetv2_unet", "--freeze_backbone_epochs", "2"], "needs --backbone_weights"),
        (["--model", "fcn8s", "--alpha", "0.5"], "mobilenetv2_unet only"),
        (["--model", "mobilenetv2_unet", "--alpha", "0.3", "--backbone_weights", "imagenet"], "0.35, 0.5"),
        (["--model", "unet", "--weight_decay", "-1"], "must be >= 0"),
    ]:
        assert task.main(base + flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "job").exists()


def test_parser_accepts_every_documented_flag():
    args = task.build_parser().parse_args(
        [
            "--data_dir",
            "gs://b/dst",
            "--model",
            "fcn8s",
            "--job_dir",
            "gs://b/job",
            "--epochs",
            "3",
            "--batch_size",
            "16",
            "--strategy",
            "multi_worker",
            "--loss",
            "ce_dice",
            "--class_weights",
            "--learning_rate",
            "0.01",
            "--deterministic",
            "--augment",
            "--mixed_precision",
            "--backbone_weights",
            "/w.h5",
            "--base_filters",
            "64",
            "--depth",
            "4",
            "--steps_per_epoch",
            "5",
            "--validation_steps",
            "2",
            "--seed",
            "7",
            "--shuffle_buffer",
            "8",
            "--checkpoint_steps",
            "10",
            "--eval_split",
            "val",
            "--alpha",
            "0.5",
            "--freeze_backbone_epochs",
            "2",
            "--lr_schedule",
            "cosine",
            "--warmup_steps",
            "10",
            "--weight_decay",
            "1e-4",
            "--export",
            "last",
        ]
    )
    assert args.lr_schedule == "cosine" and args.export == "last" and args.alpha == 0.5
    assert args.class_weights == "auto" and args.strategy == "multi_worker" and args.mixed_precision


# ------------------------------------------------------------------------------------------ training recipe
def _network_from(checkpoint_prefix: str, name: str = "unet", **kw):
    network = models.build_model(name, (32, 32, 3), 3, **kw)
    tf.train.Checkpoint(model=network).read(checkpoint_prefix).expect_partial()
    return network


@pytest.mark.slow
def test_export_best_exports_the_best_epoch_not_the_last(pet_records_dir, tmp_path, op_determinism_restored):
    """A learning rate that warms up to a value that blows training up: the early epochs are the good ones.
    JOB/model and metrics.json are the best epoch's; the best weights are a checkpoint of their own.
    --deterministic: which epoch scores best must not depend on thread timing (this tiny model's epochs score
    within a few hundredths of each other, and a parallel data order once made the last epoch the best)."""
    job = tmp_path / "job"
    epochs = 5
    metrics = train_tiny(pet_records_dir, job, epochs=epochs, learning_rate=3.0, warmup_steps=20, deterministic=True)
    best_dir = job / "checkpoints" / "best"
    best_prefix = tf.train.latest_checkpoint(str(best_dir))
    best_epoch = int(best_prefix.rsplit("-", 1)[1])
    assert metrics["export"] == "best" and metrics["exported_epoch"] == best_epoch < epochs
    saved = json.loads((job / "metrics.json").read_text())
    assert saved["exported_epoch"] == best_epoch and saved["miou"] == metrics["miou"]
    best_value = tf.train.load_checkpoint(best_prefix).get_tensor("best_value/.ATTRIBUTES/VARIABLE_VALUE")
    assert abs(metrics["miou"] - best_value) < 1e-6  # the figures are the exported (best) model's

    info = load_dataset_info(str(pet_records_dir))
    raw = [r.numpy() for r in tf.data.TFRecordDataset(info.shards["val"] + info.shards["test"], "GZIP")]
    images = tf.stack([data.decode_record(tf.constant(r), info.image_size, 255)[0] for r in raw])
    served = tf.saved_model.load(str(job / "model")).signatures["predict_resized"](images=images)["probabilities"]
    tiny = dict(base_filters=TINY_UNET["base_filters"], depth=TINY_UNET["depth"])

    def probabilities(prefix):
        model = normalization.with_transform(_network_from(prefix, **tiny), info.transform_root, (32, 32, 3))
        return tf.nn.softmax(model(images, training=False)).numpy()

    np.testing.assert_allclose(served.numpy(), probabilities(best_prefix), atol=1e-5)
    last_prefix = tf.train.latest_checkpoint(str(job / "checkpoints"))
    last = probabilities(last_prefix)
    # The exported variables are the best checkpoint's, not the last's (outputs alone can coincide: a blown-up
    # model predicts one class everywhere whatever its weights).
    exported = [v.numpy() for v in tf.saved_model.load(str(job / "model")).model_variables]
    best_weights = _network_from(best_prefix, **tiny).get_weights()
    last_weights = _network_from(last_prefix, **tiny).get_weights()
    assert len(exported) == len(best_weights) and all(np.array_equal(a, b) for a, b in zip(exported, best_weights))
    assert any(not np.array_equal(a, b) for a, b in zip(exported, last_weights))
    # Rerun (a resume with nothing left to train): the best checkpoint still says which epoch to export.
    again = train_tiny(pet_records_dir, job, epochs=epochs, learning_rate=3.0, warmup_steps=20, deterministic=True)
    assert again["exported_epoch"] == best_epoch and again["miou"] == metrics["miou"]
    # --export last: the last epoch's weights, as before.
    again = train_tiny(
        pet_records_dir, job, epochs=epochs, learning_rate=3.0, warmup_steps=20, deterministic=True, export="last"
    )
    assert again["exported_epoch"] == epochs and again["resumed_from_step"] == metrics["steps"]
    served = tf.saved_model.load(str(job / "model")).signatures["predict_resized"](images=images)["probabilities"]
    np.testing.assert_allclose(served.numpy(), last, atol=1e-5)


def test_learning_rate_schedules():
    from trainer import optim

    cosine = optim.WarmupSchedule(1.0, total_steps=110, warmup_steps=10, kind="cosine")
    rates = [float(cosine(s)) for s in (0, 4, 9, 10, 60, 110, 200)]
    np.testing.assert_allclose(rates, [0.1, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    constant = optim.WarmupSchedule(0.5, total_steps=100, warmup_steps=4)
    np.testing.assert_allclose([float(constant(s)) for s in (0, 3, 50)], [0.125, 0.5, 0.5])
    assert isinstance(optim.make_optimizer(1e-3, 10), keras.optimizers.Adam)
    assert isinstance(optim.make_optimizer(1e-3, 10, weight_decay=1e-4), keras.optimizers.AdamW)
    # The rate is a function of the optimizer's step (checkpointed): the resume test below proves the curve
    # continues where a killed run stopped.


def test_weights_file_that_cannot_be_loaded_is_one_line(pet_records_dir, tmp_path, capsys):
    argv = [
        "--data_dir",
        str(pet_records_dir),
        "--job_dir",
        str(tmp_path / "job"),
        "--model",
        "mobilenetv2_unet",
        "--alpha",
        "0.35",
        "--backbone_weights",
        str(tmp_path / "missing.h5"),
    ]
    assert task.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.h5" in err and "--backbone_weights PATH" in err
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in err
    assert not (tmp_path / "job" / "model").exists()


# ---------------------------------------------------------------------------------------- fault tolerance
def _latest_step(job) -> int:
    path = tf.train.latest_checkpoint(str(job / "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else 0


@pytest.fixture
def op_determinism_restored():
    """An in-process ``--deterministic`` run turns TensorFlow's op determinism on for the whole process; the
    tests that run after this one in the same worker get the setting they had."""
    from tensorflow.python.framework import config as tf_config  # no public switch back off

    was_on = tf_config.is_op_determinism_enabled()
    yield
    if not was_on:
        tf_config.disable_op_determinism()


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_uninterrupted_result_and_the_frozen_encoder_then_fine_tunes(
    pet_records_dir, tmp_path, caplog, op_determinism_restored
):
    """A run SIGKILLed in its frozen epoch (a checkpoint every step) resumes from its last checkpoint, finishes
    that epoch frozen, unfreezes the encoder and continues the cosine schedule (warm-up, AdamW) from the restored
    step: bit for bit what the run without a kill gives. That uninterrupted run's epoch checkpoints show the
    encoder (batch-norm moving statistics included, so it ran in inference mode) is the weights file's after the
    frozen epoch (--freeze_backbone_epochs 1) and fine-tuned after the next."""
    from trainer import TrainConfig, run
    from trainer.models import mobilenetv2_unet

    path, source = save_random_notop("mobilenetv2", tmp_path)
    kw = dict(base_filters=4, alpha=0.35)
    # 18 train records / batch 2 = 9 steps per epoch; 2 epochs.
    flags = dict(
        model="mobilenetv2_unet",
        **kw,
        backbone_weights=str(path),
        freeze_backbone_epochs=1,
        epochs=2,
        batch_size=2,
        validation_steps=1,
        lr_schedule="cosine",
        warmup_steps=3,
        weight_decay=1e-4,
        learning_rate=0.01,
        deterministic=True,
        verbose=0,
        tflite="none",  # what is compared is the training; a TFLite conversion of each run costs ~15 s of CPU
    )
    spe, total = 9, 18

    # Killed: a process of its own (the command), with a checkpoint every step so the kill lands past one.
    job = tmp_path / "job"
    argv = [f"--{k}={v}" for k, v in {**flags, "checkpoint_steps": 1}.items() if k != "deterministic"]
    cmd = [sys.executable, "-m", "trainer.task", f"--data_dir={pet_records_dir}", f"--job_dir={job}", *argv]
    with open(tmp_path / "killed.err", "wb") as err:
        proc = warm.Process([*cmd, "--deterministic"], env=_env(), stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
    deadline = time.time() + 240
    while _latest_step(job) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "killed.err").read_text()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _latest_step(job)
    assert 3 <= killed_at < spe and not (job / "model").exists()

    # Resumed (in this process; checkpoints at epoch ends only, which changes no figure), and the reference
    # without a kill.
    with caplog.at_level(logging.INFO):
        run(TrainConfig(data_dir=str(pet_records_dir), job_dir=str(job), checkpoint_steps=0, **flags))
    assert f"resumed from {job}/checkpoints/ckpt-{killed_at} at step {killed_at}" in caplog.text
    assert "encoder unfrozen" in caplog.text
    ref = tmp_path / "ref"
    run(TrainConfig(data_dir=str(pet_records_dir), job_dir=str(ref), checkpoint_steps=0, **flags))
    resumed, uninterrupted = (json.loads((folder / "metrics.json").read_text()) for folder in (job, ref))
    assert resumed["resumed_from_step"] == killed_at and resumed["steps"] == total
    assert _latest_step(job) == total and (job / "model" / "saved_model.pb").exists()
    for key in ("loss", "miou", "pixel_accuracy", "exported_epoch"):
        assert resumed[key] == uninterrupted[key], key
    a = tf.train.load_checkpoint(str(job / "checkpoints" / f"ckpt-{total}"))
    b = tf.train.load_checkpoint(str(ref / "checkpoints" / f"ckpt-{total}"))
    names = [n for n in a.get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    assert len(names) > 100
    for name in names:
        np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)

    # The frozen epoch, then the fine-tuning one, in the uninterrupted run's epoch checkpoints.
    assert uninterrupted["input_convention"] == "mobilenetv2"

    def encoder_weights(step):
        network = _network_from(str(ref / "checkpoints" / f"ckpt-{step}"), "mobilenetv2_unet", **kw)
        return network.get_layer(mobilenetv2_unet.ENCODER_NAME)

    frozen, tuned = encoder_weights(spe), encoder_weights(total)
    names = [layer.name for layer in frozen.layers if layer.weights]
    for name in names:
        for got, want in zip(frozen.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    changed = [
        name
        for name in names
        if any(
            not np.array_equal(a, b)
            for a, b in zip(tuned.get_layer(name).get_weights(), source.get_layer(name).get_weights())
        )
    ]
    assert len(changed) > len(names) // 2


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
        procs.append(
            warm.Process(
                _cmd(
                    pet_records_dir,
                    job,
                    "--epochs",
                    1,
                    "--batch_size",
                    4,
                    "--strategy",
                    "auto",
                    "--checkpoint_steps",
                    2,
                    "--validation_steps",
                    1,
                ),
                env=_env(TF_CONFIG=tf_config),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=REPO,
            )
        )
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

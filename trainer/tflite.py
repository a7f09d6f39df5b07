"""``JOB/model*.tflite``: the exported model for phones and edge devices (TensorFlow Lite), with measured parity.

Each file is the very Keras model that ``JOB/model`` serves (its first layer the tensorflow-transform
normalisation from ``DST/transform_fn``, ``trainer.normalization``), converted by ``tf.lite.TFLiteConverter`` from
a concrete function at the records' size, batch 1:

  ``images`` uint8 ``[1, H, W, 3]`` RGB 0..255, resized to the records' size as preprocess does
  → ``class_ids`` int32 ``[1, H, W]`` and ``probabilities`` ``[1, H, W, C]`` (float32; uint8 in the int8 file).

Types (``--tflite``, ``TrainConfig.tflite_types``): ``float32`` (``model.tflite``, the SavedModel's arithmetic),
``float16`` (weights stored as float16, computed in float32 by most CPU runtimes; half the size), ``int8`` (full-
integer: weights and activations int8, calibrated on ``CALIBRATION_IMAGES`` training records, uint8 input and
scores; a quarter of the size, for integer-only accelerators). The quantised types are scored on the evaluation
split against the SavedModel's own predictions, and the figures go to ``metrics.json``; an int8 file that loses more
than ``--max_int8_drop`` mIoU fails the export (``DataError``) before anything is published. ``segflow_model.json``
describes every file (``schemas.model_contract.TfliteInfo``).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from schemas import model_contract as contract
from schemas.errors import DataError

logger = logging.getLogger("trainer.task")

TYPES = contract.TFLITE_TYPES  # float32, float16, int8
FILES = contract.TFLITE_FILES  # type -> file name in JOB
# Training records the int8 ranges are calibrated on (TFLite's guidance: ~100-500 representative samples). The
# first ones in file order, without augmentation: the same calibration on every run.
CALIBRATION_IMAGES = 100
DEFAULT_MAX_INT8_DROP = 0.05


def _serving_function(model, image_size: Sequence[int], quantised_input: bool):
    """The converted function: images → class ids and scores. The int8 file's input is declared float32 (0..255)
    so that the converter quantises it (to uint8 with the calibrated scale: ~1, zero point 0)."""
    h, w = int(image_size[0]), int(image_size[1])
    dtype = tf.float32 if quantised_input else tf.uint8

    @tf.function(input_signature=[tf.TensorSpec([1, h, w, 3], dtype, name="images")], autograph=False)
    def serve(images):
        logits = model(images, training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return {
            "class_ids": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
            "probabilities": probabilities,
        }

    return serve


def convert(model, image_size: Sequence[int], kind: str, calibration: Optional[np.ndarray] = None) -> bytes:
    """The ``kind`` TFLite flatbuffer of ``model`` (uint8 ``[B, H, W, 3]`` → logits); ``calibration``: uint8
    ``[N, H, W, 3]`` training images, needed for int8."""
    serve = _serving_function(model, image_size, quantised_input=kind == "int8")
    # The converter saves the trackable it is given as a SavedModel first. Given the Keras model, that save
    # traces every layer's call functions (~4/5 of the conversion's CPU for a small U-Net); a plain module that
    # holds only the variables and the function gives the same flatbuffer, byte for byte (compared when this changed).
    holder = tf.Module()
    holder.weights = list(model.variables)
    holder.serve = serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder)
    if kind == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        if calibration is None or not len(calibration):
            raise ValueError("int8 conversion needs calibration images")

        def representative():
            for image in calibration:
                yield [image[np.newaxis].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def interpreter(content: bytes, num_threads: Optional[int] = None) -> "tf.lite.Interpreter":
    """A ``tf.lite.Interpreter`` on a flatbuffer, tensors allocated (its deprecation notice silenced: it is the
    runtime TensorFlow ships, and the one the tests and the benchmark run)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = tf.lite.Interpreter(model_content=content, num_threads=num_threads)
    runner.allocate_tensors()
    return runner


def predict_ids(runner: "tf.lite.Interpreter", images: Iterable[np.ndarray]) -> np.ndarray:
    """Class ids int32 ``[N, H, W]`` of uint8 ``[H, W, 3]`` images, one interpreter call each (batch 1)."""
    signature = runner.get_signature_runner()
    ((name, detail),) = signature.get_input_details().items()
    out = []
    for image in images:
        batch = np.asarray(image)[np.newaxis].astype(detail["dtype"])
        out.append(signature(**{name: batch})["class_ids"][0])
    return np.stack(out)


def describe(content: bytes, kind: str) -> contract.TfliteFile:
    """What ``segflow_model.json`` says of one file: its input and outputs with dtypes, shapes and (int8)
    quantisation parameters, read back from the flatbuffer itself."""
    signature = interpreter(content).get_signature_runner()

    def tensor(name: str, detail: dict) -> contract.TfliteTensor:
        scale, zero_point = detail["quantization"]
        quantised = bool(scale)
        return contract.TfliteTensor(
            name=name,
            dtype=np.dtype(detail["dtype"]).name,
            shape=[int(d) for d in detail["shape"]],
            scale=float(scale) if quantised else None,
            zero_point=int(zero_point) if quantised else None,
        )

    inputs = signature.get_input_details()
    outputs = signature.get_output_details()
    return contract.TfliteFile(
        type=kind,
        file=FILES[kind],
        bytes=len(content),
        inputs=[tensor(n, d) for n, d in sorted(inputs.items())],
        outputs=[tensor(n, d) for n, d in sorted(outputs.items())],
    )


def first_images(info, split: str, count: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` (None: all) records of ``split`` in file order: uint8 images ``[N, H, W, 3]`` and
    labels ``[N, H, W]``."""
    from trainer import data as data_lib

    n = info.count(split) if count is None else min(count, info.count(split))
    ds = data_lib.make_dataset(info, split, 16, training=False).unbatch().take(n)
    images, labels = [], []
    for image, label in ds.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.stack(images), np.stack(labels)


def _miou(labels: np.ndarray, ids: np.ndarray, info) -> Optional[float]:
    from trainer import metrics as metrics_lib

    matrix = metrics_lib.confusion_matrix(labels, ids, info.num_classes, info.ignore_label).numpy()
    return metrics_lib.summarize(matrix, info.metadata.class_names)["miou"]


def _difference(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else round(a - b, 6)


def export(
    model,
    info,
    kinds: Sequence[str],
    write_path: Callable[[str], str],
    eval_split: str,
    convention: str = "tft",
    max_int8_drop: float = DEFAULT_MAX_INT8_DROP,
) -> tuple[Optional[contract.TfliteInfo], dict]:
    """Converts ``model`` (uint8 images → logits, normalisation inside) to each of ``kinds``, writes the files to
    ``write_path(name)``, and scores each on ``eval_split`` against the SavedModel's predictions (the same
    ``model``); returns what ``segflow_model.json`` says of them and ``metrics.json``'s ``tflite`` figures.
    ``convention``: the model's input convention (``trainer.models.input_convention``). Raises ``DataError`` (one
    line) when the int8 file loses more than ``max_int8_drop`` mIoU; nothing is written then."""
    if not kinds:
        return None, {}
    size = info.image_size
    calibration = first_images(info, "train", CALIBRATION_IMAGES)[0] if "int8" in kinds else None
    images, labels = first_images(info, eval_split, None)
    reference = np.concatenate(
        [np.argmax(model(images[i : i + 16], training=False).numpy(), axis=-1) for i in range(0, len(images), 16)]
    )
    reference_miou = _miou(labels, reference, info)
    contents, files, report = (
        {},
        [],
        {"eval_split": eval_split, "images": int(len(images)), "savedmodel_miou": reference_miou},
    )
    for kind in kinds:
        content = contents[kind] = convert(model, size, kind, calibration)
        ids = predict_ids(interpreter(content), images)
        miou = _miou(labels, ids, info)
        report[kind] = {
            "file": FILES[kind],
            "bytes": len(content),
            "miou": miou,
            "miou_drop": _difference(reference_miou, miou),
            # Pixels whose class id equals the SavedModel's (float32 parity: ~1.0).
            "agreement": float(np.mean(ids == reference)),
        }
        files.append(describe(content, kind))
        logger.info(
            "%s: mIoU %s on %s (SavedModel %s), %.4f of pixels agree",
            FILES[kind],
            "n/a" if miou is None else f"{miou:.4f}",
            eval_split,
            "n/a" if reference_miou is None else f"{reference_miou:.4f}",
            report[kind]["agreement"],
        )
    drop = report.get("int8", {}).get("miou_drop")
    if drop is not None and drop > max_int8_drop:
        raise DataError(
            f"the int8 TFLite model loses {drop:.4f} mIoU on {eval_split} ({reference_miou:.4f} -> "
            f"{reference_miou - drop:.4f}), more than --max_int8_drop {max_int8_drop}: rerun the same command "
            f"(it resumes the finished training) with a larger --max_int8_drop or --tflite float32,float16"
        )
    for kind, content in contents.items():  # only once the gate passed: a failed export writes nothing
        path = write_path(FILES[kind])
        tf.io.gfile.makedirs(os.path.dirname(path) or ".")
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(content)
    mean, std = normalization(convention, info.metadata.stats)
    tflite_info = contract.TfliteInfo(
        input_size=[int(size[0]), int(size[1])],
        normalization=convention,
        channel_mean=mean,
        channel_std=std,
        files=files,
    )
    return tflite_info, report


def normalization(convention: str, stats) -> tuple[list[float], list[float]]:
    """Per-RGB-channel (mean, std) the model's first layer applies: the tft statistics of the training split
    (metadata.json's, the graph's own constants), or a pretrained encoder's fixed convention."""
    if convention == "mobilenetv2":  # x / 127.5 - 1
        return [127.5] * 3, [127.5] * 3
    if convention == "vgg16":  # caffe mode: BGR minus the ImageNet means, unscaled
        return [123.68, 116.779, 103.939], [1.0] * 3
    return [float(m) for m in stats.channel_mean], [float(s) for s in stats.channel_std]

"""Input pipeline throughput: segflow records (trainer.data) vs the seeds' tf.data over raw files.

Same examples, same run: N Pet-like inputs (~375x500 JPEG + PNG trimap) are generated and preprocessed once
(not timed) to records at --image_size; then both pipelines deliver --epochs epochs of batches:
  records: GZIP shards → parse → decode the record's small JPEG + PNG mask → uint8 batches
           (trainer.data.make_dataset; the tft normalisation is the model's first layer, so it is not part
           of the input pipeline)
  seeds:   from_tensor_slices(paths) → read_file → decode_jpeg/png → resize → nearest mask resize → -1 (004)

    python bench/input_pipeline.py [--num_examples 1000] [--image_size 128] [--epochs 3] [--batch_size 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from schemas import features  # noqa: E402
from trainer import data  # noqa: E402
from trainer.data_dir import load_dataset_info  # noqa: E402


def seeds_dataset(image_paths, mask_paths, size, batch_size):
    """The seeds' get_dataset() (004), verbatim in spirit: decode every raw file on every epoch."""

    def load_img_masks(input_img_path, target_img_path):
        input_img = tf.io.read_file(input_img_path)
        input_img = tf.io.decode_jpeg(input_img, channels=3)
        input_img = tf.image.resize(input_img, size)
        input_img = tf.image.convert_image_dtype(input_img, "float32")
        target_img = tf.io.read_file(target_img_path)
        target_img = tf.io.decode_png(target_img, channels=1)
        target_img = tf.image.resize(target_img, size, method="nearest")
        target_img = tf.image.convert_image_dtype(target_img, "uint8")
        target_img -= 1
        return input_img, target_img

    ds = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    return ds.map(load_img_masks, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def throughput(make, epochs: int) -> float:
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _ in make():
            count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num_examples", type=int, default=1000)
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--work_dir", default=None)
    args = p.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="segflow-bench-input-")
    raw, dst = os.path.join(work, "raw"), os.path.join(work, "records")
    if not os.path.exists(os.path.join(dst, "metadata.json")):
        from bench.common import make_pet_inputs  # bench only: the trainer itself never imports pipelines

        make_pet_inputs(raw, args.num_examples)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.preprocess",
                "--dataset",
                "pet",
                "--input_dir",
                raw,
                "--output_dir",
                dst,
                "--image_size",
                str(args.image_size),
                "--val_fraction",
                "0",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    info = load_dataset_info(dst)
    ids = [
        features.parse_example(r)[features.IMAGE_FILENAME].numpy().decode()
        for r in tf.data.TFRecordDataset(info.shards["train"], "GZIP")
    ]
    images = [os.path.join(raw, "images", f"{i}.jpg") for i in ids]
    masks = [os.path.join(raw, "annotations", "trimaps", f"{i}.png") for i in ids]
    size = (args.image_size, args.image_size)

    def records():
        return data.make_dataset(info, "train", args.batch_size, training=False).take(
            data.eval_steps(info, "train", args.batch_size)
        )

    def seeds():
        return seeds_dataset(images, masks, size, args.batch_size)

    throughput(records, 1), throughput(seeds, 1)  # warm-up: tracing, page cache for both
    r = throughput(records, args.epochs)
    s = throughput(seeds, args.epochs)
    print(
        f"{len(ids)} train examples, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
        f"{args.epochs} epochs, {os.cpu_count()} CPUs"
    )
    print(f"records (trainer.data):       {r:8.1f} images/s")
    print(f"seeds (decode raw per epoch): {s:8.1f} images/s")
    print(f"ratio: {r / s:.2f}x")


if __name__ == "__main__":
    main()

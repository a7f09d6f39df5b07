"""Quality and training speed: preprocess a generated shapes dataset (Pet layout) and train U-Net and FCN-8s
on this CPU within a time budget; print validation mIoU and training images/second for each.

    python bench/train_quality.py [--num_examples 400] [--image_size 128] [--epochs 30] [--models unet,fcn8s]

Target (issue 3): small U-Net, 2 CPU cores, preprocess + train <= 5 minutes, validation mIoU >= 0.90.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "unet": ["--base_filters", "8", "--depth", "3"],
    "fcn8s": ["--base_filters", "8"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num_examples", type=int, default=400)
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--models", default="unet,fcn8s")
    p.add_argument("--work_dir", default=None)
    args = p.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="segflow-bench-train-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    raw, dst = os.path.join(work, "raw"), os.path.join(work, "records")
    start = time.time()
    if not os.path.exists(os.path.join(dst, "metadata.json")):
        subprocess.run([sys.executable, "-m", "pipelines.synthetic", "--dataset", "pet", "--output_dir", raw,
                        "--num_examples", str(args.num_examples), "--height", "160", "--width", "200"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "pipelines.preprocess", "--dataset", "pet", "--input_dir", raw,
                        "--output_dir", dst, "--image_size", str(args.image_size), "--val_fraction", "0.15"],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prep = time.time() - start
    print(f"preprocess: {prep:.0f} s ({args.num_examples} examples, {args.image_size}px, {os.cpu_count()} CPUs)")
    for model in args.models.split(","):
        job = os.path.join(work, f"job-{model}")
        t = time.time()
        subprocess.run([sys.executable, "-m", "trainer.task", "--data_dir", dst, "--job_dir", job, "--model",
                        model, "--epochs", str(args.epochs), "--batch_size", str(args.batch_size), "--augment",
                        "--loss", "ce_dice", "--learning_rate", "3e-3", "--verbose", "2", *CONFIGS[model]],
                       check=True, env=env)
        m = json.load(open(os.path.join(job, "metrics.json")))
        print(f"{model:6s} {' '.join(CONFIGS[model])}: train {time.time() - t:.0f} s, val mIoU {m['miou']:.4f}, "
              f"pixel acc {m['pixel_accuracy']:.4f}, per class {m['per_class_iou']}, "
              f"{m['images_per_second']:.1f} train images/s")


if __name__ == "__main__":
    main()

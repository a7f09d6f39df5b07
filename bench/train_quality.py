"""Quality and training speed on this CPU: preprocess a generated shapes dataset (Pet layout: textured objects
with a border band on textured backgrounds) and train each model with each recipe on it, in the same run; print
validation mIoU, time and training images/second for each, then the training speed of the full-width models.

    python bench/train_quality.py [--num_examples 400] [--image_size 128] [--epochs 30]
        [--runs unet:today,unet:recipe,mobilenetv2_unet:recipe,fcn8s:today]

Recipes: ``today`` = constant learning rate, the last epoch exported (segflow before issue 14); ``recipe`` =
linear warm-up then cosine decay, the best-validation epoch exported. Everything trains from scratch (benches
are offline: no ImageNet weights). Target (issue 3): small U-Net, 2 CPU cores, preprocess + train <= 5 minutes,
validation mIoU >= 0.90.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The small configurations trained for quality: a laptop-CPU U-Net and a narrow VGG16 FCN-8s.
SMALL = {
    "unet": ["--base_filters", "8", "--depth", "3"],
    "fcn8s": ["--base_filters", "8"],
    "mobilenetv2_unet": ["--alpha", "0.35", "--base_filters", "16"],
}
RECIPES = {
    "today": ["--export", "last"],
    "recipe": ["--lr_schedule", "cosine", "--warmup_steps", "20", "--export", "best"],
}
# The papers' widths, timed for a few steps only.
FULL = {
    "unet": ["--base_filters", "64", "--depth", "4"],
    "fcn8s": ["--base_filters", "64"],
    "mobilenetv2_unet": ["--alpha", "1.0", "--base_filters", "64"],
}
BUDGET_S = 300


def train(data_dir: str, job: str, model: str, flags: list[str], env: dict, quiet: bool = False) -> dict:
    shutil.rmtree(job, ignore_errors=True)  # a fresh run, never a resumed one
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.task",
            "--data_dir",
            data_dir,
            "--job_dir",
            job,
            "--model",
            model,
            "--verbose",
            "2",
            *flags,
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    with open(os.path.join(job, "metrics.json")) as f:
        return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num_examples", type=int, default=400)
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument(
        "--runs",
        default="unet:today,unet:recipe,mobilenetv2_unet:recipe,fcn8s:today",
        help="model:recipe pairs, trained in this order on the same records",
    )
    p.add_argument("--speed_steps", type=int, default=8, help="steps timed per full-width model (0: skip)")
    p.add_argument("--work_dir", default=None)
    args = p.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="segflow-bench-train-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    raw, dst = os.path.join(work, "raw"), os.path.join(work, "records")
    start = time.time()
    shutil.rmtree(dst, ignore_errors=True)
    if not os.path.exists(os.path.join(raw, "annotations", "list.txt")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.tools.synthetic",
                "--dataset",
                "pet",
                "--output_dir",
                raw,
                "--num_examples",
                str(args.num_examples),
                "--height",
                "160",
                "--width",
                "200",
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    generated = time.time() - start
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
            "0.15",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prep = time.time() - start - generated
    print(
        f"data: {args.num_examples} examples generated in {generated:.0f} s; preprocess {prep:.0f} s "
        f"({args.image_size}px, {os.cpu_count()} CPUs)"
    )
    rows = []
    runs = [tuple(r.split(":")) for r in args.runs.split(",")]
    for model, recipe in runs:
        t = time.time()
        config = [*SMALL[model], *RECIPES[recipe]]
        m = train(
            dst,
            os.path.join(work, f"job-{model}-{recipe}"),
            model,
            [
                "--epochs",
                str(args.epochs),
                "--batch_size",
                str(args.batch_size),
                "--augment",
                "--loss",
                "ce_dice",
                "--learning_rate",
                "3e-3",
                *config,
            ],
            env,
        )
        seconds = time.time() - t
        rows.append((model, recipe, " ".join(SMALL[model]), seconds, m))
        print(
            f"{model} ({recipe}) {' '.join(SMALL[model])}: train {seconds:.0f} s (preprocess + train "
            f"{prep + seconds:.0f} s, budget {BUDGET_S} s), val mIoU {m['miou']:.4f} (epoch "
            f"{m['exported_epoch']} of {args.epochs}), pixel acc {m['pixel_accuracy']:.4f}, per class "
            f"{m['per_class_iou']}, {m['images_per_second']:.1f} train images/s",
            flush=True,
        )
    speed = []
    if args.speed_steps:
        for model in dict.fromkeys(model for model, _ in runs):
            m = train(
                dst,
                os.path.join(work, f"speed-{model}"),
                model,
                [
                    "--epochs",
                    "1",
                    "--steps_per_epoch",
                    str(args.speed_steps),
                    "--validation_steps",
                    "1",
                    "--batch_size",
                    str(args.batch_size),
                    *FULL[model],
                ],
                env,
                quiet=True,
            )
            speed.append((model, " ".join(FULL[model]), m["images_per_second"]))
    print(
        "\n| model | recipe | configuration | train time | val mIoU | exported epoch | pixel accuracy | "
        "train images/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model, recipe, config, seconds, m in rows:
        print(
            f"| {model} | {recipe} | {config}, {args.epochs} epochs | {seconds:.0f} s | {m['miou']:.3f} | "
            f"{m['exported_epoch']} | {m['pixel_accuracy']:.3f} | {m['images_per_second']:.1f} |"
        )
    for model, config, ips in speed:
        print(f"| {model} | | {config} (speed only, {args.speed_steps} steps) | | | | | {ips:.1f} |")


if __name__ == "__main__":
    main()

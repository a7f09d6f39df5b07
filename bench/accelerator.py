"""Accelerator throughput: training images/second of every model under ``MirroredStrategy`` with mixed
precision, and inference frames/second on full-size Cityscapes frames.

    python bench/accelerator.py [--frames 48] [--image_size 512,1024] [--batch_size 8] [--steps 40]
    python bench/accelerator.py --smoke        # a quick CPU run that proves the script works end to end

What it runs, each as the user would (whole ``python -m`` processes, the machine's own devices):
1. ``--frames`` generated Cityscapes-layout frames at 2048x1024 (``bench/common.py``), preprocessed to
   ``--image_size`` (DirectRunner, the defaults);
2. for every model in ``trainer.models.MODELS``: ``trainer.task --strategy mirrored --mixed_precision`` for
   ``--steps`` steps from scratch; the figure is ``metrics.json``'s ``images_per_second`` (every step but the
   first, validation excluded), so tracing and start-up are not in it;
3. ``pipelines.infer`` with the U-Net's export on all frames and on half of them, at their full 2048x1024
   size (masks at input size, the host postprocess): frames/second = the extra frames / the extra seconds,
   so start-up and model loading cancel out.
Mixed precision is float16 compute on GPUs only (the trainer ignores it on a CPU, with a warning): on a machine
without a GPU the figures are float32 CPU figures, and the script says so.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, make_cityscapes_inputs  # noqa: E402


def _run(cmd: list[str], env: dict) -> float:
    """Runs ``cmd`` (quiet unless it fails); returns its wall seconds."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout.decode(errors='replace')[-3000:]}")
    return time.perf_counter() - start


def _devices(env: dict) -> str:
    code = (
        "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); "
        "names = [tf.config.experimental.get_device_details(d).get('device_name', d.name) for d in g]; "
        "print(tf.__version__, len(g), ', '.join(names) or 'no GPU')"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 else "TensorFlow did not start"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=48, help="generated 2048x1024 frames (default 48)")
    p.add_argument("--image_size", default="512,1024", help="training records' H,W (default 512,1024)")
    p.add_argument("--batch_size", type=int, default=8, help="global training batch (default 8)")
    p.add_argument("--steps", type=int, default=40, help="training steps timed per model (default 40)")
    p.add_argument("--models", default=None, help="comma-separated (default: every model the trainer has)")
    p.add_argument("--smoke", action="store_true", help="tiny frames and few steps: checks the script on a CPU")
    p.add_argument("--work_dir", default=None, help="default: a new temporary folder")
    args = p.parse_args(argv)
    height, width = (128, 256) if args.smoke else (1024, 2048)
    if args.smoke:
        args.frames, args.image_size, args.batch_size, args.steps = 4, "64,128", 2, 3
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    from trainer.models import MODELS  # argparse-cheap: the registry imports no model code

    models = args.models.split(",") if args.models else list(MODELS)
    work = args.work_dir or tempfile.mkdtemp(prefix="segflow-bench-accelerator-")
    devices = _devices(env)
    print(f"TensorFlow, GPUs: {devices}; {os.cpu_count()} CPUs", flush=True)
    precision = (
        "float32 on CPU: no GPU, so --mixed_precision is ignored"
        if "no GPU" in devices
        else "mirrored, mixed precision"
    )

    raw = make_cityscapes_inputs(
        os.path.join(work, f"raw-{height}x{width}-{args.frames}"), args.frames, height=height, width=width
    )
    records = os.path.join(work, "records")
    shutil.rmtree(records, ignore_errors=True)
    seconds = _run(
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            "--dataset",
            "cityscapes",
            "--input_dir",
            raw,
            "--output_dir",
            records,
            "--image_size",
            args.image_size,
        ],
        env,
    )
    print(f"preprocess: {args.frames} frames {height}x{width} -> {args.image_size} in {seconds:.1f} s", flush=True)

    rows = []
    for model in models:
        job = os.path.join(work, f"job-{model}")
        shutil.rmtree(job, ignore_errors=True)
        _run(
            [
                sys.executable,
                "-m",
                "trainer.task",
                "--data_dir",
                records,
                "--job_dir",
                job,
                "--model",
                model,
                "--strategy",
                "mirrored",
                "--mixed_precision",
                "--epochs",
                "1",
                "--steps_per_epoch",
                str(args.steps),
                "--validation_steps",
                "1",
                "--batch_size",
                str(args.batch_size),
                "--export",
                "last",
            ],
            env,
        )
        with open(os.path.join(job, "metrics.json")) as f:
            rows.append((model, json.load(f)["images_per_second"]))
        print(f"train {model}: {rows[-1][1]:.1f} images/s", flush=True)

    infer_model = os.path.join(work, f"job-{models[0]}", "model")
    pattern = os.path.join(raw, "leftImg8bit", "train", "*", "*.png")
    all_frames = sorted(__import__("glob").glob(pattern))
    half = os.path.join(work, "half")
    shutil.rmtree(half, ignore_errors=True)
    for path in all_frames[: len(all_frames) // 2]:
        os.makedirs(half, exist_ok=True)
        os.symlink(path, os.path.join(half, os.path.basename(path)))
    timed = {}
    for name, glob_pattern, n in (
        ("half", os.path.join(half, "*.png"), len(all_frames) // 2),
        ("all", pattern, len(all_frames)),
    ):
        out = os.path.join(work, f"pred-{name}")
        timed[name] = (
            n,
            _run(
                [
                    sys.executable,
                    "-m",
                    "pipelines.infer",
                    "--model_dir",
                    infer_model,
                    "--input",
                    glob_pattern,
                    "--output_dir",
                    out,
                ],
                env,
            ),
        )
    (n1, t1), (n2, t2) = timed["half"], timed["all"]
    fps = (n2 - n1) / (t2 - t1) if t2 > t1 else float("nan")

    print(f"\n| model | train images/s ({precision}), {args.image_size}, batch {args.batch_size} |")
    print("|---|---|")
    for model, ips in rows:
        print(f"| {model} | {ips:.1f} |")
    print(
        f"\ninfer ({models[0]}, {height}x{width} frames, masks at input size): {fps:.2f} frames/s "
        f"(marginal, {n1} -> {n2} frames: {t1:.1f} s -> {t2:.1f} s)"
    )


if __name__ == "__main__":
    main()

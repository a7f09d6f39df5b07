"""Inference throughput: the Beam job (``pipelines.infer``) vs a plain Python loop, same model, images, run.

    python bench/infer.py [--model_dir JOB/model] [--num_images 1000] [--height 375 --width 500] [--repeats 3]

Baseline: one process, the model loaded once, then for each image: read the bytes, call the model's
``serving_default`` on that one image, write the mask (native values) and the colour PNG — what a user would
write first. Job: ``python -m pipelines.infer`` with its defaults (DirectRunner, one worker per core, padded
batches of up to 8 images per model call), writing the same masks and colour images. Both run as their own
processes and are timed whole (interpreter start, imports and model loading included), alternating, ``--repeats``
times; medians are printed. Each side's fixed start-up is measured too (a 1-image run), so the steady-state
rate, which a long job converges to, is visible next to the end-to-end one.

Memory: the peak resident memory of the job's whole process tree (launcher + workers), sampled from /proc, for
N/2 and N images: flat means it does not grow with the number of images (images are streamed).

Without ``--model_dir`` the demo's small U-Net is trained first (generated Pet data → preprocess → trainer
subprocess, ~20 s).

``--dataset cityscapes``: full-resolution 2048x1024 frames (generated street-like PNGs, distinct variations of a
pool) through a tiny Cityscapes model (128x256 input, 19 classes, trained first, ~30 s) at two sizes
(``--num_images`` N/3 and N), each run as its own process: this checkout's job, the same job from a baseline
checkout (``--baseline_dir``, e.g. a worktree of the previous commit), and the plain loop; alternating,
``--repeats`` times. Reported per case: wall (median), CPU seconds of the whole process tree (user + sys, from
``RUSAGE_CHILDREN``), CPU per frame, the marginal CPU per frame between the two sizes (what a long job pays), and
peak RSS of the process tree at each size (flat = streamed). Then ``--instances`` on a few frames, both
checkouts, with the instance counts and the time per frame. Masks are compared byte for byte between the
checkouts.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import make_pet_inputs, measure  # noqa: E402
from pipelines.tools import synthetic  # noqa: E402


def run_job(model_dir: str, pattern: str, out: str, extra: list[str]) -> tuple[float, int]:
    """Runs pipelines.infer as a subprocess; returns (wall seconds, peak RSS of its process tree in bytes)."""
    wall, peak, _ = measure(
        [sys.executable, "-m", "pipelines.infer", "--model_dir", model_dir, "--input", pattern, "--output_dir", out]
        + extra
    )
    return wall, peak


# The baseline as a user writes it first: one process, the model loaded once, one image per call.
LOOP = r"""
import os, sys
sys.path.insert(0, os.getcwd())
import numpy as np
from pipelines.infer import outputs
from pipelines.infer.model import SegflowModel, read_model_info
from schemas.labels import spec_for

model_dir, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
info = read_model_info(model_dir)
spec = spec_for(info.dataset, info.label_mode)
model = SegflowModel(model_dir)
os.makedirs(os.path.join(out, "masks"), exist_ok=True)
os.makedirs(os.path.join(out, "color"), exist_ok=True)
for path in paths:
    with open(path, "rb") as f:
        served = model.serve([f.read()])
    h, w = int(served["height"][0]), int(served["width"][0])
    ids = served["class_ids"][0, :h, :w].astype(np.uint8)
    stem = outputs.base_stem(path)
    with open(os.path.join(out, "masks", f"{stem}.png"), "wb") as f:
        f.write(outputs.encode_png(spec.to_native[ids]))
    with open(os.path.join(out, "color", f"{stem}.png"), "wb") as f:
        f.write(outputs.encode_palette_png(ids, spec))
"""


def run_loop(model_dir: str, paths: list[str], out: str) -> tuple[float, int]:
    """The baseline, as its own process (start-up and model loading included, like the job's)."""
    wall, peak, _ = measure([sys.executable, "-c", LOOP, model_dir, out] + paths)
    return wall, peak


def train_small_model(work: str) -> str:
    """The demo's model (``pipelines.tools.demo`` defaults: 96 generated Pet examples, 64x64, one augmented copy, a
    U-Net with 8 base filters and depth 3, 12 epochs). It has to have learned the task: an untrained model's
    masks are noise, whose PNGs are ~6x larger and would make the benchmark time zlib on noise rather than
    inference (with a 1-epoch model the ratio after start-up was 1.86-1.90x instead of 2.1x)."""
    raw, records, job = (os.path.join(work, d) for d in ("raw", "records", "job"))
    synthetic.write_pet_dataset(raw, 96, size=(96, 128), seed=0)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
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
            records,
            "--image_size",
            "64",
            "--augment_copies",
            "1",
        ],
        check=True,
        env=env,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.task",
            "--data_dir",
            records,
            "--model",
            "unet",
            "--job_dir",
            job,
            "--epochs",
            "12",
            "--batch_size",
            "8",
            "--base_filters",
            "8",
            "--depth",
            "3",
            "--learning_rate",
            "0.003",
            "--verbose",
            "0",
            "--deterministic",
        ],
        check=True,
        env=env,
    )
    return os.path.join(job, "model")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Optional[str] = None) -> tuple[float, float, int]:
    """(wall s, CPU s of the whole process tree, peak RSS bytes) of one command run to completion."""
    before = _children_cpu()
    wall, peak, _ = measure(cmd, cwd=cwd) if cwd else measure(cmd)
    return wall, _children_cpu() - before, peak


def make_cityscapes_frames(folder: str, n: int, pool: int = 6, seed: int = 3) -> list[str]:
    """``n`` distinct 2048x1024 Cityscapes-layout PNGs (``<city>_<seq>_<frame>_leftImg8bit.png``): variations
    (flip, shift, colour, fresh noise) of ``pool`` generated street frames, encoded at zlib level 1 (fast to
    write; the job's decode cost barely depends on it)."""
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    base = [synthetic.cityscapes_frame(np.random.default_rng([seed, i]), 1024 + 32, 2048 + 64)[0] for i in range(pool)]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        image = base[i % pool]
        y, x = int(rng.integers(0, 33)), int(rng.integers(0, 65))
        image = image[y : y + 1024, x : x + 2048]
        if rng.uniform() < 0.5:
            image = image[:, ::-1]
        image = np.clip(
            image.astype(np.int16)
            + rng.integers(-15, 16, size=3)
            + rng.integers(-4, 5, size=image.shape, dtype=np.int16),
            0,
            255,
        ).astype(np.uint8)
        path = os.path.join(folder, f"benchcity_{i:06d}_{19 + i:06d}_leftImg8bit.png")
        Image.fromarray(np.ascontiguousarray(image)).save(path, compress_level=1)
        paths.append(path)
    return paths


def train_cityscapes_model(work: str, epochs: int = 6) -> str:
    """A tiny Cityscapes model: 24 generated 256x512 frames → 128x256 records → U-Net (8 base filters, depth 3),
    ``epochs`` epochs (~30 s). Its masks are blobby street scenes, not noise: class boundaries, as a real model's."""
    raw, records, job = (os.path.join(work, d) for d in ("cs_raw", "cs_records", "cs_job"))
    synthetic.write_cityscapes_dataset(raw, frames_per_split={"train": 24, "val": 2}, size=(256, 512), seed=0)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(
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
            "128,256",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.task",
            "--data_dir",
            records,
            "--model",
            "unet",
            "--job_dir",
            job,
            "--epochs",
            str(epochs),
            "--batch_size",
            "4",
            "--base_filters",
            "8",
            "--depth",
            "3",
            "--learning_rate",
            "0.003",
            "--verbose",
            "0",
            "--deterministic",
        ],
        check=True,
        env=env,
    )
    return os.path.join(job, "model")


def _same_tree(a: str, b: str) -> tuple[int, int]:
    """(files compared, files that differ) between two output folders' masks/ and color/."""
    compared = differ = 0
    for sub in ("masks", "color"):
        for name in sorted(os.listdir(os.path.join(a, sub))):
            compared += 1
            with open(os.path.join(a, sub, name), "rb") as f, open(os.path.join(b, sub, name), "rb") as g:
                differ += f.read() != g.read()
    return compared, differ


def cityscapes_bench(args: argparse.Namespace, work: str) -> None:
    import json

    model_dir = args.model_dir or train_cityscapes_model(work, args.epochs)
    n2 = args.num_images
    n1 = max(1, n2 // 3)
    frames = make_cityscapes_frames(os.path.join(work, "frames"), n2)
    small = os.path.join(work, "frames_small")
    os.makedirs(small)
    for p in frames[:n1]:
        os.symlink(p, os.path.join(small, os.path.basename(p)))
    folders = {n1: small, n2: os.path.join(work, "frames")}
    job = [sys.executable, "-m", "pipelines.infer", "--model_dir", model_dir]
    sides = {"job": None}
    if args.baseline_dir:
        sides["baseline"] = os.path.abspath(args.baseline_dir)
    results: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    for _ in range(args.repeats):
        for n, folder in folders.items():
            for side, cwd in sides.items():
                out = os.path.join(work, f"out_{side}_{n}")
                results.setdefault((side, n), []).append(
                    timed(job + ["--input", os.path.join(folder, "*.png"), "--output_dir", out], cwd=cwd)
                )
            paths = sorted(os.path.join(folder, p) for p in os.listdir(folder))
            results.setdefault(("loop", n), []).append(
                timed([sys.executable, "-c", LOOP, model_dir, os.path.join(work, f"out_loop_{n}")] + paths)
            )
    print(
        f"\ninference at Cityscapes size: 2048x1024 PNG frames, model {model_dir} "
        f"(128x256 input, 19 classes), {os.cpu_count()} cores, medians of {args.repeats} alternating runs"
    )
    print(f"{'':24}{'frames':>7}{'wall s':>8}{'CPU s':>8}{'CPU/frame':>10}{'peak RSS':>10}")
    for side in list(sides) + ["loop"]:
        med = {}
        for n in (n1, n2):
            runs = results[(side, n)]
            wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            peak = max(r[2] for r in runs)
            med[n] = (wall, cpu)
            print(f"{side:24}{n:7d}{wall:8.1f}{cpu:8.1f}{cpu / n:10.3f}{peak / 2**20:8.0f} MiB")
        marginal = (med[n2][1] - med[n1][1]) / (n2 - n1)
        wall_marginal = (med[n2][0] - med[n1][0]) / (n2 - n1)
        print(f"{side + ', marginal':24}{'':7}{wall_marginal:8.2f}{'':8}{marginal:10.3f}   (per frame, N {n1} -> {n2})")
    if args.baseline_dir:
        compared, differ = _same_tree(os.path.join(work, f"out_job_{n2}"), os.path.join(work, f"out_baseline_{n2}"))
        print(f"masks and colour images vs the baseline: {compared} files compared, {differ} differ")
    # --instances on a few frames: the baseline has no cap and writes full-size 8-bit PNGs.
    few = os.path.join(work, "frames_few")
    os.makedirs(few)
    for p in frames[: args.instance_frames]:
        os.symlink(p, os.path.join(few, os.path.basename(p)))
    for side, cwd in sides.items():
        out = os.path.join(work, f"inst_{side}")
        wall, cpu, peak = timed(
            job + ["--input", os.path.join(few, "*.png"), "--output_dir", out, "--instances"], cwd=cwd
        )
        with open(os.path.join(out, "summary.json")) as f:
            count = json.load(f)["instances"]
        size = sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(os.path.join(out, "instances"))
            for name in names
        )
        print(
            f"--instances, {side:9}: {args.instance_frames} frames, {wall:6.1f} s, "
            f"{cpu / args.instance_frames:6.2f} CPU-s per frame, {count / args.instance_frames:7.1f} instances per "
            f"frame, instances/ {size / 2**20:.1f} MiB, peak {peak / 2**20:.0f} MiB"
        )


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        choices=("pet", "cityscapes"),
        default="pet",
        help="pet: ~375x500 JPEGs (the original bench); cityscapes: full-size 2048x1024 frames",
    )
    parser.add_argument(
        "--baseline_dir", default=None, help="cityscapes: a checkout of the code to compare with (run from there)"
    )
    parser.add_argument("--instance_frames", type=int, default=3, help="cityscapes: frames for the --instances case")
    parser.add_argument(
        "--epochs",
        type=int,
        default=6,
        help="cityscapes: training epochs of the tiny model (6: under-trained, scores near ties "
        "over most of a frame, the host postprocess's worst case; 20: clearer boundaries)",
    )
    parser.add_argument("--model_dir", default=None, help="a trained JOB/model (default: train a small one)")
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--batch_size", default=None, help="job --batch_size (default: the job's default)")
    parser.add_argument(
        "--model_calls", default=None, choices=("batch", "image"), help="job --model_calls (default: the job's default)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each measurement (medians)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="segflow-bench-infer-")
    if args.dataset == "cityscapes":
        try:
            cityscapes_bench(args, work)
        finally:
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
        return
    try:
        model_dir = args.model_dir or train_small_model(work)
        images = os.path.join(work, "images")
        make_pet_inputs(
            os.path.join(work, "data"), args.num_images, height=args.height, width=args.width, list_files=False
        )
        shutil.move(os.path.join(work, "data", "images"), images)
        paths = sorted(os.path.join(images, p) for p in os.listdir(images))
        half = os.path.join(work, "half")
        os.makedirs(half)
        for p in paths[: len(paths) // 2]:
            os.symlink(p, os.path.join(half, os.path.basename(p)))
        n = len(paths)
        extra = (["--batch_size", args.batch_size] if args.batch_size else []) + (
            ["--model_calls", args.model_calls] if args.model_calls else []
        )

        # Alternating repeats; the medians are reported. The 1-image runs are each side's start-up (interpreter,
        # imports, model loading, the loop's teardown), so "after start-up" is the rate a long job converges to.
        runs: dict[str, list[float]] = {"loop": [], "loop_one": [], "job": [], "job_one": []}
        for _ in range(args.repeats):
            runs["loop"].append(run_loop(model_dir, paths, os.path.join(work, "loop_out"))[0])
            runs["job"].append(run_job(model_dir, os.path.join(images, "*"), os.path.join(work, "job_out"), extra)[0])
            runs["loop_one"].append(run_loop(model_dir, paths[:1], os.path.join(work, "loop_one"))[0])
            runs["job_one"].append(run_job(model_dir, paths[0], os.path.join(work, "job_one"), extra)[0])
        _, half_rss = run_job(model_dir, os.path.join(half, "*"), os.path.join(work, "job_half"), extra)
        _, job_rss = run_job(model_dir, os.path.join(images, "*"), os.path.join(work, "job_out"), extra)
        loop_s, loop_one_s, job_s, one_s = (statistics.median(runs[k]) for k in ("loop", "loop_one", "job", "job_one"))

        # Same answers: the job's masks equal the loop's masks.
        same = all(
            open(os.path.join(work, "loop_out", "masks", f), "rb").read()
            == open(os.path.join(work, "job_out", "masks", f), "rb").read()
            for f in os.listdir(os.path.join(work, "loop_out", "masks"))
        )
        steady = (n - 1) / max(job_s - one_s, 1e-9)
        loop_steady = (n - 1) / max(loop_s - loop_one_s, 1e-9)
        print(
            f"\ninference benchmark: {n} images of ~{args.height}x{args.width}, model {model_dir}, "
            f"{os.cpu_count()} cores, medians of {args.repeats} alternating runs"
        )
        print(f"{'':34}{'seconds':>9}{'images/s':>10}")
        print(f"{'plain loop (serving_default x1)':34}{loop_s:9.1f}{n / loop_s:10.2f}")
        print(
            f"{'plain loop, after start-up':34}{loop_s - loop_one_s:9.1f}{loop_steady:10.2f}"
            f"   (start-up {loop_one_s:.1f} s)"
        )
        print(f"{'Beam job, end to end':34}{job_s:9.1f}{n / job_s:10.2f}")
        print(f"{'Beam job, after start-up':34}{job_s - one_s:9.1f}{steady:10.2f}   (start-up {one_s:.1f} s)")
        print(
            f"speed-up end to end: {loop_s / job_s:.2f}x (run by run: "
            f"{', '.join(f'{a / b:.2f}x' for a, b in zip(runs['loop'], runs['job']))})   "
            f"after start-up: {steady / loop_steady:.2f}x"
        )
        print(
            f"peak RSS of the job's process tree: {half_rss / 2**20:.0f} MiB for {n // 2} images, "
            f"{job_rss / 2**20:.0f} MiB for {n} images (ratio {job_rss / max(half_rss, 1):.2f})"
        )
        print(f"masks identical to the loop's: {same}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

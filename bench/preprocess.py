"""Benchmark: the Beam preprocess job vs the seeds' tf.data way, on N Pet-like inputs (~500x375 JPEG + trimap);
or, with ``--dataset cityscapes``, on N full-size (2048x1024) Cityscapes-layout frames vs the bare loop.

    python bench/preprocess.py [--sizes 3000] [--repeats 5] [--image_size 128] [--rss_sizes 1000,4000]
    python bench/preprocess.py --dataset cityscapes [--sizes 60,300] [--repeats 1] [--compare_dir OLD_CHECKOUT]
    python bench/preprocess.py --dataset voc|ade20k|folder [--sizes 40,120] [--repeats 1] [--image_size 256]

For each N (same process run, same inputs, the three commands in turn, ``--repeats`` times, medians):
  pipeline: ``python -m pipelines.preprocess`` with its defaults (DirectRunner, one worker per core), the
            whole job: discovery, records, shards, tensorflow-transform statistics, metadata, dead letters;
  tf.data:  the seeds' way (tutorial notes 003/004): ``read_file → decode_jpeg → resize → encode_png → one GZIP
            TFRecord file`` with ``num_parallel_calls=AUTOTUNE``, image and trimap alike;
  bare loop: a reference ceiling, not a competitor: ``multiprocessing.Pool`` over PIL with decode-time JPEG
            downscaling, resize, encode, one GZIP file, and nothing else (no statistics, splits, checks).
Each runs as its own process and is timed whole (start-up included); peak RSS is the largest sum of RSS over
the process and its children, sampled every 50 ms.

``--rss_sizes`` (two or more N) runs the pipeline and tf.data once more at each size: the pipeline's peak RSS
must stay flat as N grows, and the *marginal* throughput between the smallest and the largest N,
``(N2 - N1) / (wall(N2) - wall(N1))``, is what each costs per extra image once start-up (imports, tracing,
runner set-up: fixed costs that cancel in the difference) is paid, i.e. the ratio that holds at scale.

``--stages`` (Pet; two sizes from ``--rss_sizes``, ``--repeats`` rounds) measures the marginal throughput without
start-up noise: each run of the pipeline (its defaults, 2 threads, 2 processes, and ``--compare_dir``'s pipeline
in threads) logs the runner's own stage starts (``--log_level debug``), and the stages whose work grows with N
(listing the files, the fused stage that makes the records, writing the shards) are timed from them; the bare loop
is timed whole. ``(N2 - N1) / (t(N2) - t(N1))`` of each, and its ratio to the bare loop's, close the table, for the
per-input stages and for the whole processes (the issue's own measure, where start-up cancels only if it does not
change between N1 and N2).

Cityscapes (``--dataset cityscapes``, records ``--image_size 512,1024``, PNG): for each N of ``--sizes`` the
pipeline and the bare loop (``multiprocessing.Pool`` over PIL: decode the frame, its labelIds and instanceIds,
resize to the record size, encode PNGs, one GZIP file) run in turn, with wall time, CPU seconds of the whole
process tree, CPU per frame and peak RSS; the marginal CPU per frame ``(cpu(N2) - cpu(N1)) / (N2 - N1)`` and
the peak RSS ratio between the smallest and largest N close the table. ``--compare_dir`` also runs the pipeline
of another checkout (e.g. the code before a change) on the same inputs, in the same interleaved order.

VOC, ADE20K and the folder layout (``--dataset voc|ade20k|folder``, records 256x256 by default):
``bench/preprocess_datasets.py`` (the pipeline vs the bare loop at each dataset's typical image size, and each
dataset's mask check per mask).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import preprocess_datasets  # noqa: E402
from bench.common import ROOT, make_cityscapes_inputs, make_pet_inputs, measure_cpu  # noqa: E402

LAYOUTS = tuple(preprocess_datasets.SIZES)  # voc, ade20k, folder: bench/preprocess_datasets.py

BASELINE = r"""
import glob, os, sys, tensorflow as tf
src, dst, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
images = sorted(glob.glob(os.path.join(src, "images", "*.jpg")))
trimaps = [os.path.join(src, "annotations", "trimaps", os.path.basename(p)[:-4] + ".png") for p in images]

def load(image_path, trimap_path):
    image = tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3)
    image = tf.cast(tf.round(tf.image.resize(image, (size, size))), tf.uint8)
    mask = tf.io.decode_png(tf.io.read_file(trimap_path), channels=1)
    mask = tf.image.resize(mask, (size, size), method="nearest") - 1
    return tf.io.encode_png(image), tf.io.encode_png(mask), image_path

def serialize(image, mask, path):
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "image/segmentation/class/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[mask])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path])),
    })).SerializeToString()

ds = tf.data.Dataset.from_tensor_slices((images, trimaps)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
ds = ds.prefetch(tf.data.AUTOTUNE)
os.makedirs(dst, exist_ok=True)
n = 0
with tf.io.TFRecordWriter(os.path.join(dst, "data.tfrecord.gz"), options="GZIP") as writer:
    for image, mask, path in ds.as_numpy_iterator():
        writer.write(serialize(image, mask, path)); n += 1
print("baseline records", n)
"""

BARE_LOOP = r"""
import glob, gzip, io, os, sys
from multiprocessing import Pool
from PIL import Image
src, dst, size = sys.argv[1], sys.argv[2], int(sys.argv[3])

def work(path):
    image = Image.open(path)
    image.draft("RGB", (size, size))
    image = image.convert("RGB").resize((size, size), Image.BILINEAR)
    trimap = Image.open(path.replace("images", "annotations/trimaps")[:-4] + ".png").resize((size, size),
                                                                                           Image.NEAREST)
    a, b = io.BytesIO(), io.BytesIO()
    image.save(a, "JPEG", quality=95)
    trimap.save(b, "PNG")
    return a.getvalue() + b.getvalue()

if __name__ == "__main__":
    os.makedirs(dst, exist_ok=True)
    with Pool(os.cpu_count()) as pool, gzip.open(os.path.join(dst, "bare.gz"), "wb") as out:
        for blob in pool.imap(work, sorted(glob.glob(os.path.join(src, "images", "*.jpg"))), chunksize=16):
            out.write(blob)
"""


CITYSCAPES_BARE_LOOP = r"""
import glob, gzip, io, os, sys
from multiprocessing import Pool
from PIL import Image
src, dst, height, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def png(image, level):  # the record codec's zlib levels: 3 for the photo, 6 for masks (pipelines.common.decode)
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=level)
    return buf.getvalue()

def work(path):
    gt = path.replace("leftImg8bit", "gtFine", 1)[:-len("leftImg8bit.png")] + "gtFine_"
    image = Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR)
    label = Image.open(gt + "labelIds.png").resize((width, height), Image.NEAREST)
    instance = Image.open(gt + "instanceIds.png").resize((width, height), Image.NEAREST)
    return png(image, 3) + png(label, 6) + png(instance, 6)

if __name__ == "__main__":
    os.makedirs(dst, exist_ok=True)
    frames = sorted(glob.glob(os.path.join(src, "leftImg8bit", "*", "*", "*_leftImg8bit.png")))
    with Pool(os.cpu_count()) as pool, gzip.open(os.path.join(dst, "bare.gz"), "wb") as out:
        for blob in pool.imap(work, frames, chunksize=2):
            out.write(blob)
"""


def cityscapes_main(args) -> None:
    """Full-size Cityscapes-layout frames: pipeline (and ``--compare_dir``'s) vs the bare loop, with CPU and RSS."""
    height, width = (int(v) for v in args.image_size.split(","))
    out = tempfile.mkdtemp(prefix="bench_out_", dir=args.work_dir)
    print(
        f"cores={os.cpu_count()} workers={args.workers} records {height}x{width} repeats={args.repeats} "
        f"frames 2048x1024 (all train)",
        flush=True,
    )
    commands = {"pipeline": ROOT}
    if args.compare_dir:
        commands[f"pipeline ({os.path.basename(args.compare_dir.rstrip('/'))})"] = args.compare_dir
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: dict[tuple[str, int], list[tuple[float, int, float]]] = {}
    for n in sizes:
        src = make_cityscapes_inputs(os.path.join(args.work_dir, f"cityscapes_{n}"), n)
        for _ in range(args.repeats):  # interleaved: drifting machine speed hits every command alike
            for name, tree in commands.items():
                dst = os.path.join(out, "pipeline")
                shutil.rmtree(dst, ignore_errors=True)
                wall, peak, cpu, _ = measure_cpu(
                    [
                        sys.executable,
                        "-m",
                        "pipelines.preprocess",
                        "--dataset",
                        "cityscapes",
                        "--input_dir",
                        src,
                        "--output_dir",
                        dst,
                        "--image_size",
                        f"{height},{width}",
                        "--direct_num_workers",
                        str(args.workers),
                    ]
                    + args.extra,
                    cwd=tree,
                )
                rows.setdefault((name, n), []).append((wall, peak, cpu))
            dst = os.path.join(out, "bare")
            shutil.rmtree(dst, ignore_errors=True)
            wall, peak, cpu, _ = measure_cpu(
                [sys.executable, "-c", CITYSCAPES_BARE_LOOP, src, dst, str(height), str(width)]
            )
            rows.setdefault(("bare loop", n), []).append((wall, peak, cpu))
        for name in list(commands) + ["bare loop"]:
            wall, peak, cpu = (_median([r[i] for r in rows[(name, n)]]) for i in range(3))
            print(
                f"N={n} {name}: {wall:.1f}s, {cpu:.1f} CPU-s ({cpu / n:.2f} per frame), peak RSS "
                f"{peak / 2**20:.0f} MiB",
                flush=True,
            )
    print(f"\nmedians of {args.repeats} runs, {os.cpu_count()} cores, 2048x1024 frames -> {height}x{width} records")
    print("| command | N | wall | CPU-s | CPU-s per frame | peak RSS |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name in list(commands) + ["bare loop"]:
        for n in sizes:
            wall, peak, cpu = (_median([r[i] for r in rows[(name, n)]]) for i in range(3))
            summary[(name, n)] = (wall, peak, cpu)
            print(f"| {name} | {n} | {wall:.1f} s | {cpu:.1f} | {cpu / n:.2f} | {peak / 2**20:.0f} MiB |")
    if len(sizes) >= 2:
        n1, n2 = sizes[0], sizes[-1]
        floor = (summary[("bare loop", n2)][2] - summary[("bare loop", n1)][2]) / (n2 - n1)
        for name in list(commands) + ["bare loop"]:
            (w1, r1, c1), (w2, r2, c2) = summary[(name, n1)], summary[(name, n2)]
            marginal = (c2 - c1) / (n2 - n1)
            print(
                f"{name}: peak RSS N={n2} / N={n1} = {r2 / r1:.2f}; marginal CPU per frame {marginal:.3f} s "
                f"({marginal / floor:.2f}x the bare loop); marginal wall per frame {(w2 - w1) / (n2 - n1):.3f} s"
            )
    shutil.rmtree(out, ignore_errors=True)


# The stages whose work grows with the number of inputs, by the names the runner logs them under: listing the
# dataset folders, the fused stage that groups each example and makes its records, writing the shards.
_PER_INPUT_STAGES = ("/Sources/MaybeReshuffle", "/GroupById/Read", "WriteShards/GroupPointersByShard/Read")


def per_input_stage_seconds(cmd: list[str], cwd: str) -> tuple[float, float]:
    """Runs ``cmd`` (a preprocess job with ``--log_level debug``) and returns the wall seconds of its per-input
    stages (``_PER_INPUT_STAGES``), each timed from its start to the next stage's start, as the runner logs them,
    and of the whole process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    starts: list[tuple[float, str]] = []
    for line in proc.stdout:
        if "Running bundle for stage" in line:
            starts.append((time.perf_counter() - start, line))
    if proc.wait() != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    starts.append((time.perf_counter() - start, ""))
    stages = sum(
        later - begin
        for (begin, line), (later, _) in zip(starts, starts[1:])
        if any(name in line for name in _PER_INPUT_STAGES)
    )
    return stages, starts[-1][0]


def read_inputs(src: str) -> None:
    """Reads every file under ``src`` once, so each command of a round starts with the inputs in the page cache
    (on a machine that reclaims cache between runs, whichever command ran first paid the disk reads)."""
    for folder, _, names in os.walk(src):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                while handle.read(1 << 20):
                    pass


BARE = "bare loop (whole process)"


def stages_main(args) -> None:
    """``--stages``: marginal throughput of the per-input stages, threads and processes, against the bare loop."""
    sizes = [int(s) for s in args.rss_sizes.split(",") if s]
    if len(sizes) < 2:
        raise SystemExit("--stages needs two sizes in --rss_sizes")
    n1, n2 = sizes[0], sizes[-1]
    out = tempfile.mkdtemp(prefix="bench_out_", dir=args.work_dir)
    configs = {
        "pipeline, defaults": (ROOT, []),
        "pipeline, 2 threads": (ROOT, ["--direct_running_mode", "in_memory"]),
        "pipeline, 2 processes": (ROOT, ["--direct_running_mode", "multi_processing"]),
    }
    if args.compare_dir:
        configs[f"{os.path.basename(args.compare_dir.rstrip('/'))}, 2 threads"] = (
            args.compare_dir,
            ["--direct_running_mode", "in_memory"],
        )
    seconds: dict[tuple[str, int], list[float]] = {}  # the per-input stages (the bare loop: whole)
    wholes: dict[tuple[str, int], list[float]] = {}  # whole processes
    for round_ in range(args.repeats):
        for n in (n1, n2):
            src = make_pet_inputs(os.path.join(args.work_dir, f"pet_{n}"), n)
            dst = os.path.join(out, "stages")
            for name, (tree, mode) in configs.items():
                read_inputs(src)
                shutil.rmtree(dst, ignore_errors=True)
                cmd = [sys.executable, "-m", "pipelines.preprocess", "--dataset", "pet", "--input_dir", src]
                cmd += ["--output_dir", dst, "--image_size", str(args.image_size), "--log_level", "debug"]
                cmd += ["--direct_num_workers", str(args.workers)] + mode + args.extra
                stages, whole = per_input_stage_seconds(cmd, tree)
                seconds.setdefault((name, n), []).append(stages)
                wholes.setdefault((name, n), []).append(whole)
            read_inputs(src)
            bare_wall, _, _ = run_script(BARE_LOOP, src, os.path.join(out, "bare"), args)
            seconds.setdefault((BARE, n), []).append(bare_wall)
            wholes.setdefault((BARE, n), []).append(bare_wall)
            print(
                f"round {round_ + 1} N={n}: "
                + "; ".join(
                    f"{name} {values[-1]:.2f}s (whole {wholes[(name, m)][-1]:.2f}s)"
                    for (name, m), values in seconds.items()
                    if m == n
                ),
                flush=True,
            )
    print(f"\nmarginal throughput N={n1}..{n2}, {args.workers} workers, {args.repeats} rounds (each round's own ratio)")
    print(
        "| command | per-input stages: img/s per round | / bare loop | whole process: img/s per round | / bare loop |"
    )
    print("|---|---|---|---|---|")

    def rates(table: dict, name: str) -> list[float]:
        return [(n2 - n1) / (b - a) for a, b in zip(table[(name, n1)], table[(name, n2)])]

    for name in list(configs) + [BARE]:
        cells = []
        for table in (seconds, wholes):
            mine, bare = rates(table, name), rates(table, BARE)
            cells += [", ".join(f"{r:.0f}" for r in mine), ", ".join(f"{r / f:.2f}x" for r, f in zip(mine, bare))]
        print(f"| {name} | {' | '.join(cells)} |")
    shutil.rmtree(out, ignore_errors=True)


def run_pipeline(src: str, dst: str, args, cwd: str = ROOT) -> tuple[float, int, float]:
    """(wall, peak RSS, CPU seconds of the process tree) of the preprocess job on ``src``."""
    shutil.rmtree(dst, ignore_errors=True)
    wall, peak, cpu, _ = measure_cpu(
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            "--dataset",
            "pet",
            "--input_dir",
            src,
            "--output_dir",
            dst,
            "--image_size",
            str(args.image_size),
            "--direct_num_workers",
            str(args.workers),
        ]
        + args.extra,
        cwd=cwd,
    )
    return wall, peak, cpu


def run_script(script: str, src: str, dst: str, args) -> tuple[float, int, float]:
    shutil.rmtree(dst, ignore_errors=True)
    wall, peak, cpu, _ = measure_cpu([sys.executable, "-c", script, src, dst, str(args.image_size)])
    return wall, peak, cpu


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("pet", "cityscapes", *LAYOUTS), default="pet")
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated N for the throughput comparison (default 3000; cityscapes 60,300; voc, ade20k, "
        "folder 40,120)",
    )
    parser.add_argument(
        "--rss_sizes", default="1000,4000", help="comma-separated N for pipeline peak RSS; empty to skip"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs of each command per N (medians; default 5, cityscapes 1)"
    )
    parser.add_argument(
        "--image_size", default=None, help="record size (default 128; cityscapes 512,1024; voc, ade20k, folder 256)"
    )
    parser.add_argument(
        "--compare_dir",
        default=None,
        help="also run this checkout's pipeline (e.g. the code before a change; pet: at --rss_sizes)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--stages",
        action="store_true",
        help="Pet: marginal throughput of the per-input stages (threads, processes) against the bare loop",
    )
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "out", "bench", "preprocess"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more preprocess/Beam flags")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    cityscapes = args.dataset == "cityscapes"
    if args.dataset in LAYOUTS:
        args.sizes, args.repeats = args.sizes or "40,120", args.repeats or 1
        args.image_size = args.image_size or "256"
        return preprocess_datasets.main(args)
    args.sizes = args.sizes if args.sizes is not None else ("60,300" if cityscapes else "3000")
    args.repeats = args.repeats if args.repeats is not None else (1 if cityscapes else 5)
    args.image_size = args.image_size or ("512,1024" if cityscapes else "128")
    if cityscapes:
        return cityscapes_main(args)
    args.image_size = int(args.image_size)
    if args.stages:
        return stages_main(args)
    out = tempfile.mkdtemp(prefix="bench_out_", dir=args.work_dir)
    print(
        f"cores={os.cpu_count()} workers={args.workers} image_size={args.image_size} repeats={args.repeats}", flush=True
    )
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        src = make_pet_inputs(os.path.join(args.work_dir, f"pet_{n}"), n)
        runs: dict[str, list[tuple[float, int, float]]] = {"pipeline": [], "tf.data": [], "bare loop": []}
        for _ in range(args.repeats):  # interleaved, so drifting machine speed hits all three alike
            runs["tf.data"].append(run_script(BASELINE, src, os.path.join(out, "baseline"), args))
            runs["pipeline"].append(run_pipeline(src, os.path.join(out, "pipeline"), args))
            runs["bare loop"].append(run_script(BARE_LOOP, src, os.path.join(out, "bare"), args))
        wall = {k: _median([w for w, _, _ in v]) for k, v in runs.items()}
        rss = {k: max(r for _, r, _ in v) for k, v in runs.items()}
        rows.append((n, wall, rss))
        # Each repeat's pair (tf.data then pipeline, back to back) gives its own ratio: robust to this kind of
        # machine drifting between repeats, and it shows how much the ratio itself moves.
        pairs = sorted(b / p for (b, _, _), (p, _, _) in zip(runs["tf.data"], runs["pipeline"]))
        print(
            f"N={n}: "
            + "; ".join(
                f"{k} {wall[k]:.1f}s ({n / wall[k]:.1f} img/s, peak RSS {rss[k] / 2**20:.0f} MiB)" for k in runs
            )
            + f"; pipeline / tf.data {wall['tf.data'] / wall['pipeline']:.2f}x (pair by pair: min "
            f"{pairs[0]:.2f}x, median {_median(pairs):.2f}x, max {pairs[-1]:.2f}x)",
            flush=True,
        )
    rss_rows, compare_rows = [], []
    for n in [int(s) for s in args.rss_sizes.split(",") if s]:
        src = make_pet_inputs(os.path.join(args.work_dir, f"pet_{n}"), n)
        b_wall, _, b_cpu = run_script(BASELINE, src, os.path.join(out, "baseline"), args)
        p_wall, p_rss, p_cpu = run_pipeline(src, os.path.join(out, "pipeline"), args)
        f_wall, _, f_cpu = run_script(BARE_LOOP, src, os.path.join(out, "bare"), args)
        rss_rows.append((n, p_wall, p_rss, b_wall, p_cpu, b_cpu, f_wall, f_cpu))
        if args.compare_dir:
            c_wall, c_rss, c_cpu = run_pipeline(src, os.path.join(out, "pipeline"), args, cwd=args.compare_dir)
            compare_rows.append((n, c_wall, c_rss, c_cpu))
            print(
                f"N={n}: pipeline of {args.compare_dir}: {c_wall:.1f}s, {c_cpu:.1f} CPU-s, peak RSS "
                f"{c_rss / 2**20:.0f} MiB",
                flush=True,
            )
        print(
            f"N={n}: pipeline {p_wall:.1f}s ({n / p_wall:.1f} img/s), {p_cpu:.1f} CPU-s, peak RSS "
            f"{p_rss / 2**20:.0f} MiB; tf.data {b_wall:.1f}s, {b_cpu:.1f} CPU-s; bare loop {f_wall:.1f}s, "
            f"{f_cpu:.1f} CPU-s",
            flush=True,
        )
    print(f"\nmedians of {args.repeats} runs, {os.cpu_count()} cores, records {args.image_size}x{args.image_size}")
    print(
        "| N | pipeline img/s | tf.data img/s | **pipeline / tf.data** | bare loop img/s | pipeline / bare loop "
        "| pipeline peak RSS | tf.data peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, wall, rss in rows:
        print(
            f"| {n} | {n / wall['pipeline']:.1f} | {n / wall['tf.data']:.1f} | "
            f"**{wall['tf.data'] / wall['pipeline']:.2f}x** | {n / wall['bare loop']:.1f} | "
            f"{wall['bare loop'] / wall['pipeline']:.2f}x | {rss['pipeline'] / 2**20:.0f} MiB | "
            f"{rss['tf.data'] / 2**20:.0f} MiB |"
        )
    if rss_rows:
        print(
            "\n| N | pipeline wall | pipeline CPU-s | pipeline peak RSS | tf.data wall | tf.data CPU-s "
            "| bare loop wall | bare loop CPU-s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for n, w, rss, b, pc, bc, fw, fc in rss_rows:
            print(f"| {n} | {w:.1f}s | {pc:.1f} | {rss / 2**20:.0f} MiB | {b:.1f}s | {bc:.1f} | {fw:.1f}s | {fc:.1f} |")
        if len(rss_rows) >= 2:
            (n1, p1, r1, b1, pc1, bc1, fw1, fc1), (n2, p2, r2, b2, pc2, bc2, fw2, fc2) = rss_rows[0], rss_rows[-1]
            print(f"peak RSS ratio N={n2} / N={n1}: {r2 / r1:.2f}")
            p_marginal, b_marginal = (n2 - n1) / (p2 - p1), (n2 - n1) / (b2 - b1)
            f_marginal = (n2 - n1) / (fw2 - fw1)
            print(
                f"marginal throughput N={n1}..{n2} (start-up cancels): pipeline {p_marginal:.1f} img/s, "
                f"tf.data {b_marginal:.1f} img/s, bare loop {f_marginal:.1f} img/s; pipeline / tf.data "
                f"{p_marginal / b_marginal:.2f}x, pipeline / bare loop {p_marginal / f_marginal:.2f}x"
            )
            cpu = {
                k: (c2 - c1) / (n2 - n1) * 1000
                for k, c1, c2 in (("pipeline", pc1, pc2), ("tf.data", bc1, bc2), ("bare loop", fc1, fc2))
            }
            print(
                f"marginal CPU per image: pipeline {cpu['pipeline']:.2f} ms, tf.data {cpu['tf.data']:.2f} ms, "
                f"bare loop {cpu['bare loop']:.2f} ms; pipeline / bare loop "
                f"{cpu['pipeline'] / cpu['bare loop']:.2f}x"
            )
            if len(compare_rows) >= 2:
                (_, cw1, _, cc1), (_, cw2, _, cc2) = compare_rows[0], compare_rows[-1]
                print(
                    f"pipeline of {args.compare_dir}: marginal CPU per image {(cc2 - cc1) / (n2 - n1) * 1000:.2f} "
                    f"ms, marginal throughput {(n2 - n1) / (cw2 - cw1):.1f} img/s"
                )
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

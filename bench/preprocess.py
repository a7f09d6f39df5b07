"""Benchmark: the Beam preprocess job vs the seeds' tf.data way, on N Pet-like inputs (~500x375 JPEG + trimap).

    python bench/preprocess.py [--sizes 1000,3000] [--image_size 128] [--workers 2] [--rss_sizes 1000,4000]

For each N (same process run, same inputs): (a) ``python -m pipelines.preprocess`` (DirectRunner,
multi-processing, one worker per core), (b) the seeds' tf.data pipeline (tutorial notes 003/004):
``read_file → decode_jpeg → resize → encode → one TFRecord file`` with ``num_parallel_calls=AUTOTUNE``, image
and trimap alike. Each runs as its own process and is timed whole (start-up included); peak RSS is the
largest sum of RSS over the process and all its children, sampled every 50 ms. Prints images/second, the
ratio, and peak RSS; ``--rss_sizes`` adds pipeline-only runs to show memory stays flat as N grows.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BASELINE = r'''
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
'''


def _tree_rss(pid: int) -> int:
    """Sum of RSS (bytes) over ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def measure(cmd: list[str]) -> tuple[float, int, str]:
    """Runs ``cmd``; returns (wall seconds, peak tree RSS bytes, output tail)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{text[-3000:]}")
    return wall, peak, text


def make_inputs(root: str, n: int, pool: int = 32) -> str:
    """N Pet-layout inputs (~500x375 JPEG + trimap, sizes varying +-20%, list files with the real header).

    ``pipelines.synthetic.pet_example`` takes ~0.7 s per 500x375 example, so a pool of ``pool`` of them is made
    and every input is a distinct variation of one (crop to its own size, flip, colour shift, fresh noise),
    each encoded separately: N different files, made in seconds.
    """
    import numpy as np
    from pipelines import synthetic

    path = os.path.join(root, f"pet_{n}")
    if os.path.exists(os.path.join(path, "annotations", "list.txt")):
        return path
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    base = [synthetic.pet_example(np.random.default_rng([7, i]), 450, 600) for i in range(pool)]
    rng = np.random.default_rng(1)
    rows, counters = [], {}
    for i in range(n):
        image, trimap = base[i % pool]
        h, w = int(375 * rng.uniform(0.8, 1.2)), int(500 * rng.uniform(0.8, 1.2))
        y, x = int(rng.integers(0, 450 - h + 1)), int(rng.integers(0, 600 - w + 1))
        image, trimap = image[y:y + h, x:x + w], trimap[y:y + h, x:x + w]
        if rng.uniform() < 0.5:
            image, trimap = image[:, ::-1], trimap[:, ::-1]
        image = np.clip(image.astype(np.int16) + rng.integers(-20, 21, size=3)
                        + rng.integers(-6, 7, size=image.shape), 0, 255).astype(np.uint8)
        breed = synthetic.PET_BREEDS[int(rng.integers(len(synthetic.PET_BREEDS)))]
        counters[breed] = counters.get(breed, 0) + 1
        example_id = f"{breed}_{counters[breed]}"
        synthetic._write(os.path.join(path, "images", f"{example_id}.jpg"), synthetic._jpeg(image))
        synthetic._write(os.path.join(path, "annotations", "trimaps", f"{example_id}.png"), synthetic._png(trimap))
        species = 1 if breed[0].isupper() else 2
        rows.append(f"{example_id} {synthetic.PET_BREEDS.index(breed) + 1} {species} 1\n")
    ann = os.path.join(path, "annotations")
    is_test = rng.uniform(size=n) < 0.25
    synthetic._write(os.path.join(ann, "trainval.txt"), "".join(r for r, t_ in zip(rows, is_test) if not t_).encode())
    synthetic._write(os.path.join(ann, "test.txt"), "".join(r for r, t_ in zip(rows, is_test) if t_).encode())
    synthetic._write(os.path.join(ann, "list.txt"), (synthetic.PET_LIST_HEADER + "".join(rows)).encode())
    print(f"generated {n} inputs in {time.perf_counter() - t:.0f}s under {path}", flush=True)
    return path


def run_pipeline(src: str, dst: str, args) -> tuple[float, int]:
    shutil.rmtree(dst, ignore_errors=True)
    wall, peak, _ = measure([sys.executable, "-m", "pipelines.preprocess", "--dataset", "pet", "--input_dir", src,
                             "--output_dir", dst, "--image_size", str(args.image_size),
                             "--direct_num_workers", str(args.workers)] + args.extra)
    return wall, peak


def run_baseline(src: str, dst: str, args) -> tuple[float, int]:
    shutil.rmtree(dst, ignore_errors=True)
    wall, peak, _ = measure([sys.executable, "-c", BASELINE, src, dst, str(args.image_size)])
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3000", help="comma-separated N for the throughput comparison")
    parser.add_argument("--rss_sizes", default="1000,4000", help="comma-separated N for pipeline peak RSS; "
                                                                 "empty to skip")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "out", "bench", "preprocess"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more preprocess/Beam flags")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    out = tempfile.mkdtemp(prefix="bench_out_", dir=args.work_dir)
    print(f"cores={os.cpu_count()} workers={args.workers} image_size={args.image_size}", flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        src = make_inputs(args.work_dir, n)
        b_wall, b_rss = run_baseline(src, os.path.join(out, "baseline"), args)
        p_wall, p_rss = run_pipeline(src, os.path.join(out, "pipeline"), args)
        rows.append((n, n / p_wall, n / b_wall, b_wall / p_wall, p_rss, b_rss))
        print(f"N={n}: pipeline {p_wall:.1f}s ({n / p_wall:.1f} img/s, peak RSS {p_rss / 2**20:.0f} MiB); "
              f"tf.data baseline {b_wall:.1f}s ({n / b_wall:.1f} img/s, peak RSS {b_rss / 2**20:.0f} MiB); "
              f"ratio {b_wall / p_wall:.2f}x", flush=True)
    rss_rows = []
    for n in [int(s) for s in args.rss_sizes.split(",") if s]:
        src = make_inputs(args.work_dir, n)
        p_wall, p_rss = run_pipeline(src, os.path.join(out, "pipeline"), args)
        rss_rows.append((n, p_wall, p_rss))
        print(f"N={n}: pipeline {p_wall:.1f}s ({n / p_wall:.1f} img/s), peak RSS {p_rss / 2**20:.0f} MiB",
              flush=True)
    print("\n| N | pipeline img/s | tf.data img/s | ratio | pipeline peak RSS | tf.data peak RSS |")
    print("|---|---|---|---|---|---|")
    for n, p, b, r, prss, brss in rows:
        print(f"| {n} | {p:.1f} | {b:.1f} | {r:.2f}x | {prss / 2**20:.0f} MiB | {brss / 2**20:.0f} MiB |")
    if rss_rows:
        print("\n| N | pipeline wall | pipeline peak RSS |")
        print("|---|---|---|")
        for n, w, rss in rss_rows:
            print(f"| {n} | {w:.1f}s | {rss / 2**20:.0f} MiB |")
        if len(rss_rows) >= 2:
            print(f"peak RSS ratio N={rss_rows[-1][0]} / N={rss_rows[0][0]}: "
                  f"{rss_rows[-1][2] / rss_rows[0][2]:.2f}")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

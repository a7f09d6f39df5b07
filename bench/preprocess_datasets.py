"""``bench/preprocess.py --dataset voc|ade20k|folder``: the preprocess job on N generated inputs in each layout, at
the dataset's typical image size, against the bare decode/resize/encode loop on the same files, in the same run.

    python bench/preprocess.py --dataset voc [--sizes 40,120] [--repeats 1] [--image_size 256]

Inputs (``pipelines/tools/synthetic_benchmarks.py``, ``synthetic_folder.py``), reused between runs:
  voc:    ``VOCdevkit/VOC2012`` at 500x375 (JPEG photos, palette PNG masks with the 255 void border), 4/5 of the
          ids in ``train.txt``, 1/5 in ``val.txt``;
  ade20k: ``ADEChallengeData2016`` at 683x512 (JPEG photos, grey PNG annotations with a patch of 0), the same
          train/validation shares;
  folder: ``images/`` + ``masks/`` + ``classes.json`` at 640x480, half PNG photos with 8-bit index masks, half
          JPEGs with RGB colour-coded masks, splits by the stable hash.
For each N the pipeline (``python -m pipelines.preprocess``, its defaults, ``--direct_num_workers``) and the bare
loop (``multiprocessing.Pool`` over PIL: decode the photo with JPEG draft downscaling, resize, encode in the
record codec; decode the mask, resize nearest, encode PNG; one GZIP file; no checks, statistics or splits) run in
turn, ``--repeats`` times (medians), each timed whole: wall, CPU seconds of the process tree, peak RSS of the tree.
The marginal CPU per image ``(cpu(N2) - cpu(N1)) / (N2 - N1)`` (start-up cancels) and its ratio to the bare
loop's, and the peak RSS ratio, close the table.

Then the mask check, per mask, in this process (``timeit``, best of 5): ``schemas.labels.native_mask_problem`` on
a valid mask of each dataset — Pet's trimap {1, 2, 3} and ADE20K's {0..150} are contiguous ranges (two min/max
passes), VOC's {0..20, 255} is not (the counting path: an int64 copy and a bincount) — and the folder dataset's
``map_mask`` (cached look-up tables: a 65536-entry table of the values, a perfect hash of the packed colours; its
check and its mapping in one).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import timeit

from bench.common import measure_cpu

# name -> (photo height, width): each dataset's typical image
SIZES = {"voc": (375, 500), "ade20k": (512, 683), "folder": (480, 640)}
# name -> (photo glob, the mask path of a photo path's stem below the dataset folder)
_PAIRS = {
    "voc": ("JPEGImages/*.jpg", lambda stem: f"SegmentationClass/{os.path.basename(stem)}.png"),
    "ade20k": ("images/*/*.jpg", lambda stem: "annotations/" + stem.split("/", 1)[1] + ".png"),
    "folder": ("images/*/*.*", lambda stem: "masks/" + stem.split("/", 1)[1] + ".png"),
}

BARE_LOOP = r"""
import gzip, io, os, sys
from multiprocessing import Pool
from PIL import Image
pairs_file, dst, height, width, codec = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def work(pair):
    photo_path, mask_path = pair
    image = Image.open(photo_path)
    image.draft("RGB", (width, height))  # JPEG: decode at a smaller scale when the record is much smaller
    image = image.convert("RGB").resize((width, height), Image.BILINEAR)
    mask = Image.open(mask_path).resize((width, height), Image.NEAREST)
    a, b = io.BytesIO(), io.BytesIO()
    if codec == "jpeg":
        image.save(a, "JPEG", quality=95, subsampling=0)  # the record codecs (pipelines.common.decode)
    else:
        image.save(a, "PNG", compress_level=3)
    mask.save(b, "PNG")
    return a.getvalue() + b.getvalue()

if __name__ == "__main__":
    pairs = [line.rstrip("\n").split("\t") for line in open(pairs_file, encoding="utf-8")]
    os.makedirs(dst, exist_ok=True)
    with Pool(os.cpu_count()) as pool, gzip.open(os.path.join(dst, "bare.gz"), "wb") as out:
        for blob in pool.imap(work, pairs, chunksize=4):
            out.write(blob)
"""


def make_inputs(dataset: str, root: str, n: int) -> str:
    """``n`` examples of ``dataset``'s layout under ``root`` (reused when complete); returns the folder the job reads
    (``--input_dir``), with ``pairs.txt`` beside it: one ``photo<TAB>mask`` line per example, for the bare loop."""
    src = os.path.join(root, "src")
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return src
    from pipelines.tools import synthetic_benchmarks, synthetic_folder

    shutil.rmtree(root, ignore_errors=True)
    size, val = SIZES[dataset], n // 5
    if dataset == "voc":
        synthetic_benchmarks.write_voc_dataset(
            src, per_split={"train": n - val, "val": val}, size=size, detection_only=0
        )
    elif dataset == "ade20k":
        synthetic_benchmarks.write_ade20k_dataset(src, per_split={"train": n - val, "val": val}, size=size)
    else:
        synthetic_folder.write_folder_images(src, n, size=size)
    pattern, mask_of = _PAIRS[dataset]
    photos = sorted(glob.glob(os.path.join(src, pattern)))
    with open(os.path.join(root, "pairs.txt"), "w", encoding="utf-8") as handle:
        for photo in photos:
            stem = os.path.splitext(os.path.relpath(photo, src))[0].replace(os.sep, "/")
            handle.write(f"{photo}\t{os.path.join(src, mask_of(stem))}\n")
    if len(photos) != n:
        raise SystemExit(f"{dataset}: wrote {len(photos)} photos, expected {n}")
    open(marker, "w").close()
    return src


def mask_check_costs(repeats: int = 5, number: int = 50) -> dict[str, float]:
    """Milliseconds per valid mask of each dataset's check (module docstring), best of ``repeats``."""
    import numpy as np
    from PIL import Image

    from pipelines.datasets import _folder_table, get
    from pipelines.tools import synthetic_benchmarks, synthetic_folder
    from schemas import labels

    rng = np.random.default_rng(0)
    voc_h, voc_w = SIZES["voc"]
    trimap = rng.integers(1, 4, size=(voc_h, voc_w), dtype=np.uint8)  # Pet's photos are VOC-sized too
    voc_mask = synthetic_benchmarks.voc_example(rng, voc_h, voc_w)[1]
    ade_mask = synthetic_benchmarks.ade20k_example(rng, *SIZES["ade20k"])[1]
    with tempfile.TemporaryDirectory() as folder:  # one index mask (site_a) and one RGB mask (site_b), as written
        index_id, rgb_id = synthetic_folder.write_folder_images(folder, 2, size=SIZES["folder"])
        with open(os.path.join(folder, _folder_table.CLASSES_FILE), encoding="utf-8") as handle:
            table = _folder_table.parse_classes(handle.read())
        values, colours = (
            np.asarray(Image.open(os.path.join(folder, "masks", f"{i}.png"))) for i in (index_id, rgb_id)
        )
    cases = {
        f"pet trimap {voc_w}x{voc_h}, {{1, 2, 3}}": lambda: labels.native_mask_problem("pet", trimap),
        f"voc mask {voc_w}x{voc_h}, {{0..20, 255}}": lambda: labels.native_mask_problem("voc", voc_mask),
        f"ade20k annotation {SIZES['ade20k'][1]}x{SIZES['ade20k'][0]}, {{0..150}}": lambda: labels.native_mask_problem(
            "ade20k", ade_mask
        ),
        f"folder index mask {SIZES['folder'][1]}x{SIZES['folder'][0]} (map_mask)": lambda: _folder_table.map_mask(
            values, table
        ),
        f"folder RGB mask {SIZES['folder'][1]}x{SIZES['folder'][0]} (map_mask)": lambda: _folder_table.map_mask(
            colours, table
        ),
    }
    for case in ("pet", "voc", "ade20k"):  # the masks are valid: a check that finds a problem measures nothing
        assert get(case).mask_problem({"pet": trimap, "voc": voc_mask, "ade20k": ade_mask}[case], "mask") is None
    return {name: min(timeit.repeat(fn, repeat=repeats, number=number)) / number * 1000 for name, fn in cases.items()}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main(args) -> None:
    """``--dataset voc|ade20k|folder`` (``bench/preprocess.py``'s flags)."""
    from pipelines import datasets

    dataset = args.dataset
    sides = [int(v) for v in str(args.image_size).split(",")]
    height, width = sides[0], sides[-1]  # "H" or "H,W", as preprocess's --image_size
    codec = datasets.get(dataset).record_image_format
    sizes = [int(s) for s in args.sizes.split(",") if s]
    photo_h, photo_w = SIZES[dataset]
    out = tempfile.mkdtemp(prefix="bench_out_", dir=args.work_dir)
    print(
        f"{dataset}: cores={os.cpu_count()} workers={args.workers} photos {photo_w}x{photo_h} -> records "
        f"{height}x{width} ({codec}) repeats={args.repeats}",
        flush=True,
    )
    rows: dict[tuple[str, int], list[tuple[float, int, float]]] = {}
    for n in sizes:
        root = os.path.join(args.work_dir, f"{dataset}_{n}")
        src = make_inputs(dataset, root, n)
        for _ in range(args.repeats):  # interleaved: a drifting machine speed hits both alike
            dst = os.path.join(out, "pipeline")
            shutil.rmtree(dst, ignore_errors=True)
            cmd = [sys.executable, "-m", "pipelines.preprocess", "--dataset", dataset, "--input_dir", src]
            cmd += ["--output_dir", dst, "--image_size", f"{height},{width}", "--direct_num_workers", str(args.workers)]
            wall, peak, cpu, _ = measure_cpu(cmd + args.extra)
            rows.setdefault(("pipeline", n), []).append((wall, peak, cpu))
            dst = os.path.join(out, "bare")
            shutil.rmtree(dst, ignore_errors=True)
            pairs = os.path.join(root, "pairs.txt")
            wall, peak, cpu, _ = measure_cpu(
                [sys.executable, "-c", BARE_LOOP, pairs, dst, str(height), str(width), codec]
            )
            rows.setdefault(("bare loop", n), []).append((wall, peak, cpu))
        for name in ("pipeline", "bare loop"):
            wall, peak, cpu = (_median([r[i] for r in rows[(name, n)]]) for i in range(3))
            print(
                f"N={n} {name}: {wall:.1f}s, {cpu:.1f} CPU-s ({cpu / n * 1000:.0f} ms per image), "
                f"peak RSS {peak / 2**20:.0f} MiB",
                flush=True,
            )
    print(f"\n{dataset}: medians of {args.repeats} runs, {os.cpu_count()} cores")
    print("| command | N | wall | CPU-s | CPU per image | peak RSS |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name in ("pipeline", "bare loop"):
        for n in sizes:
            wall, peak, cpu = summary[(name, n)] = tuple(_median([r[i] for r in rows[(name, n)]]) for i in range(3))
            print(f"| {name} | {n} | {wall:.1f} s | {cpu:.1f} | {cpu / n * 1000:.0f} ms | {peak / 2**20:.0f} MiB |")
    if len(sizes) >= 2:
        n1, n2 = sizes[0], sizes[-1]
        floor = (summary[("bare loop", n2)][2] - summary[("bare loop", n1)][2]) / (n2 - n1)
        for name in ("pipeline", "bare loop"):
            (w1, r1, c1), (w2, r2, c2) = summary[(name, n1)], summary[(name, n2)]
            marginal = (c2 - c1) / (n2 - n1)
            print(
                f"{name}: marginal CPU per image N={n1}..{n2} {marginal * 1000:.0f} ms ({marginal / floor:.2f}x the "
                f"bare loop); marginal wall per image {(w2 - w1) / (n2 - n1) * 1000:.0f} ms; peak RSS "
                f"N={n2} / N={n1} = {r2 / r1:.2f}"
            )
    print("\nmask check per valid mask (best of 5 x 50, this process):")
    for name, ms in mask_check_costs().items():
        print(f"  {name}: {ms:.3f} ms")
    shutil.rmtree(out, ignore_errors=True)

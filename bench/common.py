"""What the benchmarks share: Pet- and Cityscapes-like inputs made fast, and whole-process wall time, CPU time and
peak memory."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import threading
import time
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of ``root_pid`` and all its descendants, from Linux /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * page
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd: Sequence[str], env: Optional[dict] = None, cwd: str = ROOT) -> tuple[float, int, str]:
    """Runs ``cmd`` to completion; returns (wall seconds, peak RSS of its process tree in bytes, output).

    The tree is sampled every 50 ms (workers of a multi-process runner count). A failure raises SystemExit
    with the output's tail.
    """
    env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
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


def measure_cpu(cmd: Sequence[str], env: Optional[dict] = None, cwd: str = ROOT) -> tuple[float, int, float, str]:
    """``measure`` plus the CPU seconds (user + system) of the whole process tree: (wall, peak RSS, CPU, output).

    From ``RUSAGE_CHILDREN`` around the run: every descendant that was waited for counts (a runner's worker
    processes included), and nothing else this benchmark process does.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, peak, text = measure(cmd, env, cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, peak, cpu, text


def _cityscapes_variant(job: tuple) -> None:
    """Writes one frame of ``make_cityscapes_inputs``: a base frame shifted, maybe mirrored, colour-shifted."""
    import io

    import numpy as np
    from PIL import Image

    base_path, out_paths, seed = job
    with np.load(base_path) as base:
        image, label, instance = base["image"], base["label"], base["instance"]
    rng = np.random.default_rng(seed)
    shift = int(rng.integers(0, image.shape[1]))
    flip = bool(rng.uniform() < 0.5)

    def vary(a: np.ndarray) -> np.ndarray:
        a = np.roll(a, shift, axis=1)
        return np.ascontiguousarray(a[:, ::-1] if flip else a)

    image = np.clip(vary(image).astype(np.int16) + rng.integers(-15, 16, size=3), 0, 255).astype(np.uint8)
    for array, path in zip((image, vary(label), vary(instance).astype(np.uint16)), out_paths):
        buf = io.BytesIO()
        # compress_level 1: ~5x faster to write than the default, and as fast to read.
        Image.fromarray(array).save(buf, format="PNG", compress_level=1)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(buf.getvalue())


def make_cityscapes_inputs(root: str, n: int, *, height: int = 1024, width: int = 2048, pool: int = 4) -> str:
    """``n`` Cityscapes-layout train frames at full ``height`` x ``width`` (image, labelIds, instanceIds PNGs).

    ``pipelines.tools.synthetic.cityscapes_frame`` takes seconds per full-size frame, so ``pool`` of them are made
    and every frame is a distinct variation of one (its own horizontal shift, mirror and colour shift), written
    by one process per core: hundreds of frames in a minute or two. Reuses an existing complete folder.
    """
    from multiprocessing import Pool

    import numpy as np

    from pipelines.tools import synthetic

    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    bases = []
    for i in range(pool):
        path = os.path.join(root, f".base{i}.npz")
        image, label, instance = synthetic.cityscapes_frame(np.random.default_rng([11, i]), height, width)
        np.savez(path, image=image, label=label, instance=instance)
        bases.append(path)
    jobs = []
    for i in range(n):
        city = ("aachen", "bremen")[i % 2]
        frame_id = f"{city}_{i:06d}_{19 + i * 7:06d}"
        gt = os.path.join(root, "gtFine", "train", city, frame_id)
        jobs.append(
            (
                bases[i % pool],
                (
                    os.path.join(root, "leftImg8bit", "train", city, f"{frame_id}_leftImg8bit.png"),
                    f"{gt}_gtFine_labelIds.png",
                    f"{gt}_gtFine_instanceIds.png",
                ),
                i,
            )
        )
    with Pool(os.cpu_count()) as workers:
        workers.map(_cityscapes_variant, jobs, chunksize=4)
    for path in bases:
        os.remove(path)
    open(marker, "w").close()
    return root


def make_pet_inputs(
    root: str, n: int, *, height: int = 375, width: int = 500, pool: int = 32, list_files: bool = True
) -> str:
    """``n`` Pet-layout inputs (~``height`` x ``width`` JPEG + trimap, sizes varying ±20%) under ``root``.

    ``pipelines.tools.synthetic.pet_example`` takes ~0.7 s per 500x375 example, so a pool of ``pool`` of them is made
    at 1.2x the size and every input is a distinct variation of one (its own crop, flip, colour shift and
    fresh noise), encoded separately: ``n`` different files in seconds. With ``list_files``, ``list.txt``
    (with the real header), ``trainval.txt`` and ``test.txt`` (~25% test). Reuses an existing complete folder.
    """
    import numpy as np

    from pipelines.tools import synthetic

    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    shutil.rmtree(root, ignore_errors=True)
    big_h, big_w = int(height * 1.2), int(width * 1.2)
    base = [synthetic.pet_example(np.random.default_rng([7, i]), big_h, big_w) for i in range(pool)]
    rng = np.random.default_rng(1)
    rows, counters = [], {}
    for i in range(n):
        image, trimap = base[i % pool]
        h, w = int(height * rng.uniform(0.8, 1.2)), int(width * rng.uniform(0.8, 1.2))
        y, x = int(rng.integers(0, big_h - h + 1)), int(rng.integers(0, big_w - w + 1))
        image, trimap = image[y : y + h, x : x + w], trimap[y : y + h, x : x + w]
        if rng.uniform() < 0.5:
            image, trimap = image[:, ::-1], trimap[:, ::-1]
        image = np.clip(
            image.astype(np.int16) + rng.integers(-20, 21, size=3) + rng.integers(-6, 7, size=image.shape), 0, 255
        ).astype(np.uint8)
        breed = synthetic.PET_BREEDS[int(rng.integers(len(synthetic.PET_BREEDS)))]
        counters[breed] = counters.get(breed, 0) + 1
        example_id = f"{breed}_{counters[breed]}"
        synthetic.write_file(os.path.join(root, "images", f"{example_id}.jpg"), synthetic.encode_jpeg(image))
        synthetic.write_file(
            os.path.join(root, "annotations", "trimaps", f"{example_id}.png"),
            synthetic.encode_png(np.ascontiguousarray(trimap)),
        )
        species = 1 if breed[0].isupper() else 2
        rows.append(f"{example_id} {synthetic.PET_BREEDS.index(breed) + 1} {species} 1\n")
    if list_files:
        ann = os.path.join(root, "annotations")
        is_test = rng.uniform(size=n) < 0.25
        synthetic.write_file(
            os.path.join(ann, "trainval.txt"), "".join(r for r, t in zip(rows, is_test) if not t).encode()
        )
        synthetic.write_file(os.path.join(ann, "test.txt"), "".join(r for r, t in zip(rows, is_test) if t).encode())
        synthetic.write_file(os.path.join(ann, "list.txt"), (synthetic.PET_LIST_HEADER + "".join(rows)).encode())
    open(marker, "w").close()
    return root

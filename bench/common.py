"""What the benchmarks share: Pet-like inputs made fast, and whole-process wall time plus peak memory."""
from __future__ import annotations

import os
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


def make_pet_inputs(root: str, n: int, *, height: int = 375, width: int = 500, pool: int = 32,
                    list_files: bool = True) -> str:
    """``n`` Pet-layout inputs (~``height`` x ``width`` JPEG + trimap, sizes varying ±20%) under ``root``.

    ``pipelines.synthetic.pet_example`` takes ~0.7 s per 500x375 example, so a pool of ``pool`` of them is made
    at 1.2x the size and every input is a distinct variation of one (its own crop, flip, colour shift and
    fresh noise), encoded separately: ``n`` different files in seconds. With ``list_files``, ``list.txt``
    (with the real header), ``trainval.txt`` and ``test.txt`` (~25% test). Reuses an existing complete folder.
    """
    import numpy as np
    from pipelines import synthetic

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
        image, trimap = image[y:y + h, x:x + w], trimap[y:y + h, x:x + w]
        if rng.uniform() < 0.5:
            image, trimap = image[:, ::-1], trimap[:, ::-1]
        image = np.clip(image.astype(np.int16) + rng.integers(-20, 21, size=3)
                        + rng.integers(-6, 7, size=image.shape), 0, 255).astype(np.uint8)
        breed = synthetic.PET_BREEDS[int(rng.integers(len(synthetic.PET_BREEDS)))]
        counters[breed] = counters.get(breed, 0) + 1
        example_id = f"{breed}_{counters[breed]}"
        synthetic.write_file(os.path.join(root, "images", f"{example_id}.jpg"), synthetic.encode_jpeg(image))
        synthetic.write_file(os.path.join(root, "annotations", "trimaps", f"{example_id}.png"),
                             synthetic.encode_png(np.ascontiguousarray(trimap)))
        species = 1 if breed[0].isupper() else 2
        rows.append(f"{example_id} {synthetic.PET_BREEDS.index(breed) + 1} {species} 1\n")
    if list_files:
        ann = os.path.join(root, "annotations")
        is_test = rng.uniform(size=n) < 0.25
        synthetic.write_file(os.path.join(ann, "trainval.txt"),
                             "".join(r for r, t in zip(rows, is_test) if not t).encode())
        synthetic.write_file(os.path.join(ann, "test.txt"), "".join(r for r, t in zip(rows, is_test) if t).encode())
        synthetic.write_file(os.path.join(ann, "list.txt"), (synthetic.PET_LIST_HEADER + "".join(rows)).encode())
    open(marker, "w").close()
    return root

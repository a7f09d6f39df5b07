"""The local runner's defaults when no flag names them, and the help that states them: light (no Beam), so that
``--help`` reads them at once; ``pipelines.common.runner.make_pipeline_options`` applies them."""

from __future__ import annotations

# Without a fork server started early (``start_workers``: the worker processes' imports overlap the launcher's,
# and processes start as soon as threads would), each multi-processing worker is a fresh Python process that
# imports TensorFlow and tensorflow-transform (~4-5 s more per job on 2 cores) before its first element; threads
# share the launcher's. But a thread holds the GIL for part of every element (Pillow's encoders and file-header
# parsing, building each Example, Beam's per-element bookkeeping), so past the start-up processes go faster:
# preprocess on 2 cores, paired runs, made Pet-size records 1.05-1.35x faster in processes and full-size
# Cityscapes records 1.5x (0.143 against 0.218 s a frame, whose 512x1024 PNG encodes hold the GIL). Break-even:
# ~80 full-size frames (~180-370 MB), but ~12,000-15,000 Pet-size JPEGs (~0.8-1 GB). 256 MiB favours throughput
# at scale and full-size frames, at up to ~10-15 % on Pet-size jobs of 4,000-12,000 images. On many cores
# processes run everything.
THREADED_UP_TO_CORES = 4
PROCESSES_FROM_INPUT_BYTES = 256 * 2**20
# Below this much input threads run the job on any machine, also from the command line: a fork server imports
# TensorFlow and tensorflow-transform once more (~7 CPU-s on 2 cores) for no gain in wall time on so little work.
# Measured from the command line on 2 cores, 120 real Pet photos (11 MB) at --image_size 128, 3 paired runs
# (medians): threads 10.4 s wall and 10.6 CPU-s, worker processes 10.7 s and 17.3 CPU-s (docs/benchmarks.md).
THREADS_BELOW_INPUT_BYTES = 16 * 2**20
# Said where --help lists the Beam options: decided by the entry point (``pipelines.common.runner
# .early_workers_possible``), never by what the calling process imported before.
RUNNING_MODE_HELP = (
    "On this machine (the DirectRunner, the default) --direct_num_workers defaults to one per core and "
    "--direct_running_mode to: in_memory (threads) on one core or for an input of under "
    f"{THREADS_BELOW_INPUT_BYTES // 2**20} MiB; from the command line on Linux, multi_processing, its workers "
    "forked by a server that imports while the job starts; otherwise (Python callers) in_memory up to "
    f"{THREADED_UP_TO_CORES} cores unless the job reads {PROCESSES_FROM_INPUT_BYTES // 2**20} MiB or more, else "
    "multi_processing."
)

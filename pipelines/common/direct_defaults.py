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
# Said where --help lists the Beam options: decided by the entry point (``pipelines.common.runner
# .early_workers_possible``), never by what the calling process imported before.
RUNNING_MODE_HELP = (
    "On this machine (the DirectRunner, the default) --direct_num_workers defaults to one per core and "
    "--direct_running_mode to: in_memory (threads) on one core; from the command line on Linux, "
    "multi_processing, its workers forked by a server that imports while the job starts; otherwise (Python "
    f"callers) in_memory up to {THREADED_UP_TO_CORES} cores unless the job reads "
    f"{PROCESSES_FROM_INPUT_BYTES // 2**20} MiB or more, else multi_processing."
)

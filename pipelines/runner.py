"""Pipeline options shared by every segflow Beam job: fast local defaults, every Beam option overridable."""
from __future__ import annotations

import os
from typing import Sequence

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(a == f"--{flag}" or a.startswith(f"--{flag}=") for a in argv)


def make_pipeline_options(beam_argv: Sequence[str]) -> PipelineOptions:
    """Builds ``PipelineOptions`` from the flags the job did not consume.

    Defaults, each overridden by the matching flag: the DirectRunner, in multi-processing mode with one worker
    per core (the DirectRunner's own default is a single in-memory worker, which leaves cores idle on image
    work). No ``save_main_session``: every DoFn lives in an importable module, which is what Dataflow workers
    (installing the package through ``--setup_file``) need as well.
    """
    argv = list(beam_argv)
    options = PipelineOptions(argv)
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"
    if standard.runner in ("DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner"):
        direct = options.view_as(DirectOptions)
        if not _given(argv, "direct_running_mode"):
            direct.direct_running_mode = "multi_processing"
        if not _given(argv, "direct_num_workers"):
            direct.direct_num_workers = max(1, os.cpu_count() or 1)
    options.view_as(SetupOptions).save_main_session = False
    return options


def is_remote(options: PipelineOptions) -> bool:
    """True when the job runs on workers that are not this process's machine (e.g. Dataflow)."""
    runner = (options.view_as(StandardOptions).runner or "").lower()
    return "dataflow" in runner

"""``pipelines.infer``'s options: the typed config (``InferConfig``, whose fields are the flags), the typed result
(``InferResult``), the flag parser (``from_args``) and the command line's ``main``, without Beam or TensorFlow:
``--help`` and a bad flag are answered before the job module imports them.

The config is a plain dataclass rather than a Beam ``PipelineOptions`` subclass: ``PipelineOptions`` imports
Beam (~1.6 s, see tests/test_infer_startup.py) and its parser would be a second flag parser; every flag that is
not the job's is handed to Beam unchanged (``pipeline_args``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
from typing import Callable, Optional, Sequence

from pipelines.common.flags import job_parser, quiet_beam_logs, storage_failure_line
from pipelines.shared import cli, flag_parser, folders
from schemas.errors import DataError, UsageError

# Default --max_pixels: 32 Mpx (e.g. a 24-megapixel 6000x4000 photo passes; Cityscapes frames are 2 Mpx). See
# pipelines.infer for what an image in flight holds.
DEFAULT_MAX_PIXELS = 32_000_000
# Default --max_instances: Cityscapes' fine annotations have ~20 instances a frame on average and rarely over 60;
# an under-trained model's speckle is what reaches hundreds (1,200 a frame measured). The highest scores are kept.
DEFAULT_MAX_INSTANCES = 100
MODEL_CALLS = ("batch", "image")
POSTPROCESS = ("host", "graph")


def batch_bounds(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch_size takes MAX or MIN,MAX (positive integers), got {text!r}")
    lo, hi = (1, parts[0]) if len(parts) == 1 else (parts[0], parts[1]) if len(parts) == 2 else (0, 0)
    if lo < 1 or hi < lo:
        raise argparse.ArgumentTypeError(f"--batch_size takes MAX or MIN,MAX with 1 <= MIN <= MAX, got {text!r}")
    return lo, hi


def _instance_cap(text: str) -> Optional[int]:
    if text.strip().lower() in ("0", "none", "all"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max_instances takes a positive integer (or 0: no cap), got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"--max_instances must be >= 0, got {value}")
    return value


def _datasets():
    """The dataset registry (its names and modules load without Beam or TensorFlow)."""
    return importlib.import_module("pipelines.datasets")


# Keyword-only: the inputs are --input or --input_dir, so a required field follows optional ones.
@dataclasses.dataclass(kw_only=True)
class InferConfig:
    """What an infer run does: each field is the flag of the same name (``pipelines.shared.flag_parser.option``).

    ``InferConfig(model_dir="JOB/model", input=["imgs/*.jpg"], output_dir="OUT")`` is
    ``--model_dir JOB/model --input 'imgs/*.jpg' --output_dir OUT``; ``InferConfig(model_dir=...,
    input_dir="SRC", dataset="pet", split="test", output_dir=...)`` reads the images of Pet's test split. A
    config built in Python is checked (ranges, choices, the input flags together) by ``pipelines.infer.run`` as
    the parser checks the flags."""

    model_dir: str = flag_parser.option(help="JOB/model exported by trainer.task (local or gs://)")
    input: Optional[list[str]] = flag_parser.option(
        None,
        "glob of input images (local or gs://); repeat the flag for several globs; a file two globs match is read "
        "once; write a literal [ * ? as [[] [*] [?]; this or --input_dir is required",
        parse=str,
        argparse={"action": "append", "metavar": "GLOB"},
    )
    input_dir: Optional[str] = flag_parser.option(
        None,
        "a dataset's folder as preprocess reads it (local or gs://): infer its images (--dataset says where they "
        "are; --split: only those of one split); this or --input is required",
        argparse={"metavar": "SRC"},
    )
    output_dir: str = flag_parser.option(
        help="where masks/, color/, instances/ ... go (local or gs://); a rerun first "
        "removes the previous run's masks/, color/, overlay/, instances/, "
        "dead_letter/ and summary.json there, nothing else"
    )
    dataset: Optional[str] = flag_parser.option(
        None, "the layout of --input_dir (required with it)", choices=lambda: _datasets().names()
    )
    split: Optional[str] = flag_parser.option(
        None,
        "with --input_dir: only the images of the dataset's own split, as evaluate --split scores it (from its "
        "list file or split folder, as docs/datasets.md describes for each --dataset); the split's ids that have "
        "no image are counted in summary.json",
        default_text="every image of --input_dir",
    )
    max_pixels: int = flag_parser.option(
        DEFAULT_MAX_PIXELS,
        "images with more pixels (read from the header, before "
        "decoding) are dead letters; sized for 2 cores / 24 GB, see "
        "docs/infer.md",
        minimum=1,
        advanced=True,
    )
    instances: bool = flag_parser.option(
        False,
        "also write instance masks (Cityscapes instance-level result format); Pet has no instance labels: its "
        "instances are the connected pieces of predicted pet, so a weak model's specks count too (raise "
        "--min_instance_area)",
    )
    min_instance_area: int = flag_parser.option(
        20, "drop instances with fewer pixels than this", minimum=0, advanced=True
    )
    max_instances: Optional[int] = flag_parser.option(
        DEFAULT_MAX_INSTANCES,
        "keep at most this many instances per image, the highest scores (0: no cap)",
        parse=_instance_cap,
        advanced=True,
    )
    overlay: bool = flag_parser.option(False, "also write input+colour blends to overlay/")
    batch_size: Optional[tuple[int, int]] = flag_parser.option(
        None,
        "RunInference batch bounds: MAX or MIN,MAX",
        parse=batch_bounds,
        default_text="1,8, MAX lowered for models whose inputs and scores exceed 64 MB an image, see docs/infer.md",
        advanced=True,
    )
    model_calls: str = flag_parser.option(
        "batch",
        "batch: one model call per RunInference batch, zero-padded to the largest batch size so every call has "
        "one shape (an image's scores can still differ in the last float bit with its slot in the batch, so a "
        "pixel at an exact near-tie may differ between runs that batch differently); image: one call per image, "
        "masks byte-identical however Beam batches (about 2x the CPU for the model step on CPU)",
        choices=MODEL_CALLS,
        advanced=True,
    )
    postprocess: str = flag_parser.option(
        "host",
        "host: class ids from the model-size scores on the host, interpolating "
        "only near class boundaries (the same ids as the model's postprocess "
        "signature); graph: the signature itself (upsamples every class's "
        "scores to full size)",
        choices=POSTPROCESS,
        advanced=True,
    )
    model_copies: Optional[int] = flag_parser.option(
        None,
        "exact number of model copies per machine, shared across worker processes",
        minimum=1,
        default_text="one per worker process",
        advanced=True,
    )
    large_model: bool = flag_parser.option(
        False, "share one model across the worker processes of a machine (memory-bound models)", advanced=True
    )
    model_cache_dir: Optional[str] = flag_parser.option(
        None, "local folder for copies of a remote --model_dir", default_text="the system temp dir", advanced=True
    )


InferOptions = InferConfig  # its name before the Python API; the flags' tests still use it


@dataclasses.dataclass(frozen=True)
class InferResult:
    """What an infer run did (also in ``OUT/summary.json``). The figures are None when nothing ran here (a
    Dataflow dry run only constructs the job); ``counters`` holds every counter of the run's namespace."""

    output_dir: str
    inputs_matched: int
    images_written: Optional[int] = None
    dead_letters: Optional[int] = None
    instances: Optional[int] = None
    counters: dict = dataclasses.field(default_factory=dict)
    # --split: the ids the split's list names that have no image (also in summary.json), sorted
    ids_without_image: tuple[str, ...] = ()


def parser() -> flag_parser.Parser:
    parser = job_parser("pipelines.infer", InferConfig)
    parser.add_flag(
        "--vectorized_batches",
        dest="model_calls",
        action="store_const",
        const="batch",
        default=flag_parser.default_of(InferConfig, "model_calls"),
        help="deprecated: the same as --model_calls batch, now the default",
        group="advanced",
    )
    parser.one_of("--input", "--input_dir")
    return parser


def check(config: InferConfig) -> None:
    """``UsageError`` for input flags that name no images, two sets of them, or a dataset/split without the
    folder it applies to (the field values are ``flag_parser.check_fields``'s)."""
    flag_parser.check_fields(config)
    how = "--input 'GLOB' or --input_dir SRC --dataset NAME [--split SPLIT]"
    if config.input and config.input_dir:
        raise UsageError(f"--input and --input_dir both name the images: give {how}, not both")
    if not config.input and not config.input_dir:
        raise UsageError(f"no images named: give {how}")
    if config.split and not config.input_dir:
        raise UsageError(
            f"--split {config.split} is a dataset's own split: give --input_dir SRC --dataset NAME --split "
            f"{config.split} instead of --input"
        )
    if config.input_dir and not config.dataset:
        raise UsageError(
            f"--input_dir needs --dataset (one of {', '.join(_datasets().names())}): its layout says where the "
            "images are"
        )
    if config.dataset and not config.input_dir:
        raise UsageError("--dataset is the layout of --input_dir; with --input the globs name the images: leave it out")


def check_input_dir(config: InferConfig) -> None:
    """``DataError`` for a local ``--input_dir`` that is not a folder: the command line finds it in well under a
    second (``main``), not after Beam, TensorFlow and the model load."""
    if config.input_dir and not folders.is_remote(config.input_dir):
        local = folders.local_path(config.input_dir)
        if not os.path.isdir(local):
            what = "is a file" if os.path.exists(local) else "does not exist"
            raise DataError(f"--input_dir {config.input_dir} {what}, not the dataset's folder; check --input_dir")


def from_args(argv: Sequence[str]) -> tuple[InferConfig, list[str]]:
    """Flags → ``InferConfig`` and the Beam flags, without Beam (names checked, not Beam's values: the job's
    ``from_args`` checks those)."""
    args, beam_argv = parser().parse_known_args(list(argv))
    config = flag_parser.config_from(InferConfig, args)
    check(config)
    return config, list(beam_argv)


def _check_command(argv: Sequence[str]) -> None:
    """What ``main`` checks before the job module (Beam, TensorFlow) loads: the flags, then the input folder."""
    check_input_dir(from_args(argv)[0])


def summary(result: InferResult, _: list[str]) -> Optional[str]:
    """The run's one stdout line (none when nothing ran here, e.g. a Dataflow dry run)."""
    if result.images_written is None:
        return None
    n = len(result.ids_without_image)
    missing = (
        f"; {n} {'id' if n == 1 else 'ids'} of the split {'has' if n == 1 else 'have'} no image "
        "(summary.json: ids_without_image)"
        if n
        else ""
    )
    return (
        f"pipelines.infer: {result.inputs_matched} inputs matched, "
        f"{result.images_written} written, {result.dead_letters} dead-lettered, "
        f"{result.instances} instances -> {result.output_dir}{missing}"
    )


def main(argv: Optional[Sequence[str]], run: Callable[[list[str]], InferResult]) -> int:
    """``python -m pipelines.infer``: the exit status; one stderr line for a bad flag (2), an unusable model or
    input, or a storage outage (1); the counters on stdout. ``run(argv)`` runs the job from its flags
    (``pipelines.infer.job.run_command``), handed in so that the flags are parsed before it is imported."""
    quiet_beam_logs()
    return cli.main(
        "pipelines.infer",
        argv,
        run,
        check=_check_command,
        summary=summary,
        tensorflow=True,
        failure_line=storage_failure_line(
            "pipelines.infer",
            "OUT keeps its last complete output (on gs://, once the run began writing there, it holds no "
            "summary.json), so nothing half-written will be read",
        ),
    )

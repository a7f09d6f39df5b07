"""``pipelines.evaluate``'s command line: its flags (``EvaluateOptions``), their parser and ``main``, without Beam:
``--help`` and a bad flag are answered before the job module imports it."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Optional, Sequence

from pipelines.common.flags import job_parser, quiet_beam_logs, storage_failure_line
from pipelines.shared import cli
from schemas import errors


def _datasets():
    """The dataset registry (its names and modules load without Beam or TensorFlow)."""
    return importlib.import_module("pipelines.datasets")


# ---------------------------------------------------------------------------------------------- evaluate
@dataclasses.dataclass
class EvaluateOptions:
    """``pipelines.evaluate``'s flags: each field is the flag of the same name (``pipelines.shared.cli.option``)."""

    predictions: str = cli.option(help="folder of predicted masks (OUT/masks), local or gs://")
    ground_truth: str = cli.option(help="the raw dataset root (SRC) or a folder of ground-truth masks, local or gs://")
    dataset: str = cli.option(help="how to read the ground truth", choices=lambda: _datasets().names())
    label_mode: Optional[str] = cli.option(
        None,
        "Pet: classes to score: trimap (pet, background, border) or binary",
        choices=("trimap", "binary"),
        default_text="trimap",
    )
    split: Optional[str] = cli.option(
        None,
        "the dataset's own split to score (Pet: test or trainval, from annotations/<split>.txt; Cityscapes: a "
        "gtFine split folder); refused when the dataset has no such split",
        default_text="every image found",
    )
    output_file: Optional[str] = cli.option(
        None, "evaluation JSON", default_text="evaluation.json next to the predictions folder"
    )


def parser() -> cli.Parser:
    parser = job_parser("pipelines.evaluate", EvaluateOptions)
    return parser


def parse_flags(argv: Sequence[str]) -> tuple[EvaluateOptions, list[str]]:
    """Flags → ``EvaluateOptions`` and the Beam flags, without Beam (names checked, not Beam's values)."""
    args, beam_argv = parser().parse_known_args(list(argv))
    options = cli.config_from(EvaluateOptions, args)
    dataset = _datasets().get(options.dataset)
    if options.label_mode and options.label_mode not in dataset.evaluate_label_modes:
        scored = " or ".join(
            n for n in _datasets().names() if options.label_mode in _datasets().get(n).evaluate_label_modes
        )
        raise errors.UsageError(f"--label_mode applies to --dataset {scored} only")
    return options, list(beam_argv)


def main(
    argv: Optional[Sequence[str]], run: Callable[[list[str]], dict], summary: Callable[[dict, list[str]], str]
) -> int:
    """``python -m pipelines.evaluate``: the exit status; one stderr line for a bad flag (2) or inputs that do
    not pair (1); the table on stdout. ``run`` and ``summary`` are the job's, handed in so that the flags are
    parsed before it is imported."""
    quiet_beam_logs()
    return cli.main(
        "pipelines.evaluate",
        argv,
        run,
        check=parse_flags,
        summary=summary,
        failure_line=storage_failure_line("pipelines.evaluate", "no evaluation.json was written"),
    )

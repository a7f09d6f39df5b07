"""``pipelines.evaluate``'s options: the typed config (``EvaluateConfig``, whose fields are the flags), the typed
result (``EvaluateResult``), the flag parser (``from_args``) and the command line's ``main``, without Beam:
``--help`` and a bad flag are answered before the job module imports it. (A plain dataclass rather than a Beam
``PipelineOptions`` subclass, as infer's: see ``pipelines.infer.options``.)"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Optional, Sequence

from pipelines.common.flags import job_parser, quiet_beam_logs, storage_failure_line
from pipelines.shared import cli, flag_parser
from schemas import errors


def _datasets():
    """The dataset registry (its names and modules load without Beam or TensorFlow)."""
    return importlib.import_module("pipelines.datasets")


# ---------------------------------------------------------------------------------------------- evaluate
@dataclasses.dataclass
class EvaluateConfig:
    """What an evaluate run scores: each field is the flag of the same name (``pipelines.shared.flag_parser.option``);
    ``EvaluateConfig(predictions="OUT/masks", ground_truth="SRC", dataset="pet")`` is ``--predictions OUT/masks
    --ground_truth SRC --dataset pet``."""

    predictions: str = flag_parser.option(help="folder of predicted masks (OUT/masks), local or gs://")
    ground_truth: str = flag_parser.option(
        help="the raw dataset root (SRC) or a folder of ground-truth masks, local or gs://"
    )
    dataset: str = flag_parser.option(help="how to read the ground truth", choices=lambda: _datasets().names())
    label_mode: Optional[str] = flag_parser.option(
        None,
        "Pet: classes to score: trimap (pet, background, border) or binary",
        choices=("trimap", "binary"),
        default_text="trimap",
        advanced=True,
    )
    split: Optional[str] = flag_parser.option(
        None,
        "the dataset's own split to score (from its list file or split folder, as docs/datasets.md describes for "
        "each --dataset); refused when the dataset has no such split",
        default_text="every image found",
    )
    output_file: Optional[str] = flag_parser.option(
        None, "evaluation JSON", default_text="evaluation.json next to the predictions folder"
    )


EvaluateOptions = EvaluateConfig  # its name before the Python API; the flags' tests still use it


@dataclasses.dataclass(frozen=True)
class EvaluateResult:
    """What an evaluate run found: ``document`` is the evaluation JSON written to ``output_file``."""

    output_file: str
    document: dict[str, Any]

    @property
    def mean_iou(self) -> Optional[float]:
        return self.document["mean_iou"]

    @property
    def per_class_iou(self) -> dict[str, Optional[float]]:
        return self.document["per_class_iou"]

    @property
    def pixel_accuracy(self) -> Optional[float]:
        return self.document["pixel_accuracy"]

    @property
    def images(self) -> int:
        return self.document["images"]


def parser() -> flag_parser.Parser:
    parser = job_parser("pipelines.evaluate", EvaluateConfig)
    return parser


def check(config: EvaluateConfig) -> None:
    """``UsageError`` for a value the parser cannot see is wrong: a ``label_mode`` of another dataset."""
    flag_parser.check_fields(config)
    dataset = _datasets().get(config.dataset)
    if config.label_mode and config.label_mode not in dataset.evaluate_label_modes:
        scored = " or ".join(
            n for n in _datasets().names() if config.label_mode in _datasets().get(n).evaluate_label_modes
        )
        raise errors.UsageError(f"--label_mode applies to --dataset {scored} only")


def from_args(argv: Sequence[str]) -> tuple[EvaluateConfig, list[str]]:
    """Flags → ``EvaluateConfig`` and the Beam flags, without Beam (names checked, not Beam's values: the job's
    ``from_args`` checks those)."""
    args, beam_argv = parser().parse_known_args(list(argv))
    config = flag_parser.config_from(EvaluateConfig, args)
    check(config)
    return config, list(beam_argv)


def main(
    argv: Optional[Sequence[str]],
    run: Callable[[list[str]], EvaluateResult],
    summary: Callable[[EvaluateResult, list[str]], str],
) -> int:
    """``python -m pipelines.evaluate``: the exit status; one stderr line for a bad flag (2) or inputs that do
    not pair (1); the table on stdout. ``run(argv)`` and ``summary`` are the job's, handed in so that the flags
    are parsed before it is imported."""
    quiet_beam_logs()
    return cli.main(
        "pipelines.evaluate",
        argv,
        run,
        check=from_args,
        summary=summary,
        failure_line=storage_failure_line("pipelines.evaluate", "no evaluation.json was written"),
    )

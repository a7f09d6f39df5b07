"""A picture of the results: the worst predictions first, with their scores, the metrics and a confusion matrix.

    python -m pipelines.evaluate.report --output_dir OUT --dataset pet [--ground_truth SRC] [--max_images 8]

Reads what ``pipelines.infer`` wrote (``OUT/summary.json`` names every input and its output stem) and, when
present, ``OUT/evaluation.json`` (``pipelines.evaluate``); writes ``OUT/report.png`` and a self-contained
``OUT/report.html`` (images embedded): mIoU, pixel accuracy, per-class IoU and the confusion matrix, then one row
per image (input | ground truth | prediction | instances) with a colour legend. With evaluation.json the rows are
the --max_images worst images by per-image mIoU, then a few of the best; without it, the first images by name.
Local paths or gs://.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from pipelines import datasets
from pipelines.shared import cli, flag_parser
from schemas import errors

NAME = "pipelines.evaluate.report"
# The drawing (PIL, numpy, Beam's FileSystems) lives in report_page (``report_page.write_report`` for Python
# callers) and is imported only to draw, so that --help and a bad flag answer at once.
_PAGE = "pipelines.evaluate.report_page"


def build_parser() -> flag_parser.Parser:
    parser = flag_parser.Parser(NAME, __doc__)
    parser.add_flag("--output_dir", required=True, help="OUT of pipelines.infer (holding its summary.json)")
    parser.add_flag("--dataset", required=True, choices=datasets.names(), help="the dataset predicted")
    parser.add_flag(
        "--ground_truth", help="raw dataset root (SRC) for the True Mask column", default_text="no True Mask column"
    )
    parser.add_flag(
        "--max_images",
        type=int,
        default=8,
        minimum=1,
        help="rows of the report: the worst images by per-image mIoU (then a few of the best) when OUT holds "
        "evaluation.json, else the first by name",
    )
    parser.add_logging_flags()
    return parser


def run(argv: Sequence[str]) -> dict[str, str]:
    """Writes the report for command-line style ``argv``; returns its paths. Raises ``UsageError`` /
    ``DataError``."""
    args = build_parser().parse_args(list(argv))
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(FileSystems.join(args.output_dir, "summary.json")):
        raise errors.DataError(f"{args.output_dir}/summary.json not found: run pipelines.infer first")
    page = importlib.import_module(_PAGE)
    return page.write_report(args.output_dir, args.dataset, args.ground_truth, args.max_images)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.main(NAME, argv, run, summary=lambda paths, _: f"report: {paths['html']} and {paths['png']}")


if __name__ == "__main__":
    cli.exit_process(main(sys.argv[1:]))

"""``python -m trainer.task``: train U-Net, FCN-8s or the MobileNetV2 U-Net on segflow records; export a SavedModel.

    python -m trainer.task --data_dir DST --preset pet_cpu --job_dir JOB [--epochs 30] ...
    python -m trainer.task --data_dir DST --model unet --job_dir JOB [--epochs 10] [--batch_size 8] ...

The command line over ``trainer.training.run``: flags → ``TrainConfig`` (``from_args``), one stderr line and an
exit status for each failure (``main``). Writes JOB/checkpoints (resume with the same command after any
interruption), JOB/logs, JOB/model and JOB/metrics.json (``trainer.training``); JOB's rules: ``trainer.job_folder``.
The same command runs unchanged on one CPU, several GPUs or several machines (TF_CONFIG, e.g. Vertex AI).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from pipelines.shared import cli, flag_parser
from trainer import presets
from trainer.config import TrainConfig, UsageError
from trainer.training import TrainResult, run

__all__ = [
    "NAME",
    "TrainConfig",
    "TrainResult",
    "UsageError",
    "build_parser",
    "config_from_args",
    "from_args",
    "main",
    "run",
]

NAME = "trainer.task"


def build_parser(preset: Optional[str] = None) -> flag_parser.Parser:
    """The job's flags, one per ``TrainConfig`` field (its default, help and range are declared there), and
    ``--log_level``; with ``preset``, its values are the defaults. Launchers (``trainer.launch``) check a job's
    args here. Imports no TensorFlow."""
    parser = flag_parser.Parser(NAME, __doc__, epilog=presets.help_lines())
    flag_parser.add_fields(parser, TrainConfig, defaults=presets.PRESETS[preset].values if preset else None)
    parser.add_logging_flags(verbose=False)  # --verbose is Keras' progress output here (a TrainConfig field)
    return parser


def _preset_named(argv: Sequence[str]) -> Optional[str]:
    """The --preset a command line names, when it is a known one (an unknown name is the parser's to refuse,
    with the closest name)."""
    name = None
    for i, token in enumerate(argv):
        if token == "--preset" and i + 1 < len(argv):
            name = argv[i + 1]
        elif token.startswith("--preset="):
            name = token.split("=", 1)[1]
    return name if name in presets.PRESETS else None


def from_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Flags → a validated ``TrainConfig``; raises ``UsageError`` (``HelpShown`` for --help), never exits.
    ``--preset NAME`` sets its values first; every other flag given overrides them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = flag_parser.config_from(TrainConfig, build_parser(_preset_named(argv)).parse_args(argv))
    config.validate()
    return config


config_from_args = from_args  # the name launchers and tests knew first


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m trainer.task``: the exit status; one stderr line for a bad flag (2) or bad data (1)."""

    def train(args: list[str]) -> TrainResult:
        return run(from_args(args))

    def failure_line(error: BaseException) -> Optional[str]:
        reason = _storage_failure(error)
        return cli.error_line(NAME, reason) if reason else None

    # --verbose is Keras' progress output here, not the logging flag (--log_level debug shows the libraries).
    return cli.main(NAME, argv, train, check=from_args, failure_line=failure_line, tensorflow=True, verbose_flag=False)


def _storage_failure(error: BaseException) -> Optional[str]:
    """One line for a storage request that still failed after TensorFlow's own retries (its filesystems retry
    transient errors such as GCS 429/503 and resets, ``GCS_RETRY_CONFIG_*``; past that budget they raise
    "All N retry attempts failed"), or None for any other error, which keeps its traceback."""
    import tensorflow as tf

    google = _google_storage_failure(error)
    if google is not None:
        return google
    if not isinstance(error, tf.errors.OpError) or "retry attempts failed" not in (error.message or ""):
        return None
    # The message names the request and (on its next line) the path; graph-node context ("[[{{node ...}}]]") and
    # anything after it are not for the user.
    lines = []
    for line in error.message.strip().splitlines():
        if "[[" in line:
            break
        lines.append(line)
    return "storage failed: " + " ".join(" ".join(lines).split())


def _google_storage_failure(error: BaseException) -> Optional[str]:
    """One line for a Cloud Storage request that failed past google-cloud-storage's own retries (the JOB
    folder's owner record and lease on gs://, ``pipelines.shared.ownership``), searching the exception's causes; else
    None."""
    try:
        from google.api_core.exceptions import GoogleAPIError
    except ImportError:  # no google-cloud packages: TensorFlow's own client is the only one in use
        return None
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, GoogleAPIError):
            return "storage failed: " + " ".join(f"{type(current).__name__}: {current}".split())[:400]
        current = current.__cause__ or current.__context__
    return None


if __name__ == "__main__":
    cli.exit_process(main())

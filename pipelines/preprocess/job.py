"""The preprocess job: ``run(config)`` writes a DST (shards, metadata.json, dead letters, transform_fn/) and returns
a ``PreprocessResult``; ``main(argv)`` is the command line on top of it (``python -m pipelines.preprocess``).

    from pipelines.preprocess import PreprocessConfig, run
    result = run(PreprocessConfig(dataset="pet", input_dir=src, output_dir=dst, image_size=(128, 128)))

The flags and the config are ``options.py``'s, the steps ``transforms.py``'s, metadata.json and the result
``metadata.py``'s, running and publishing ``runtime.py``'s.
Defaults run the DirectRunner in multi-processing mode with one worker per core; ``pipeline_args`` are Beam's
flags (``--runner``, ``--direct_num_workers``, ``--project``, ``--temp_location``, ``--setup_file`` ...).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional, Sequence

# Only what parsing the flags needs is imported here: ``--help`` and a bad job flag answer in well under a
# second. Beam, TensorFlow and the pipeline modules (~5 s of imports on 2 cores) load once the flags are parsed:
# ``runtime`` (running the job), ``transforms`` (building it) and ``metadata`` (its result) are imported in the
# functions that need them, one import each.
from pipelines.preprocess.inputs import check_folders, check_input, check_input_dir, check_pipeline_args
from pipelines.preprocess.options import NAME, PreprocessConfig, build_arg_parser, check_config, from_args
from pipelines.shared import cli
from schemas.errors import UsageError

if TYPE_CHECKING:
    import apache_beam as beam

    from pipelines.common.progress import Sink
    from pipelines.preprocess.metadata import PreprocessResult

# Beside the job's own names, what its callers use with them: the config and the parser it is read by (options.py's),
# and the error ``parse_args`` and ``check`` raise.
__all__ = [
    "PreprocessConfig",
    "UsageError",
    "build_arg_parser",
    "build_pipeline",
    "check",
    "check_input",
    "from_args",
    "main",
    "parse_args",
    "run",
    "start_workers",
]


def check(config: PreprocessConfig, pipeline_args: Sequence[str] = ()) -> None:
    """Everything ``run`` refuses before it reads the input: a value out of range or flags that do not go
    together, the two folders inside each other, a flag Beam does not take. Raises ``UsageError``."""
    check_config(config)
    check_folders(config)
    check_pipeline_args(pipeline_args)


def parse_args(argv: Sequence[str]) -> tuple[PreprocessConfig, list[str]]:
    """``from_args``, then ``check``: a command line as ``run`` would take it. Raises ``UsageError``."""
    config, pipeline_args = from_args(argv)
    check(config, pipeline_args)
    return config, pipeline_args


def build_pipeline(
    p: beam.Pipeline,
    config: PreprocessConfig,
    temp_dir: str,
    metadata_path: Optional[str] = None,
    sink: Optional[Sink] = None,
) -> beam.PCollection:
    """The whole job on ``p`` (``transforms.build_pipeline``: ``ReadDataset`` then ``WriteDataset``)."""
    from pipelines.preprocess import transforms  # Beam: see the imports at the top

    return transforms.build_pipeline(p, config, temp_dir, metadata_path, sink)


def run(config: PreprocessConfig, pipeline_args: Optional[Sequence[str]] = None) -> PreprocessResult:
    """Runs the job on ``config`` with Beam's ``pipeline_args``; returns a ``PreprocessResult``. A command line
    runs as ``run(*from_args(argv))``.

    Raises ``UsageError`` for a bad config or flag, ``DataError`` for a missing or empty input (``NoRecordsError``
    when every input was a dead letter), other ``SegflowError``s, never ``SystemExit``.

    Publication (``pipelines.shared.ownership``): DST is claimed first (refused when it holds files preprocess did
    not write, or while another run writes it). Locally the run writes into a staging folder inside DST and
    publishes by renames, metadata.json last: until then readers see the previous complete output, and a run that
    fails or is killed leaves it as it was. On gs:// the run writes in place: the previous metadata.json is
    deleted first and the new one written last, naming every shard. Files of the previous run that this one did
    not write (shards of another count) are deleted by the owner record.
    """
    from pipelines.preprocess import runtime  # Beam and the pipeline modules: see the imports at the top

    pipeline_args = list(pipeline_args or ())
    check(config, pipeline_args)
    check_input_dir(config)
    config.source_dataset()  # a label table that comes with the data (classes.json): refused here, in one line
    return runtime.run_checked(config, pipeline_args)


def check_command_line(argv: Sequence[str]) -> tuple[PreprocessConfig, list[str]]:
    """What ``main`` checks before the heavy imports: the flags, then the local --input_dir's commonest
    mistakes (a flag or folder error in under a second, where Beam and TensorFlow take seconds to load)."""
    config, pipeline_args = from_args(argv)
    check_input_dir(config)
    return config, pipeline_args


def start_workers(argv: Sequence[str]) -> None:
    """``main``'s prestart: when the job's workers will be processes, their fork server starts importing what
    they need before this process imports TensorFlow, so the two run at once. The flags are checked as ``run``
    checks them; a local input is only measured (a small one runs in threads), the rest is left to ``run``."""
    config, pipeline_args = parse_args(argv)
    from pipelines.preprocess import runtime  # Beam: see the imports at the top

    runtime.start_early_workers(config, pipeline_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipelines.preprocess``: the exit status; one stderr line for a bad flag (2), no usable input
    or a storage outage (1); the summary on stdout."""
    # Beam logs a failing DoFn's traceback, then re-raises the same exception to ``run``: main reports it (one
    # line for a storage outage, the traceback for anything else), so the log copy is only a duplicate.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)

    def failure_line(error: BaseException) -> Optional[str]:
        from pipelines.common import storage

        return storage.storage_failure_line(
            NAME,
            error,
            "--output_dir keeps its last complete output (on gs://, once the run began writing there, it holds no "
            "metadata.json), so nothing half-written will be read",
        )

    def run_command(argv: list[str]) -> PreprocessResult:
        return run(*from_args(argv))

    def report(result: PreprocessResult, argv: list[str]) -> Optional[str]:
        return result.summary() if result.metadata is not None else None

    return cli.main(
        NAME,
        argv,
        run_command,
        check=check_command_line,
        summary=report,
        failure_line=failure_line,
        tensorflow=True,
        prestart=start_workers,
    )

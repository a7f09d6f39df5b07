"""The command lines of the Beam jobs (``pipelines.infer``, ``pipelines.evaluate``; preprocess's flags are its
``PreprocessConfig``), built on ``schemas.cli`` without Beam or TensorFlow.

``python -m pipelines.infer --help`` (or a bad value, a missing flag, a misspelt flag) is answered from here
before the job module imports Apache Beam (~1.6 s on 2 cores) and TensorFlow. A flag that is not the job's must
be a Beam option: its name is checked against ``BEAM_FLAGS_FILE`` at once, its value by Beam itself
(``check_beam_argv``) as the job starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import re
from typing import Any, Optional, Sequence

from schemas import cli

# Default --max_pixels: 32 Mpx (e.g. a 24-megapixel 6000x4000 photo passes; Cityscapes frames are 2 Mpx). See
# pipelines.infer for what an image in flight holds.
DEFAULT_MAX_PIXELS = 32_000_000
# Default --max_instances: Cityscapes' fine annotations have ~20 instances a frame on average and rarely over 60;
# an under-trained model's speckle is what reaches hundreds (1,200 a frame measured). The highest scores are kept.
DEFAULT_MAX_INSTANCES = 100
MODEL_CALLS = ("batch", "image")
POSTPROCESS = ("host", "graph")


# Every ``--flag`` Beam's options define, for the Beam version on the first line: a mistyped flag is refused
# from this list without importing Beam. Regenerate with ``python -m pipelines.common.flags`` after a Beam upgrade
# (tests/test_upsample.py checks it matches the installed Beam; another version falls back to Beam itself).
BEAM_FLAGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "beam_flags.txt")


def installed_beam_version() -> Optional[str]:
    """``apache_beam.version.__version__`` read from its file, without importing the package (~1.6 s)."""
    spec = importlib.util.find_spec("apache_beam")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], "version.py"), encoding="utf-8") as f:
            found = re.search(r"""__version__\s*=\s*['"]([^'"]+)['"]""", f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def known_beam_flags() -> Optional[frozenset[str]]:
    """The ``--flags`` of the installed Beam from ``BEAM_FLAGS_FILE``; None when it describes another version."""
    try:
        with open(BEAM_FLAGS_FILE, encoding="utf-8") as f:
            header, *names = f.read().split()
    except (OSError, ValueError):
        return None
    return frozenset(names) if header == f"apache-beam=={installed_beam_version()}" else None


def live_beam_flags() -> list[str]:
    """Every ``--flag`` of Beam's options, from Beam itself (what ``pipelines.common.runner.check_beam_flags`` accepts)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    from pipelines.common.runner import check_beam_flags  # the options it sees are registered by then

    del check_beam_flags

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return sorted(k for k in parser._option_string_actions if k.startswith("--"))  # pylint: disable=protected-access


def beam_flag_names() -> Any:
    """What a Beam job's ``cli.Parser(passes_on=...)`` passes on: the installed Beam's flags from
    ``BEAM_FLAGS_FILE`` (no Beam import), or ``cli.ANY_FLAG`` when the file describes another Beam version
    (``check_beam_argv`` then asks Beam itself)."""
    return known_beam_flags() or cli.ANY_FLAG


def job_parser(name: str, doc: Optional[str]) -> cli.Parser:
    """A Beam job's parser: its own flags (added by the caller), ``--log_level``/``--verbose``, and any Beam
    option passed on."""
    return cli.Parser(name, doc, passes_on=beam_flag_names, passes_on_label="Beam options",
                      epilog="Every other flag is passed to Apache Beam (e.g. --runner, --direct_num_workers, "
                             "--project, --region, --temp_location, --setup_file).")


def check_beam_argv(beam_argv: Sequence[str], prog: str) -> None:
    """``UsageError`` for a flag Beam does not take or a bad value of one of its flags; imports Beam (~1.6 s),
    so only when there are Beam flags, as the job is about to."""
    if not beam_argv:
        return
    from pipelines.common.runner import check_beam_flags

    try:
        check_beam_flags(beam_argv)
    except ValueError as err:
        raise cli.UsageError(f"{err} (see {prog} --help)") from None


def quiet_beam_logs() -> None:
    """Keeps the DirectRunner's relayed worker chatter (one WARNING per worker start) off the console, and
    Beam's log copy of a failing DoFn's traceback: the same exception is re-raised to ``main``, which reports it
    (one line for a storage outage, the traceback for anything else)."""
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.worker").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


# ---------------------------------------------------------------------------------------------- infer
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


@dataclasses.dataclass
class InferOptions:
    """``pipelines.infer``'s flags: each field is the flag of the same name (``schemas.cli.option``)."""

    model_dir: str = cli.option(help="JOB/model exported by trainer.task (local or gs://)")
    input: list[str] = cli.option(help="glob of input images (local or gs://); repeat the flag for several globs; "
                                       "a file two globs match is read once; write a literal [ * ? as [[] [*] [?]",
                                  parse=str, argparse={"action": "append"})
    output_dir: str = cli.option(help="where masks/, color/, instances/ ... go (local or gs://); a rerun first "
                                      "removes the previous run's masks/, color/, overlay/, instances/, "
                                      "dead_letter/ and summary.json there, nothing else")
    max_pixels: int = cli.option(DEFAULT_MAX_PIXELS, "images with more pixels (read from the header, before "
                                                     "decoding) are dead letters; sized for 2 cores / 24 GB, see "
                                                     "docs/infer.md", minimum=1)
    instances: bool = cli.option(False, "also write instance masks (Cityscapes instance-level result format)")
    min_instance_area: int = cli.option(20, "drop instances with fewer pixels than this", minimum=0)
    max_instances: Optional[int] = cli.option(DEFAULT_MAX_INSTANCES, "keep at most this many instances per image, "
                                                                     "the highest scores (0: no cap)",
                                              parse=_instance_cap)
    overlay: bool = cli.option(False, "also write input+colour blends to overlay/")
    batch_size: Optional[tuple[int, int]] = cli.option(
        None, "RunInference batch bounds: MAX or MIN,MAX", parse=batch_bounds,
        default_text="1,8, MAX lowered for models whose inputs and scores exceed 64 MB an image, see docs/infer.md")
    model_calls: str = cli.option("batch", "batch: one model call per RunInference batch, zero-padded to the "
                                           "largest batch size so every call has one shape and reruns stay "
                                           "byte-identical; image: one call per image (about 2x the CPU for the "
                                           "model step on CPU)", choices=MODEL_CALLS)
    postprocess: str = cli.option("host", "host: class ids from the model-size scores on the host, interpolating "
                                          "only near class boundaries (the same ids as the model's postprocess "
                                          "signature); graph: the signature itself (upsamples every class's "
                                          "scores to full size)", choices=POSTPROCESS)
    model_copies: Optional[int] = cli.option(None, "exact number of model copies per machine, shared across "
                                                   "worker processes", minimum=1,
                                             default_text="one per worker process")
    large_model: bool = cli.option(False, "share one model across the worker processes of a machine "
                                          "(memory-bound models)")
    model_cache_dir: Optional[str] = cli.option(None, "local folder for copies of a remote --model_dir",
                                                default_text="the system temp dir")


def infer_parser(description: Optional[str] = None) -> cli.Parser:
    if description is None:  # the package's docstring is the job's --help (importing it loads nothing heavy)
        description = importlib.import_module("pipelines.infer").__doc__
    parser = job_parser("pipelines.infer", description)
    cli.add_fields(parser, InferOptions)
    parser.add_flag("--vectorized_batches", dest="model_calls", action="store_const", const="batch",
                    default=cli.default_of(InferOptions, "model_calls"),
                    help="deprecated: the same as --model_calls batch, now the default")
    parser.add_logging_flags()
    return parser


def parse_infer_flags(argv: Sequence[str]) -> tuple[InferOptions, list[str]]:
    """Flags → ``InferOptions`` and the Beam flags, without Beam (names checked, not Beam's values)."""
    args, beam_argv = infer_parser().parse_known_args(list(argv))
    return cli.config_from(InferOptions, args), list(beam_argv)


# ---------------------------------------------------------------------------------------------- evaluate
@dataclasses.dataclass
class EvaluateOptions:
    """``pipelines.evaluate``'s flags: each field is the flag of the same name (``schemas.cli.option``)."""

    predictions: str = cli.option(help="folder of predicted masks (OUT/masks), local or gs://")
    ground_truth: str = cli.option(help="the raw dataset root (SRC) or a folder of ground-truth masks, local or "
                                        "gs://")
    dataset: str = cli.option(help="how to read the ground truth", choices=("pet", "cityscapes"))
    label_mode: Optional[str] = cli.option(None, "Pet: classes to score: trimap (pet, background, border) or "
                                                 "binary", choices=("trimap", "binary"), default_text="trimap")
    split: Optional[str] = cli.option(None, "Cityscapes: gtFine split to score", default_text="every split found")
    output_file: Optional[str] = cli.option(None, "evaluation JSON",
                                            default_text="evaluation.json next to the predictions folder")


def evaluate_parser(description: Optional[str] = None) -> cli.Parser:
    if description is None:  # the package's docstring is the job's --help (importing it loads nothing heavy)
        description = importlib.import_module("pipelines.evaluate").__doc__
    parser = job_parser("pipelines.evaluate", description)
    cli.add_fields(parser, EvaluateOptions)
    parser.add_logging_flags()
    return parser


def parse_evaluate_flags(argv: Sequence[str]) -> tuple[EvaluateOptions, list[str]]:
    """Flags → ``EvaluateOptions`` and the Beam flags, without Beam (names checked, not Beam's values)."""
    args, beam_argv = evaluate_parser().parse_known_args(list(argv))
    options = cli.config_from(EvaluateOptions, args)
    if options.dataset == "cityscapes" and options.label_mode:
        raise cli.UsageError("--label_mode applies to --dataset pet only")
    return options, list(beam_argv)


# ---------------------------------------------------------------------------------------------- main
def _storage_failure_line(name: str, what_is_left: str):
    def line(error: BaseException) -> Optional[str]:
        from pipelines.common import storage

        return storage.storage_failure_line(name, error, what_is_left)

    return line


def infer_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipelines.infer``: the exit status; one stderr line for a bad flag (2), an unusable model or
    input, or a storage outage (1); the counters on stdout."""
    quiet_beam_logs()

    def run(args: list[str]) -> dict:
        from pipelines.infer import job

        return job.run(args)

    def summary(counters: dict, _: list[str]) -> Optional[str]:
        if counters.get("images_written") is None:  # e.g. a Dataflow dry run: nothing ran here
            return None
        return (f"pipelines.infer: {counters.get('inputs_matched', 0)} inputs matched, "
                f"{counters.get('images_written', 0)} written, {counters.get('dead_letters', 0)} dead-lettered, "
                f"{counters.get('instances', 0)} instances -> {counters['output_dir']}")

    return cli.main("pipelines.infer", argv, run, check=parse_infer_flags, summary=summary, tensorflow=True,
                    failure_line=_storage_failure_line("pipelines.infer", "OUT holds no summary.json, so the "
                                                                          "partial outputs are not a complete run"))


def evaluate_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pipelines.evaluate``: the exit status; one stderr line for a bad flag (2) or inputs that do
    not pair (1); the table on stdout."""
    quiet_beam_logs()

    def run(args: list[str]) -> dict:
        from pipelines.evaluate import job

        return job.run(args)

    def summary(doc: dict, args: list[str]) -> str:
        from pipelines.evaluate import job

        return f"{job.format_table(doc)}\nevaluation written to {job.output_file(parse_evaluate_flags(args)[0])}"

    return cli.main("pipelines.evaluate", argv, run, check=parse_evaluate_flags, summary=summary,
                    failure_line=_storage_failure_line("pipelines.evaluate", "no evaluation.json was written"))


if __name__ == "__main__":
    import apache_beam.version

    with open(BEAM_FLAGS_FILE, "w", encoding="utf-8") as out:
        out.write(f"apache-beam=={apache_beam.version.__version__}\n" + "".join(f"{n}\n" for n in live_beam_flags()))
    print(f"wrote {BEAM_FLAGS_FILE}")

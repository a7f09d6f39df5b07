"""The command lines of ``pipelines.infer`` and ``pipelines.evaluate``, built without Beam or TensorFlow.

``python -m pipelines.infer --help`` (or a bad value, a missing flag) is answered from here before the job
module imports Apache Beam (~1.6 s on 2 cores) and TensorFlow: each job module calls ``preflight`` at its top
when run as ``__main__``. Only flags that are not the job's need Beam: ``JobParser.parse_job_args`` checks them
against Beam's options (``pipelines.common.runner.check_beam_flags``), importing Beam then, as the job is about to.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
from typing import Callable, Optional, Sequence

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
    """Every ``--flag`` of Beam's options, from Beam itself (what ``pipelines.common.runner.check_beam_flags``
    accepts)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    from pipelines.common.runner import check_beam_flags  # the options it sees are registered by then

    del check_beam_flags

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return sorted(k for k in parser._option_string_actions if k.startswith("--"))  # pylint: disable=protected-access


class JobParser(argparse.ArgumentParser):
    """argparse for a Beam job's own flags: one-line errors (exit 2), no abbreviations, and every flag that is
    not the job's must be a Beam option (``parse_job_args``). ``pipelines.common.runner.BeamJobParser``'s behaviour,
    without importing Beam to build it."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(**kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def refuse_unknown_flags(self, beam_argv: Sequence[str]) -> None:
        """Exits 2 on a flag that Beam does not define either (from ``BEAM_FLAGS_FILE``: 0.05 s rather than
        Beam's import); ``--x=1`` and ``--x 1`` alike. Values of Beam's flags are left to Beam."""
        known = known_beam_flags() if beam_argv else None
        if known is None:
            return
        unknown = [a.split("=", 1)[0] for a in beam_argv if a.startswith("--") and a.split("=", 1)[0] not in known]
        if unknown:
            self.error(f"unknown flag(s) {' '.join(unknown)}: not a flag of this job nor a Beam option")

    def parse_job_args(self, argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, list[str]]:
        """(the job's flags, the Beam flags); exits 2 with one line on a flag that is neither."""
        args, beam_argv = self.parse_known_args(argv)
        self.refuse_unknown_flags(beam_argv)
        if beam_argv:
            from pipelines.common.runner import check_beam_flags  # imports Beam: only when there are Beam flags

            try:
                check_beam_flags(beam_argv)
            except ValueError as err:
                self.error(str(err))
        return args, beam_argv


def preflight(build: Callable[[], JobParser], argv: Sequence[str]) -> None:
    """Answers ``--help`` and the job's own flag errors (exit 0 / 2) before the job's heavy imports."""
    parser = build()
    _, rest = parser.parse_known_args(list(argv))
    parser.refuse_unknown_flags(rest)


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


def _positive_or_none(text: str) -> Optional[int]:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--model_copies must be >= 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


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


def _pixel_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max_pixels takes a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"--max_pixels must be >= 1, got {value}")
    return value


def infer_parser(description: Optional[str] = None) -> JobParser:
    if description is None:  # the package's docstring is the job's --help (importing it loads nothing heavy)
        description = importlib.import_module("pipelines.infer").__doc__
    parser = JobParser(prog="python -m pipelines.infer", description=description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="JOB/model exported by trainer.task (local or gs://)")
    parser.add_argument("--input", required=True, action="append",
                        help="glob of input images (local or gs://); repeat the flag for several globs; a file "
                             "two globs match is read once; write a literal [ * ? as [[] [*] [?]")
    parser.add_argument("--output_dir", required=True,
                        help="where masks/, color/, instances/ … go (local or gs://); a rerun first removes the "
                             "previous run's masks/, color/, overlay/, instances/, dead_letter/ and summary.json "
                             "there, nothing else")
    parser.add_argument("--max_pixels", type=_pixel_limit, default=DEFAULT_MAX_PIXELS,
                        help=f"images with more pixels (read from the header, before decoding) are dead letters "
                             f"(default {DEFAULT_MAX_PIXELS}: sized for 2 cores / 24 GB, see docs/infer.md)")
    parser.add_argument("--instances", action="store_true",
                        help="also write instance masks (Cityscapes instance-level result format)")
    parser.add_argument("--min_instance_area", type=_non_negative, default=20,
                        help="drop instances with fewer pixels than this (default 20)")
    parser.add_argument("--max_instances", type=_instance_cap, default=DEFAULT_MAX_INSTANCES,
                        help=f"keep at most this many instances per image, the highest scores "
                             f"(default {DEFAULT_MAX_INSTANCES}; 0: no cap)")
    parser.add_argument("--overlay", action="store_true", help="also write input+colour blends to overlay/")
    parser.add_argument("--batch_size", type=batch_bounds, default=None,
                        help="RunInference batch bounds: MAX or MIN,MAX (default 1,8, MAX lowered for models whose "
                             "inputs and scores exceed 64 MB an image, see docs/infer.md)")
    parser.add_argument("--model_calls", choices=MODEL_CALLS, default="batch",
                        help="batch: one model call per RunInference batch, zero-padded to the largest batch size "
                             "so every call has one shape and reruns stay byte-identical (default); image: one "
                             "call per image (about 2x the CPU for the model step on CPU)")
    parser.add_argument("--vectorized_batches", dest="model_calls", action="store_const", const="batch",
                        help="deprecated: the same as --model_calls batch, now the default")
    parser.add_argument("--postprocess", choices=POSTPROCESS, default="host",
                        help="host: class ids from the model-size scores on the host, interpolating only near "
                             "class boundaries (default; the same ids as the model's postprocess signature); "
                             "graph: the signature itself (upsamples every class's scores to full size)")
    parser.add_argument("--model_copies", type=_positive_or_none, default=None,
                        help="exact number of model copies per machine, shared across worker processes "
                             "(default: one per worker process)")
    parser.add_argument("--large_model", action="store_true",
                        help="share one model across the worker processes of a machine (memory-bound models)")
    parser.add_argument("--model_cache_dir", default=None,
                        help="local folder for copies of a remote --model_dir (default: the system temp dir)")
    return parser


# ---------------------------------------------------------------------------------------------- evaluate
def evaluate_parser(description: Optional[str] = None) -> JobParser:
    if description is None:  # the package's docstring is the job's --help (importing it loads nothing heavy)
        description = importlib.import_module("pipelines.evaluate").__doc__
    parser = JobParser(prog="python -m pipelines.evaluate", description=description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="folder of predicted masks (OUT/masks), local or gs://")
    parser.add_argument("--ground_truth", required=True,
                        help="the raw dataset root (SRC) or a folder of ground-truth masks, local or gs://")
    parser.add_argument("--dataset", required=True, choices=importlib.import_module("pipelines.datasets").names())
    parser.add_argument("--label_mode", default=None, choices=("trimap", "binary"),
                        help="Pet: classes to score (default trimap: pet, background, border)")
    parser.add_argument("--split", default=None,
                        help="Cityscapes: gtFine split to score (default: every split found)")
    parser.add_argument("--output_file", default=None,
                        help="evaluation JSON (default: evaluation.json next to the predictions folder)")
    return parser


if __name__ == "__main__":
    import apache_beam.version

    with open(BEAM_FLAGS_FILE, "w", encoding="utf-8") as out:
        out.write(f"apache-beam=={apache_beam.version.__version__}\n" + "".join(f"{n}\n" for n in live_beam_flags()))
    print(f"wrote {BEAM_FLAGS_FILE}")

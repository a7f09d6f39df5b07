"""What every Beam job's command line shares, built on ``pipelines.shared.flag_parser`` without Beam or TensorFlow.

Each job declares its own flags beside it (``pipelines/<job>/options.py``, preprocess's ``PreprocessConfig``);
this module gives them the parser (``job_parser``), the Beam options they pass on, and the one storage-outage
line. A flag that is not the job's must be a Beam option: its name is checked against ``BEAM_FLAGS_FILE`` at once,
without importing Apache Beam (~1.6 s on 2 cores), its value by Beam itself (``check_beam_argv``) as the job
starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from typing import Any, Optional, Sequence

from pipelines.common import direct_defaults
from pipelines.shared import flag_parser
from schemas import errors

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
    from pipelines.common.runner import beam_option_parser  # the options it sees are registered by then
    from pipelines.shared import private_apis

    return sorted(k for k in private_apis.argparse_option_strings(beam_option_parser()) if k.startswith("--"))


def beam_flag_names() -> Any:
    """What a Beam job's ``flag_parser.Parser(passes_on=...)`` passes on: the installed Beam's flags from
    ``BEAM_FLAGS_FILE`` (no Beam import), or ``flag_parser.ANY_FLAG`` when the file describes another Beam version
    (``check_beam_argv`` then asks Beam itself)."""
    return known_beam_flags() or flag_parser.ANY_FLAG


def job_parser(name: str, options_class: type) -> flag_parser.Parser:
    """A Beam job's parser: one flag per ``options_class`` field, ``--log_level``/``--verbose``, and any Beam
    option passed on. ``name`` is the job's package, whose docstring (up to its note for Python callers) is the
    --help text: importing it loads nothing heavy."""
    description = importlib.import_module(name).__doc__.split("\n\nPython callers:")[0]
    parser = flag_parser.Parser(
        name,
        description,
        passes_on=beam_flag_names,
        passes_on_label="Beam options",
        epilog="Every other flag is passed to Apache Beam (e.g. --runner, --direct_num_workers, "
        "--project, --region, --temp_location, --setup_file). " + direct_defaults.RUNNING_MODE_HELP,
    )
    flag_parser.add_fields(parser, options_class)
    parser.add_logging_flags()
    return parser


def check_beam_argv(beam_argv: Sequence[str], prog: str) -> None:
    """``UsageError`` for a flag Beam does not take or a bad value of one of its flags; imports Beam (~1.6 s),
    so only when there are Beam flags, as the job is about to."""
    if not beam_argv:
        return
    from pipelines.common.runner import check_beam_flags

    try:
        check_beam_flags(beam_argv)
    except ValueError as err:
        raise errors.UsageError(f"{err} (see {prog} --help)") from None


def quiet_beam_logs() -> None:
    """Keeps the DirectRunner's relayed worker chatter (one WARNING per worker start) off the console, and
    Beam's log copy of a failing DoFn's traceback: the same exception is re-raised to ``main``, which reports it
    (one line for a storage outage, the traceback for anything else)."""
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.worker").setLevel(logging.ERROR)
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)


def storage_failure_line(name: str, what_is_left: str):
    def line(error: BaseException) -> Optional[str]:
        from pipelines.common import storage

        return storage.storage_failure_line(name, error, what_is_left)

    return line


if __name__ == "__main__":
    import apache_beam.version

    with open(BEAM_FLAGS_FILE, "w", encoding="utf-8") as out:
        out.write(f"apache-beam=={apache_beam.version.__version__}\n" + "".join(f"{n}\n" for n in live_beam_flags()))
    print(f"wrote {BEAM_FLAGS_FILE}")

"""The command-line skeleton of every segflow program (``pipelines.preprocess``, ``pipelines.infer``,
``pipelines.evaluate``, ``trainer.task``, ``trainer.launch``), built on argparse alone.

Importing this module loads neither TensorFlow nor Beam, so ``--help`` and a bad flag are answered in a fraction
of a second. It lives in ``pipelines.shared`` because ``trainer`` imports it too.

- ``Parser``: one-line errors raised as ``UsageError`` (never ``SystemExit``), no abbreviations, a flag that is
  neither the program's nor one it passes on (Beam's options, ``trainer.task``'s) named as unknown, with the
  closest real flag.
- ``option``: a config dataclass field that is also a flag: its default, help text, range and choices live in
  the field, once; ``add_fields`` declares the flags, ``config_from`` builds and checks the dataclass.
- ``main``: logging, the quiet start, the summary on stdout, and exceptions mapped to exit codes and ONE stderr
  line: ``UsageError`` 2, ``DataError`` (and any ``SegflowError``) 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import logging
import math
import os
import re
import sys
import threading
import typing
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar, Union

from schemas.errors import HelpShown, SegflowError, Terminated, UsageError

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ help text
_REST_LITERAL = re.compile(r"``([^`]+)``")
_REST_ROLE = re.compile(r":(?:class|func|meth|mod|attr):`~?([^`]+)`")


def plain(text: Optional[str]) -> str:
    """reST → what a terminal should show: ``x`` → x, :func:`x` → x, a trailing ``::`` → ``:``."""
    if not text:
        return ""
    text = _REST_ROLE.sub(r"\1", _REST_LITERAL.sub(r"\1", text))
    return re.sub(r"::\n", ":\n", text)


def description(doc: Optional[str]) -> str:
    """A module docstring as ``--help``'s description: reST removed, its line breaks kept as written (shell
    continuation backslashes included, so a usage example stays several lines)."""
    import textwrap

    lines = (doc or "").strip("\n").splitlines()
    if not lines:
        return ""
    return plain(lines[0].strip() + "\n" + textwrap.dedent("\n".join(lines[1:])))


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _range_text(minimum: Any, maximum: Any, exclusive_max: bool = False, exclusive_min: bool = False) -> str:
    top, bottom = ("<" if exclusive_max else "<="), ("<" if exclusive_min else "<=")
    if minimum is not None and maximum is not None:
        return f"{minimum} {bottom} value {top} {maximum}"
    if minimum is not None:
        return f"{'>' if exclusive_min else '>='} {minimum}"
    return f"{top} {maximum}" if maximum is not None else ""


def help_text(
    text: str,
    *,
    required: bool = False,
    default: Any = None,
    default_text: Optional[str] = None,
    minimum: Any = None,
    maximum: Any = None,
    exclusive_max: bool = False,
    exclusive_min: bool = False,
    is_switch: bool = False,
) -> str:
    """A flag's help line: its description, then ``(required)`` or ``(default: X)``, then its range."""
    notes = []
    if required:
        notes.append("required")
    elif default_text is not None:
        notes.append(f"default: {default_text}")
    elif not is_switch and default is not None:
        notes.append(f"default: {_shown(default)}")
    elif is_switch:
        notes.append("default: off")
    bounds = _range_text(minimum, maximum, exclusive_max, exclusive_min)
    if bounds:
        notes.append(f"range: {bounds}")
    text = plain(text).strip()
    return f"{text} ({'; '.join(notes)})" if notes else text


# ------------------------------------------------------------------------------------------------ parser
ANY_FLAG = "any"  # ``Parser(passes_on=ANY_FLAG)``: the foreign flags cannot be listed here; checked later


class Parser(argparse.ArgumentParser):
    """argparse with segflow's rules.

    ``name``: the program as its error lines name it (``pipelines.preprocess``). ``passes_on``: the flags the
    program hands to something else unparsed (a collection of ``--flag`` names, a callable giving one, or
    ``ANY_FLAG`` when they cannot be listed without a heavy import); None: every flag must be the program's own.
    ``passes_on_label``: what the usage line calls them.
    """

    def __init__(
        self,
        name: str,
        doc: Optional[str] = None,
        *,
        passes_on: Any = None,
        passes_on_label: str = "other flags",
        epilog: Optional[str] = None,
    ):
        import textwrap

        super().__init__(
            prog=f"python -m {name}",
            description=description(doc),
            epilog=textwrap.fill(plain(epilog), 100) if epilog else None,
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.name = name
        self._passes_on = passes_on
        self._passes_on_label = passes_on_label

    def format_usage(self) -> str:
        self.usage = self._short_usage()
        return super().format_usage()

    def format_help(self) -> str:
        self.usage = self._short_usage()
        return super().format_help()

    def _short_usage(self) -> str:
        """The required flags with their values, then ``[options]``: argparse's own usage lists every flag and
        wraps a required one apart from its value."""
        import textwrap

        parts = []
        for action in self._actions:
            if action.required and action.option_strings:
                parts.append(f"{action.option_strings[0]} {action.metavar or action.dest.upper()}")
        required_groups = [g for g in self._mutually_exclusive_groups if g.required]
        for group in required_groups:
            parts.append(
                "{"
                + " | ".join(f"{a.option_strings[0]} {a.metavar or a.dest.upper()}" for a in group._group_actions)
                + "}"
            )
        parts.append("[options]")
        if self._passes_on is not None:
            parts.append(f"[{self._passes_on_label}]")
        text = textwrap.fill(
            " ".join(parts),
            100 - len("usage: "),
            initial_indent=self.prog + " ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
        return text.replace("%", "%%")

    # -- declaring flags
    def add_flag(
        self,
        *names: str,
        help: str,
        default: Any = None,
        required: bool = False,  # noqa: A002
        minimum: Any = None,
        maximum: Any = None,
        exclusive_max: bool = False,
        exclusive_min: bool = False,
        default_text: Optional[str] = None,
        **kwargs: Any,
    ) -> argparse.Action:
        """``add_argument`` whose help states the default (or ``required``) and the range; a range is checked
        (``UsageError`` naming the flag) after the value is converted."""
        switch = kwargs.get("action") in ("store_true", "store_false", "store_const", "count")
        kwargs["help"] = help_text(
            help,
            required=required,
            default=default,
            default_text=default_text,
            minimum=minimum,
            maximum=maximum,
            exclusive_max=exclusive_max,
            exclusive_min=exclusive_min,
            is_switch=switch,
        )
        if not switch:
            kwargs.setdefault("metavar", _metavar(names[0], kwargs.get("type")))
            if "choices" in kwargs:
                kwargs["metavar"] = "{" + ",".join(str(c) for c in kwargs["choices"]) + "}"
        # A float flag is checked even without a range: NaN passes every comparison a range check makes.
        if minimum is not None or maximum is not None or kwargs.get("type") is float:
            kwargs["type"] = _bounded(kwargs.get("type", str), names[0], minimum, maximum, exclusive_max, exclusive_min)
        return self.add_argument(*names, default=default, required=required, **kwargs)

    def add_logging_flags(self, *, verbose: bool = True) -> None:
        """``--log_level`` (and ``--verbose``, unless the program uses that name for something else)."""
        self.add_flag(
            "--log_level",
            choices=LOG_LEVELS,
            default="info",
            type=str.lower,
            help="segflow's own messages from this level up; debug also shows the libraries' INFO "
            "lines and TensorFlow's native start-up lines, which are hidden otherwise",
        )
        if verbose:
            self.add_flag(
                "--verbose",
                action="store_true",
                help="also show what the libraries (TensorFlow, Beam) log at INFO and TensorFlow's "
                "native start-up lines (--log_level debug: DEBUG lines too)",
            )

    # -- parsing
    def error(self, message: str):  # type: ignore[override]
        # "argument --x: --x must be ..." (a range or type check that names its flag) → "--x must be ..."
        found = re.match(r"argument (\S+?)(?:/\S+)?: (.*)", message, re.S)
        if found and found.group(2).startswith(found.group(1)):
            message = found.group(2)
        raise UsageError(f"{message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: Optional[str] = None):  # type: ignore[override]
        if status:
            raise UsageError((message or "").strip() or f"exit status {status}")
        raise HelpShown("help shown")

    def own_flags(self) -> list[str]:
        return sorted(k for k in self._option_string_actions if k.startswith("--"))

    def foreign_flags(self) -> Any:
        passes = self._passes_on() if callable(self._passes_on) else self._passes_on
        return ANY_FLAG if passes is None and self._passes_on is not None else passes

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace=None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        self.refuse_unknown_flags(argv)
        return super().parse_known_args(argv, namespace)

    def refuse_unknown_flags(self, argv: Sequence[str]) -> None:
        """``UsageError`` naming the first flag that is neither the program's nor one it passes on: checked
        before argparse's own checks, so a misspelt flag is not reported as a missing required one."""
        foreign = self.foreign_flags()
        own = set(self._option_string_actions)
        for token in argv:
            if token == "--":
                break
            if not token.startswith("-") or token == "-" or _is_number(token):
                continue
            name = token.split("=", 1)[0]
            if name in own or foreign == ANY_FLAG or (foreign is not None and name in foreign):
                continue
            raise UsageError(f"unknown flag {name}{self._suggestion(name, foreign)} (see {self.prog} --help)")

    def _suggestion(self, name: str, foreign: Any) -> str:
        candidates = self.own_flags() + (sorted(foreign) if foreign not in (None, ANY_FLAG) else [])
        spelled = "--" + name.lstrip("-").replace("-", "_")
        if spelled in candidates:
            return f" (did you mean {spelled}?)"
        expansions = [c for c in self.own_flags() if c.startswith(spelled)]
        if len(expansions) == 1:  # an abbreviation: argparse's allow_abbrev would have guessed it silently
            return f" (did you mean {expansions[0]}?)"
        close = difflib.get_close_matches(spelled, candidates, n=1, cutoff=0.75)
        return f" (did you mean {close[0]}?)" if close else ""


def _metavar(flag: str, kind: Any) -> str:
    name = flag.lstrip("-")
    if name.endswith("_dir"):
        return "DIR"
    return {int: "N", float: "X"}.get(kind, name.upper())


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _bounded(
    convert: Callable[[str], Any], flag: str, minimum: Any, maximum: Any, exclusive_max: bool, exclusive_min: bool
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            if isinstance(err, argparse.ArgumentTypeError):
                raise
            kind = {"int": "an integer", "float": "a number"}.get(getattr(convert, "__name__", ""), "a value")
            raise argparse.ArgumentTypeError(f"{flag} takes {kind}, got {text!r}") from None
        check_range(flag, value, minimum, maximum, exclusive_max, exclusive_min, error=argparse.ArgumentTypeError)
        return value

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def check_range(
    flag: str,
    value: Any,
    minimum: Any,
    maximum: Any,
    exclusive_max: bool = False,
    exclusive_min: bool = False,
    error: type = UsageError,
) -> None:
    """Raises ``error`` ("--flag must be ..., got V") when ``value`` (not None) is outside the range, or is a
    float that is NaN or infinite (whatever the range: NaN fails no comparison, and no segflow setting means
    infinity)."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{flag} takes a finite number, got {value}")
    below = minimum is not None and (value <= minimum if exclusive_min else value < minimum)
    above = maximum is not None and (value >= maximum if exclusive_max else value > maximum)
    if below or above:
        raise error(f"{flag} must be {_range_text(minimum, maximum, exclusive_max, exclusive_min)}, got {value}")


# ------------------------------------------------------------------------------------------------ config fields
@dataclasses.dataclass(frozen=True)
class Flag:
    """What a config field's flag needs beyond the field's name, type and default."""

    help: str
    minimum: Any = None
    maximum: Any = None
    exclusive_max: bool = False
    exclusive_min: bool = False
    # The allowed values, or a function that lists them when a parser is built (a registry that can grow).
    choices: Union[Sequence[Any], Callable[[], Sequence[Any]], None] = None
    parse: Optional[Callable[[str], Any]] = None  # str → value, for types argparse cannot infer
    default_text: Optional[str] = None  # how --help shows the default, when its repr would not say it
    argparse: Optional[dict] = None  # any other add_argument keyword (nargs, const, ...)


FLAG_KEY = "segflow.flag"


def _choices(flag: Flag) -> Optional[tuple]:
    return None if flag.choices is None else tuple(flag.choices() if callable(flag.choices) else flag.choices)


def option(default: Any = dataclasses.MISSING, help: str = "", **flag: Any) -> Any:  # noqa: A002
    """A dataclass field that is also a ``--<field name>`` flag (``add_fields``). No default: a required flag.

    Adding a flag to a program is adding one such field to its config dataclass."""
    meta = {FLAG_KEY: Flag(help=help, **flag)}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag_of(field: dataclasses.Field) -> Optional[Flag]:
    return field.metadata.get(FLAG_KEY)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def _base_type(hint: Any) -> Any:
    """``Optional[int]`` → int; int → int."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def add_fields(parser: Parser, config_class: type, names: Optional[Iterable[str]] = None) -> None:
    """One flag per ``option`` field of ``config_class`` (those in ``names`` only, when given), in field order."""
    hints = typing.get_type_hints(config_class)
    wanted = None if names is None else set(names)
    for field in dataclasses.fields(config_class):
        flag = _flag_of(field)
        if flag is None or (wanted is not None and field.name not in wanted):
            continue
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING  # type: ignore[misc]
        default = None if required else _field_default(field)
        kind = _base_type(hints[field.name])
        extra = dict(flag.argparse or {})
        if kind is bool and not flag.parse:
            extra.setdefault("action", "store_true")
        else:
            extra.setdefault("type", flag.parse or kind)
        if flag.choices is not None:
            extra["choices"] = _choices(flag)
        parser.add_flag(
            f"--{field.name}",
            help=flag.help,
            default=default,
            required=required,
            minimum=flag.minimum,
            maximum=flag.maximum,
            exclusive_max=flag.exclusive_max,
            exclusive_min=flag.exclusive_min,
            default_text=flag.default_text,
            **extra,
        )


def check_fields(config: Any) -> None:
    """``UsageError`` for a field value outside its ``option`` range or choices (for configs built in Python,
    which did not go through the parser)."""
    for field in dataclasses.fields(config):
        flag = _flag_of(field)
        if flag is None:
            continue
        value = getattr(config, field.name)
        choices = _choices(flag)
        if choices is not None and value is not None and value not in choices:
            raise UsageError(f"--{field.name} must be one of {', '.join(str(c) for c in choices)}, got {value!r}")
        check_range(f"--{field.name}", value, flag.minimum, flag.maximum, flag.exclusive_max, flag.exclusive_min)


def config_from(config_class: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """``config_class`` from the parsed flags (a field without a flag keeps its default), checked."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if hasattr(args, f.name)}
    values.update(overrides)
    config = config_class(**values)
    check_fields(config)
    return config


def default_of(config_class: type, name: str) -> Any:
    """The default of ``config_class``'s field ``name`` (for a flag declared by hand)."""
    return _field_default({f.name: f for f in dataclasses.fields(config_class)}[name])


# ------------------------------------------------------------------------------------------------ quiet start
LOG_LEVELS = ("debug", "info", "warning", "error")
SEGFLOW_LOGGERS = ("segflow", "pipelines", "trainer", "schemas", "__main__")  # __main__: the program run

# What TensorFlow's native code prints whatever TF_CPP_MIN_LOG_LEVEL says (absl writes before its log is
# initialised; E-level lines pass level 2), though nothing is wrong and nothing is to be done: a CPU machine
# without CUDA, the CPU features the wheel was built for, a grappler pass that gives up and is skipped, oneDNN
# falling back to Eigen for uint8 ops.
NATIVE_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
    "successful NUMA node read from SysFS had negative value",
    "layout failed: INVALID_ARGUMENT: Subshape must have computed start >= end since stride is negative",
    "oneDNN supports DT_UINT8 only on platforms with AVX-512",
)

# Library log lines segflow's own code triggers on every run, and that ask nothing of the user.
LIBRARY_NOISE = (
    "Resource module is not available",  # Beam's RunInference, where getrusage is missing
    # Every local worker process, as it starts: the local runner gives workers no semi-persistent folder (only
    # registered schemas and logical types would need one; segflow has none), and the launcher's own options
    # reach them with the rest (the worker knows and drops them).
    "No semi_persistent_directory found",
    "Discarding unparseable args",
    # A worker's failure as the local job service logs it: the launcher re-raises the same error to ``main``,
    # which reports it (one line, or the traceback of a bug).
    "Error processing instruction",
)


def _is_segflow(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in SEGFLOW_LOGGERS)


class _DropLibraryNoise(logging.Filter):
    """Not verbose: the libraries' records below WARNING (some, like absl's, set their own logger to INFO, past
    the root's level), their known noise, and all of them once the job was interrupted (``_interrupted``) are
    dropped; segflow's own records all pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_segflow(record.name):
            return True
        if record.levelno < logging.WARNING or _interrupted.is_set():
            return False
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is shown, not hidden
            return True
        return not any(noise in message for noise in LIBRARY_NOISE)


def wants_verbose(argv: Sequence[str], verbose_flag: bool = True) -> bool:
    """``--verbose`` (where it is the logging flag: ``verbose_flag``; the trainer's is Keras' progress output) or
    ``--log_level debug`` among ``argv`` (read before the flags are parsed)."""
    return (verbose_flag and any(a == "--verbose" for a in argv)) or log_level(argv) == "debug"


def log_level(argv: Sequence[str]) -> str:
    level = "info"
    for i, arg in enumerate(argv):
        if arg == "--log_level" and i + 1 < len(argv):
            level = argv[i + 1].lower()
        elif arg.startswith("--log_level="):
            level = arg.split("=", 1)[1].lower()
    return level if level in LOG_LEVELS else "info"


def setup_logging(argv: Sequence[str], verbose_flag: bool = True) -> bool:
    """segflow's messages at ``--log_level`` (default info) on stderr; the libraries' at WARNING and up, less
    the known noise, unless verbose (then INFO and up, unfiltered). Returns whether verbose."""
    verbose = wants_verbose(argv, verbose_flag)
    level = getattr(logging, log_level(argv).upper())
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if verbose else logging.WARNING)
    for name in SEGFLOW_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for handler in root.handlers:
        if verbose:
            for f in [f for f in handler.filters if isinstance(f, _DropLibraryNoise)]:
                handler.removeFilter(f)
        elif not any(isinstance(f, _DropLibraryNoise) for f in handler.filters):
            handler.addFilter(_DropLibraryNoise())
    if not verbose:
        # TensorFlow's Python-side INFO/WARNING start-up lines, and its native ones where it honours the level.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return verbose


def _is_noise(line: bytes) -> bool:
    text = line.decode("utf-8", "replace")
    return any(noise in text for noise in NATIVE_NOISE)


def _forward(source: int, target: int) -> None:
    """Copies lines from ``source`` to ``target`` until end of file, less ``NATIVE_NOISE``."""
    pending = b""
    while True:
        try:
            chunk = os.read(source, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not _is_noise(line))
        if kept:
            try:
                os.write(target, kept)
            except OSError:
                pass
    if pending and not _is_noise(pending):
        try:
            os.write(target, pending)
        except OSError:
            pass
    os.close(source)


@contextlib.contextmanager
def native_stderr_filtered(verbose: bool = False) -> Iterator[None]:
    """For the block, everything written to file descriptor 2 (native code, past Python's ``sys.stderr``, and
    subprocesses started meanwhile) passes through a filter that drops ``NATIVE_NOISE`` lines, line by line as
    it comes; ``verbose``: nothing is filtered. On leaving, descriptor 2 is restored and what is in flight
    written out (a subprocess still holding the old one keeps its filter)."""
    if verbose:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (an embedded interpreter): nothing to filter
        yield
        return
    import threading

    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, saved), name="segflow-stderr", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # the pipe's last writer here: the forwarder sees its end once subprocesses let go
        forwarder.join(timeout=5)
        if not forwarder.is_alive():
            os.close(saved)


def start_tensorflow() -> None:
    """Imports TensorFlow and lists its devices (where CUDA is probed and, on a CPU machine, fails with an
    E-level line): the start-up a run pays anyway, done where ``main`` filters its lines. Listing devices does
    not initialise the runtime, so a distribution strategy may still be configured afterwards."""
    import tensorflow as tf

    tf.config.list_physical_devices("GPU")


# ------------------------------------------------------------------------------------------------ main
# The environment a program runs in, set by ``main`` (never on import: a library user's process keeps its own).
# ``TF_USE_LEGACY_KERAS=1``: segflow's Keras (its models, tensorflow-transform's layers) is Keras 2, imported by
# name as ``tf_keras``; unless told so, TensorFlow also loads Keras 3 (and matplotlib through it) for a
# ``tf.keras`` nothing of a program uses, 0.3-0.6 s of every run on 2 cores. A caller's own value is kept.
PROGRAM_ENVIRONMENT = {"TF_USE_LEGACY_KERAS": "1"}
_in_main = threading.Event()


def in_program_main() -> bool:
    """True while a segflow program's ``main`` runs (its command-line entry), False for Python callers of the
    same code: what the program decides by its entry point, never by what the process imported before."""
    return _in_main.is_set()


@contextlib.contextmanager
def _program_settings() -> Iterator[None]:
    """``PROGRAM_ENVIRONMENT`` (where unset) and ``in_program_main`` for the block; both as they were after."""
    added = [name for name in PROGRAM_ENVIRONMENT if name not in os.environ]
    for name in added:
        os.environ[name] = PROGRAM_ENVIRONMENT[name]
    was_in_main = _in_main.is_set()
    _in_main.set()
    try:
        yield
    finally:
        if not was_in_main:
            _in_main.clear()
        for name in added:
            os.environ.pop(name, None)


def main(
    name: str,
    argv: Optional[Sequence[str]],
    run: Callable[[list[str]], T],
    *,
    check: Optional[Callable[[list[str]], Any]] = None,
    summary: Optional[Callable[[T, list[str]], Optional[str]]] = None,
    failure_line: Optional[Callable[[BaseException], Optional[str]]] = None,
    tensorflow: bool = False,
    verbose_flag: bool = True,
    prestart: Optional[Callable[[list[str]], Any]] = None,
) -> int:
    """The one ``main`` of every segflow program; returns the exit status (never raises ``SystemExit``).

    ``check(argv)``: parses the flags without heavy imports (``--help`` and flag errors answer at once);
    ``tensorflow``: start TensorFlow before ``run`` (``start_tensorflow``), both with TensorFlow's native noise
    filtered from stderr (``native_stderr_filtered``) unless verbose; ``run(argv)``: the
    program's Python entry point, raising ``SegflowError``s; ``summary(result, argv)``: what stdout shows at
    the end; ``failure_line(error)``: one line for an error that is not a ``SegflowError`` but is not a bug
    either (a storage outage), else None (the traceback is kept: a bug must be seen); ``prestart(argv)``: what
    should start before TensorFlow, to run while this process imports it (worker processes), with its stderr
    filtered as ``run``'s.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = setup_logging(argv, verbose_flag)
    try:
        with _program_settings(), _own_temporary_folder():
            if check is not None:
                check(argv)
            check_output_flags(argv)
            # Filtered whether or not the program starts TensorFlow itself: a library may load it (evaluate's
            # decoders), and its native start-up lines would bury the one line of a failure.
            with native_stderr_filtered(verbose), _interrupt_ends_the_job():
                if prestart is not None:
                    prestart(argv)
                if tensorflow:
                    start_tensorflow()
                result = run(argv)
        text = summary(result, argv) if summary is not None else None
    except HelpShown:
        return 0
    except SegflowError as err:
        print(error_line(name, err), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return _stopped(name)
    except Exception as err:  # noqa: BLE001 - one line for what a user can cause or meet, the traceback for bugs
        if _interrupted.is_set():  # the job's own end (workers killed, streams broken) after a stop
            return _stopped(name)
        known = known_failure(err)
        if known is not None:
            print(error_line(name, known[0]), file=sys.stderr)
            return known[1]
        line = failure_line(err) if failure_line is not None else None
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    if text:
        print(text)
    return 0


RERUN_TO_FINISH = "the last complete output is unchanged: rerun the same command to finish"


def _stopped(name: str) -> int:
    """The one line and exit status of a job ended by SIGTERM (143) or an interrupt (130)."""
    # The output folder still holds its last complete output: the user's one move is to rerun.
    if _terminated.is_set():
        print(f"{name}: error: terminated; {RERUN_TO_FINISH}", file=sys.stderr)
        return 143
    print(f"{name}: error: interrupted; {RERUN_TO_FINISH}", file=sys.stderr)
    return 130


# ------------------------------------------------------------------------------------------------ failures
# What a user does about an OSError met on a path: the fault is the folder's or the disk's, never segflow's,
# wherever in the run it surfaces (launcher, Beam worker, TensorFlow writer).
_PATH_FAULTS = {
    "EROFS": "write the output to a folder on a writable file system",
    "ENOSPC": "free space (or write to another disk) and rerun the same command",
    "EDQUOT": "free space (or write to another disk) and rerun the same command",
    "EFBIG": "write to a file system that takes larger files",
    "EACCES": "give this user access to it, or name another folder",
    "EPERM": "give this user access to it, or name another folder",
    "ENOTDIR": "a file stands where a folder is needed: move it away, or name another folder",
    "EISDIR": "a folder stands where a file is needed: move it away, or name another path",
    "EEXIST": "a file stands where a folder is needed: move it away, or name another folder",
}
# Where Python's own message ("[Errno 30] Read-only file system: '/x'") is all that is left of an OSError: a
# Beam worker's exception reaches the launcher as the text of its traceback.
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] [^\n:']*(?:: '((?:[^'\\\n]|\\.)*)')?")
# A segflow error raised in a Beam worker, as the last line of its traceback's text ("...ModelNotFound: msg").
_ERROR_TEXT = re.compile(r"^(?:[\w.]+\.)?(\w+): (.+)$", re.M)
_BEAM_STEP = re.compile(r" \[while running '[^\n]*'\]$")


def known_failure(error: BaseException) -> Optional[tuple[str, int]]:
    """(message, exit status) when ``error``, or an exception it was raised from, is one a user can cause or
    meet rather than a bug: a ``SegflowError`` (also one raised in a Beam worker, which reaches the launcher
    re-raised or as its traceback's text), or an ``OSError`` in ``_PATH_FAULTS`` (a read-only or full disk, a
    denied permission, a file where a folder must be), also as TensorFlow reports it (``PermissionDeniedError``,
    ``ResourceExhaustedError`` ...). The message names the path where it is known and says what to do. None
    otherwise: an unknown exception keeps its traceback."""
    chain: list[BaseException] = []
    current: Optional[BaseException] = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    for i, link in enumerate(chain):
        found = _known_exception(link)
        if found is None:
            continue
        if isinstance(found[0], int):  # an OSError fault: its path may be known only further down the chain
            number, path = found
            for later in chain[i + 1 :]:
                deeper = _known_exception(later)
                if path is None and isinstance(deeper, tuple) and deeper[0] == number:
                    path = deeper[1]
            return _path_fault(number, path), 1
        return found
    return None


def _known_exception(error: BaseException) -> Union[tuple[Any, Any], None]:
    """(errno, path or None) for an OSError fault, (message, exit status) for a segflow error, else None."""
    import errno

    if isinstance(error, SegflowError):
        return _BEAM_STEP.sub("", " ".join(str(error).split())), error.exit_code
    if isinstance(error, OSError) and errno.errorcode.get(error.errno or 0) in _PATH_FAULTS:
        return error.errno, error.filename or error.filename2
    text = str(error)
    # tf.errors.* say "... PATH; Read-only file system", also as the text a Beam worker's error reaches the
    # launcher as; a TensorFlow error may name no path.
    from_tensorflow = type(error).__module__.startswith("tensorflow")
    for code in _PATH_FAULTS:
        number = getattr(errno, code, None)
        reason = os.strerror(number) if number is not None else None
        found = re.search(r"(\S+); " + re.escape(reason), text) if reason else None
        if found:
            return number, found.group(1)
        if from_tensorflow and reason and reason in text:
            return number, None
    for found in _ERRNO_TEXT.finditer(text):
        if errno.errorcode.get(int(found.group(1))) in _PATH_FAULTS:
            return int(found.group(1)), found.group(2)
    raised_by_name = _segflow_errors()
    for found in reversed(list(_ERROR_TEXT.finditer(text))):
        kind = raised_by_name.get(found.group(1))
        if kind is not None:
            return _BEAM_STEP.sub("", found.group(2).strip()), kind.exit_code
    return None


def _path_fault(number: int, path: Optional[Any]) -> str:
    import errno

    advice = _PATH_FAULTS[errno.errorcode[number]]
    where = f"{os.fsdecode(path)}: " if path else ""
    return f"{where}{os.strerror(number)}: {advice}"


def _segflow_errors() -> dict[str, type]:
    """Every ``SegflowError`` class defined so far, by name (the launcher imports those its workers raise)."""
    found: dict[str, type] = {}
    pending: list[type] = [SegflowError]
    while pending:
        kind = pending.pop()
        found.setdefault(kind.__name__, kind)
        pending.extend(kind.__subclasses__())
    found.pop("HelpShown", None)
    return found


# Flags that name what a command writes: a folder, or a file. A value of the wrong kind is a flag error (2),
# found before any input is read.
OUTPUT_FOLDER_FLAGS = ("--output_dir", "--job_dir")
OUTPUT_FILE_FLAGS = ("--output_file",)


def check_output_flags(argv: Sequence[str]) -> None:
    """``UsageError`` when a local path given to an output flag cannot be what the flag needs: an existing file
    where a folder is needed (``OUTPUT_FOLDER_FLAGS``), an existing folder where a file is
    (``OUTPUT_FILE_FLAGS``), or a path through a file. Whether it can be written is for the command's first
    write (its claim of the folder) to find."""
    for flag, value in _flag_values(argv, OUTPUT_FOLDER_FLAGS + OUTPUT_FILE_FLAGS):
        if not value or ("://" in value and not value.startswith("file://")):
            continue
        path = os.path.abspath(value[len("file://") :] if value.startswith("file://") else value)
        wants_folder = flag in OUTPUT_FOLDER_FLAGS
        if os.path.isdir(path) and not wants_folder:
            raise UsageError(f"{flag} {value} is a folder: name a file (e.g. {os.path.join(value, 'out.json')})")
        if wants_folder and os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"{flag} {value} is a file, not a folder: name a folder (new, or segflow's own)")
        parent = os.path.dirname(path)
        while parent and not os.path.lexists(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if os.path.lexists(parent) and not os.path.isdir(parent):
            raise UsageError(f"{flag} {value}: {parent} is a file, not a folder: name a path through folders")


def _flag_values(argv: Sequence[str], flags: Sequence[str]) -> Iterator[tuple[str, str]]:
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        name, equals, value = arg.partition("=")
        if name in flags:
            if equals:
                yield name, value
            elif i + 1 < len(argv):
                yield name, argv[i + 1]


# ------------------------------------------------------------------------------------------------ temporary files
TEMP_PREFIX = "segflow-tmp-"
_TEMP_NAME = re.compile(r"^segflow-tmp-[0-9a-f]{8}-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]{8}$")


@contextlib.contextmanager
def _own_temporary_folder() -> Iterator[str]:
    """For the block, this command's temporary files (Python's ``tempfile``, TensorFlow's autograph modules,
    its worker processes' through ``TMPDIR``) go to a folder of its own under the system temp dir, removed
    when it ends: TensorFlow deletes its files only at interpreter exit, which ``exit_process`` skips, and a
    stopped job's workers cannot delete theirs. The folder is named ``segflow-tmp-<host>-<pid>-<start>-<random>``
    (``pipelines.shared.processes``), so a later command removes one whose process was killed."""
    import shutil
    import tempfile
    import uuid

    from pipelines.shared import processes

    root = tempfile.gettempdir()
    _remove_dead_temporary_folders(root)
    try:
        path = os.path.join(root, f"{TEMP_PREFIX}{processes.owner_tag()}-{uuid.uuid4().hex[:8]}")
        os.mkdir(path, 0o700)
    except OSError:  # an unwritable temp dir: the command meets it where it needs one, as before
        yield root
        return
    previous_env, previous_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = path, path
    try:
        yield path
    finally:
        tempfile.tempdir = previous_dir
        if previous_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous_env
        shutil.rmtree(path, ignore_errors=True)


def _remove_dead_temporary_folders(root: str) -> None:
    import shutil

    from pipelines.shared import processes

    prefix = f"{TEMP_PREFIX}{processes.host_tag()}-"
    try:
        names = [n for n in os.listdir(root) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        found = _TEMP_NAME.match(name)
        if found and not processes.is_alive(int(found.group("pid")), int(found.group("start"))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


# Set once an interrupt (Ctrl-C) or SIGTERM reached ``main``: what other threads and libraries report after it
# are its consequences (workers ended, streams broken), which would bury ``main``'s one line. ``_terminated``:
# it was SIGTERM.
_interrupted = threading.Event()
_terminated = threading.Event()
_END_DESCENDANTS_EVERY_S = 0.5


@contextlib.contextmanager
def _interrupt_ends_the_job() -> Iterator[None]:
    """For the block, an interrupt (Ctrl-C, or SIGINT to this process) or SIGTERM ends the whole job: it marks
    ``_interrupted`` (other threads' uncaught exceptions and the libraries' log records are then not shown),
    ends this process's descendants (the runner's worker processes, which ignore interrupts so that they
    cannot fail before this mark is set) now and every ``_END_DESCENDANTS_EVERY_S`` until the process exits,
    then raises KeyboardInterrupt (SIGTERM: ``Terminated``, a KeyboardInterrupt) in the main thread as Python
    does for Ctrl-C, so that ``finally`` blocks run (a preprocess run's scratch folder is removed). A signal
    someone else handles (or ignores) is left to them."""
    import signal

    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    previous_hook = threading.excepthook
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ours = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    taken = [sig for sig, handler in previous.items() if handler is ours[sig]]

    def on_stop(signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM:
            _terminated.set()
        if not _interrupted.is_set():
            _interrupted.set()
            _end_descendants()
            threading.Thread(target=_keep_ending_descendants, name="segflow-interrupted", daemon=True).start()
        if signum == signal.SIGTERM:
            raise Terminated()
        signal.default_int_handler(signum, frame)

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if not _interrupted.is_set():
            previous_hook(args)

    for sig in taken:
        signal.signal(sig, on_stop)
    threading.excepthook = excepthook
    try:
        yield
    finally:
        for sig in taken:
            signal.signal(sig, previous[sig])
        if not _interrupted.is_set():  # once interrupted, the job's threads may still fail after main returns
            threading.excepthook = previous_hook


def _keep_ending_descendants() -> None:
    import time

    while True:  # a worker the runner started after the interrupt
        time.sleep(_END_DESCENDANTS_EVERY_S)
        _end_descendants()


def _end_descendants() -> None:
    """Kills every process descended from this one (Linux: read from /proc; elsewhere nothing)."""
    import signal

    try:
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as handle:
                        fields = handle.read().rsplit(b")", 1)[1].split()
                except OSError:  # ended meanwhile
                    continue
                parents[int(entry)] = int(fields[1])
    except OSError:
        return
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    pending, descendants = [os.getpid()], []
    while pending:
        for child in children.get(pending.pop(), []):
            descendants.append(child)
            pending.append(child)
    for pid in descendants:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def error_line(name: str, error: BaseException) -> str:
    """``<name>: error: <message>`` on one line (a message's later lines are joined)."""
    # Beam's " [while running 'step']" on an error re-raised from a DoFn names no file and asks nothing.
    message = _BEAM_STEP.sub("", " ".join(str(error).split())) or type(error).__name__
    return f"{name}: error: {message}"


def exit_process(code: int = 0) -> typing.NoReturn:
    """Ends a command's process with ``code``: without the interpreter's teardown once TensorFlow or Beam are
    loaded (0.8-1.4 s of native library teardown on 2 cores, after every output is closed), a plain exit
    otherwise. Only for ``__main__``: never from a library or a test process."""
    if not any(m in sys.modules for m in ("tensorflow", "apache_beam")):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken pipe must not change the exit status
            pass
    logging.shutdown()
    os._exit(code)

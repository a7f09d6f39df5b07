"""Flags of every segflow program, declared once in its config dataclass and parsed with argparse alone.

Importing this module loads neither TensorFlow nor Beam, so ``--help`` and a bad flag are answered in a fraction
of a second.

- ``Parser``: one-line errors raised as ``UsageError`` (never ``SystemExit``), no abbreviations, a flag that is
  neither the program's nor one it passes on (Beam's options, ``trainer.task``'s) named as unknown, with the
  closest real flag.
- ``option``: a config dataclass field that is also a flag: its default, help text, range and choices live in
  the field, once; ``add_fields`` declares the flags, ``config_from`` builds and checks the dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import sys
import typing
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar, Union

from pipelines.shared.logs import LOG_LEVELS
from schemas.errors import HelpShown, UsageError

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
    """A module docstring's first paragraph and the usage example right after it, as ``--help``'s description:
    reST removed, line breaks kept as written (shell continuation backslashes included, so an example stays
    several lines). The design notes that follow are for readers of the code and docs/, not for ``--help``."""
    import textwrap

    lines = (doc or "").strip("\n").splitlines()
    if not lines:
        return ""
    paragraphs = re.split(r"\n\s*\n", textwrap.dedent("\n".join(lines[1:])).strip("\n"))
    kept = [lines[0].strip()]
    if paragraphs and paragraphs[0].startswith((" ", "\t")):  # the example block under the title
        kept.append("\n" + paragraphs[0])
    return plain("\n".join(kept))


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
    elif is_switch and default is True:
        notes.append("default: on")
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
        super().__init__(
            prog=f"python -m {name}",
            description=description(doc),
            epilog=_epilog(epilog) if epilog else None,
            allow_abbrev=False,
            add_help=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # --help in sections, in this order: what must be given, what a user commonly sets, tuning, logging.
        self.groups = {
            "required": self.add_argument_group("required"),
            "common": self.add_argument_group("options"),
            "advanced": self.add_argument_group("advanced options"),
            "logging": self.add_argument_group("logging"),
        }
        self.groups["common"].add_argument("-h", "--help", action="help", help="show this help and exit")
        self.name = name
        self._one_of: list[tuple[argparse.Action, ...]] = []
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
            alternatives = next((group for group in self._one_of if action in group), ())
            if action in alternatives[:1]:
                parts.append("{" + " | ".join(f"{a.option_strings[0]} {a.metavar}" for a in alternatives) + "}")
            elif action.required and action.option_strings and not alternatives:
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
        group: str = "common",
        **kwargs: Any,
    ) -> argparse.Action:
        """``add_argument`` whose help states the default (or ``required``) and the range; a range is checked
        (``UsageError`` naming the flag) after the value is converted. ``group``: the --help section ("common",
        "advanced" or "logging"; a required flag is always in "required")."""
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
                # Checked by the type function rather than argparse, whose error names no close choice.
                kwargs["type"] = _chosen(kwargs.get("type", str), names[0], tuple(kwargs.pop("choices")))
        # A float flag is checked even without a range: NaN passes every comparison a range check makes.
        if minimum is not None or maximum is not None or kwargs.get("type") is float:
            kwargs["type"] = _bounded(kwargs.get("type", str), names[0], minimum, maximum, exclusive_max, exclusive_min)
        section = self.groups["required" if required else group]
        return section.add_argument(*names, default=default, required=required, **kwargs)

    def one_of(self, *flags: str) -> None:
        """Alternative flags of which a run needs one (the program checks the combination): listed in --help's
        required section, in declaration order, and as ``{--a A | --b B}`` in the usage line."""
        actions = tuple(self._option_string_actions[flag] for flag in flags)
        for group in self._action_groups:
            group._group_actions[:] = [a for a in group._group_actions if a not in actions]
        self.groups["required"]._group_actions.extend(actions)
        self.groups["required"]._group_actions.sort(key=self._actions.index)
        self._one_of.append(actions)

    def add_logging_flags(self, *, verbose: bool = True) -> None:
        """``--log_level`` (and ``--verbose``, unless the program uses that name for something else)."""
        self.add_flag(
            "--log_level",
            group="logging",
            choices=LOG_LEVELS,
            default="info",
            type=str.lower,
            help="segflow's own messages from this level up; debug also shows the libraries' INFO "
            "lines and TensorFlow's native start-up lines, which are hidden otherwise",
        )
        if verbose:
            self.add_flag(
                "--verbose",
                group="logging",
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
        self.refuse_stray_values(argv)
        return super().parse_known_args(argv, namespace)

    def refuse_stray_values(self, argv: Sequence[str]) -> None:
        """``UsageError`` for a value no flag takes (no segflow program has positional arguments), checked before
        argparse's own checks. The usual cause is a glob the shell expanded (``--input dir/*.jpg`` unquoted): the
        flag takes the first path and the rest are left over, so the line says to quote it rather than listing
        thousands of paths."""
        strays, flag_of_first = [], None
        flag, room = None, 0  # the last flag seen, and how many more values it takes
        for token in argv:
            if token == "--":
                break
            if token.startswith("-") and token != "-" and not _is_number(token):
                flag = token.split("=", 1)[0]
                action = self._option_string_actions.get(flag)
                nargs = 1 if action is None else action.nargs  # a passed-on flag: at most one value
                room = 0 if "=" in token or nargs == 0 else (1 if nargs in (None, "?") else len(argv))
                if isinstance(nargs, int):
                    room = 0 if "=" in token else nargs
                continue
            if room:
                room -= 1
                continue
            if not strays:
                flag_of_first = flag
            strays.append(token)
        if not strays:
            return
        more = f" and {len(strays) - 1} more" if len(strays) > 1 else ""
        first = argv.index(strays[0])
        value = argv[first - 1] if flag_of_first and first > 0 and argv[first - 1] != flag_of_first else None
        if value is not None and (os.path.lexists(value) or os.path.lexists(strays[0])):
            names = f"{_clipped(os.path.basename(value))}, {_clipped(os.path.basename(strays[0]))}{more}"
            raise UsageError(
                f"{flag_of_first} takes one value but got {len(strays) + 1} paths ({names}): "
                f"your shell expanded the glob; quote it: "
                f"{flag_of_first} '{_glob_of([value, *strays])}' (see {self.prog} --help)"
            )
        raise UsageError(
            f"unexpected value {_clipped(strays[0])!r}{more}: every value follows its flag, and a value with "
            f"spaces or glob characters is quoted (see {self.prog} --help)"
        )

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


def closest(value: Any, choices: Sequence[Any]) -> str:
    """`` (did you mean X?)`` for the choice closest to a refused ``value``, or nothing when none is close."""
    names = [str(c) for c in choices]
    text = str(value)
    words = sorted(text.lower().replace("-", "_").split("_"))
    close = (
        [c for c in names if c.lower() == text.lower()]
        or [c for c in names if sorted(c.lower().split("_")) == words]  # the same words in another order
        or difflib.get_close_matches(text, names, n=1, cutoff=0.6)
    )
    return f" (did you mean {close[0]}?)" if close else ""


def _chosen(convert: Callable[[str], Any], flag: str, choices: tuple) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = convert(text)
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"{flag} must be one of {', '.join(str(c) for c in choices)}, got {text!r}{closest(text, choices)}"
            )
        return value

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _clipped(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _glob_of(paths: Sequence[str]) -> str:
    """The pattern an expanded glob most likely was: the paths' common folder and file-name suffix."""
    folders = {os.path.dirname(p) for p in paths}
    suffixes = {os.path.splitext(p)[1] for p in paths}
    folder = folders.pop() if len(folders) == 1 else "…"
    suffix = suffixes.pop() if len(suffixes) == 1 else ""
    return f"{folder}/*{suffix}" if folder else f"*{suffix}"


def _epilog(text: str) -> str:
    """Each line of the epilog is a paragraph of its own, wrapped at 100 columns; an indented line is a list
    item, whose continuation lines are indented further (so a list stays a list)."""
    import textwrap

    lines = []
    for line in plain(text).splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        lines.append(textwrap.fill(line, 100, subsequent_indent=indent + "    " if indent else ""))
    return "\n".join(lines)


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
    advanced: bool = False  # listed under "advanced options" in --help (tuning most users leave alone)


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


def add_fields(
    parser: Parser,
    config_class: type,
    names: Optional[Iterable[str]] = None,
    defaults: Optional[Mapping[str, Any]] = None,
) -> None:
    """One flag per ``option`` field of ``config_class`` (those in ``names`` only, when given), in field order.
    ``defaults``: values that replace the fields' own defaults (a preset); a required field given one is no
    longer required."""
    hints = typing.get_type_hints(config_class)
    wanted = None if names is None else set(names)
    defaults = defaults or {}
    for field in dataclasses.fields(config_class):
        flag = _flag_of(field)
        if flag is None or (wanted is not None and field.name not in wanted):
            continue
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING  # type: ignore[misc]
        required = required and field.name not in defaults
        default = None if required else defaults.get(field.name, _field_default(field))
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
            group="advanced" if flag.advanced else "common",
            **extra,
        )
        if extra.get("action") == "store_true" and default is True:
            # A switch that these defaults (a preset's) turn on can still be turned off: every flag overrides them.
            parser.groups["advanced" if flag.advanced else "common"].add_argument(
                f"--no_{field.name}", dest=field.name, action="store_false", help=f"turn --{field.name} off"
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
            raise UsageError(
                f"--{field.name} must be one of {', '.join(str(c) for c in choices)}, got {value!r}"
                f"{closest(value, choices)}"
            )
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

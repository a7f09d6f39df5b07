"""The program wrapper of every segflow command (``pipelines.preprocess``, ``pipelines.infer``,
``pipelines.evaluate``, ``trainer.task``, ``trainer.launch``): ``main`` sets up logging and the quiet start
(``logs``), parses with ``flag_parser``, runs, prints the summary on stdout, and maps every failure to an exit
status and ONE stderr line (``UsageError`` 2, ``DataError`` and any ``SegflowError`` 1, a stop 130/143); it owns
the command's temporary folder and ends its descendants on an interrupt.

Importing this module loads neither TensorFlow nor Beam. It lives in ``pipelines.shared`` because ``trainer``
imports it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import sys
import threading
import typing
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar, Union

from pipelines.shared import logs
from schemas.errors import HelpShown, SegflowError, Terminated, UsageError

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ main
# The environment a program runs in, set by ``main`` (never on import: a library user's process keeps its own).
# ``TF_USE_LEGACY_KERAS=1``: segflow's Keras (its models, tensorflow-transform's layers) is Keras 2, imported by
# name as ``tf_keras``; unless told so, TensorFlow also loads Keras 3 (and matplotlib through it) for a
# ``tf.keras`` nothing of a program uses, 0.3-0.6 s of every run on 2 cores.
# ``TF_ENABLE_ONEDNN_OPTS=1`` (x86-64 only): TensorFlow's oneDNN kernels (convolutions, batch norm, pooling), which
# TensorFlow turns on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX. On the AVX2 CPUs of most laptops and
# cloud VMs they are off, and a training step of the ``pet_cpu`` U-Net takes ~1.4x the CPU (docs/benchmarks.md,
# "oneDNN"). Same inputs, same threads: the same bytes, run after run, as with TensorFlow's own kernels (not the
# same bytes as them: another order of the sums). Other architectures keep TensorFlow's default (unmeasured).
# A caller's own value of either is kept (``TF_ENABLE_ONEDNN_OPTS=0`` turns oneDNN off).
PROGRAM_ENVIRONMENT = {
    "TF_USE_LEGACY_KERAS": "1",
    **({"TF_ENABLE_ONEDNN_OPTS": "1"} if platform.machine().lower() in ("x86_64", "amd64") else {}),
}
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
    verbose = logs.setup_logging(argv, verbose_flag)
    try:
        with _program_settings(), _own_temporary_folder():
            if check is not None:
                check(argv)
            check_output_flags(argv)
            # Filtered whether or not the program starts TensorFlow itself: a library may load it (evaluate's
            # decoders), and its native start-up lines would bury the one line of a failure.
            with logs.native_stderr_filtered(verbose), _interrupt_ends_the_job():
                if prestart is not None:
                    prestart(argv)
                if tensorflow:
                    logs.start_tensorflow()
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
        if logs.interrupted.is_set():  # the job's own end (workers killed, streams broken) after a stop
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
    if logs.terminated.is_set():
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


# ``logs.interrupted``: set once an interrupt (Ctrl-C) or SIGTERM reached ``main``; ``logs.terminated``: it was
# SIGTERM.
_END_DESCENDANTS_EVERY_S = 0.5


@contextlib.contextmanager
def _interrupt_ends_the_job() -> Iterator[None]:
    """For the block, an interrupt (Ctrl-C, or SIGINT to this process) or SIGTERM ends the whole job: it marks
    ``logs.interrupted`` (other threads' uncaught exceptions, exceptions Python drops in finalizers and the
    libraries' log records are then not shown),
    ends this process's descendants (the runner's worker processes, which ignore interrupts so that they
    cannot fail before this mark is set) now and every ``_END_DESCENDANTS_EVERY_S`` until the process exits,
    then raises KeyboardInterrupt (SIGTERM: ``Terminated``, a KeyboardInterrupt) in the main thread as Python
    does for Ctrl-C, so that ``finally`` blocks run (a preprocess run's scratch folder is removed). Raised in a
    finalizer, that exception is dropped by Python; loops that must stop also check the mark
    (``logs.raise_if_stopped``). A signal someone else handles (or ignores) is left to them."""
    import signal

    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    previous_hook, previous_unraisable = threading.excepthook, sys.unraisablehook
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ours = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    taken = [sig for sig, handler in previous.items() if handler is ours[sig]]

    def on_stop(signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM:
            logs.terminated.set()
        if not logs.interrupted.is_set():
            logs.interrupted.set()
            _end_descendants()
            threading.Thread(target=_keep_ending_descendants, name="segflow-interrupted", daemon=True).start()
        if signum == signal.SIGTERM:
            raise Terminated()
        signal.default_int_handler(signum, frame)

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if not logs.interrupted.is_set():
            previous_hook(args)

    def unraisablehook(unraisable: Any) -> None:
        if not logs.interrupted.is_set():
            previous_unraisable(unraisable)

    for sig in taken:
        signal.signal(sig, on_stop)
    threading.excepthook, sys.unraisablehook = excepthook, unraisablehook
    try:
        yield
    finally:
        for sig in taken:
            signal.signal(sig, previous[sig])
        if not logs.interrupted.is_set():  # once interrupted, the job's threads may still fail after main returns
            threading.excepthook, sys.unraisablehook = previous_hook, previous_unraisable


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

"""What a segflow program prints while it runs: its log level, and the quiet start (library and native
start-up lines that say nothing is wrong are dropped unless ``--log_level debug``)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Callable, Iterator, Optional, Sequence

# Set by ``cli.main`` once an interrupt (Ctrl-C) or SIGTERM reached it: what other threads and libraries report
# after it are its consequences (workers ended, streams broken), which would bury ``main``'s one line.
interrupted = threading.Event()
# Set with ``interrupted`` when the stop was SIGTERM (a preemption), not an interrupt.
terminated = threading.Event()
# The descriptor that reaches the user's stderr while ``native_stderr_filtered`` holds descriptor 2 (None: 2 does).
_user_stderr: Optional[int] = None
# While set (``lines_through``), what that filter passes on goes through it instead of straight to the user's
# stderr: a progress line drawn in place there clears itself first, so that no line lands on its end.
_line_writer: Optional[Callable[[bytes], None]] = None


def raise_if_stopped() -> None:
    """Raises the stop ``cli.main`` received, once ``interrupted`` is set: ``Terminated`` for SIGTERM, else
    ``KeyboardInterrupt``. The signal handler raises it too, but inside whatever Python code the main thread runs
    at that moment, and Python drops an exception raised in a finalizer (``__del__``: TensorFlow's objects run
    many each training step) after printing it: a loop that must stop (the trainer's steps) calls this between
    its steps, so that the stop is never lost."""
    if interrupted.is_set():
        from schemas.errors import Terminated

        raise Terminated() if terminated.is_set() else KeyboardInterrupt()


# ------------------------------------------------------------------------------------------------ quiet start
LOG_LEVELS = ("debug", "info", "warning", "error")
SEGFLOW_LOGGERS = ("segflow", "pipelines", "trainer", "schemas", "__main__")  # __main__: the program run

# What TensorFlow's native code prints whatever TF_CPP_MIN_LOG_LEVEL says (absl writes before its log is
# initialised; E-level lines pass level 2), though nothing is wrong and nothing is to be done: a CPU machine
# without CUDA, the CPU features the wheel was built for, a grappler pass that gives up and is skipped, oneDNN
# falling back to Eigen for uint8 ops, TensorFlow Lite's interpreter choosing its CPU delegate (the export scores
# its .tflite files).
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
    "Created TensorFlow Lite XNNPACK delegate for CPU",
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
    the root's level), their known noise, and all of them once the job was interrupted (``interrupted``) are
    dropped; segflow's own records all pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_segflow(record.name):
            return True
        if record.levelno < logging.WARNING or interrupted.is_set():
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
            _pass_on(target, kept)
    if pending and not _is_noise(pending):
        _pass_on(target, pending)
    os.close(source)


def _pass_on(target: int, data: bytes) -> None:
    writer = _line_writer
    try:
        if writer is not None:
            writer(data)
        else:
            os.write(target, data)
    except (OSError, ValueError):  # the user's stderr gone (a closed terminal): nothing left to tell
        pass


@contextlib.contextmanager
def lines_through(writer: Callable[[bytes], None]) -> Iterator[None]:
    """For the block, the lines ``native_stderr_filtered`` passes on (native code's, worker processes', and Python's
    ``sys.stderr`` while the filter holds descriptor 2) are handed to ``writer`` as bytes, from the filter's thread,
    instead of written to the user's stderr: e.g. a progress line drawn there clears itself, writes them and draws
    itself again below them."""
    global _line_writer
    outer, _line_writer = _line_writer, writer
    try:
        yield
    finally:
        _line_writer = outer


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

    global _user_stderr
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, saved), name="segflow-stderr", daemon=True)
    forwarder.start()
    outer, _user_stderr = _user_stderr, saved
    try:
        yield
    finally:
        _user_stderr = outer
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # the pipe's last writer here: the forwarder sees its end once subprocesses let go
        forwarder.join(timeout=5)
        if not forwarder.is_alive():
            os.close(saved)


def user_stderr_fd() -> int:
    """The file descriptor that reaches the user's stderr (a terminal or not): 2, or the one
    ``native_stderr_filtered`` set aside while its line filter holds 2. For output that is not made of lines, like a
    progress line rewritten in place with carriage returns, which the filter would hold until a newline."""
    return 2 if _user_stderr is None else _user_stderr


def start_tensorflow() -> None:
    """Imports TensorFlow and lists its devices (where CUDA is probed and, on a CPU machine, fails with an
    E-level line): the start-up a run pays anyway, done where ``main`` filters its lines. Listing devices does
    not initialise the runtime, so a distribution strategy may still be configured afterwards."""
    import tensorflow as tf

    tf.config.list_physical_devices("GPU")

"""A Beam job's progress: done / total inputs, rate and ETA, shown by the launching process while the pipeline runs.

    with progress.shown("infer", total=298, unit="image", options=options) as sink:
        ... files | beam.ParDo(progress.CountDone(sink)) ...   # or sink.add() / sink.flush() inside a DoFn
        pipeline.run().wait_until_finish()

The launcher binds a Unix datagram socket in a private temporary folder and reads counts from it on a thread: on a
terminal it drives one tqdm line rewritten in place, and every line written to stderr meanwhile (segflow's and the
libraries' log lines, native code's and the workers' output) clears it first and appears on a line of its own, the
progress line drawn again below it; otherwise it logs a plain line every ``interval_s()`` seconds (and a last one
at the end, if it logged any). The workers' side (``Sink``) reaches that socket by its path, which
travels in the pickled DoFn: local worker threads, processes and the fork server's workers (forked before the job
was known, so an environment variable set now would never reach them) all send to it. Every count also goes to a
Beam counter (``NAMESPACE``), which a runner whose workers cannot reach the launcher (Dataflow) shows in the job's
metrics; there no socket is opened and nothing is sent.

Shown at ``--log_level info`` (the default of the commands) and below; a Python caller sees it once its
``segflow`` logger passes INFO. Counting never changes what the job writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.shared import logs

NAMESPACE = "segflow_progress"
COUNTER = "inputs_done"
# How often a plain (not terminal) progress line is logged; tests shorten it.
INTERVAL_ENV = "SEGFLOW_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0
# How often a worker's DoFn sends what it counted: a handful of datagrams a second however many inputs it handles.
SEND_EVERY_S = 0.5
_LOG = logging.getLogger("segflow.progress")


def interval_s() -> float:
    """Seconds between plain progress lines: ``SEGFLOW_PROGRESS_INTERVAL_S`` (read by the launcher), default 30."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


# ---------------------------------------------------------------------------------------------- workers' side
class Sink:
    """What a DoFn counts its finished inputs with: ``add`` per input, ``flush`` in ``finish_bundle``. Sends to
    the launcher's socket at ``address`` at most every ``SEND_EVERY_S`` (None: sends nothing) and ignores any send
    error (the launcher gone, a worker on another machine); always increments the Beam counter. Only the address
    is pickled."""

    def __init__(self, address: Optional[str] = None):
        self.address = address
        self._reset()

    def _reset(self) -> None:
        self._pending = 0
        self._last = time.monotonic()
        self._socket: Optional[socket.socket] = None
        self._counter: Any = None

    def __getstate__(self) -> dict:
        return {"address": self.address}

    def __setstate__(self, state: dict) -> None:
        self.address = state["address"]
        self._reset()

    def add(self, n: int = 1) -> None:
        if self._counter is None:
            self._counter = Metrics.counter(NAMESPACE, COUNTER)
        self._counter.inc(n)
        if self.address is None:
            return
        self._pending += n
        if time.monotonic() - self._last >= SEND_EVERY_S:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._pending or self.address is None:
            return
        count, self._pending = self._pending, 0
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)  # a launcher that stopped reading must never stall a worker
            self._socket.sendto(str(count).encode("ascii"), self.address)
        except OSError:
            pass


class CountDone(beam.DoFn):
    """Passes each element through and counts it as one finished input (``Sink``): for a PCollection with one
    element per input handled, e.g. a job's written outputs. Counted once the fused steps after it took the
    element."""

    def __init__(self, sink: Optional[Sink] = None):
        self._sink = sink or Sink()

    def process(self, element: Any) -> Iterator[Any]:
        yield element
        self._sink.add()

    def finish_bundle(self) -> None:
        self._sink.flush()


# ---------------------------------------------------------------------------------------------- launcher's side
def wanted() -> bool:
    """Whether progress is shown: the ``segflow`` loggers pass INFO (``--log_level info`` or debug)."""
    return _LOG.isEnabledFor(logging.INFO)


@contextlib.contextmanager
def shown(label: str, total: Optional[int], unit: str, remote: bool = False, show: bool = True) -> Iterator[Sink]:
    """For the block (the pipeline's run), shows ``label``'s progress on stderr from what the yielded ``Sink``
    counts; ``total``: the inputs, when known before the run (else count and rate, no ETA). Nothing is shown, and
    the sink only feeds the Beam counter, when ``remote`` (the workers are not on this machine), not ``show`` (e.g.
    a dry run), or not ``wanted``; also where no socket can be made."""
    if remote or not show or not wanted():
        yield Sink()
        return
    folder = tempfile.mkdtemp(prefix="segflow-progress-")
    address = os.path.join(folder, "s")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver.bind(address)  # the folder is private (0700): only this user's processes can send
    except OSError:  # e.g. a path over the platform's limit: the job runs as it would without progress
        receiver.close()
        shutil.rmtree(folder, ignore_errors=True)
        yield Sink()
        return
    display = _Display(label, total, unit)
    stop = threading.Event()
    reader = threading.Thread(target=_read, args=(receiver, display, stop), name="segflow-progress", daemon=True)
    reader.start()
    try:
        yield Sink(address)
    finally:
        stop.set()
        reader.join(timeout=5)
        _drain(receiver, display)
        receiver.close()
        shutil.rmtree(folder, ignore_errors=True)
        display.close()


def _read(receiver: socket.socket, display: "_Display", stop: threading.Event) -> None:
    receiver.settimeout(0.25)
    while not stop.is_set():
        try:
            data = receiver.recv(64)
        except socket.timeout:
            display.tick()
            continue
        except OSError:
            return
        display.add(_count(data))


def _drain(receiver: socket.socket, display: "_Display") -> None:
    """What the workers sent before the pipeline ended (their ``finish_bundle``) and the reader did not take."""
    receiver.setblocking(False)
    while True:
        try:
            display.add(_count(receiver.recv(64)))
        except OSError:
            return


def _count(data: bytes) -> int:
    try:
        return max(0, int(data))
    except ValueError:
        return 0


class _Display:
    """A tqdm line on a terminal; logged plain lines every ``interval_s()`` elsewhere."""

    def __init__(self, label: str, total: Optional[int], unit: str):
        self._label, self._total, self._unit = label, total, unit
        self._done = 0
        self._start = time.monotonic()
        self._next_line = self._start + interval_s()
        self._lines = 0
        self._bar = None
        self._refreshed = self._start
        fd = logs.user_stderr_fd()
        # A terminal only where Python's stderr is the process's own (not a test's capture, not a notebook's).
        if sys.stderr is sys.__stderr__ and _isatty(fd):
            from tqdm import tqdm  # only where a terminal shows it; workers never import it

            self._stream = os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="replace")
            # Redrawn to the terminal's width as it changes; one that reports no width (a bare pseudo-terminal)
            # gets 80 columns rather than an empty line.
            sized = _columns(fd) > 0
            self._bar = tqdm(
                total=total,
                desc=label,
                unit=unit,
                file=self._stream,
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                mininterval=0.2,
                # Without a total, tqdm shows no bar: the count in words, the time and the rate.
                bar_format=None if total else "{desc}: {n_fmt} {unit}s [{elapsed}, {rate_fmt}]",
            )
            self._above = contextlib.ExitStack()
            self._above.enter_context(logs.lines_through(self._write_above))  # descriptor 2's lines
            for handler in logging.getLogger().handlers:  # Python's log lines, written straight to sys.stderr
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                    previous = handler.setStream(_AboveTheBar(self._write_above))
                    self._above.callback(handler.setStream, previous)

    def _write_above(self, data: bytes) -> None:
        """Writes ``data`` (whole lines) where the progress line is, which is cleared first and drawn again
        after, under tqdm's lock (the reader thread redraws it meanwhile)."""
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self._stream):
            self._stream.flush()
            self._stream.buffer.write(data)
            self._stream.buffer.flush()

    def add(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            self.tick()

    def tick(self) -> None:
        if self._bar is not None:
            if time.monotonic() - self._refreshed >= 1.0:
                self._refreshed = time.monotonic()
                self._bar.refresh()  # the elapsed time and ETA move on while nothing finishes
        elif time.monotonic() >= self._next_line:
            self._log_line()
            self._next_line = time.monotonic() + interval_s()

    def _log_line(self) -> None:
        from tqdm import tqdm

        if self._total:
            shape = "{n_fmt}/{total_fmt} {unit}s ({percentage:.0f} %), {rate_fmt}, {elapsed} elapsed, ETA {remaining}"
        else:
            shape = "{n_fmt} {unit}s, {rate_fmt}, {elapsed} elapsed"
        elapsed = time.monotonic() - self._start
        line = tqdm.format_meter(self._done, self._total, elapsed, unit=self._unit, bar_format=shape)
        _LOG.info("%s: %s", self._label, " ".join(line.split()))  # tqdm pads the rate for its columns
        self._lines += 1

    def close(self) -> None:
        if self._bar is not None:
            self._above.close()
            self._bar.close()
            self._stream.close()
        elif self._lines:  # a long run's log ends with its last count; a short one stays as it was
            self._log_line()


class _AboveTheBar:
    """The stream of a log handler while a progress line is drawn: each record's text goes above the line."""

    def __init__(self, write_above):
        self._write_above = write_above

    def write(self, text: str) -> None:
        if text:
            self._write_above(text.encode("utf-8", "replace"))

    def flush(self) -> None:
        pass


def _columns(fd: int) -> int:
    try:
        return os.get_terminal_size(fd).columns
    except OSError:
        return 0


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False

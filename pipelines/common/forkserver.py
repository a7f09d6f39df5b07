"""A fork server for the local runner's worker processes: their imports overlap the launcher's, and run once.

In multi-processing mode every worker used to be a fresh ``python`` that imported Beam's SDK harness, TensorFlow
and tensorflow-transform (~4.5 s of CPU each on 2 cores) once the launcher, which had imported the same, reached
its first stage: 4-5 s more per job than threads on 2 cores, which is why small inputs ran in threads. Here one
process is started as the job starts and imports what the workers need while the launcher imports its own; the
runner's worker command then only asks it for a worker, which it forks ready-made::

    launcher                                   fork server (python -m pipelines.common.forkserver serve)
      start(): a listening socket ────────────► imports the preload, then accepts
      the runner starts the worker command:
      python -m pipelines.common.forkserver connect TOKEN
        connects, sends its environment,        ─► forks: the child takes the environment, folder and streams
        folder and standard streams                 and runs Beam's SDK harness (``sdk_worker.run_harness``)
        waits, exits with the worker's status  ◄──  the worker's exit status

The server serves ``workers`` requests, the number the runner starts: it forks a child for each but the last and
runs the last one itself, so the job's process tree holds one process per worker as before (the same peak RSS
and CPU accounting) and nothing outlives the job. A request the server cannot take (it is gone, or served them
all) is no error: the worker command then runs a plain worker (``sdk_worker``) itself.

Forking is safe here because the server only imports: it runs no TensorFlow op and opens no gRPC channel before
forking, and the native threads its imports start (jemalloc's and Arrow's) are fork-aware. The socket is in
Linux's abstract namespace under a random name, and the server only serves processes of its own user
(``SO_PEERCRED``); elsewhere ``start`` returns None and the runner starts plain workers.

The worker command's own start-up is that of a bare interpreter: this module imports the standard library only.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shlex
import socket
import struct
import subprocess
import sys
import threading
from typing import NoReturn, Optional, Sequence

MODULE = "pipelines.common.forkserver"  # this module's name, also when it runs as ``__main__``
_NAME_PREFIX = "segflow-workers-"
_STREAMS = (0, 1, 2)
_HANDED_OVER = b"R"  # the server took the request: a worker now runs it
_LENGTH = struct.Struct("!I")
_SHUTDOWN_GRACE_S = 10.0
# The server, its workers and the worker commands ignore interrupts, from their first instruction: a terminal's
# Ctrl-C reaches every process of the job, and workers that died of it at once would fail the runner's threads
# (tracebacks) before the launcher knew it was interrupted; one that arrived while Python still imports ``site``
# would even abort it with a "Fatal Python error". The launcher ends them as it handles the interrupt
# (``pipelines.shared.cli``); a launcher that dies ends them too (their streams to it close).
_IGNORE_INTERRUPTS = "trap '' INT;"


def _address(token: str) -> str:
    return "\0" + _NAME_PREFIX + token  # the abstract namespace: no file, gone with the socket


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_PEERCRED") and hasattr(socket, "send_fds")


def plain_worker_command() -> list[str]:
    """The worker without a server (``pipelines.common.sdk_worker``)."""
    return [sys.executable, "-m", "pipelines.common.sdk_worker"]


class ForkServer:
    """The launcher's handle on a running fork server (``start``)."""

    def __init__(self, process: subprocess.Popen, token: str, workers: int):
        self._process = process
        self.token = token
        self.workers = workers

    @property
    def worker_command(self) -> str:
        """The shell command line the runner starts for each worker (interrupts ignored: ``_IGNORE_INTERRUPTS``)."""
        return f"{_IGNORE_INTERRUPTS} exec " + " ".join(
            shlex.quote(a) for a in (sys.executable, "-m", MODULE, "connect", self.token)
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def discard(self) -> None:
        """Stops a server that served no request (no worker of it runs), without waiting for its imports."""
        self._process.kill()
        self._process.wait()
        if self._process.stdin is not None:
            self._process.stdin.close()

    def close(self) -> None:
        """Tells the server no more requests come (it ends once it serves none) and waits for it."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=_SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:  # a worker still running after its job ended: nothing needs it
            self._process.kill()
            self._process.wait()


def start(workers: int, preload: Sequence[str]) -> Optional[ForkServer]:
    """Starts a server that imports ``preload`` (module names) and then serves ``workers`` worker requests;
    None where fork servers are not supported. The caller ``close``s it once its pipelines have run."""
    if not supported() or workers < 1:
        return None
    token = secrets.token_hex(16)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(_address(token))
        listener.listen(max(workers, 8))
        # The launcher keeps no copy of the listening socket: if the server dies, a request is refused at once
        # (and runs a plain worker) instead of waiting for an accept that never comes.
        process = subprocess.Popen(
            ["/bin/sh", "-c", f'{_IGNORE_INTERRUPTS} exec "$@"', "sh"]
            + [sys.executable, "-m", MODULE, "serve", str(listener.fileno()), str(workers), *preload],
            stdin=subprocess.PIPE,
            pass_fds=(listener.fileno(),),
        )
    finally:
        listener.close()
    return ForkServer(process, token, workers)


# ------------------------------------------------------------------------------------------- the server
def _serve(listener_fd: int, workers: int, preload: Sequence[str]) -> NoReturn:
    import gc
    import importlib

    listener = socket.socket(fileno=listener_fd)
    for name in ("pipelines.common.sdk_worker", *preload):  # Beam's SDK harness, then the job's modules
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a worker imports what it needs itself; this only saves time
            print(f"{MODULE}: could not preload {name}: {e}", file=sys.stderr)
    # Objects that exist now are shared with every child: kept out of the collector's scans, whose reference
    # count updates would otherwise copy their pages into each child.
    gc.collect()
    gc.freeze()
    children: list[int] = []
    served = 0
    while served < workers:
        readable, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 4096):
            break  # the launcher has closed its end: its pipelines are done or it has died
        if listener not in readable:
            continue
        connection, _ = listener.accept()
        uid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[2]
        if uid != os.getuid():
            connection.close()
            continue
        served += 1
        if served == workers:  # the last request: this process becomes its worker
            listener.close()
            _worker(connection, children)
        pid = os.fork()
        if pid == 0:
            listener.close()
            _worker(connection, [])
        children.append(pid)
        connection.close()
    _wait(children)
    os._exit(0)


def _wait(children: list[int]) -> None:
    """Waits for the workers this server forked: none is left behind, each ends inside the job's process tree."""
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _worker(connection: socket.socket, children: list[int]) -> NoReturn:
    try:
        _run_worker(connection, children)
    except BaseException:  # noqa: BLE001 - whatever happens, a worker never returns into the server's loop
        import traceback

        traceback.print_exc()
    os._exit(1)


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the worker command went away")
        data += chunk
    return data


def _run_worker(connection: socket.socket, children: list[int]) -> NoReturn:
    """Takes the request's environment, folder and standard streams, runs the SDK harness, reports its exit
    status, and (the server, as the last worker) waits for the workers it forked."""
    from pipelines.common import sdk_worker

    try:
        _, fds, _, _ = socket.recv_fds(connection, 1, len(_STREAMS))
        (length,) = _LENGTH.unpack(_receive(connection, _LENGTH.size))
        request = json.loads(_receive(connection, length))
    except (OSError, ValueError):  # the worker command died before it asked: nothing to run
        os._exit(1)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for target, fd in zip(_STREAMS, fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [sys.argv[0]]
    connection.sendall(_HANDED_OVER)
    # A worker command that ends (killed by the runner, or by a signal to the job) takes its worker with it.
    finished = threading.Event()
    threading.Thread(target=_end_with, args=(connection, finished), name="segflow-worker-command", daemon=True).start()
    status = sdk_worker.run_harness()
    finished.set()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        connection.sendall(bytes([status & 0xFF]))
    except OSError:
        pass
    _wait(children)
    os._exit(status)


def _end_with(connection: socket.socket, finished: threading.Event) -> None:
    """Ends the worker when its command ends first; after the harness, the command ending is the normal end."""
    try:
        if connection.recv(1):
            return
    except OSError:
        pass
    if not finished.is_set():
        os._exit(1)


# ------------------------------------------------------------------------------------------- the client
def _connect(token: str) -> NoReturn:
    """The worker command: asks the server for a worker and exits with its status; runs a plain worker where
    the server cannot take the request."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(_address(token))
        request = json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode("utf-8")
        socket.send_fds(connection, [b"W"], list(_STREAMS))
        connection.sendall(_LENGTH.pack(len(request)) + request)
        handed_over = connection.recv(1) == _HANDED_OVER
    except OSError:
        handed_over = False
    if not handed_over:
        connection.close()
        command = plain_worker_command()
        os.execv(command[0], command)
    status = connection.recv(1)
    if not status:
        print(f"{MODULE}: the worker ended without an exit status (killed?)", file=sys.stderr)
        os._exit(1)
    os._exit(status[0])


def main(argv: Sequence[str]) -> NoReturn:
    if argv[:1] == ["serve"] and len(argv) >= 3:
        _serve(int(argv[1]), int(argv[2]), argv[3:])
    if argv[:1] == ["connect"] and len(argv) == 2:
        _connect(argv[1])
    print(f"usage: python -m {MODULE} serve FD WORKERS [MODULE ...] | connect TOKEN", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Whether a process that left something behind (a scratch folder, a temporary folder) is gone, on Linux.

A name made with ``owner_tag`` (``<host>-<pid>-<start>``) says whose a leftover is; ``is_alive`` judges it. The
host part hashes the host name and the PID namespace, so two containers sharing a ``/tmp`` never judge each
other's processes; the start time (``/proc``; 0 where unknown) keeps a reused PID from passing for the owner.
"""

from __future__ import annotations

import hashlib
import os
import socket


def digest(text: str, length: int) -> str:
    """The first ``length`` hex digits of ``text``'s SHA-256."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def host_tag() -> str:
    """This machine's host name and PID namespace, hashed (8 hex digits): PIDs mean something only inside it."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return digest(f"{socket.gethostname()}\x1f{namespace}", 8)


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (Linux ``/proc/<pid>/stat``), 0 where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5); fields[0] here is field 3
    except (OSError, IndexError, ValueError):
        return 0


def owner_tag() -> str:
    """``<host>-<pid>-<start>`` of this process, for names ``is_alive`` can judge later."""
    pid = os.getpid()
    return f"{host_tag()}-{pid}-{start_time(pid)}"


def is_alive(pid: int, start: int) -> bool:
    """False only when process ``pid`` (started at ``start``) is certainly gone: no such process, a zombie, or
    a process of that PID that started at another time (the PID was reused)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return False  # killed, not yet reaped by its parent: it writes nothing any more
    except (OSError, IndexError):
        pass
    actual = start_time(pid)
    return not (start and actual and actual != start)

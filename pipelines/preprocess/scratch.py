"""A preprocess run's scratch folder (``.segflow-tmp-*``), named so that a later run can remove it once it is dead.

A run deletes its own scratch folder when it ends, but a run that is killed (SIGKILL, out of memory, a lost
machine) cannot. The name says whose it is::

    .segflow-tmp-<dst>-<host>-<pid>-<start>-<random>     a run whose launching process is on this machine
    .segflow-tmp-<dst>-remote-<random>                   a run on remote workers (e.g. Dataflow)

``<dst>`` is a hash of the run's ``--output_dir`` (resolved, for a local one), ``<host>`` a hash of this machine
(host name and PID namespace, so two containers sharing a ``/tmp`` never judge each other's processes),
``<pid>`` the launching process and ``<start>`` its start time (``/proc``; 0 where unknown), so a reused PID is
not mistaken for the owner. Before it starts, a run removes the folders of its own ``--output_dir`` from this
machine whose process is gone (``remove_dead``). A live run's folder is never touched, nor another output's,
nor another machine's, nor a remote run's: its launcher may be gone while its workers still run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import uuid

from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage

PREFIX = ".segflow-tmp-"
_LOG = logging.getLogger("segflow.scratch")
_LOCAL_NAME = re.compile(
    r"^\.segflow-tmp-(?P<dst>[0-9a-f]{12})-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)"
    r"-[0-9a-f]{8}$"
)


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def output_tag(output_dir: str) -> str:
    """The ``<dst>`` part of a scratch folder name: the same for every spelling of one local folder."""
    if storage.is_local(output_dir):
        local = storage.local_path(output_dir)
        return _digest(os.path.realpath(local), 12)
    return _digest(output_dir.rstrip("/"), 12)


def host_tag() -> str:
    """The ``<host>`` part: this machine's host name and PID namespace (PIDs mean something only inside it)."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return _digest(f"{socket.gethostname()}\x1f{namespace}", 8)


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (Linux ``/proc/<pid>/stat``), 0 where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5); fields[0] here is field 3
    except (OSError, IndexError, ValueError):
        return 0


def _is_alive(pid: int, start: int) -> bool:
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
    actual = _start_time(pid)
    return not (start and actual and actual != start)


def folder_name(output_dir: str, remote: bool) -> str:
    """A fresh scratch folder name for a run writing ``output_dir`` (``remote``: on remote workers)."""
    random = uuid.uuid4().hex[:8]
    if remote:
        return f"{PREFIX}{output_tag(output_dir)}-remote-{random}"
    pid = os.getpid()
    return f"{PREFIX}{output_tag(output_dir)}-{host_tag()}-{pid}-{_start_time(pid)}-{random}"


def new_folder(temp_root: str, output_dir: str, remote: bool) -> str:
    """The path of a fresh scratch folder under ``temp_root`` (created by whoever writes into it first)."""
    return FileSystems.join(temp_root, folder_name(output_dir, remote))


def _candidates(temp_root: str, prefix: str) -> list[str]:
    """Names of the entries directly in ``temp_root`` that start with ``prefix`` (listed literally)."""
    if storage.is_local(temp_root):
        local = storage.local_path(temp_root)
        try:
            return sorted(name for name in os.listdir(local) if name.startswith(prefix))
        except OSError:  # no such folder yet: nothing left behind
            return []
    root = temp_root.rstrip("/") + "/"
    found = FileSystems.match([storage.escape_glob(root + prefix) + "**"])[0].metadata_list
    return sorted({m.path[len(root) :].split("/", 1)[0] for m in found})


def remove_dead(temp_root: str, output_dir: str) -> list[str]:
    """Removes the scratch folders under ``temp_root`` that runs into ``output_dir`` on this machine left behind
    and whose process is gone; returns their paths. Never fails the run: a folder that cannot be removed (or
    listed) is logged and left."""
    prefix = f"{PREFIX}{output_tag(output_dir)}-{host_tag()}-"
    removed = []
    try:
        names = _candidates(temp_root, prefix)
    except Exception as e:  # listing a scratch area must never stop a run
        _LOG.warning("could not list %s for dead scratch folders: %s", temp_root, e)
        return removed
    for name in names:
        match = _LOCAL_NAME.match(name)
        if match is None or _is_alive(int(match.group("pid")), int(match.group("start"))):
            continue
        path = FileSystems.join(temp_root, name)
        try:
            storage.remove_tree(path)
        except Exception as e:
            _LOG.warning("could not remove the dead run's scratch folder %s: %s", path, e)
            continue
        _LOG.info("removed %s, left behind by a run that was killed", path)
        removed.append(path)
    return removed

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

import logging
import os
import re
import uuid

from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.shared.processes import digest as _digest, host_tag, is_alive, start_time as _start_time

PREFIX = ".segflow-tmp-"
_LOG = logging.getLogger("segflow.scratch")
_LOCAL_NAME = re.compile(
    r"^\.segflow-tmp-(?P<dst>[0-9a-f]{12})-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)"
    r"-[0-9a-f]{8}$"
)


def output_tag(output_dir: str) -> str:
    """The ``<dst>`` part of a scratch folder name: the same for every spelling of one local folder."""
    if storage.is_local(output_dir):
        local = storage.local_path(output_dir)
        return _digest(os.path.realpath(local), 12)
    return _digest(output_dir.rstrip("/"), 12)


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
        if match is None or is_alive(int(match.group("pid")), int(match.group("start"))):
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

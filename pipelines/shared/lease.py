"""The writer lease: one segflow command writes an output folder at a time.

Locally the lease is an exclusive ``flock`` on a file, which the kernel drops when its holder dies however it
dies, so a dead holder's lease is simply taken over (with one log line). On ``gs://`` it is an object created
only if absent (``ifGenerationMatch=0``) that its holder refreshes every ``HEARTBEAT_S``; one that names a dead
process of this host, or whose heartbeat is older than ``LEASE_EXPIRES_S``, is taken over by a conditional
overwrite (one winner). Either way the lease holds its holder (host, pid, kind, start, heartbeat, token), so a
refusal names who writes the folder now.

Where a folder's lease lives (``.segflow/lease``) and when a run takes it is ``pipelines.shared.ownership``'s
(``claim``), which imports this module, never the reverse.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union

from schemas.errors import UsageError

if TYPE_CHECKING:  # google-cloud-storage is imported only where gs:// is written
    from google.api_core.retry import Retry

# The take-over lines log under ownership's name: for a user (and ``caplog``) they are part of claiming a folder.
_LOG = logging.getLogger("segflow.ownership")

HEARTBEAT_S = 30.0
LEASE_EXPIRES_S = 300.0


class LeaseHeld(UsageError):
    """Another segflow command writes the folder now (the message names it)."""


class GcsLocation(Protocol):
    """The ``gs://`` folder a ``GcsLease`` guards: ``path`` names it in messages; ``bucket`` and ``retry`` (read
    at each request) reach its objects."""

    path: str

    @property
    def bucket(self) -> Any: ...

    @property
    def retry(self) -> Retry: ...


def _holder(kind: str) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "kind": kind,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "heartbeat": time.time(),
        "token": uuid.uuid4().hex,
    }


def describe_holder(doc: Optional[dict]) -> str:
    """Who holds a lease, in words for a refusal or a take-over line."""
    if not doc:
        return "another segflow command"
    return (
        f"segflow {doc.get('kind', '?')} (pid {doc.get('pid', '?')} on {doc.get('host', '?')}, "
        f"since {doc.get('started', '?')})"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalLease:
    """An exclusive ``flock`` on the local file ``path`` (the lease of the folder ``folder_path``) for as long as
    the run holds it."""

    def __init__(self, path: str, folder_path: str, kind: str):
        import fcntl

        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            previous = _parse(os.pread(fd, 4096, 0))
            os.close(fd)
            raise LeaseHeld(
                f"{folder_path} is being written by {describe_holder(previous)}; wait for it to end, or write "
                "another folder"
            ) from None
        previous = _parse(os.pread(fd, 4096, 0))
        if previous:  # a holder that released cleanly empties the file: this one ended without doing so
            _LOG.warning("taking over the lease on %s from %s, which has ended", folder_path, describe_holder(previous))
        self.holder = _holder(kind)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.holder).encode("utf-8"), 0)
        self._fd: Optional[int] = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def _parse(data: Optional[bytes]) -> Optional[dict]:
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class GcsLease:
    """The object ``blob_name`` in the bucket of ``where``, created only if absent; its holder rewrites it every
    ``HEARTBEAT_S`` (conditionally on its own generation), and deletes it at the end."""

    def __init__(self, where: GcsLocation, blob_name: str, kind: str):
        from google.api_core.exceptions import NotFound, PreconditionFailed

        self._where = where
        self._blob_name = blob_name
        self.holder = _holder(kind)
        blob = where.bucket.blob(self._blob_name)
        try:
            blob.upload_from_string(json.dumps(self.holder), if_generation_match=0, retry=where.retry)
        except PreconditionFailed:
            current = where.bucket.get_blob(self._blob_name, retry=where.retry)
            doc = _parse(current.download_as_bytes(retry=where.retry)) if current is not None else None
            if current is None or not _lease_gone(doc):
                raise LeaseHeld(
                    f"{where.path} is being written by {describe_holder(doc)}; wait for it to end, or write "
                    "another folder"
                ) from None
            try:  # one of the processes that found it dead wins this conditional overwrite
                blob.upload_from_string(
                    json.dumps(self.holder), if_generation_match=current.generation, retry=where.retry
                )
            except (PreconditionFailed, NotFound):
                raise LeaseHeld(
                    f"{where.path} is being taken over by another segflow command; wait for it to end, or write "
                    "another folder"
                ) from None
            _LOG.warning("taking over the lease on %s from %s, which has ended", where.path, describe_holder(doc))
        self._generation = blob.generation
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="segflow-lease", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.holder["heartbeat"] = time.time()
            blob = self._where.bucket.blob(self._blob_name)
            try:
                blob.upload_from_string(
                    json.dumps(self.holder), if_generation_match=self._generation, retry=self._where.retry
                )
                self._generation = blob.generation
            except Exception as e:  # noqa: BLE001 - a missed beat is retried; the lease only expires after many
                _LOG.warning("could not refresh the lease on %s: %s", self._where.path, e)

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self._where.bucket.blob(self._blob_name).delete(
                if_generation_match=self._generation, retry=self._where.retry
            )
        except Exception as e:  # noqa: BLE001 - a lease left behind expires, or names a dead pid of this host
            _LOG.warning("could not release the lease on %s: %s", self._where.path, e)


def _lease_gone(doc: Optional[dict]) -> bool:
    """True when the lease ``doc`` names a holder that has ended: a dead process of this host, or a heartbeat
    older than ``LEASE_EXPIRES_S`` (a damaged lease counts as expired)."""
    if not doc:
        return True
    if doc.get("host") == socket.gethostname() and isinstance(doc.get("pid"), int):
        return not _pid_alive(doc["pid"])
    try:
        return time.time() - float(doc.get("heartbeat", 0)) > LEASE_EXPIRES_S
    except (TypeError, ValueError):
        return True


# What ``ownership.claim`` holds for a run: both have ``holder`` (the lease's content) and ``release()``.
Lease = Union[LocalLease, GcsLease]

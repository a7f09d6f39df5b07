"""A folder segflow writes, on local disk or in a Cloud Storage bucket, behind one small interface.

``Folder`` addresses files by paths relative to it (``/``-separated): list, read, write whole, delete. Locally a
write goes through a temporary file and a rename, so a reader sees the old bytes or the new ones; a bucket replaces
an object whole. What segflow keeps in its folders (owner records, staging, publication) is
``pipelines.shared.ownership``; the lease on one is ``pipelines.shared.lease``.
"""

from __future__ import annotations

import math
import os
import uuid
from typing import TYPE_CHECKING, Optional

from schemas.errors import UsageError

if TYPE_CHECKING:  # google-cloud-storage is imported only where gs:// is written
    from google.api_core.retry import Retry

# How long one Cloud Storage request of segflow's folders (lease, owner record) may keep retrying transient errors
# before it fails the run; unset, google-cloud-storage's own default (120 s). docs/cloud.md.
STORAGE_RETRY_DEADLINE_ENV = "SEGFLOW_STORAGE_RETRY_DEADLINE_S"


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def join(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/")] + [n.strip("/") for n in names if n])


class Folder:
    """A folder on local disk or in a bucket, addressed by paths relative to it (``/``-separated)."""

    def __init__(self, path: str):
        self.path = path.rstrip("/") or "/"

    def full(self, rel: str) -> str:
        return join(self.path, rel)

    # Each of these is implemented by ``LocalFolder`` / ``GcsFolder``.
    def exists(self) -> bool:
        raise NotImplementedError

    def is_file(self, rel: str) -> bool:
        raise NotImplementedError

    def files(self, rel: str = "") -> list[str]:
        """Every file under ``rel`` (recursively), relative to the folder, sorted; the records' own folder
        included when ``rel`` is empty."""
        raise NotImplementedError

    def read(self, rel: str) -> Optional[bytes]:
        raise NotImplementedError

    def write(self, rel: str, data: bytes) -> None:
        """Writes ``rel`` whole: a reader sees the old bytes or the new ones, never a part."""
        raise NotImplementedError

    def delete(self, rel: str) -> bool:
        raise NotImplementedError


class LocalFolder(Folder):
    def __init__(self, path: str):
        super().__init__(local_path(path))

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def is_file(self, rel: str) -> bool:
        return os.path.isfile(self.full(rel))

    def files(self, rel: str = "") -> list[str]:
        top = self.full(rel) if rel else self.path
        found = []
        for parent, folders, names in os.walk(top):  # links to folders are not followed: they are not ours
            for name in names + [f for f in folders if os.path.islink(os.path.join(parent, f))]:
                found.append(os.path.relpath(os.path.join(parent, name), self.path).replace(os.sep, "/"))
        return sorted(found)

    def read(self, rel: str) -> Optional[bytes]:
        try:
            with open(self.full(rel), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, rel: str, data: bytes) -> None:
        target = self.full(rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temporary = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        finally:
            if os.path.lexists(temporary):
                os.remove(temporary)

    def delete(self, rel: str) -> bool:
        try:
            os.remove(self.full(rel))
        except FileNotFoundError:
            return False
        remove_empty_parents(self.path, os.path.dirname(self.full(rel)))
        return True

    def move_in(self, source: str, rel: str) -> None:
        """Renames the local file ``source`` to ``rel`` (replacing what is there): no byte is copied."""
        target = self.full(rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(source, target)


def remove_empty_parents(root: str, folder: str) -> None:
    """Removes ``folder`` and its parents up to (not including) ``root`` while they are empty: a folder holding
    anything (someone else's file) stays."""
    root = os.path.abspath(root)
    folder = os.path.abspath(folder)
    while folder.startswith(root + os.sep):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)


def storage_retry() -> Retry:
    """google-cloud-storage's retry policy for this module's requests: its ``DEFAULT_RETRY`` (what every call
    used here retries with by default), with ``SEGFLOW_STORAGE_RETRY_DEADLINE_S`` as its deadline when set."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    raw = os.environ.get(STORAGE_RETRY_DEADLINE_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"{STORAGE_RETRY_DEADLINE_ENV}={raw!r}: expected a number of seconds above 0")
    return DEFAULT_RETRY.with_timeout(seconds)


class GcsFolder(Folder):
    """A ``gs://bucket/prefix`` folder through google-cloud-storage (the client Beam's GcsIO uses too), which
    honours ``STORAGE_EMULATOR_HOST`` and retries transient errors itself (``storage_retry``)."""

    _clients: dict = {}

    def __init__(self, path: str):
        super().__init__(path)
        if not self.path.startswith("gs://"):
            raise UsageError(f"{path}: only local paths and gs:// URLs can be written")
        self.bucket_name, _, self.prefix = self.path[len("gs://") :].partition("/")

    @property
    def retry(self) -> Retry:
        return storage_retry()  # read at each request: the setting is the process's environment

    @property
    def bucket(self):
        from google.cloud import storage

        pid = os.getpid()  # a client is not fork-safe
        client = GcsFolder._clients.get(pid)
        if client is None:
            client = GcsFolder._clients[pid] = storage.Client()
        return client.bucket(self.bucket_name)

    def object_name(self, rel: str) -> str:
        """The bucket's object name of ``rel``."""
        return "/".join(p for p in (self.prefix, rel) if p)

    def exists(self) -> bool:
        return bool(self.files())

    def is_file(self, rel: str) -> bool:
        return self.bucket.blob(self.object_name(rel)).exists(retry=self.retry)

    def files(self, rel: str = "") -> list[str]:
        start = self.object_name(rel)
        start = start + "/" if start else ""
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(
            blob.name[cut:]
            for blob in self.bucket.list_blobs(prefix=start, retry=self.retry)
            if not blob.name.endswith("/")
        )

    def read(self, rel: str) -> Optional[bytes]:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self.object_name(rel)).download_as_bytes(retry=self.retry)
        except NotFound:
            return None

    def write(self, rel: str, data: bytes) -> None:
        self.bucket.blob(self.object_name(rel)).upload_from_string(
            data, retry=self.retry
        )  # an object is replaced whole

    def delete(self, rel: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.blob(self.object_name(rel)).delete(retry=self.retry)
        except NotFound:
            return False
        return True


def folder(path: str) -> Folder:
    """The ``Folder`` for a local path (or ``file://``) or a ``gs://`` URL."""
    return GcsFolder(path) if is_remote(path) else LocalFolder(path)

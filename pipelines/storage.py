"""Directory trees across storage systems, through Beam ``FileSystems`` only (local paths, ``gs://``, ...).

TensorFlow reads and writes ``gs://`` with its own GCS filesystem, which talks to ``www.googleapis.com``
directly and cannot be pointed at another endpoint (no ``STORAGE_EMULATOR_HOST``). Where a pipeline needs
TensorFlow to write a directory (a tensorflow-transform graph) or load one (a SavedModel), it does so on a local
or scratch path and these helpers move the tree with Beam's ``FileSystems``, i.e. ``google-cloud-storage`` with
its retry settings for transient errors and ``STORAGE_EMULATOR_HOST`` honoured.
"""
from __future__ import annotations

import hashlib
import os
import tempfile

from apache_beam.io.filesystems import FileSystems

_CHUNK = 16 << 20  # stream in 16 MiB pieces: a model's variables may be larger than a worker wants in memory


def is_local(path: str) -> bool:
    """True for paths on this machine's filesystem (no scheme, or ``file://``)."""
    return FileSystems.get_scheme(path) in (None, "file")


def list_tree(root: str) -> list[str]:
    """Paths of every file under ``root`` (recursively), relative to it with ``/`` separators, sorted."""
    root = root.rstrip("/")
    try:
        found = FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list
    except Exception:  # BeamIOError: root does not exist
        return []
    rel = []
    for metadata in found:
        path = metadata.path
        if is_local(root):
            path = os.path.relpath(path, root).replace(os.sep, "/")
        else:
            path = path[len(root) + 1:]
        if path and not path.endswith("/"):  # "folder/" placeholder objects some tools create on GCS
            rel.append(path)
    return sorted(rel)


def copy_tree(src: str, dst: str) -> list[str]:
    """Copies every file under ``src`` to the same relative path under ``dst``; returns the relative paths.

    Works across filesystems (local → ``gs://``, ``gs://`` → local, ...), streaming each file. Raises
    ``FileNotFoundError`` when ``src`` holds no files.
    """
    files = list_tree(src)
    if not files:
        raise FileNotFoundError(f"no files under {src}")
    for rel in files:
        source = FileSystems.join(src.rstrip("/"), *rel.split("/"))
        target = FileSystems.join(dst.rstrip("/"), *rel.split("/"))
        with FileSystems.open(source, mime_type="application/octet-stream") as reader, \
                FileSystems.create(target, mime_type="application/octet-stream") as writer:
            while chunk := reader.read(_CHUNK):
                writer.write(chunk)
    return files


def local_copy(path: str, cache_root: str | None = None) -> str:
    """A local directory holding the tree at ``path``: ``path`` itself when it is local, else a cached copy.

    The cache directory is named after the remote path, so every DoFn instance in a worker process reuses one
    download; a completed copy is marked with a ``.complete`` file so a crashed half-copy is never reused.
    """
    if is_local(path):
        return path
    root = cache_root or os.path.join(tempfile.gettempdir(), "segflow-cache")
    target = os.path.join(root, hashlib.sha256(path.rstrip("/").encode("utf-8")).hexdigest()[:16])
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        staging = tempfile.mkdtemp(prefix="partial-", dir=_ensure_dir(root))
        copy_tree(path, staging)
        open(os.path.join(staging, ".complete"), "w").close()
        try:
            os.rename(staging, target)  # atomic: concurrent processes race, one wins, the others reuse it
        except OSError:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            if not os.path.exists(marker):
                raise
    return target


def _ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def delete_tree(root: str) -> int:
    """Deletes every file under ``root`` (a no-op when there are none); returns how many were deleted."""
    files = [FileSystems.join(root.rstrip("/"), *rel.split("/")) for rel in list_tree(root)]
    if files:
        FileSystems.delete(files)
    return len(files)


def replace_tree(src: str, dst: str) -> list[str]:
    """Makes ``dst`` hold exactly the files of ``src``: stale files from an earlier run are deleted first."""
    delete_tree(dst)
    return copy_tree(src, dst)

"""Directory trees across storage systems, through Beam ``FileSystems`` only (local paths, ``gs://``, ...).

TensorFlow reads and writes ``gs://`` with its own GCS filesystem, which talks to ``www.googleapis.com``
directly and cannot be pointed at another endpoint (no ``STORAGE_EMULATOR_HOST``). Where a pipeline needs
TensorFlow to write a directory (a tensorflow-transform graph) or load one (a SavedModel), it does so on a local
or scratch path and these helpers move the tree with Beam's ``FileSystems``, i.e. ``google-cloud-storage`` with
its retry settings for transient errors and ``STORAGE_EMULATOR_HOST`` honoured.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterable, Iterator, NamedTuple, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas import strict_json

_CHUNK = 16 << 20  # stream in 16 MiB pieces: a model's variables may be larger than a worker wants in memory


def is_local(path: str) -> bool:
    """True for paths on this machine's filesystem (no scheme, or ``file://``)."""
    return FileSystems.get_scheme(path) in (None, "file")


def local_path(path: str) -> str:
    """A local path or ``file://`` URL as the operating system names it (the scheme stripped)."""
    return path[len("file://") :] if path.startswith("file://") else path


GLOB_CHARS = frozenset("*?[")


def escape_glob(path: str) -> str:
    """``path`` as a Beam ``FileSystems.match`` pattern that matches exactly that path.

    Beam's patterns have no escape character, but a one-character class does the job: ``[`` → ``[[]``,
    ``*`` → ``[*]``, ``?`` → ``[?]``. Folder names users give are literal (``out[1]`` is a legal name, not a
    character class), so every pattern built from one goes through here.
    """
    return "".join(f"[{c}]" if c in GLOB_CHARS else c for c in path)


class ListedFile(NamedTuple):
    """One entry found under a folder: a readable file (``error`` None) or an entry that cannot be one
    (a broken or looping symbolic link, a name that is not UTF-8), with the reason."""

    path: str
    size: int
    error: Optional[str] = None


def printable_path(path: str) -> str:
    """``path`` as UTF-8-safe text: bytes of a non-UTF-8 file name (surrogate escapes) shown as ``\\xNN``."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _walk_local(root: str) -> Iterator[ListedFile]:
    """Every entry under a local ``root``, following symbolic links to folders and files, in sorted order.

    A link to a folder that is being read already (one of its own ancestors) is a loop and is reported, not
    followed; two links to the same other folder are both read (their files then meet as duplicates).
    """

    def visit(folder: str, ancestors: frozenset) -> Iterator[ListedFile]:
        try:
            info = os.stat(folder)
        except OSError as e:
            yield ListedFile(printable_path(folder), 0, f"cannot read folder ({e.strerror})")
            return
        identity = (info.st_dev, info.st_ino)
        if identity in ancestors:
            yield ListedFile(printable_path(folder), 0, "symbolic link loop: links to a folder above it")
            return
        ancestors = ancestors | {identity}
        try:
            names = sorted(os.listdir(folder))
        except OSError as e:
            yield ListedFile(printable_path(folder), 0, f"cannot list folder ({e.strerror})")
            return
        for name in names:
            path = os.path.join(folder, name)
            shown = printable_path(path)
            if shown != path:
                yield ListedFile(shown, 0, "file name is not valid UTF-8: rename it to be read")
                continue
            try:
                entry = os.stat(path)  # follows links
            except OSError as e:
                yield ListedFile(path, 0, _unreadable(path, e))
                continue
            if stat.S_ISDIR(entry.st_mode):
                yield from visit(path, ancestors)
            elif stat.S_ISREG(entry.st_mode):
                yield ListedFile(path, int(entry.st_size))
            else:
                yield ListedFile(path, 0, "not a regular file (a device, socket or pipe)")

    if os.path.isdir(root):
        yield from visit(root, frozenset())
    elif os.path.islink(root):  # the folder itself is a broken link: say so, rather than "nothing there"
        try:
            os.stat(root)
        except OSError as e:
            yield ListedFile(printable_path(root), 0, _unreadable(root, e))


def _unreadable(path: str, error: OSError) -> str:
    """Why ``os.stat`` failed on an entry that was listed (a dangling or looping link, a permission error)."""
    if os.path.islink(path):
        reason = "symbolic link loop" if error.errno == errno.ELOOP else "broken symbolic link"
        return f"{reason} (-> {printable_path(os.readlink(path))})"
    return f"cannot read ({error.strerror})"


def list_files(root: str) -> Iterator[ListedFile]:
    """Every file under the folder ``root`` (recursively), ``root`` taken literally (no glob).

    Local folders are walked with ``os`` calls, following symbolic links (Beam's local listing neither follows
    links to folders nor reports broken ones); remote ones (``gs://`` ...) are listed through ``FileSystems``
    by their escaped prefix, where every object name is a file. A missing ``root`` yields nothing; a local
    ``root`` that is a broken link yields one entry saying so.
    """
    if is_local(root):
        local = local_path(root)
        yield from _walk_local(local.rstrip("/") or "/")
        return
    prefix = root.rstrip("/")
    # An object store lists a missing prefix as empty; an error here (after the client's own retries) is a
    # real failure and must not pass for "no files", which would turn every partner file into a dead letter.
    found = FileSystems.match([escape_glob(prefix) + "/**"])[0].metadata_list
    for metadata in sorted(found, key=lambda m: m.path):
        if not metadata.path.endswith("/"):  # "folder/" placeholder objects some tools create
            yield ListedFile(metadata.path, int(metadata.size_in_bytes))


def listing_prefix(folder: str) -> str:
    """What every path ``list_files(folder)`` yields starts with (cut it off for the path relative to ``folder``).

    Listed local paths carry no "file://" (list_files strips it), so neither does the prefix.
    """
    return local_path(folder).rstrip("/") + "/"


def list_folder(folder: str) -> list[ListedFile]:
    """The files directly in ``folder`` (not below it), ``folder`` taken literally; sorted by path."""
    prefix = listing_prefix(folder)
    return [f for f in list_files(folder) if "/" not in f.path[len(prefix) :]]


def same_or_inside(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or lies under it, comparing resolved paths (``.``, ``..``, symbolic
    links) for local paths and normalised URLs for remote ones."""
    if is_local(path) != is_local(folder):
        return False
    if is_local(path):
        a = os.path.realpath(local_path(path))
        b = os.path.realpath(local_path(folder))
        return a == b or a.startswith(b.rstrip(os.sep) + os.sep)
    a, b = path.rstrip("/") + "/", folder.rstrip("/") + "/"
    return a.startswith(b)


def list_tree(root: str) -> list[str]:
    """Paths of every file under ``root`` (recursively), relative to it with ``/`` separators, sorted."""
    root = root.rstrip("/")
    rel = []
    for listed in list_files(root):
        if listed.error is None:
            rel.append(
                listed.path[len(root) + 1 :]
                if not is_local(root)
                else os.path.relpath(listed.path, root).replace(os.sep, "/")
            )
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
        with (
            FileSystems.open(source, mime_type="application/octet-stream") as reader,
            FileSystems.create(target, mime_type="application/octet-stream") as writer,
        ):
            while chunk := reader.read(_CHUNK):
                writer.write(chunk)
    return files


def read_bytes(path: str) -> bytes:
    """The whole file at a local path or URL (gs:// ...), as stored: never decompressed by its name's extension
    (Beam's ``FileSystems.open`` would inflate a ``.gz``)."""
    if is_local(path):
        # Directly: Beam's FileSystems looks the filesystem up among all its plugins on every call, which a
        # preprocess run pays twice per example (its image and its mask).
        with open(local_path(path), "rb") as handle:
            return handle.read()
    with FileSystems.open(
        path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
    ) as handle:
        return handle.read()


def write_bytes(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    """Writes ``data`` to a local path or URL (gs:// ...) through Beam's FileSystems."""
    with FileSystems.create(path, mime_type=mime_type) as handle:
        handle.write(data)


def write_json(path: str, doc: dict, *, absent_as_null: bool = False) -> None:
    """``doc`` as segflow writes every JSON report: strict (``schemas.strict_json``; ``absent_as_null`` for a
    report of figures), indented, keys sorted, one trailing newline (byte-stable)."""
    text = strict_json.dumps(doc, what=path, absent_as_null=absent_as_null)
    write_bytes(path, (text + "\n").encode("utf-8"), "application/json")


def delete_files(paths: Iterable[str]) -> None:
    """Deletes exactly the files ``paths`` (literal paths; ones already gone are skipped).

    ``FileSystems.delete`` matches each path as a glob (``out[1]/x`` deletes ``out1/x``): local files are removed
    with ``os.remove`` (a symbolic link itself, never its target), remote ones through their escaped pattern.
    """
    remote = []
    for path in paths:
        if is_local(path):
            try:
                os.remove(local_path(path))
            except FileNotFoundError:
                pass
        else:
            remote.append(escape_glob(path))
    for start in range(0, len(remote), 1000):  # GCS deletes in batches of at most 1000
        FileSystems.delete(remote[start : start + 1000])


def delete_tree(root: str) -> int:
    """Deletes every file under the folder ``root`` (literal; a no-op when absent); returns how many.

    Locally the folder goes too, and symbolic links inside it are removed as links, never followed: whatever
    a link points at lies outside ``root`` and is not this call's to delete (``list_files`` follows links,
    which is right for reading inputs and wrong for deleting). Remotely every object under the prefix goes, the
    zero-byte "folder/" markers TensorFlow's GCS client writes included (not counted: they are no files).
    """
    if not is_local(root):
        paths = [f.path for f in list_files(root)]
        delete_files(paths)
        if FileSystems.get_scheme(root) == "gs":
            _delete_gcs_folder_markers(root)
        return len(paths)
    local = local_path(root)
    if os.path.islink(local) or os.path.isfile(local):  # a link or a file where the folder should be
        os.remove(local)
        return 1
    if not os.path.isdir(local):
        return 0
    removed = 0

    def fail(err: OSError) -> None:
        raise err

    for parent, folders, files in os.walk(local, topdown=False, onerror=fail):  # followlinks=False
        for name in files:
            os.remove(os.path.join(parent, name))
            removed += 1
        for name in folders:
            path = os.path.join(parent, name)
            if os.path.islink(path):
                os.remove(path)
            else:
                os.rmdir(path)
    os.rmdir(local)
    return removed


def _delete_gcs_folder_markers(root: str) -> None:
    """Deletes the zero-byte ``name/`` objects under the gs:// folder ``root``, by exact name.

    TensorFlow's GCS client writes one for every directory it makes (tensorflow-transform's scratch dirs under a
    gs:// ``--temp_location``); they are no files (``list_files`` skips them) and ``FileSystems.delete`` of a
    name ending in "/" deletes by prefix, not literally. So list the prefix with GcsIO, which returns every
    object name, and delete those with its batch delete (404, gone already, is not an error).
    """
    from apache_beam.io.gcp import gcsio

    client = gcsio.GcsIO()
    markers = [name for name, _ in client.list_files(root.rstrip("/") + "/") if name.endswith("/")]
    failed = {}
    for start in range(0, len(markers), 1000):  # GCS deletes in batches of at most 1000
        failed.update((path, code) for path, code in client.delete_batch(markers[start : start + 1000]) if code)
    if failed:
        raise OSError(f"could not delete {len(failed)} folder marker(s) under {root}: {failed}")


# The folder and everything in it: the same operation, under the name callers that clear an output folder use.
remove_tree = delete_tree


def remove_file(path: str) -> int:
    """Deletes the one file ``path`` (literal; a link itself, never its target) if it exists; returns 1 or 0."""
    if is_local(path):
        local = local_path(path)
        if os.path.islink(local) or os.path.isfile(local):
            os.remove(local)
            return 1
        return 0
    if FileSystems.exists(path):
        delete_files([path])
        return 1
    return 0


def replace_tree(src: str, dst: str) -> list[str]:
    """Makes ``dst`` hold exactly the files of ``src``: stale files from an earlier run are deleted first."""
    delete_tree(dst)
    return copy_tree(src, dst)


def storage_failure_line(program: str, error: BaseException, what_is_left: str) -> Optional[str]:
    """The one stderr line a job's ``main`` prints for ``error`` when it is a storage outage
    (``storage_failure``), saying ``what_is_left`` and to rerun; None for any other error (re-raise it)."""
    reason = storage_failure(error)
    if reason is None:
        return None
    return f"{program}: error: {reason}; {what_is_left}: rerun the same command when storage answers again"


def storage_failure(error: BaseException) -> Optional[str]:
    """A one-line reason when ``error`` (or an exception it was raised from) is a storage request that failed
    past its client's own retries, e.g. Cloud Storage answering 503 for longer than google-cloud-storage's retry
    deadline; None for any other error (a bug keeps its traceback).

    Beam re-raises a DoFn's exception with the step's name appended, and wraps some in ``BeamIOError``, so the
    chain of causes is searched.
    """
    from apache_beam.io.filesystem import BeamIOError

    try:
        from google.api_core.exceptions import GoogleAPIError
    except ImportError:  # google-cloud packages absent (no gcp extra): only Beam's own I/O errors count
        GoogleAPIError = BeamIOError  # noqa: N806
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (GoogleAPIError, BeamIOError)):
            text = " ".join(str(current).split())
            return f"storage failed: {type(current).__name__}: {text[:400]}"
        current = current.__cause__ or current.__context__
    return None

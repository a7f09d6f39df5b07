"""What infer reads: the files its ``--input`` globs match, each once, or the images of a dataset's folder
(``--input_dir``/``--dataset``, of one ``--split``: ``Dataset.split_images``), and the check that ``--output_dir``
would not clear any of them (a rerun clears its own output folders before it reads anything)."""

from __future__ import annotations

import glob
import os
import posixpath
import stat
from typing import NamedTuple, Optional, Sequence, Union

from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.common.deadletter import DEAD_LETTER_DIR, DeadLetter
from pipelines.infer import outputs
from schemas.errors import DataError, UsageError

# The folders a run writes in OUT (a rerun replaces the files it wrote there, by OUT's owner record).
OUTPUT_FOLDERS = (outputs.MASKS_DIR, outputs.COLOR_DIR, outputs.OVERLAY_DIR, outputs.INSTANCES_DIR, DEAD_LETTER_DIR)
_GLOB_CHARS = storage.GLOB_CHARS


class InputError(DataError):
    """``--input`` names nothing to read, or ``--output_dir`` would clear it; the message is the one line the
    user sees (exit status 1)."""


class MatchedInputs(NamedTuple):
    """What the ``--input`` globs name, each file once.

    ``files``: local files, sorted, deduplicated (the pipeline reads exactly these, never re-matches them);
    ``dead_letters``: local entries a glob matched that cannot be read (a name that is not UTF-8, a broken or
    looping link, a device), as dead letters naming them; ``remote_patterns``: ``gs://`` … globs, matched inside
    the pipeline (``fileio.MatchAll``, then each path once): on Dataflow a glob may name millions of objects,
    which the launcher should neither list nor ship in the job graph. ``count``: files matched, when known
    here (every pattern local). ``--input_dir`` gives ``files`` (local or ``gs://``, listed here) and, with
    ``--split``, ``ids_without_image``: the ids the split's list names that have no image (reported, as evaluate
    reports missing predictions).
    """

    files: list[str]
    dead_letters: list[DeadLetter]
    remote_patterns: list[str]
    ids_without_image: tuple[str, ...] = ()

    @property
    def count(self) -> Optional[int]:
        return None if self.remote_patterns else len(self.files) + len(self.dead_letters)


def _classify_local(path: str) -> Union[str, DeadLetter, None]:
    """A path a local glob matched → the path (a readable regular file), a dead letter, or None (a folder)."""
    shown = storage.printable_path(path)
    if shown != path:
        return DeadLetter(shown, "file name is not valid UTF-8: rename it to be read", "match")
    try:
        entry = os.stat(path)  # follows links
    except OSError as err:
        if os.path.islink(path):
            kind = "symbolic link loop" if err.errno == 40 else "broken symbolic link"
            return DeadLetter(path, f"{kind} (-> {storage.printable_path(os.readlink(path))})", "match")
        return DeadLetter(path, f"cannot read ({err.strerror})", "match")
    if stat.S_ISDIR(entry.st_mode):
        return None
    if stat.S_ISREG(entry.st_mode):
        return path
    return DeadLetter(path, "not a regular file (a device, socket or pipe)", "match")


def _match_local(pattern: str) -> tuple[list[str], list[DeadLetter]]:
    """Python's glob rules (``glob.glob(pattern, recursive=True)``): ``*``, ``?`` and ``[...]`` never cross a
    ``/``; ``**`` as a whole path part matches any depth, zero folders included; ``\\`` is an ordinary character
    (a file name may hold one); names starting with ``.`` match only a pattern part starting with ``.``, as in a
    shell. Folders a glob matches are not inputs (``DIR/*`` skips ``DIR/sub``)."""
    local = storage.local_path(pattern)
    if not (_GLOB_CHARS & set(local)) and os.path.isdir(local):
        raise InputError(
            f"--input {pattern} is a folder, not a glob of files: give e.g. "
            f"'{local.rstrip('/')}/*.jpg' (or '{local.rstrip('/')}/**/*' for every file below it)"
        )
    files, dead, folders = [], [], 0
    for path in glob.glob(local, recursive=True):
        found = _classify_local(path)
        if found is None:
            folders += 1
        elif isinstance(found, DeadLetter):
            dead.append(found)
        else:
            files.append(found)
    if not files and not dead:
        if folders:
            raise InputError(
                f"--input {pattern} matches {folders} folder(s) and no files: "
                f"add the file part, e.g. '{local.rstrip('/')}/*.jpg'"
            )
        hint = " (a folder needs a glob, e.g. DIR/*.jpg)" if not (_GLOB_CHARS & set(local)) else ""
        if _GLOB_CHARS & set(local) and os.path.lexists(local):
            hint = (
                f" as a glob; a file of that literal name exists: write its glob characters in brackets, "
                f"e.g. {glob.escape(local)}"
            )
        raise InputError(f"--input {pattern} matches no files{hint}")
    return files, dead


def _check_remote(pattern: str) -> None:
    """Fails fast (one line) when a remote glob matches no object; lists one page at most."""
    try:
        found = FileSystems.match([pattern], limits=[1000])[0].metadata_list
    except Exception as err:  # noqa: BLE001 - storage errors become the one-line reason
        raise InputError(f"cannot list --input {pattern}: {err}") from None
    if not any(not m.path.endswith("/") for m in found):
        hint = "" if _GLOB_CHARS & set(pattern) else " (a folder needs a glob, e.g. DIR/*.jpg)"
        raise InputError(f"--input {pattern} matches no files{hint}")


def match_inputs(patterns: Sequence[str]) -> MatchedInputs:
    """The files the ``--input`` globs match, each once (overlapping globs name a file once); raises
    ``InputError`` when a glob matches nothing or names a folder."""
    files: dict[str, str] = {}  # one entry per file whatever the spelling (./a.jpg, a.jpg): absolute path → path
    dead: dict[str, DeadLetter] = {}
    remote: list[str] = []
    for pattern in patterns:
        if not storage.is_local(pattern):
            _check_remote(pattern)
            if pattern not in remote:
                remote.append(pattern)
            continue
        found, unreadable = _match_local(pattern)
        for path in found:
            key = os.path.abspath(path)
            files[key] = min(path, files.get(key, path), key=lambda p: (len(p), p))  # the plainest spelling
        for letter in unreadable:
            dead.setdefault(os.path.abspath(letter.path), letter)
    return MatchedInputs(sorted(set(files.values())), sorted(dead.values()), remote)


def dataset_inputs(input_dir: str, dataset: str, split: Optional[str], output_dir: str) -> MatchedInputs:
    """The images of ``dataset``'s folder ``input_dir`` (of its own ``split`` when given), listed literally on the
    launcher; raises ``UsageError`` for a split the dataset or the folder does not have, ``InputError`` when
    there are no images or ``output_dir`` lies among them (a rerun would read its own outputs)."""
    from pipelines import datasets
    from pipelines.datasets.discovery import BeamFiles

    root = input_dir.rstrip("/") or input_dir
    try:  # the dataset as the folder defines it (folder: its classes.json names the images folder)
        source = datasets.get(dataset).with_source(root, BeamFiles())
    except ValueError as err:
        raise InputError(str(err)) from None
    images_folder = FileSystems.join(root, *source.input_folder)
    if storage.same_or_inside(output_dir, images_folder):
        raise InputError(
            f"--output_dir {output_dir} is inside {images_folder}, whose images this run reads: a rerun would read "
            "its own outputs; choose an --output_dir outside it"
        )
    try:
        found = source.split_images(root, split, BeamFiles())
    except ValueError as err:
        raise UsageError(str(err)) from None
    dead = [DeadLetter(path, why, "match") for path, why in found.unreadable]
    if not found.images and not dead:
        listed = f"; {len(found.missing_ids)} ids listed, none with an image" if found.missing_ids else ""
        raise InputError(
            f"no {dataset} images{f' of split {split}' if split else ''} under {input_dir} (layout: "
            f"{source.input_layout}{listed}); check --input_dir"
        )
    return MatchedInputs(found.images, dead, [], tuple(found.missing_ids))


def find_inputs(
    patterns: Optional[Sequence[str]],
    input_dir: Optional[str],
    dataset: Optional[str],
    split: Optional[str],
    output_dir: str,
) -> MatchedInputs:
    """What a run reads: ``match_inputs(patterns)`` (``--input``) or ``dataset_inputs`` (``--input_dir``)."""
    if input_dir:
        return dataset_inputs(input_dir, dataset or "", split, output_dir)
    return match_inputs(patterns or [])


def _parent(path: str) -> str:
    return os.path.dirname(os.path.abspath(path)) if storage.is_local(path) else posixpath.dirname(path)


def _static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first glob character (what every match lies under)."""
    cut = min((pattern.index(c) for c in _GLOB_CHARS if c in pattern), default=len(pattern))
    head = pattern[:cut]
    return head if cut == len(pattern) else head[: head.rfind("/") + 1] or "."


def check_output_dir(matched: MatchedInputs, output_dir: str, model_dir: str) -> None:
    """Refuses (``InputError``) an ``--output_dir`` whose output folders hold inputs or the model: a rerun clears
    those folders before it reads anything."""
    folders = [FileSystems.join(output_dir, f) for f in OUTPUT_FOLDERS]
    # A file lies in a folder when its parent does (links resolved): a few parents stand for many files.
    parents = sorted({_parent(p) for p in matched.files})
    named = (
        [("--model_dir", model_dir)]
        + [("--input", p) for p in parents]
        + [("--input", _static_prefix(p)) for p in matched.remote_patterns]
    )
    for flag, path in named:
        for folder in folders:
            if storage.same_or_inside(path, folder):
                raise InputError(
                    f"{flag} {path} is inside {folder}, which this run clears first: choose another --output_dir"
                )

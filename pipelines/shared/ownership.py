"""Output folders segflow owns: which files a command wrote there, one writer at a time, and staged publication.

Every folder a segflow command writes (preprocess's DST, the trainer's JOB, infer's OUT, the folder of evaluate's
``--output_file``; local or ``gs://``, reached through ``pipelines.shared.folders``) holds a hidden ``.segflow/``
folder with:

  .segflow/<kind>.json      the owner record of that kind of command: the files (paths relative to the folder)
                            its last published run wrote. Cleanup deletes by this record, never by folder or name
                            pattern, so a file someone else put in the folder is never touched.
  .segflow/lease            who writes the folder now (host, pid, start): one writer at a time.
  .segflow/run-<token>/     a local run's staging area: the run writes here, and publication moves its files into
                            the folder by renames (no data is copied), the completion marker last.

The rules (``claim``):
- Ownership: a command writes into a new or empty folder, or one its own kind owns (its record is there, or an
  output of the previous release, recognised by ``adopt``); evaluate, which writes one named file and deletes
  nothing, may write into any folder, but never replaces a file of that name it did not write. Any other
  non-empty folder is refused in one line (``OutputFolderRefused``, exit 2) before anything in it is touched.
- One writer: the lease (``pipelines.shared.lease``: a ``flock`` locally, a generation-matched object with a
  heartbeat on ``gs://``) is taken for the whole run; a dead holder's lease is taken over, a live one refuses.
- Publication: locally a run writes into its staging folder and ``Claim.publish`` moves every file into place
  (``os.replace``), deletes the previous run's files that the new run did not write (by the record), then puts the
  completion markers (``metadata.json`` ...) in place last. Until then readers see the previous complete output;
  a run that fails or is killed leaves it as it was, and the next run removes its staging folder. Object stores
  have no rename (a "move" is a copy of every byte), so on ``gs://`` a run writes in place as before: its markers
  are deleted first and written last, so a reader never takes a half output for a complete one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Callable, Iterable, Optional, Sequence

from pipelines.shared.folders import (
    Folder,
    GcsFolder,
    LocalFolder,
    folder,
    is_remote,
    join,
    local_path,
    remove_empty_parents,
)
from pipelines.shared.lease import GcsLease, Lease, LeaseHeld, LocalLease
from schemas.errors import UsageError

_LOG = logging.getLogger("segflow.ownership")

RECORD_DIR = ".segflow"
LEASE_FILE = f"{RECORD_DIR}/lease"  # who writes the folder now (pipelines.shared.lease)
STAGING_PREFIX = "run-"
PENDING = "pending"
RECORD_FORMAT = 1
KINDS = ("preprocess", "trainer", "infer", "evaluate")
# Evaluate writes one file, named by the user, and deletes nothing: its JSON goes beside the predictions it
# scores by default (infer's OUT, or a folder of another tool's masks), so it may write into any folder. Its record
# there lists only its own files, and it refuses to replace a file of that name that it did not write.
WRITES_BESIDE_OTHERS = frozenset({"evaluate"})

# What a command may find in a folder of the previous release and adopt: relative paths, or None when the folder
# holds no such output.
Adopter = Callable[["Folder", str], Optional[set]]


class OutputFolderRefused(UsageError):
    """The folder holds files that no segflow command of this kind wrote, or another command writes it now."""


# ------------------------------------------------------------------------------------------------ records
def record_name(kind: str) -> str:
    return f"{RECORD_DIR}/{kind}.json"


def read_record(where: Folder, kind: str) -> Optional[set]:
    """The files the last published run of ``kind`` wrote in ``where``, or None when it has no record."""
    data = where.read(record_name(kind))
    if data is None:
        return None
    try:
        doc = json.loads(data)
        return {str(f) for f in doc["files"]}
    except (ValueError, KeyError, TypeError):
        # Damaged: trusting none of it deletes nothing; the run's own files are recorded anew at publication.
        _LOG.warning("%s is damaged; it is rewritten when this run publishes", where.full(record_name(kind)))
        return set()


def write_record(where: Folder, kind: str, files: Iterable[str]) -> None:
    doc = {"format": RECORD_FORMAT, "kind": kind, "files": sorted(set(files))}
    where.write(record_name(kind), (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def owners(where: Folder) -> list[str]:
    """The kinds of segflow command that hold a record in ``where``."""
    return [kind for kind in KINDS if where.is_file(record_name(kind))]


# ------------------------------------------------------------------------------------------------ claims
@dataclasses.dataclass
class Claim:
    """A run's hold on its output folder: the lease, the previous run's files, and where this run writes.

    ``staging``: the folder the run writes its outputs under (a fresh ``.segflow/run-<token>`` locally, the output
    folder itself on ``gs://``). ``previous``: the files the last published run of this kind wrote.
    """

    where: Folder
    kind: str
    previous: set
    staging: str
    staged: bool
    _lease: Lease
    created: bool = False
    published: bool = False
    markers: tuple = ()
    # Set by a run that failed but whose staging folder holds what the user must read (its dead letters): the
    # folder stays until the next run into the same output removes it.
    keep_staging: bool = False

    @property
    def path(self) -> str:
        return self.where.path

    def staging_folder(self) -> Folder:
        return folder(self.staging)

    def write_path(self, rel: str) -> str:
        """Where the run writes its output file ``rel``: under ``staging``; a completion marker of a run that
        writes in place goes to ``.segflow/pending/`` until ``publish`` puts it in place."""
        if not self.staged and rel in self.markers:
            return self.where.full(f"{RECORD_DIR}/{PENDING}/{rel}")
        return join(self.staging, rel)

    def record(self, files: Iterable[str]) -> None:
        """Adds files written in place (outside staging) to the record now, so that a later run may delete
        them even if this one never publishes (a checkpoint, a log)."""
        files = set(files)
        if not files <= self.previous:
            self.previous |= files
            write_record(self.where, self.kind, self.previous)

    def delete(self, files: Iterable[str]) -> list[str]:
        """Deletes those of ``files`` this kind's record lists (never any other), and forgets them."""
        gone = sorted(set(files) & self.previous)
        for rel in gone:
            self.where.delete(rel)
        if gone:
            self.previous -= set(gone)
            write_record(self.where, self.kind, self.previous)
        return gone

    def publish(
        self,
        markers: Optional[Sequence[str]] = None,
        written: Optional[Iterable[str]] = None,
        replaces: Optional[Sequence[str]] = None,
    ) -> list[str]:
        """Makes this run's output the folder's output; returns the files now recorded.

        Locally: every file under ``staging`` moves into place by rename (``markers`` last, so a reader that finds
        a marker finds the complete output beside it). On ``gs://`` the run wrote in place and ``written`` lists
        its files. Then the previous run's files that this run did not write are deleted (by the record), and
        the record is rewritten. The record covers both runs' files while files move, so an interruption at any
        point still leaves every segflow file recorded. ``replaces``: the relative files or folders this
        publication supersedes (default: all of the previous run's files); recorded files outside them (a
        trainer's checkpoints, when it publishes its export) are kept.
        """
        markers = list(self.markers if markers is None else markers)
        if self.staged:
            stage = self.staging_folder()
            new = set(stage.files())
        else:
            pending = {rel for rel in markers if self.where.is_file(f"{RECORD_DIR}/{PENDING}/{rel}")}
            new = set(written or ()) | pending
        superseded = {rel for rel in self.previous if _under(rel, replaces)} if replaces is not None else self.previous
        kept = self.previous - superseded
        stale = superseded - new
        write_record(self.where, self.kind, self.previous | new)
        for marker in markers:  # the old marker goes first: no moment shows it beside a mix of files
            if marker in superseded and self.staged:
                self.where.delete(marker)
        if self.staged:
            assert isinstance(self.where, LocalFolder)
            for rel in sorted(new - set(markers)):
                self.where.move_in(stage.full(rel), rel)
        for rel in sorted(stale):  # before the markers: a marker never sits beside a stale file
            self.where.delete(rel)
        if self.staged:
            for rel in markers:
                if rel in new:
                    self.where.move_in(stage.full(rel), rel)
            _remove_tree(stage.path)
        else:
            for rel in markers:  # small files: a copy, then the pending one goes
                if rel in pending:
                    self.where.write(rel, self.where.read(f"{RECORD_DIR}/{PENDING}/{rel}") or b"")
                    self.where.delete(f"{RECORD_DIR}/{PENDING}/{rel}")
        self.previous = kept | new
        write_record(self.where, self.kind, self.previous)
        self.published = True
        return sorted(new)

    def release(self) -> None:
        """Ends the claim: the staging folder of a run that did not publish is removed, the lease released."""
        try:
            if self.staged and not self.published and not self.keep_staging:
                _remove_tree(local_path(self.staging))
        finally:
            self._lease.release()
        if self.created and not self.published and not self.keep_staging and isinstance(self.where, LocalFolder):
            # A first run that failed before it published leaves nothing behind: not even the folder.
            if not [rel for rel in self.where.files() if not rel.startswith(RECORD_DIR + "/")]:
                _remove_tree(self.where.full(RECORD_DIR))
                remove_empty_parents(os.path.dirname(self.where.path), self.where.path)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _under(rel: str, roots: Sequence[str]) -> bool:
    return any(rel == root or rel.startswith(root.rstrip("/") + "/") for root in roots)


def _remove_tree(path: str) -> None:
    """Removes a local folder of segflow's own (a staging area): links inside are removed, never followed."""
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)


def claim(
    path: str,
    kind: str,
    flag: str,
    *,
    adopt: Optional[Adopter] = None,
    staged: bool = True,
    markers: Sequence[str] = (),
) -> Claim:
    """Takes ``path`` for a run of ``kind`` (see the module docstring): refuses a folder it may not write
    (``OutputFolderRefused``, naming ``flag`` and how to proceed), takes the lease, removes what interrupted runs
    left in ``.segflow/``, and makes the run's staging folder. ``staged``: write through a staging folder and
    publish by renames (local folders only; on ``gs://`` a run always writes in place). ``markers``: the files
    whose presence says the output is complete (``metadata.json`` ...): a run that writes in place deletes the
    previous run's now, and writes its own to ``Claim.write_path`` for ``publish`` to put in place last.

    Raises ``OSError`` when the folder cannot be created or written (a read-only or full disk, a file where the
    folder should be): found here, before the run reads any input or changes any output.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    where = folder(path)
    if isinstance(where, LocalFolder) and os.path.lexists(where.path) and not os.path.isdir(where.path):
        raise OutputFolderRefused(f"{flag} {where.path} is a file, not a folder; name a folder")
    existed = where.exists()
    previous = read_record(where, kind) if existed else None
    if existed and previous is None:
        adopted = adopt(where, kind) if adopt is not None else None
        others = owners(where)
        if adopted is not None:
            previous = set(adopted)
            _LOG.info("adopting %d files of an earlier segflow %s run in %s", len(previous), kind, where.path)
        elif kind in WRITES_BESIDE_OTHERS:
            previous = set()
        else:
            foreign = [rel for rel in where.files() if not rel.startswith(RECORD_DIR + "/")]
            if foreign:
                if others:
                    raise OutputFolderRefused(
                        f"{flag} {where.path} holds the output of segflow {' and '.join(others)}, not {kind}; "
                        f"write {kind}'s output to another folder"
                    )
                raise OutputFolderRefused(
                    f"{flag} {where.path} holds files segflow did not write (e.g. {foreign[0]}); name a new or "
                    "empty folder (segflow writes only into folders it owns, and never deletes files it did not "
                    "write)"
                )
            previous = set()
    lease = _take_lease(where, kind)
    try:
        if previous is None:
            previous = set()
        # Writing the record now is the up-front proof that the folder can be written, and makes the folder this
        # kind's from the first moment: an interrupted first run still leaves a folder its rerun may write.
        write_record(where, kind, previous)
        staged = staged and isinstance(where, LocalFolder)
        token = lease.holder["token"]
        if staged:
            _clear_stale_staging(where)
            staging = where.full(f"{RECORD_DIR}/{STAGING_PREFIX}{token}")
            os.makedirs(staging)
        else:
            staging = where.path
            for rel in markers:  # the output is about to change in place: it no longer claims to be complete
                where.delete(f"{RECORD_DIR}/{PENDING}/{rel}")
                if rel in previous:
                    where.delete(rel)
        return Claim(where, kind, previous, staging, staged, lease, created=not existed, markers=tuple(markers))
    except BaseException:
        lease.release()
        raise


def _take_lease(where: Folder, kind: str) -> Lease:
    """The lease on ``where`` for a run of ``kind``, or ``OutputFolderRefused`` naming the command that holds it."""
    try:
        if isinstance(where, LocalFolder):
            try:
                os.makedirs(where.path, exist_ok=True)
                return LocalLease(where.full(LEASE_FILE), where.path, kind)
            except OSError as e:  # the folder the user named is what cannot be written, not segflow's records in it
                raise OSError(e.errno, e.strerror, where.path) from None
        assert isinstance(where, GcsFolder)
        return GcsLease(where, where.object_name(LEASE_FILE), kind)
    except LeaseHeld as e:  # one refusal for every reason a folder cannot be claimed
        raise OutputFolderRefused(str(e)) from None


def _clear_stale_staging(where: LocalFolder) -> None:
    """Removes the staging folders of runs that ended without publishing: with the lease held, none is live."""
    base = where.full(RECORD_DIR)
    for name in sorted(os.listdir(base)):
        if name.startswith(STAGING_PREFIX):
            _LOG.info("removing %s, left by an interrupted run", os.path.join(base, name))
            _remove_tree(os.path.join(base, name))


def check_writable_file(path: str, flag: str) -> None:
    """Refuses an output file flag that names a folder (``OutputFolderRefused``)."""
    if not is_remote(path) and os.path.isdir(local_path(path)):
        raise OutputFolderRefused(f"{flag} {path} is a folder; name a file in it")

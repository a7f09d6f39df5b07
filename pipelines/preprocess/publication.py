"""Which files of DST a preprocess run owns (for ``pipelines.shared.ownership``), and the run that wrote none.

Publication itself is ``run``'s (``pipelines/preprocess/job.py``): DST is claimed, written (staged locally, in
place on gs://) and published with metadata.json last. This module says what the owner record lists: the files a
run wrote in place (``files_written``), and those of a run of the release before owner records
(``previous_release_files``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.common.deadletter import DEAD_LETTER_DIR, DEAD_LETTER_FILE
from schemas.errors import DataError
from schemas.metadata import METADATA_FILE, DatasetMetadata

if TYPE_CHECKING:
    from pipelines.shared import folders

# tensorflow-transform's two output folders (tft.TFTransformOutput's names).
TRANSFORM_FOLDERS = ("transform_fn", "transformed_metadata")


class NoRecordsError(DataError):
    """Every input was rejected: the run wrote dead letters and nothing else. ``main``: one line, status 1."""


def no_records_message(output_dir: str, kept: Optional[str] = None) -> str:
    """The one line for a run whose every input was rejected; ``kept``: the DST that still holds its previous
    dataset (the dead letters are then in the run's staging folder ``output_dir``)."""
    path = FileSystems.join(output_dir, DEAD_LETTER_DIR, DEAD_LETTER_FILE)
    try:
        with FileSystems.open(path) as handle:
            rejected = sum(1 for line in handle.read().splitlines() if line.strip())
    except Exception:  # the message must still point at the file
        rejected = "all"
    if kept is not None:
        outcome = f"{kept} still holds its previous dataset, unchanged"
    else:
        outcome = f"{output_dir} holds no dataset (no shards, no metadata.json)"
    return (
        f"no records written: every input was rejected ({rejected} dead letters), so {outcome}; see {path} for "
        "each file and why, fix or remove those inputs and rerun"
    )


def previous_release_files(where: "folders.Folder", kind: str) -> Optional[set]:
    """What a preprocess run of the release before owner records wrote in ``where``: its metadata.json, the
    shards it names, its dead-letter file and tensorflow-transform's two folders; None when ``where`` holds no
    metadata.json of that release."""
    data = where.read(METADATA_FILE)
    if data is None:
        return None
    try:
        shards = set(json.loads(data)["shards"])
    except (ValueError, KeyError, TypeError):
        return None
    files = {METADATA_FILE, *shards}
    for rel in (f"{DEAD_LETTER_DIR}/{DEAD_LETTER_FILE}",):
        if where.is_file(rel):
            files.add(rel)
    for folder in TRANSFORM_FOLDERS:
        files.update(where.files(folder))
    return files


def files_written(output_dir: str, metadata: Optional[DatasetMetadata]) -> set:
    """The files a run that wrote ``output_dir`` in place (gs://) wrote there: the shards its metadata names,
    its dead-letter file and tensorflow-transform's folders (written whole by this run)."""
    files = {f"{DEAD_LETTER_DIR}/{DEAD_LETTER_FILE}"}
    if metadata is not None:
        files.update(metadata.shards)
        if metadata.stats is not None:
            for folder in TRANSFORM_FOLDERS:
                files.update(f"{folder}/{rel}" for rel in storage.list_tree(f"{output_dir.rstrip('/')}/{folder}"))
    return files

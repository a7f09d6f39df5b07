"""The dead-letter output: every input that cannot become a record ends here, with its path and the reason.

``DST/dead_letter/dead_letter-00000-of-00001.jsonl`` (and likewise ``OUT/dead_letter/``): one JSON object per
line, ``{"path": ..., "error": ...}`` (plus ``"stage"``), sorted by path so reruns write identical bytes.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.common.deadletter_record import DeadLetter  # the record, re-exported beside its writer

DEAD_LETTER_DIR = "dead_letter"
DEAD_LETTER_FILE = "dead_letter-00000-of-00001.jsonl"


def _write_sorted(lines: list[str], path: str) -> int:
    with FileSystems.create(path, mime_type="application/jsonl") as handle:
        for line in sorted(lines):
            handle.write(line.encode("utf-8") + b"\n")
    return len(lines)


class WriteDeadLetters(beam.PTransform):
    """Writes a PCollection of ``DeadLetter`` to ``<output_dir>/dead_letter/`` (one sorted JSONL file).

    Dead letters are rare by nature, so gathering them in one place to sort is cheap; an empty file is written
    when there are none, so "no dead letters" is visible rather than ambiguous. Returns a PCollection with the
    single count.
    """

    def __init__(self, output_dir: str, namespace: str = "segflow"):
        super().__init__()
        self._path = FileSystems.join(output_dir, DEAD_LETTER_DIR, DEAD_LETTER_FILE)
        self._counter = Metrics.counter(namespace, "dead_letters")

    def expand(self, dead_letters: beam.PCollection) -> beam.PCollection:
        counter = self._counter
        path = self._path

        def _to_line(dl: DeadLetter) -> str:
            counter.inc()
            return dl.to_json()

        return (
            dead_letters
            | "ToJson" >> beam.Map(_to_line)
            | "Gather" >> beam.combiners.ToList()
            | "WriteSorted" >> beam.Map(_write_sorted, path)
        )


def read_dead_letters(output_dir: str) -> list[dict]:
    """Reads back every dead-letter line under ``<output_dir>/dead_letter/`` (for reports and tests)."""
    from pipelines.common import storage

    rows: list[dict] = []
    for listed in storage.list_folder(FileSystems.join(output_dir, DEAD_LETTER_DIR)):  # the folder is literal
        if listed.error is not None or not listed.path.endswith(".jsonl"):
            continue
        text = storage.read_bytes(listed.path).decode("utf-8")
        rows.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return rows

"""The dead-letter record alone, importable without Beam.

Dataset modules (``pipelines.datasets``) reject files with it, and the jobs' flag checks load those modules
before Beam: so the record lives here, and ``pipelines.common.deadletter`` (the Beam writer) re-exports it.
"""

from __future__ import annotations

import json
from typing import NamedTuple


class DeadLetter(NamedTuple):
    """One rejected input: where it is, why it was rejected, and which step rejected it."""

    path: str
    error: str
    stage: str = ""

    def to_json(self) -> str:
        # Key order puts "path" first, so sorting lines sorts by path.
        return json.dumps({"path": self.path, "error": self.error, "stage": self.stage})

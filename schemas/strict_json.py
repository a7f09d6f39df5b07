"""Strict JSON: the one way segflow turns a document into the text of a ``.json`` file it writes.

Python's ``json`` writes NaN and infinity as bare ``NaN``/``Infinity``, which strict readers (jq, JavaScript's
``JSON.parse``, BigQuery) reject. Every segflow JSON file goes through ``dumps``, which never writes them:

- a report of measured figures (``metrics.json``, ``evaluation.json``) passes ``absent_as_null=True``: a figure
  that could not be computed (the IoU of a class seen nowhere, the loss of a run that diverged) is ``null``;
- anything else (``metadata.json``, ``segflow_model.json``, ``config.json``, ``summary.json``) holds no figure
  that may be missing: a non-finite number there is refused with ``NonFiniteError`` naming where it is, and
  nothing is written.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from schemas.errors import SegflowError


class NonFiniteError(SegflowError, ValueError):
    """A document to be written as JSON holds NaN or infinity where no figure may be absent (exit status 1)."""

    exit_code = 1


def finite_or_none(value: Any) -> Optional[float]:
    """``value`` as a float, or None (JSON ``null``) when it is None, NaN or infinite: an absent figure."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def with_absent_as_null(doc: Any) -> Any:
    """A copy of ``doc`` (dicts, lists and tuples, to any depth) whose non-finite floats are None."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {key: with_absent_as_null(value) for key, value in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [with_absent_as_null(value) for value in doc]
    return doc


def _non_finite_at(doc: Any, where: str = "") -> Optional[tuple[str, float]]:
    """The first non-finite float in ``doc`` and its place (``counts.train``, ``stats.channel_std[2]``)."""
    if isinstance(doc, float) and not math.isfinite(doc):
        return where or "the document", doc
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, (list, tuple)) else ()
    for key, value in items:
        place = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        found = _non_finite_at(value, place)
        if found is not None:
            return found
    return None


def dumps(
    doc: Any,
    *,
    what: str = "a JSON file",
    absent_as_null: bool = False,
    indent: Optional[int] = 2,
    sort_keys: bool = True,
) -> str:
    """``doc`` as strict JSON text (indented, keys sorted unless told otherwise; no trailing newline).

    ``absent_as_null``: non-finite floats are written as null (a report of figures, see the module docstring);
    otherwise one raises ``NonFiniteError`` naming ``what`` (the file) and where in ``doc`` it is."""
    if absent_as_null:
        doc = with_absent_as_null(doc)
    try:
        return json.dumps(doc, indent=indent, sort_keys=sort_keys, allow_nan=False)
    except ValueError:
        found = _non_finite_at(doc)
        if found is None:  # another ValueError (a circular reference): not ours to explain
            raise
        place, value = found
        raise NonFiniteError(
            f"{what} not written: its {place} is {value}, which strict JSON cannot hold (a segflow bug: "
            "please report it with the command that ran)"
        ) from None

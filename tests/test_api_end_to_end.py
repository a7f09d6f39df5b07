"""docs/api.md's "In one process" example runs as written: preprocess → train → infer → evaluate, each through
its Python API, in one interpreter (the notebook route), on generated Pet-layout data."""

from __future__ import annotations

import json
import pathlib
import tempfile

import pytest

from tests.test_api_preprocess import DOCS, python_blocks

pytestmark = pytest.mark.slow


def test_the_whole_mission_runs_in_one_process(tmp_path, monkeypatch):
    (block,) = python_blocks((DOCS / "api.md").read_text(encoding="utf-8"), "In one process")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict = {"__name__": "docs_api_in_one_process"}
    exec(compile(block, "docs/api.md (## In one process)", "exec"), namespace)  # noqa: S102 - the doc's own code
    work_dir = pathlib.Path(namespace["work_dir"])
    assert work_dir.parent == tmp_path
    # Each stage left its published output where the next one read it.
    assert (work_dir / "records" / "metadata.json").is_file()
    assert (work_dir / "job" / "model" / "segflow_model.json").is_file()
    masks = sorted((work_dir / "predictions" / "masks").glob("*.png"))
    assert len(masks) == len(namespace["held_out"])
    document = json.loads((work_dir / "predictions" / "evaluation.json").read_text())
    assert document["images"] == len(masks) and 0.0 <= document["mean_iou"] <= 1.0

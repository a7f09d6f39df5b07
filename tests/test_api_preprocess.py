"""The documented Python API of preprocess runs as documented: every ```python block of docs/api.md's
``## Preprocess`` section, and the Python example of docs/preprocess.md."""

from __future__ import annotations

import pathlib
import re
import tempfile

import pytest

from pipelines.tools import synthetic

pytestmark = pytest.mark.slow

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def python_blocks(markdown: str, section: str | None = None) -> list[str]:
    """The ```python blocks of ``markdown`` (of its ``## section`` only, when given), in order."""
    if section is not None:
        parts = re.split(r"^## ", markdown, flags=re.M)
        (markdown,) = [p for p in parts if p.split("\n", 1)[0].strip() == section]
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.M | re.S)


def test_python_blocks_are_found():
    text = "## A\n```python\nx = 1\n```\n## B\n```python\ny = 2\n```\n```\nnot python\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]
    assert python_blocks(text, "B") == ["y = 2\n"]


def test_api_examples_run(tmp_path, monkeypatch):
    """The section's blocks run in order in one namespace, as a reader would paste them; the set-up block's
    ``tempfile.mkdtemp()`` lands in the test's folder."""
    blocks = python_blocks((DOCS / "api.md").read_text(encoding="utf-8"), "Preprocess")
    assert len(blocks) >= 3, "the set-up, run(config) and a user pipeline with segflow's transforms"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict = {"__name__": "docs_api_preprocess"}
    for block in blocks:
        exec(compile(block, "docs/api.md (## Preprocess)", "exec"), namespace)  # noqa: S102 - the doc's own code
    assert namespace["cats"], "the sample data holds no cat: the pipeline example checked nothing"
    assert (pathlib.Path(namespace["work_dir"]) / "records" / "metadata.json").is_file()


def test_preprocess_doc_example_runs(tmp_path, capsys):
    (block,) = python_blocks((DOCS / "preprocess.md").read_text(encoding="utf-8"))
    src, dst = tmp_path / "pet", tmp_path / "records"
    synthetic.write_pet_dataset(str(src), 6, size=(48, 64))
    exec(compile(block, "docs/preprocess.md", "exec"), {"src": str(src), "dst": str(dst)})  # noqa: S102
    assert "records per split" in capsys.readouterr().out
    assert (dst / "metadata.json").is_file()

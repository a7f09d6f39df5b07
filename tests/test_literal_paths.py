"""Folder names are literal where paths cross modules: folders with glob characters are literal for the shared helpers
(dead-letter reading, tree removal, the report's ground-truth index) and when TensorFlow loads a SavedModel."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines import datasets
from pipelines.common import storage
from pipelines.common.deadletter import DEAD_LETTER_DIR, DEAD_LETTER_FILE, read_dead_letters
from pipelines.evaluate.report_page import _ground_truth_index
from pipelines.infer.model import SegflowModel


def _dead_letter_file(folder: pathlib.Path, path: str) -> None:
    (folder / DEAD_LETTER_DIR).mkdir(parents=True)
    (folder / DEAD_LETTER_DIR / DEAD_LETTER_FILE).write_text(json.dumps({"path": path, "error": "x"}) + "\n")


def test_read_dead_letters_reads_the_named_folder(tmp_path):
    """``out[1]`` is a folder name: its dead letters are read, not ``out1``'s (a glob would match ``out1``)."""
    _dead_letter_file(tmp_path / "out[1]", "mine.jpg")
    _dead_letter_file(tmp_path / "out1", "other.jpg")
    assert [d["path"] for d in read_dead_letters(str(tmp_path / "out[1]"))] == ["mine.jpg"]


def test_delete_tree_is_literal_and_never_follows_links(tmp_path):
    """Deleting ``out[1]`` removes that folder only: ``out1`` beside it stays, and so does whatever a link
    inside it points at (the link itself goes)."""
    keep = tmp_path / "elsewhere"
    keep.mkdir()
    (keep / "precious.png").write_bytes(b"x")
    (tmp_path / "out1").mkdir()
    (tmp_path / "out1" / "a.png").write_bytes(b"x")
    doomed = tmp_path / "out[1]"
    (doomed / "sub").mkdir(parents=True)
    (doomed / "sub" / "a.png").write_bytes(b"x")
    os.symlink(keep, doomed / "linked_folder")
    os.symlink(keep / "precious.png", doomed / "linked_file.png")
    assert storage.delete_tree(str(doomed)) == 2  # sub/a.png and the file link; the folder link is not a file
    assert not doomed.exists() and (tmp_path / "out1" / "a.png").exists()
    assert (keep / "precious.png").read_bytes() == b"x"


def test_report_ground_truth_index_is_literal(tmp_path):
    """The report pairs with the ground truth of the folder named, not of a folder a glob would also match."""
    for name in ("src[1]", "src1"):
        trimaps = tmp_path / name / "annotations" / "trimaps"
        trimaps.mkdir(parents=True)
        Image.fromarray(np.ones((4, 4), np.uint8)).save(trimaps / f"{'mine' if name == 'src[1]' else 'other'}_1.png")
    index = _ground_truth_index(str(tmp_path / "src[1]"), datasets.get("pet"))
    assert list(index) == ["mine_1"]


@pytest.mark.slow  # the model is a training (pet_job_dir)
def test_saved_model_in_a_folder_with_glob_characters_loads(pet_job_dir, tmp_path):
    """TensorFlow's variable reader globs: a model in ``m[1]`` failed to load (or would have read ``m1``'s
    variables). It loads through a plain-named link, and serves."""
    model_dir = tmp_path / "m[1]"
    shutil.copytree(pet_job_dir / "model", model_dir)
    model = SegflowModel(str(model_dir))
    image, height, width = model.preprocess(_png(20, 30))
    assert (height, width) == (20, 30) and image.dtype == np.uint8


def _png(height: int, width: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_read_bytes_gives_a_file_as_stored_whatever_its_name(tmp_path):
    """``storage.read_bytes`` is the file's bytes: a ``.gz`` is not inflated on the way (Beam's ``FileSystems.open``
    would), a ``[1]`` in a name is literal, and a ``file://`` URL reads the same file."""
    import gzip

    packed = gzip.compress(b"label map", mtime=0)
    (tmp_path / "mask[1].png.gz").write_bytes(packed)
    (tmp_path / "mask1.png.gz").write_bytes(b"another file")
    assert storage.read_bytes(str(tmp_path / "mask[1].png.gz")) == packed
    assert storage.read_bytes(f"file://{tmp_path}/mask[1].png.gz") == packed

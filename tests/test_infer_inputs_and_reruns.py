"""Inference and evaluation at the edges: literal folders, inputs that vanished or crashed the job, true counts,
a pixel limit, reruns into a used OUT, evaluations that pair nothing. DirectRunner, the tiny trained Pet model."""

import json
import os
import pathlib
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines import evaluate, infer
from pipelines.infer import job as infer_job, options as infer_options, transforms as infer_transforms
from pipelines.tools import synthetic
from schemas.errors import SegflowError

pytestmark = pytest.mark.slow

BEAM = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


def _infer(model_dir, inputs, out, **config) -> infer.InferResult:
    return infer.run(
        infer.InferConfig(model_dir=str(model_dir), input=[str(p) for p in inputs], output_dir=str(out), **config), BEAM
    )


def _evaluate(predictions, ground_truth) -> dict:
    config = evaluate.EvaluateConfig(predictions=str(predictions), ground_truth=str(ground_truth), dataset="pet")
    return evaluate.run(config, BEAM).document


def _summary(out) -> dict:
    return json.loads((pathlib.Path(out) / "summary.json").read_text())


def _dead(out) -> list[dict]:
    """The dead letters, read by their literal path (the folder name may hold glob characters)."""
    path = pathlib.Path(out) / "dead_letter" / "dead_letter-00000-of-00001.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _one_line_exit(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message.strip() and "\n" not in message.strip() and "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def images(pet_raw_dir) -> list[pathlib.Path]:
    return sorted((pet_raw_dir / "images").glob("*.jpg"))


# ------------------------------------------------------------------------------------ 8, 9: names that vanished
def test_odd_file_names_each_end_in_one_place(pet_job_dir, images, tmp_path):
    """A non-UTF-8 name is a dead letter with a printable path (the rest completes, summary written); a
    backslash is an ordinary character of a name, so that file is matched, counted and written; hidden files
    are not matched by '*' (as in a shell), only by a pattern part starting with '.'."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(images[0], src / "plain.jpg")
    shutil.copy(images[1], src / "back\\slash.jpg")
    shutil.copy(images[2], os.fsdecode(bytes(src) + b"/bad\xff.jpg"))
    shutil.copy(images[3], src / ".hidden.jpg")
    os.symlink(tmp_path / "gone.jpg", src / "link.jpg")
    out = tmp_path / "out"
    result = _infer(pet_job_dir / "model", [src / "*.jpg"], out)
    assert result.inputs_matched == 4 and result.images_written == 2 and result.dead_letters == 2
    summary = _summary(out)
    assert sorted(pathlib.Path(p).name for p in summary["outputs"]) == ["back\\slash.jpg", "plain.jpg"]
    assert summary["inputs_seen"] == 4
    bad, link = _dead(out)
    assert bad["path"] == str(src) + "/bad\\xff.jpg" and "not valid UTF-8" in bad["error"]
    assert link["path"] == str(src / "link.jpg") and link["error"].startswith("broken symbolic link")
    # Stems take the part after a backslash too (base_stem also accepts Windows-style paths): "slash".
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["plain.png", "slash.png"]

    hidden = _infer(pet_job_dir / "model", [src / ".*.jpg"], tmp_path / "hidden")
    assert hidden.inputs_matched == 1 and hidden.images_written == 1


# ------------------------------------------------------------------------------------ 13: true counts, flags
def test_overlapping_globs_read_each_file_once_into_an_output_dir_named_literally(pet_job_dir, images, tmp_path):
    """One file named three ways is read, counted and written once. Clearing ``out[1]`` never touches ``out1``
    (which a glob ``out[1]`` would name)."""
    src = tmp_path / "in"
    src.mkdir()
    for image in images[:3]:
        shutil.copy(image, src / image.name)
    first = images[0].name
    patterns = [src / "*.jpg", src / first, f"{src}/./{first[:3]}*.jpg"]  # one file, three ways
    sibling = tmp_path / "out1"
    (sibling / "masks").mkdir(parents=True)
    (sibling / "masks" / "other.png").write_bytes(b"z")
    (sibling / "summary.json").write_text("{}\n")
    out = tmp_path / "out[1]"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "stale.png").write_bytes(b"old")
    # The previous release's output (no owner record): adopted from its summary, so stale.png is its file.
    (out / "summary.json").write_text('{"outputs": {"in/stale.jpg": "stale"}}\n')
    result = _infer(pet_job_dir / "model", patterns, out)
    summary = _summary(out)
    assert result.inputs_matched == 3 == result.images_written == summary["images_written"]
    assert summary["inputs_seen"] == 3 and len(summary["outputs"]) == 3
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(
        i.stem + ".png" for i in images[:3]
    )  # plain names: no file was seen twice; the previous output's stale.png is gone
    assert _dead(out) == []
    assert (sibling / "masks" / "other.png").read_bytes() == b"z" and (sibling / "summary.json").exists()


def test_input_naming_a_folder_fails_with_one_line(pet_job_dir, images, tmp_path, capfd):
    """The command line's path (``main``, as ``python -m pipelines.infer`` runs it): non-zero status, one line on
    stderr, nothing written."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(images[0], src / images[0].name)
    out = tmp_path / "out"
    capfd.readouterr()
    status = infer_job.main(["--model_dir", str(pet_job_dir / "model"), "--input", str(src), "--output_dir", str(out)])
    err = capfd.readouterr().err
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is a folder" in lines[0] and f"{src}/*.jpg" in lines[0], err
    assert not out.exists()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (RGB) and whose pixel data is cut short: decoding it
    would fail, so a size-based dead letter proves the size was read from the header first."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4)
        + idat
        + struct.pack(">I", zlib.crc32(idat))
    )


def test_pixel_limit_is_checked_from_the_header(pet_job_dir, images, tmp_path):
    assert infer_transforms.pixel_limit_reason(_png_header(12000, 12000), infer_options.DEFAULT_MAX_PIXELS).startswith(
        "image is 12000x12000 = 144000000 pixels, over --max_pixels"
    )
    assert infer_transforms.pixel_limit_reason(images[0].read_bytes(), infer_options.DEFAULT_MAX_PIXELS) is None
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(images[0], src / "small.jpg")
    (src / "huge.png").write_bytes(_png_header(12000, 12000))
    Image.new("RGB", (100, 80), (40, 90, 160)).save(src / "wide.png")
    with Image.open(images[0]) as image:
        limit = image.width * image.height  # the Pet image passes; 100x80 does not
    assert limit < 8000
    result = _infer(pet_job_dir / "model", [src / "*"], tmp_path / "out", max_pixels=limit)
    assert result.images_written == 1 and result.dead_letters == 2
    reasons = {pathlib.Path(d["path"]).name: d["error"] for d in _dead(tmp_path / "out")}
    assert "12000x12000 = 144000000 pixels" in reasons["huge.png"]
    assert f"100x80 = 8000 pixels, over --max_pixels {limit}" in reasons["wide.png"]


# ------------------------------------------------------------------------------------ 13: a rerun into a used OUT
def test_rerun_clears_only_the_jobs_own_outputs(pet_job_dir, pet_raw_dir, images, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for image in images[:3]:
        shutil.copy(image, src / image.name)
    out = tmp_path / "out"
    _infer(pet_job_dir / "model", [src / "*.jpg"], out, instances=True, overlay=True)
    # What is not the job's own: a note, another folder, a link inside masks/ to a folder outside OUT.
    (out / "notes.txt").write_text("mine\n")
    (out / "other").mkdir()
    (out / "other" / "keep.png").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.png").write_bytes(b"y")
    os.symlink(elsewhere, out / "masks" / "linked")

    second = tmp_path / "in2"
    second.mkdir()
    shutil.copy(images[3], second / images[3].name)
    _infer(pet_job_dir / "model", [second / "*.jpg"], out)
    # The link is not the job's own (OUT's owner record does not list it): kept, and never followed.
    assert sorted(p.name for p in (out / "masks").iterdir()) == [images[3].stem + ".png", "linked"]
    (out / "masks" / "linked").unlink()
    assert sorted(p.name for p in (out / "color").iterdir()) == [images[3].stem + ".png"]
    assert not (out / "overlay").exists() and not (out / "instances").exists()
    assert list(_summary(out)["outputs"].values()) == [images[3].stem]
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "other" / "keep.png").read_bytes() == b"x"
    assert (elsewhere / "precious.png").read_bytes() == b"y"
    doc = _evaluate(out / "masks", pet_raw_dir)
    assert doc["images"] == 1  # only this run's mask is scored


def test_inputs_inside_the_folders_a_rerun_clears_are_refused(pet_job_dir, tmp_path):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(out / "masks" / "a.png")
    with pytest.raises(SegflowError) as err:
        _infer(pet_job_dir / "model", [out / "masks" / "*.png"], out)
    assert "holds files segflow did not write (e.g. masks/a.png)" in _one_line_exit(err)
    assert (out / "masks" / "a.png").exists()


# ------------------------------------------------------------------------------------ 2: --model_dir literal
def test_remote_model_dir_with_glob_characters_is_literal(gcs, pet_job_dir, images, tmp_path):
    """``JOB[1]/model`` is that folder: the copy to the local cache must not list ``JOB1/model``. The gs://
    inputs, matched inside the pipeline by two overlapping globs, are each read once and counted once."""
    root = gcs.prefix("literal-model")
    model = gcs.upload_dir(pathlib.Path(pet_job_dir) / "model", f"{root}/JOB[1]/model")
    gcs.upload_bytes(f"{root}/JOB1/model/saved_model.pb", b"not a model")
    gcs.upload_bytes(f"{root}/JOB1/model/segflow_model.json", b"{}")
    for image in images[:2]:
        gcs.upload_bytes(f"{root}/in/{image.name}", image.read_bytes())
    patterns = [f"{root}/in/*.jpg", f"{root}/in/{images[0].name[:3]}*.jpg"]
    result = _infer(model, patterns, tmp_path / "out", model_cache_dir=str(tmp_path / "cache"))
    assert result.inputs_matched == 2 == result.images_written
    assert _summary(tmp_path / "out")["inputs_seen"] == 2
    for image in images[:2]:
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / f"{image.stem}.png"))
        assert set(np.unique(mask)) <= {1, 2, 3}


# ------------------------------------------------------------------------------------ 2, 14: evaluate
def _pet_truth(root: pathlib.Path, seed: int) -> list[str]:
    return synthetic.write_pet_dataset(str(root), 3, size=(20, 24), seed=seed)


def test_evaluate_folders_with_glob_characters_are_literal(tmp_path):
    """``src[1]`` and ``pred[1]`` are those folders, not ``src1`` / ``pred1``."""
    ids = _pet_truth(tmp_path / "src[1]", seed=1)
    decoy_ids = _pet_truth(tmp_path / "src1", seed=1)
    assert ids == decoy_ids
    for example in ids:  # the decoy ground truth disagrees everywhere with the real one
        path = tmp_path / "src1" / "annotations" / "trimaps" / f"{example}.png"
        truth = np.asarray(Image.open(tmp_path / "src[1]" / "annotations" / "trimaps" / f"{example}.png"))
        Image.fromarray((truth % 3 + 1).astype(np.uint8)).save(path)
    for folder in ("pred[1]", "pred1"):  # both hold the real ground truth: only src[1] scores them 1.0
        (tmp_path / folder / "masks").mkdir(parents=True)
        for example in ids:
            shutil.copy(
                tmp_path / "src[1]" / "annotations" / "trimaps" / f"{example}.png",
                tmp_path / folder / "masks" / f"{example}.png",
            )
    doc = _evaluate(tmp_path / "pred[1]" / "masks", tmp_path / "src[1]")
    assert doc["images"] == 3 and doc["mean_iou"] == 1.0 and doc["pixel_accuracy"] == 1.0


def test_evaluate_lists_missing_and_unmatched_predictions(tmp_path):
    ids = _pet_truth(tmp_path / "src", seed=2)
    preds = tmp_path / "out" / "masks"
    preds.mkdir(parents=True)
    for example in ids[1:]:
        shutil.copy(tmp_path / "src" / "annotations" / "trimaps" / f"{example}.png", preds / f"{example}.png")
    Image.fromarray(np.ones((20, 24), np.uint8)).save(preds / "stranger.png")
    doc = _evaluate(preds, tmp_path / "src")
    assert doc["missing_predictions"] == 1 and doc["missing_prediction_ids"] == [ids[0]]
    assert doc["unmatched_predictions"] == 1 and doc["unmatched_prediction_paths"] == [str(preds / "stranger.png")]
    on_disk = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert on_disk["missing_prediction_ids"] == [ids[0]]


def test_evaluate_that_pairs_nothing_fails_with_one_line(tmp_path):
    ids = _pet_truth(tmp_path / "src", seed=3)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "instances").mkdir()
    for example in ids:
        trimap = tmp_path / "src" / "annotations" / "trimaps" / f"{example}.png"
        shutil.copy(trimap, out / "masks" / f"{example}.png")
        shutil.copy(trimap, out / "instances" / f"{example}_instanceIds.png")
    with pytest.raises(SegflowError) as err:
        _evaluate(out / "instances", tmp_path / "src")
    message = _one_line_exit(err)
    assert f"0 of 3 predictions in {out / 'instances'} pair with the 3 ground-truth ids" in message
    assert f"did you mean --predictions {out / 'masks'}?" in message
    with pytest.raises(SegflowError) as err:
        _evaluate(out, tmp_path / "src")
    assert f"did you mean --predictions {out / 'masks'}?" in _one_line_exit(err)
    assert not (out / "evaluation.json").exists() and not (tmp_path / "evaluation.json").exists()

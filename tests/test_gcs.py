"""gs:// end to end against a real GCS JSON-API server on loopback (the ``gcs`` fixture).

Each job runs for real (DirectRunner, multi-processing workers in their own processes, which inherit
``STORAGE_EMULATOR_HOST``) with every input and output path a ``gs://`` URL; the checks read the bucket back with
an independent ``google-cloud-storage`` client and compare with the same job run on local paths.
"""

from __future__ import annotations

import io
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

BEAM_FLAGS = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]  # workers: own processes


def _shards(names: list[str]) -> list[str]:
    return sorted(n for n in names if n.endswith(".tfrecord.gz") and "/" not in n)


# ---------------------------------------------------------------------------------------------- preprocess


@pytest.fixture(scope="module")
def pet_on_gcs(gcs, pet_raw_dir):
    """The Pet-layout sample data uploaded to the bucket, plus one file no decoder can read."""
    src = gcs.upload_dir(pet_raw_dir, gcs.prefix("pet-raw"))
    gcs.upload_bytes(f"{src}/images/Broken_1.jpg", b"this is not an image")
    return src


@pytest.fixture(scope="module")
def pet_preprocessed_on_gcs(gcs, pet_on_gcs):
    from pipelines.preprocess import PreprocessConfig, run

    dst = gcs.prefix("pet-records")
    config = PreprocessConfig(dataset="pet", input_dir=pet_on_gcs, output_dir=dst, image_size=(32, 32))
    return dst, run(config, BEAM_FLAGS).metadata


def test_preprocess_gcs_layout(gcs, pet_preprocessed_on_gcs, tmp_path):
    dst, metadata = pet_preprocessed_on_gcs
    names = gcs.list(dst)
    assert "metadata.json" in names
    assert _shards(names), names
    assert any(n.startswith("transform_fn/") for n in names), names
    assert any(n.startswith("dead_letter/") and n.endswith(".jsonl") for n in names), names
    # The job's temp dir (tensorflow-transform scratch space) is removed from the bucket afterwards.
    assert not [n for n in names if ".segflow-tmp" in n], names

    written = json.loads(gcs.read_bytes(f"{dst}/metadata.json"))
    assert written["inputs_seen"] == sum(written["source_counts"].values()) + written["dead_letter_count"]
    assert written["dead_letter_count"] >= 1
    assert written["counts"] == metadata.counts

    lines = []
    for n in names:
        if n.startswith("dead_letter/"):
            lines += [json.loads(x) for x in gcs.read_bytes(f"{dst}/{n}").decode().splitlines() if x.strip()]
    broken = [d for d in lines if d["path"].endswith("images/Broken_1.jpg")]
    assert len(broken) == 1 and broken[0]["path"].startswith("gs://") and broken[0]["error"], lines
    assert len(lines) == written["dead_letter_count"]

    # Every record in the bucket is a readable GZIP TFRecord of tf.train.Examples; totals match metadata.
    import tensorflow as tf

    total = 0
    for n in _shards(names):
        local = tmp_path / n
        local.write_bytes(gcs.read_bytes(f"{dst}/{n}"))
        for raw in tf.data.TFRecordDataset(str(local), compression_type="GZIP"):
            tf.train.Example.FromString(raw.numpy())
            total += 1
    assert total == sum(written["counts"].values())


def test_preprocess_gcs_matches_local(gcs, pet_preprocessed_on_gcs, pet_records_dir):
    """Same inputs and flags on gs:// and on local disk give byte-identical shards and the same counts."""
    dst, _ = pet_preprocessed_on_gcs
    remote = _shards(gcs.list(dst))
    local_dir = pathlib.Path(pet_records_dir)
    local = sorted(p.name for p in local_dir.glob("*.tfrecord.gz"))
    assert remote == local
    for name in remote:
        assert gcs.read_bytes(f"{dst}/{name}") == (local_dir / name).read_bytes(), name
    # The tensorflow-transform graph is published completely (same files as the local run's).
    for folder in ("transform_fn", "transformed_metadata"):
        remote_files = [n for n in gcs.list(dst) if n.startswith(folder + "/")]
        local_files = sorted(
            p.relative_to(local_dir).as_posix() for p in (local_dir / folder).rglob("*") if p.is_file()
        )
        assert remote_files == local_files and remote_files, folder
    remote_meta = json.loads(gcs.read_bytes(f"{dst}/metadata.json"))
    local_meta = json.loads((local_dir / "metadata.json").read_text())
    assert remote_meta["counts"] == local_meta["counts"]
    # The planted unreadable file is the only difference.
    assert remote_meta["dead_letter_count"] == local_meta["dead_letter_count"] + 1


def test_preprocess_gcs_empty_input_fails_fast(gcs, capsys):
    from pipelines.preprocess import main

    empty = gcs.prefix("nothing-here")
    rc = main(
        [
            "--dataset",
            "pet",
            "--input_dir",
            empty,
            "--output_dir",
            gcs.prefix("unused"),
            "--image_size",
            "32",
            *BEAM_FLAGS,
        ]
    )
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and empty in err[0], err


# ---------------------------------------------------------------------------------------------- infer


def test_infer_gcs_end_to_end(gcs, pet_job_dir, pet_raw_dir):
    """gs:// images, a gs:// model dir (copied to a local cache through FileSystems) and gs:// outputs."""
    from pipelines import infer

    model = gcs.upload_dir(pathlib.Path(pet_job_dir) / "model", gcs.prefix("infer-model"))
    images = gcs.prefix("infer-images")
    sources = sorted((pathlib.Path(pet_raw_dir) / "images").glob("*.jpg"))[:4]
    for path in sources:
        gcs.upload_bytes(f"{images}/{path.name}", path.read_bytes())
    gcs.upload_bytes(f"{images}/not_an_image.jpg", b"\x00garbage")
    out = gcs.prefix("infer-out")
    result = infer.run(
        infer.InferConfig(model_dir=model, input=[f"{images}/*.jpg"], output_dir=out, instances=True), BEAM_FLAGS
    )
    assert result.inputs_matched == len(sources) + 1

    names = gcs.list(out)
    for path in sources:
        assert f"masks/{path.stem}.png" in names and f"color/{path.stem}.png" in names, names
        mask = np.asarray(Image.open(io.BytesIO(gcs.read_bytes(f"{out}/masks/{path.stem}.png"))))
        assert mask.shape == Image.open(path).size[::-1]  # the input's own size
        assert set(np.unique(mask)) <= {1, 2, 3}  # Pet trimap values
        assert any(n.startswith(f"instances/{path.stem}") for n in names)
    dead = [
        json.loads(line)
        for n in names
        if n.startswith("dead_letter/")
        for line in gcs.read_bytes(f"{out}/{n}").decode().splitlines()
        if line.strip()
    ]
    assert [d["path"] for d in dead] == [f"{images}/not_an_image.jpg"]
    assert not [n for n in names if "not_an_image" in n and not n.startswith("dead_letter/")]

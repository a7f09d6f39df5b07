"""Publication: what preprocess leaves in DST and beside it, when reruns change, fail or are killed.

- Stale-shard cleanup lists the named folder literally: ``out[1]`` never touches ``out1``.
- ``metadata.json`` is deleted before DST changes and written last, naming every shard with its record count and
  size as stored; a failed or killed rerun leaves no metadata.json.
- A dataset without train examples preprocesses (stats absent, no transform_fn/); all-bad input fails in one line.
- Scratch folders of killed runs (``.segflow-tmp-*``) are removed by a later run, never a live run's.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipelines.tools import synthetic
from tests.fixtures import warm

pytestmark = pytest.mark.slow

_FAST = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]
_SHARD = re.compile(r"^(train|val|test)-\d{5}-of-\d{5}\.tfrecord\.gz$")  # the contract's shard names


def _shard_files(dst: pathlib.Path) -> dict[str, int]:
    """{shard file name: size} of the shard files directly in ``dst`` (listed, not globbed)."""
    return {p.name: p.stat().st_size for p in sorted(dst.iterdir()) if p.is_file() and _SHARD.match(p.name)}


def _count_records(path: pathlib.Path) -> int:
    import tensorflow as tf

    return sum(1 for _ in tf.data.TFRecordDataset(str(path), compression_type="GZIP"))


def _assert_published(dst: pathlib.Path) -> dict:
    """DST's metadata.json names exactly the shard files present, with their true record counts and sizes."""
    meta = json.loads((dst / "metadata.json").read_text())
    on_disk = _shard_files(dst)
    assert "shards" in meta, f"metadata.json names no shards; the shards present are {sorted(on_disk)}"
    assert sorted(meta["shards"]) == sorted(on_disk), (meta["shards"], on_disk)
    for name, entry in meta["shards"].items():
        assert entry == {"records": _count_records(dst / name), "bytes": on_disk[name]}, name
    for split in ("train", "val", "test"):
        names = [n for n in meta["shards"] if n.startswith(f"{split}-")]
        assert len(names) == meta["num_shards"].get(split, 0)
        assert sum(meta["shards"][n]["records"] for n in names) == meta["counts"][split]
    return meta


def _cli(*args: str, **popen) -> warm.Process:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return warm.Process(
        [sys.executable, "-m", "pipelines.preprocess", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


# ------------------------------------------------------------------------------------------------ publication
def test_fixture_metadata_names_every_shard(pet_records_dir, cityscapes_records_dir):
    """A normal run: the manifest is the shard files, their record counts (read back) and sizes on disk."""
    for dst in (pet_records_dir, cityscapes_records_dir):
        meta = _assert_published(dst)
        assert meta["stats"] is not None and meta["stats_absent_reason"] is None
        assert (dst / "transform_fn" / "saved_model.pb").is_file()


def test_cityscapes_with_only_val(tmp_path):
    """A Cityscapes evaluation set (``leftImg8bit/val`` only) preprocesses into a complete, published DST."""
    from pipelines.preprocess import PreprocessConfig, run
    from pipelines.preprocess.metadata import NO_TRAIN_REASON

    src, dst = tmp_path / "cs", tmp_path / "dst"
    synthetic.write_cityscapes_dataset(str(src), frames_per_split={"val": 2}, size=(32, 64), seed=1)
    result = run(PreprocessConfig("cityscapes", str(src), str(dst), image_size=(16, 32)), _FAST)
    meta = result.metadata
    assert result.counts == meta.counts == {"train": 0, "val": 2, "test": 0} and meta.stats is None
    assert result.output_dir == str(dst) and result.dead_letter_count == 0
    assert meta.stats_absent_reason == NO_TRAIN_REASON
    written = _assert_published(dst)
    assert written["stats"] is None and written["stats_absent_reason"] == NO_TRAIN_REASON
    assert not (dst / "transform_fn").exists()
    assert "no statistics" in result.summary()


def test_all_bad_rerun_fails_in_one_line_and_keeps_the_previous_dataset(pet_records_dir, tmp_path):
    """Every input a dead letter is a failed rerun: exit 1, one stderr line pointing at the run's dead-letter
    file (in its staging folder); DST keeps its previous dataset, byte for byte."""
    dst = tmp_path / "dst"
    shutil.copytree(pet_records_dir, dst)
    before = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    before = {name: data for name, data in before.items() if not name.startswith(".segflow/")}
    src = tmp_path / "bad"
    for i in range(3):
        synthetic.write_file(str(src / "images" / f"Abyssinian_{i + 1}.jpg"), b"not an image")
        synthetic.write_file(str(src / "annotations" / "trimaps" / f"Abyssinian_{i + 1}.png"), b"not a png")
    proc = _cli("--dataset", "pet", "--input_dir", str(src), "--output_dir", str(dst), "--image_size", "16", *_FAST)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("pipelines.preprocess: error:")]
    assert len(lines) == 1, err
    (dead_letters,) = (dst / ".segflow").glob("run-*/dead_letter/dead_letter-00000-of-00001.jsonl")
    assert str(dead_letters) in lines[0] and "every input was rejected (3 dead letters)" in lines[0]
    assert f"{dst} still holds its previous dataset, unchanged" in lines[0]
    assert len(dead_letters.read_text().splitlines()) == 3
    after = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert {name: data for name, data in after.items() if not name.startswith(".segflow/")} == before
    _assert_published(dst)


def test_killed_rerun_keeps_the_previous_output_and_the_next_run_removes_its_leftovers(
    pet_records_dir, tmp_path, capsys
):
    """SIGKILL a rerun with other data once its first new shard is written: DST still holds the previous
    complete output, byte for byte (the rerun wrote into its staging folder). The next run removes the killed
    run's staging and scratch folders, and publishes its own output.

    DST is ``out[1]`` (a legal folder name) beside ``out1``: the runs replace out[1]'s shards only. The next run's
    Pet dataset has every id in test.txt: it preprocesses with no statistics and no transform_fn/, and its
    summary says what it wrote."""
    from pipelines.preprocess import main, scratch

    sibling, dst, temp = tmp_path / "out1", tmp_path / "out[1]", tmp_path / "scratch"
    shutil.copytree(pet_records_dir, sibling)
    shutil.copytree(pet_records_dir, dst)  # an earlier run's complete output, transform_fn/ included
    before = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    before = {name: data for name, data in before.items() if not name.startswith(".segflow/")}
    beside = {p.relative_to(sibling).as_posix(): p.read_bytes() for p in sibling.rglob("*") if p.is_file()}
    killed_src, test_only_src = tmp_path / "src", tmp_path / "test_only"
    synthetic.write_pet_dataset(str(killed_src), 12, size=(40, 50), seed=5)
    synthetic.write_pet_dataset(str(test_only_src), 6, size=(40, 50), seed=3, test_fraction=1.0)

    def flags(src: pathlib.Path) -> list[str]:
        return [
            "--dataset",
            "pet",
            "--input_dir",
            str(src),
            "--output_dir",
            str(dst),
            "--image_size",
            "16",
            "--num_shards",
            "2",
            "--temp_location",
            str(temp),
            *_FAST,
        ]

    proc = _cli(*flags(killed_src))
    deadline = time.monotonic() + 300
    try:
        while not any(p.name.endswith("-of-00002.tfrecord.gz") for p in (dst / ".segflow").glob("run-*/*")):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no new shard appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    after = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert {name: data for name, data in after.items() if not name.startswith(".segflow/")} == before
    _assert_published(dst)
    assert list((dst / ".segflow").glob("run-*")), "the killed run left no staging folder (killed too late?)"
    left = [p.name for p in temp.iterdir() if p.name.startswith(scratch.PREFIX)]
    assert left, "the killed run left no scratch folder (was it killed too late?)"

    code = main(flags(test_only_src))
    out = capsys.readouterr().out
    assert code == 0
    assert [p.name for p in temp.iterdir()] == [], "scratch folders left behind"
    assert not list((dst / ".segflow").glob("run-*")), "the killed run's staging folder was left"
    after = {p.relative_to(sibling).as_posix(): p.read_bytes() for p in sibling.rglob("*") if p.is_file()}
    assert after == beside, "the sibling dataset out1 was changed"
    meta = _assert_published(dst)
    assert sorted(meta["shards"]) == ["test-00000-of-00002.tfrecord.gz", "test-00001-of-00002.tfrecord.gz"]
    assert meta["counts"] == {"train": 0, "val": 0, "test": 6}
    assert meta["stats"] is None and "no train records" in meta["stats_absent_reason"]
    assert not (dst / "transform_fn").exists() and not (dst / "transformed_metadata").exists()
    assert "test=6" in out and "wrote 2 shard files" in out and "no statistics and no transform_fn/" in out


def test_gcs_reruns_into_glob_named_folder(gcs, pet_records_dir, tmp_path):
    """The same on gs:// (Beam FileSystems matches globs there too, deletes included): reruns into ``out[1]``
    replace its shards and transform_fn/, then drop transform_fn/ for a dataset with only test examples, and
    ``out1`` keeps every object; metadata.json names the shards at their stored sizes."""
    from pipelines.preprocess import PreprocessConfig, run

    dst = gcs.prefix("out[1]")
    sibling = dst.replace("out[1]", "out1")
    gcs.upload_dir(pet_records_dir, dst)
    gcs.upload_dir(pet_records_dir, sibling)
    before = {n: gcs.read_bytes(f"{sibling}/{n}") for n in gcs.list(sibling)}
    for seed, test_fraction in ((4, 0.25), (5, 1.0)):
        src = tmp_path / f"src{seed}"
        synthetic.write_pet_dataset(str(src), 8, size=(40, 50), seed=seed, test_fraction=test_fraction)
        config = PreprocessConfig("pet", str(src), dst, image_size=(16, 16), num_shards=2)
        meta = run(config, _FAST).metadata
        assert {n: gcs.read_bytes(f"{sibling}/{n}") for n in gcs.list(sibling)} == before, "out1 was changed"
        names = gcs.list(dst)
        assert sorted(n for n in names if _SHARD.match(n)) == sorted(meta.shards)
        assert all(n.endswith("-of-00002.tfrecord.gz") for n in meta.shards)
        written = json.loads(gcs.read_bytes(f"{dst}/metadata.json"))
        for name, entry in written["shards"].items():
            assert entry["bytes"] == len(gcs.read_bytes(f"{dst}/{name}")), name
        transform = [n for n in names if n.startswith(("transform_fn/", "transformed_metadata/"))]
        if test_fraction < 1.0:
            assert written["stats"] is not None and "transform_fn/saved_model.pb" in transform
        else:
            assert written["stats"] is None and written["stats_absent_reason"] and not transform, names


# ----------------------------------------------------------------------------------------- the parts alone
def test_write_shards_writes_only_its_own_shards_in_the_named_folder(tmp_path):
    """The shard writer on its own: it writes out[1]'s shards and deletes nothing, there or in out1 (a glob
    match); an earlier run's shards go at publication, by the owner record (tests/test_ownership.py)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.preprocess import shards

    sibling, out = tmp_path / "out1", tmp_path / "out[1]"
    sibling.mkdir()
    out.mkdir()
    for folder in (sibling, out):
        (folder / "train-00000-of-00003.tfrecord.gz").write_bytes(b"old")
        (folder / "notes.tfrecord.gz").write_bytes(b"not a shard name")
    records = [shards.Record("train", shards.record_key(f"id_{i}", 0), b"x" * i) for i in range(5)]
    with beam.Pipeline(options=PipelineOptions(_FAST)) as p:
        plan = p | "Plan" >> beam.Create([{"train": 2}])
        written = p | beam.Create(records) | shards.WriteShards(str(out), plan)
        _ = written | beam.Map(lambda w: (tmp_path / "written.json").write_text(json.dumps(list(w))))
    assert sorted(p.name for p in sibling.iterdir()) == ["notes.tfrecord.gz", "train-00000-of-00003.tfrecord.gz"]
    assert sorted(p.name for p in out.iterdir()) == [
        "notes.tfrecord.gz",
        "train-00000-of-00002.tfrecord.gz",
        "train-00000-of-00003.tfrecord.gz",
        "train-00001-of-00002.tfrecord.gz",
    ]
    num_shards, records = json.loads((tmp_path / "written.json").read_text())  # a ShardsWritten
    assert num_shards == {"train": 2}
    assert records == {name: _count_records(out / name) for name in _shard_files(out) if name in records}
    assert sum(records.values()) == 5


def test_delete_files_is_literal(tmp_path):
    from pipelines.common import storage

    for folder in ("a[1]", "a1"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "f").write_text("x")
    storage.delete_files([str(tmp_path / "a[1]" / "f"), str(tmp_path / "a[1]" / "missing")])
    assert not (tmp_path / "a[1]" / "f").exists() and (tmp_path / "a1" / "f").exists()
    storage.remove_tree(str(tmp_path / "a[1]"))
    assert not (tmp_path / "a[1]").exists() and (tmp_path / "a1" / "f").exists()


def test_remove_dead_scratch_folders_only(tmp_path):
    """Only this DST's folders from this machine whose process is gone (exited, or its PID reused) are removed;
    a live run's, this process's, another DST's, another machine's, a remote run's and unparseable ones stay."""
    from pipelines.preprocess import scratch

    root, sibling, dst = tmp_path / "tmp[1]", tmp_path / "tmp1", tmp_path / "dst"
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live_start = scratch._start_time(live.pid)
        mine, other, host = (
            scratch.output_tag(str(dst)),
            scratch.output_tag(str(tmp_path / "other")),
            scratch.host_tag(),
        )
        dead = [
            f"{scratch.PREFIX}{mine}-{host}-{exited.pid}-0-0000000a",
            f"{scratch.PREFIX}{mine}-{host}-{live.pid}-{live_start + 1}-0000000b",
        ]  # PID reused since
        kept = [
            f"{scratch.PREFIX}{mine}-{host}-{live.pid}-{live_start}-0000000c",
            f"{scratch.PREFIX}{mine}-{host}-{os.getpid()}-0-0000000d",
            f"{scratch.PREFIX}{other}-{host}-{exited.pid}-0-0000000e",
            f"{scratch.PREFIX}{mine}-0badc0de-{exited.pid}-0-0000000f",
            f"{scratch.PREFIX}{mine}-remote-00000010",
            f"{scratch.PREFIX}0123456789ab",
        ]
        for folder in (root, sibling):
            for name in dead + kept:
                (folder / name / "spill").mkdir(parents=True)
                (folder / name / "spill" / "x.spill").write_bytes(b"x")
        removed = scratch.remove_dead(str(root), f"{dst}/./")  # another spelling of the same DST
        assert sorted(removed) == sorted(str(root / name) for name in dead)
        assert sorted(p.name for p in root.iterdir()) == sorted(kept)
        assert len(list(sibling.iterdir())) == len(dead + kept)  # a glob match of tmp[1], never listed
    finally:
        live.kill()
        live.wait()
    name = scratch.folder_name(str(dst), remote=False)
    assert scratch._LOCAL_NAME.match(name) and name.startswith(f"{scratch.PREFIX}{mine}-{host}-{os.getpid()}-")
    assert scratch.folder_name(str(dst), remote=True).startswith(f"{scratch.PREFIX}{mine}-remote-")

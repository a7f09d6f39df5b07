"""Output folders: ownership records, the one-writer lease (real processes), staged publication."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from pipelines.shared import ownership
from pipelines.shared.ownership import OutputFolderRefused


def _write(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def _publish(folder, kind, files, markers=(), **kw):
    with ownership.claim(str(folder), kind, "--output_dir", **kw) as claim:
        for rel, text in files.items():
            _write(os.path.join(claim.staging, rel), text)
        claim.publish(markers=markers)
    return claim


def test_new_folder_is_owned_and_published_by_rename(tmp_path):
    out = tmp_path / "out"
    _publish(out, "infer", {"masks/a.png": "1", "summary.json": "{}"}, markers=["summary.json"])
    assert (out / "masks/a.png").read_text() == "1"
    record = json.loads((out / ".segflow/infer.json").read_text())
    assert record["files"] == ["masks/a.png", "summary.json"]
    assert sorted(os.listdir(out / ".segflow")) == ["infer.json", "lease"]  # no staging folder left


def test_user_files_refuse_the_folder_before_anything_is_touched(tmp_path):
    out = tmp_path / "project"
    _write(str(out / "masks/hand_labelled.png"), "mine")
    with pytest.raises(OutputFolderRefused, match=r"holds files segflow did not write \(e.g. masks/hand_labelled"):
        ownership.claim(str(out), "infer", "--output_dir")
    assert sorted(os.listdir(out)) == ["masks"]  # not even a record was written
    assert (out / "masks/hand_labelled.png").read_text() == "mine"


def test_another_kinds_folder_is_refused_but_evaluate_writes_its_one_file_beside_any_output(tmp_path):
    out = tmp_path / "out"
    _publish(out, "infer", {"masks/a.png": "1"})
    with pytest.raises(OutputFolderRefused, match="holds the output of segflow infer, not preprocess"):
        ownership.claim(str(out), "preprocess", "--output_dir")
    _publish(out, "evaluate", {"evaluation.json": "{}"}, markers=["evaluation.json"])
    assert (out / "masks/a.png").exists() and (out / "evaluation.json").exists()
    theirs = tmp_path / "another_tools_masks"
    _write(str(theirs / "a.png"), "theirs")
    _publish(theirs, "evaluate", {"evaluation.json": "{}"}, markers=["evaluation.json"])
    assert (theirs / "a.png").read_text() == "theirs" and (theirs / "evaluation.json").exists()


def test_rerun_deletes_only_recorded_files_and_keeps_files_added_later(tmp_path):
    out = tmp_path / "out"
    _publish(out, "infer", {"masks/a.png": "1", "masks/b.png": "1"})
    _write(str(out / "masks/notes.txt"), "the user's")  # added to an owned folder after the run
    _publish(out, "infer", {"masks/a.png": "2"})
    assert (out / "masks/a.png").read_text() == "2"
    assert not (out / "masks/b.png").exists()  # the previous run's, not written again: stale
    assert (out / "masks/notes.txt").read_text() == "the user's"


def test_previous_release_output_is_adopted(tmp_path):
    out = tmp_path / "dst"
    _write(str(out / "metadata.json"), "{}")
    _write(str(out / "train-00000-of-00001.tfrecord.gz"), "old")
    _write(str(out / "README.txt"), "the user's")

    def adopt(where, kind):
        return {"metadata.json", "train-00000-of-00001.tfrecord.gz"} if where.is_file("metadata.json") else None

    _publish(out, "preprocess", {"metadata.json": "{}", "val-00000-of-00001.tfrecord.gz": "n"}, adopt=adopt)
    assert not (out / "train-00000-of-00001.tfrecord.gz").exists()
    assert (out / "val-00000-of-00001.tfrecord.gz").exists() and (out / "README.txt").exists()


def test_a_failed_rerun_leaves_the_previous_output_and_its_staging_is_removed(tmp_path):
    out = tmp_path / "out"
    _publish(out, "infer", {"masks/a.png": "good", "summary.json": "{}"}, markers=["summary.json"])
    with pytest.raises(RuntimeError):
        with ownership.claim(str(out), "infer", "--output_dir") as claim:
            _write(os.path.join(claim.staging, "masks/a.png"), "half")
            assert (out / "masks/a.png").read_text() == "good"  # readers see the previous output meanwhile
            raise RuntimeError("crash")
    assert (out / "masks/a.png").read_text() == "good" and (out / "summary.json").exists()
    assert [n for n in os.listdir(out / ".segflow") if n.startswith("run-")] == []


def test_a_killed_runs_staging_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    _publish(out, "infer", {"masks/a.png": "good"})
    os.makedirs(out / ".segflow/run-deadbeef/masks")
    _write(str(out / ".segflow/run-deadbeef/masks/a.png"), "half")
    _publish(out, "infer", {"masks/a.png": "new"})
    assert sorted(os.listdir(out / ".segflow")) == ["infer.json", "lease"]


def test_a_first_run_that_fails_leaves_no_folder(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with ownership.claim(str(out), "infer", "--output_dir"):
            raise RuntimeError("no inputs")
    assert not out.exists()


def test_output_flag_naming_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(OutputFolderRefused, match="is a file, not a folder"):
        ownership.claim(str(target), "infer", "--output_dir")


_HOLD = textwrap.dedent(
    """
    import sys, time
    from pipelines.shared import ownership
    claim = ownership.claim(sys.argv[1], "preprocess", "--output_dir")
    print("held", flush=True)
    time.sleep(60)
    """
)


def _holder(folder):
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lease_is_taken_over(tmp_path, caplog):
    out = tmp_path / "dst"
    first = _holder(out)
    try:
        with pytest.raises(OutputFolderRefused, match=rf"being written by segflow preprocess \(pid {first.pid} on"):
            ownership.claim(str(out), "preprocess", "--output_dir")
    finally:
        first.kill()
        first.wait()
    with ownership.claim(str(out), "preprocess", "--output_dir") as claim:
        assert claim.kind == "preprocess"
    assert f"pid {first.pid}" in caplog.text and "which has ended" in caplog.text


def test_two_processes_racing_for_one_folder_get_one_winner(tmp_path):
    out = tmp_path / "dst"
    script = textwrap.dedent(
        """
        import sys, time
        from pipelines.shared import ownership
        time.sleep(float(sys.argv[2]) - time.time())
        try:
            claim = ownership.claim(sys.argv[1], "infer", "--output_dir")
        except ownership.OutputFolderRefused:
            print("refused", flush=True)
        else:
            print("held", flush=True)
            sys.stdin.read()  # holds the folder until every racer has answered
        """
    )
    start = time.time() + 2.0
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(out), str(start)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        outputs = sorted(run.stdout.readline().strip() for run in runs)
    finally:
        for run in runs:
            run.communicate(timeout=60)
    assert outputs == ["held", "refused", "refused"]


def test_staging_and_records_stay_out_of_shard_globs(tmp_path):
    out = tmp_path / "dst"
    with ownership.claim(str(out), "preprocess", "--output_dir") as claim:
        _write(os.path.join(claim.staging, "train-00000-of-00001.tfrecord.gz"), "new")
        import glob

        assert glob.glob(str(out / "train-*")) == []  # a reader of DST/<split>-* sees no half output
        claim.publish()
    assert [os.path.basename(p) for p in __import__("glob").glob(str(out / "train-*"))] == [
        "train-00000-of-00001.tfrecord.gz"
    ]

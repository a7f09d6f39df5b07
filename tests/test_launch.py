"""``python -m trainer.launch --dry_run``: the Vertex AI CustomJob spec for one GPU, several GPUs, several
machines, and the package variant; every spec's args are parsed by ``trainer.task``'s own parser, and Vertex's
multi-worker ``TF_CONFIG`` is read by the trainer's distribution code as a chief + workers cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from trainer import launch

BASE = [
    "--project",
    "segflow-demo",
    "--region",
    "europe-west4",
    "--image_uri",
    "europe-west4-docker.pkg.dev/segflow-demo/segflow/worker:0.1.0",
    "--data_dir",
    "gs://segflow-demo/records",
    "--model",
    "unet",
    "--job_dir",
    "gs://segflow-demo/jobs/unet-1",
    "--dry_run",
]


def _spec(capsys, argv: list[str]) -> dict:
    assert launch.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    # What we print is valid API JSON: it parses back into the aiplatform_v1 CustomJob message.
    from google.cloud.aiplatform_v1 import types

    types.CustomJob.from_json(json.dumps(out["customJob"]))
    return out


def _trainer_args(pool: dict) -> list[str]:
    if "containerSpec" in pool:
        assert pool["containerSpec"]["command"] == ["python", "-m", "trainer.task"]
        return pool["containerSpec"]["args"]
    assert pool["pythonPackageSpec"]["pythonModule"] == "trainer.task"
    return pool["pythonPackageSpec"]["args"]


def _parsed_by_trainer(args: list[str]):
    from trainer import task

    return task.build_parser().parse_args(args)  # exits (fails the test) on anything it does not accept


def test_one_gpu(capsys):
    out = _spec(capsys, BASE + ["--accelerator_type", "NVIDIA_TESLA_T4", "--epochs", "30", "--batch_size", "16"])
    assert out["parent"] == "projects/segflow-demo/locations/europe-west4"
    job = out["customJob"]
    assert job["displayName"] == "segflow-train-unet"
    assert job["jobSpec"]["baseOutputDirectory"] == {"outputUriPrefix": "gs://segflow-demo/jobs/unet-1"}
    (pool,) = job["jobSpec"]["workerPoolSpecs"]
    assert pool["replicaCount"] == "1"
    assert pool["machineSpec"] == {
        "machineType": "n1-standard-8",
        "acceleratorType": "NVIDIA_TESLA_T4",
        "acceleratorCount": 1,
    }
    assert pool["containerSpec"]["imageUri"].endswith("/segflow/worker:0.1.0")
    args = _trainer_args(pool)
    parsed = _parsed_by_trainer(args)
    assert (parsed.data_dir, parsed.model, parsed.job_dir) == (
        "gs://segflow-demo/records",
        "unet",
        "gs://segflow-demo/jobs/unet-1",
    )
    assert (parsed.epochs, parsed.batch_size, parsed.strategy) == (30, 16, "auto")


def test_multi_gpu_one_machine(capsys):
    out = _spec(
        capsys,
        BASE
        + [
            "--machine_type",
            "n1-standard-32",
            "--accelerator_type",
            "nvidia_tesla_v100",
            "--accelerator_count",
            "4",
            "--mixed_precision",
            "--batch_size",
            "64",
        ],
    )
    (pool,) = out["customJob"]["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"] == {
        "machineType": "n1-standard-32",
        "acceleratorType": "NVIDIA_TESLA_V100",
        "acceleratorCount": 4,
    }
    parsed = _parsed_by_trainer(_trainer_args(pool))
    assert parsed.strategy == "auto" and parsed.mixed_precision and parsed.batch_size == 64


def test_multi_worker(capsys, monkeypatch):
    out = _spec(
        capsys,
        BASE
        + [
            "--replica_count",
            "3",
            "--accelerator_type",
            "NVIDIA_L4",
            "--machine_type",
            "g2-standard-8",
            "--epochs",
            "5",
        ],
    )
    chief, workers = out["customJob"]["jobSpec"]["workerPoolSpecs"]
    assert chief["replicaCount"] == "1" and workers["replicaCount"] == "2"
    assert chief["machineSpec"] == workers["machineSpec"]
    assert _trainer_args(chief) == _trainer_args(workers)
    assert _parsed_by_trainer(_trainer_args(chief)).strategy == "auto"

    # The TF_CONFIG Vertex AI sets on such a job (pool 0 = "chief", pool 1 = "worker"), as the trainer reads it.
    from trainer import distribution

    cluster = {
        "chief": ["cmle-training-workerpool0-0:2222"],
        "worker": ["cmle-training-workerpool1-0:2222", "cmle-training-workerpool1-1:2222"],
    }
    for task, chief_expected in ((("chief", 0)), True), ((("worker", 0)), False), ((("worker", 1)), False):
        config = {"cluster": cluster, "task": {"type": task[0], "index": task[1]}, "environment": "cloud"}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert distribution.cluster_size() == 3
        assert distribution.task_info() == task
        assert distribution.is_chief() is chief_expected


def test_python_package(capsys):
    argv = [a for a in BASE if not a.startswith("europe-west4-docker")]
    argv.remove("--image_uri")
    out = _spec(
        capsys,
        argv
        + [
            "--package_uri",
            "gs://segflow-demo/dist/segflow-0.1.0.tar.gz",
            "--executor_image_uri",
            "europe-west4-docker.pkg.dev/segflow-demo/segflow/py311:1",
            "--service_account",
            "trainer@segflow-demo.iam.gserviceaccount.com",
            "--timeout_hours",
            "2",
        ],
    )
    spec = out["customJob"]["jobSpec"]
    (pool,) = spec["workerPoolSpecs"]
    package = pool["pythonPackageSpec"]
    assert package["packageUris"] == ["gs://segflow-demo/dist/segflow-0.1.0.tar.gz"]
    assert package["executorImageUri"].endswith("/py311:1")
    assert "machineSpec" in pool and "acceleratorType" not in pool["machineSpec"]  # CPU only by default
    assert spec["serviceAccount"] == "trainer@segflow-demo.iam.gserviceaccount.com"
    assert spec["scheduling"]["timeout"] == "7200s"
    _parsed_by_trainer(_trainer_args(pool))


def test_user_strategy_is_kept(capsys):
    out = _spec(capsys, BASE + ["--strategy", "one_device"])
    args = _trainer_args(out["customJob"]["jobSpec"]["workerPoolSpecs"][0])
    assert args.count("--strategy") == 1 and _parsed_by_trainer(args).strategy == "one_device"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"--job_dir": "/tmp/job"}, "--job_dir must be a gs:// URL"),
        ({"--data_dir": "records"}, "--data_dir must be a gs:// URL"),
        ({"--project": "My Project"}, "--project must be a project id"),
        ({"extra": ["--accelerator_type", "NVIDIA_GTX_1080"]}, "--accelerator_type NVIDIA_GTX_1080 is not one of"),
        ({"extra": ["--accelerator_count", "2"]}, "--accelerator_count needs --accelerator_type"),
        ({"extra": ["--replica_count", "0"]}, "--replica_count must be >= 1"),
        ({"extra": ["--epohcs", "3"]}, "unknown flag --epohcs (did you mean --epochs?)"),
        ({"extra": ["--model_type", "x"]}, "unknown flag --model_type"),
        ({"extra": ["--epochs", "0"]}, "trainer.task rejects its args: --epochs must be >= 1, got 0"),
        ({"extra": ["--strategy", "tpu"]}, "trainer.task rejects its args"),
        ({"extra": ["--executor_image_uri", "img"]}, "--executor_image_uri goes with --package_uri"),
    ],
)
def test_bad_flags_fail_fast_with_one_line(capsys, change, expected):
    argv = list(BASE)
    for flag, value in change.items():
        if flag == "extra":
            argv += value
        else:
            argv[argv.index(flag) + 1] = value
    assert launch.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainer.launch: error: ") and expected in lines[0], lines


@pytest.mark.slow
def test_cli_dry_run_needs_no_credentials(tmp_path):
    """The module as users run it, with no ADC at all and the metadata server unreachable: prints the spec."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_", "GCE_"))}
    env.update(NO_GCE_CHECK="True", GCE_METADATA_HOST="127.0.0.1:9", CLOUDSDK_CONFIG=str(tmp_path), HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.launch", *BASE, "--replica_count", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["customJob"]["jobSpec"]["workerPoolSpecs"]) == 2

"""Dataflow submission, short of the Dataflow service itself: the real ``DataflowRunner`` with ``--dry_run=True``.

What Beam 2.77's DataflowRunner does with ``--dry_run=True`` (read from ``DataflowRunner.run_pipeline``): it
validates the options (for a service runner ``--temp_location``/``--staging_location`` must be valid gs:// paths,
and their buckets are looked up for a soft-delete policy — here on the loopback GCS server), builds the worker
dependencies (``--setup_file`` → ``python setup.py sdist`` → the ``workflow.tar.gz`` artifact), pickles every
DoFn into the portable pipeline proto, builds the ``Job`` description, and returns a ``PipelineResult`` in state
DONE carrying ``result.job`` — *before* staging and before any call to the Dataflow API. So these tests then
stage the built job exactly as a real submission would (``DataflowApplicationClient.create_job_description``:
artifacts and ``pipeline.pb`` to ``--staging_location`` on the loopback GCS server), and prove the packaging by
installing the staged ``workflow.tar.gz`` into an empty folder and unpickling every DoFn and CombineFn of the
staged pipeline in a fresh interpreter that cannot see this checkout — what a Dataflow worker does.

Credentials: only Application Default Credentials, here the ``gcs`` fixture's offline file; nothing reaches a
Google endpoint (no network). tensorflow-transform creates its scratch dir with TensorFlow's own GCS client when
the pipeline is *constructed*; that client cannot be pointed at an emulator, so the preprocess job is built
through ``preprocess.build_pipeline`` with a local tensorflow-transform scratch dir (everything else gs://).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

from tests.fixtures import warm

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
PROJECT = "segflow-test-project"
REGION = "us-central1"


def dataflow_flags(gcs, name: str) -> list[str]:
    """The flags ``make dataflow-*`` passes (worker shape included), pointed at the loopback bucket."""
    root = gcs.url(f"dataflow/{name}")
    return [
        "--runner",
        "DataflowRunner",
        "--project",
        PROJECT,
        "--region",
        REGION,
        "--temp_location",
        f"{root}/temp",
        "--staging_location",
        f"{root}/staging",
        "--setup_file",
        str(REPO / "setup.py"),
        "--job_name",
        f"segflow-{name}-test",
        "--machine_type",
        "n2-highmem-4",
        "--number_of_worker_harness_threads",
        "2",
        "--autoscaling_algorithm",
        "THROUGHPUT_BASED",
        "--num_workers",
        "1",
        "--max_num_workers",
        "8",
        "--dry_run=True",
    ]


def _build(build, beam_argv: list[str]):
    """Runs ``build(pipeline)`` on a DataflowRunner pipeline; returns (result, options). Real runner, dry run."""
    import apache_beam as beam

    from pipelines.common import runner as runner_lib

    options = runner_lib.make_pipeline_options(beam_argv)
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    result = pipeline.run()
    return result, options


def _stage(result, options) -> str:
    """Stages the dry-run job's artifacts and pipeline proto as a real submission does; returns the folder."""
    from apache_beam.runners.dataflow.internal import apiclient

    job = result.job
    client = apiclient.DataflowApplicationClient(options, job.root_staging_location)
    client.create_job_description(job)
    return job.google_cloud_options.staging_location


class DataflowJob:
    def __init__(self, result, options, staging: str, seconds: float):
        self.result, self.options, self.staging, self.seconds = result, options, staging, seconds
        self.job = result.job
        self.spec = json.loads(self.job.json())


@pytest.fixture(scope="module")
def preprocess_job(gcs, pet_raw_dir, tmp_path_factory) -> DataflowJob:
    from pipelines.preprocess import job as preprocess

    src = gcs.upload_dir(pet_raw_dir, gcs.prefix("df-pet-raw"))
    argv = [
        "--dataset",
        "pet",
        "--input_dir",
        src,
        "--output_dir",
        gcs.prefix("df-pet-records"),
        "--image_size",
        "128",
        "--augment_copies",
        "1",
        *dataflow_flags(gcs, "preprocess"),
    ]
    config, beam_argv = preprocess.parse_args(argv)
    tft_scratch = str(tmp_path_factory.mktemp("tft-scratch"))  # see the module docstring
    start = time.monotonic()
    result, options = _build(lambda p: preprocess.build_pipeline(p, config, tft_scratch), beam_argv)
    seconds = time.monotonic() - start
    return DataflowJob(result, options, _stage(result, options), seconds)


@pytest.fixture(scope="module")
def model_on_gcs(gcs, pet_job_dir) -> str:
    return gcs.upload_dir(pathlib.Path(pet_job_dir) / "model", gcs.prefix("df-model"))


@pytest.fixture(scope="module")
def images_on_gcs(gcs, pet_raw_dir) -> str:
    dst = gcs.prefix("df-images")
    for path in sorted((pathlib.Path(pet_raw_dir) / "images").glob("*.jpg"))[:3]:
        gcs.upload_bytes(f"{dst}/{path.name}", path.read_bytes())
    return dst


@pytest.fixture(scope="module")
def infer_job(gcs, model_on_gcs, images_on_gcs) -> DataflowJob:
    from pipelines.infer import job as infer
    from pipelines.infer.model import read_model_info

    argv = [
        "--model_dir",
        model_on_gcs,
        "--input",
        f"{images_on_gcs}/*.jpg",
        "--output_dir",
        gcs.prefix("df-infer-out"),
        "--instances",
        *dataflow_flags(gcs, "infer"),
    ]
    args, beam_argv = infer.from_args(argv)
    model_info = read_model_info(args.model_dir)
    start = time.monotonic()
    result, options = _build(lambda p: infer.build_pipeline(p, args, model_info), beam_argv)
    seconds = time.monotonic() - start
    return DataflowJob(result, options, _stage(result, options), seconds)


# ------------------------------------------------------------------------------------------- the job spec


def _check_job(job: DataflowJob, transforms: list[str]) -> None:
    from apache_beam.options.pipeline_options import SetupOptions
    from apache_beam.runners.runner import PipelineState

    assert job.result.state == PipelineState.DONE
    assert job.spec["type"] == "JOB_TYPE_BATCH"
    names = " ".join(t.unique_name for t in job.job.proto_pipeline.components.transforms.values())
    for name in transforms:
        assert name in names, name
    setup = job.options.view_as(SetupOptions)
    assert setup.save_main_session is False  # nothing from __main__ may reach workers
    assert setup.setup_file == str(REPO / "setup.py")

    env = job.spec["environment"]
    assert env["tempStoragePrefix"].startswith("storage.googleapis.com/segflow-test/dataflow/")
    pool = env["workerPools"][0]
    assert pool["machineType"] == "n2-highmem-4"
    assert pool["numThreadsPerWorker"] == 2
    assert pool["autoscalingSettings"] == {"algorithm": "AUTOSCALING_ALGORITHM_BASIC", "maxNumWorkers": 8}
    assert pool["numWorkers"] == 1
    # The stock Beam SDK image of this Beam and Python version; workers pip-install the staged sdist on it.
    assert pool["workerHarnessContainerImage"].endswith("/beam_python3.11_sdk:2.77.0")
    staged = {p["name"] for p in pool["packages"]}
    assert {"workflow.tar.gz", "submission_environment_dependencies.txt"} <= staged, staged
    options = env["sdkPipelineOptions"]["options"]
    assert options["setup_file"] == str(REPO / "setup.py")
    assert options["project"] == PROJECT and options["region"] == REGION
    assert options["save_main_session"] is False and options["pickle_library"] == "cloudpickle"
    assert "use_runner_v2" in env["experiments"]


def test_preprocess_dataflow_job(preprocess_job):
    _check_job(
        preprocess_job, ["DiscoverPet", "MakeRecords", "WriteShards", "WriteDeadLetters", "Statistics", "WriteMetadata"]
    )
    assert preprocess_job.seconds < 120


def test_infer_dataflow_job(infer_job):
    _check_job(
        infer_job,
        ["Match", "RunInference_Preprocess", "RunInference", "RunInference_Postprocess", "WritePredictions"]
        + ["DeadLetters", "WriteSummary"],
    )
    assert infer_job.seconds < 120


# --------------------------------------------------------------------------------------- staging, packaging


def _staged_package(gcs, staging: str, tmp_path: pathlib.Path) -> pathlib.Path:
    names = gcs.list(staging)
    assert "pipeline.pb" in names and "workflow.tar.gz" in names, names
    tarball = tmp_path / "workflow.tar.gz"
    tarball.write_bytes(gcs.read_bytes(f"{staging}/workflow.tar.gz"))
    return tarball


@pytest.mark.parametrize("job_fixture", ["preprocess_job", "infer_job"])
def test_staged_sdist_holds_the_package(gcs, request, job_fixture, tmp_path):
    tarball = _staged_package(gcs, request.getfixturevalue(job_fixture).staging, tmp_path)
    with tarfile.open(tarball) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    for required in (
        "setup.py",
        "pipelines/preprocess/job.py",
        "pipelines/infer/job.py",
        "pipelines/infer/model.py",
        "pipelines/datasets/voc.py",  # every registered dataset travels, with its label tables
        "pipelines/datasets/ade20k.py",
        "pipelines/datasets/folder.py",
        "pipelines/datasets/_folder_table.py",  # not a dataset ("_"), but folder.py imports it on the workers
        "schemas/label_tables.py",
        "schemas/features.py",
        "schemas/transform.py",
        "trainer/task.py",
    ):
        assert required in members, required
    assert not [m for m in members if m.startswith(("tests/", "out/", "data/", ".venv/"))]


_UNPICKLE = textwrap.dedent("""
    import json, os, sys
    site, proto_paths = sys.argv[1], sys.argv[2:]
    # A worker sees the SDK image plus the staged package, never the submitter's checkout or its editable install.
    sys.path = [site] + [p for p in sys.path if p and os.path.realpath(p) != %(repo)r]
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    from apache_beam.internal import pickler
    from apache_beam.portability import common_urns, python_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    combines = {common_urns.composites.COMBINE_PER_KEY.urn, common_urns.composites.COMBINE_GLOBALLY.urn,
                common_urns.combine_components.COMBINE_PER_KEY_PRECOMBINE.urn,
                common_urns.combine_components.COMBINE_PER_KEY_MERGE_ACCUMULATORS.urn,
                common_urns.combine_components.COMBINE_PER_KEY_EXTRACT_OUTPUTS.urn,
                common_urns.combine_components.COMBINE_GROUPED_VALUES.urn}
    report = {}
    for proto_path in proto_paths:
        proto = beam_runner_api_pb2.Pipeline.FromString(open(proto_path, "rb").read())
        loaded = report[proto_path] = {}
        for tid, t in sorted(proto.components.transforms.items()):
            if t.spec.urn == common_urns.primitives.PAR_DO.urn:
                fn = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn
                if fn.urn == python_urns.PICKLED_DOFN_INFO:
                    loaded[t.unique_name] = type(pickler.loads(fn.payload)[0]).__name__
            elif t.spec.urn in combines:
                fn = beam_runner_api_pb2.CombinePayload.FromString(t.spec.payload).combine_fn
                if fn.urn == python_urns.PICKLED_COMBINE_FN:
                    loaded[t.unique_name] = type(pickler.loads(fn.payload)).__name__
    import pipelines, schemas
    from pipelines import datasets
    report["modules"] = [pipelines.__file__, schemas.__file__]
    report["datasets"] = [datasets.get(name).name for name in datasets.names()]  # each module imports there
    # ...from the installed package, with the modules they import (folder's _folder_table among them).
    report["modules"] += sorted(m.__file__ for n, m in sys.modules.items() if n.startswith("pipelines.datasets."))
    print(json.dumps(report))
""")


def unpickle_on_a_clean_worker(gcs, stagings: dict[str, str], tmp_path: pathlib.Path) -> dict[str, dict]:
    """Installs only the sdist staged in the first of ``stagings`` (name -> staging folder) into an empty folder,
    then unpickles every DoFn/CombineFn of each staged pipeline.pb in a fresh interpreter that cannot import this
    checkout (what a Dataflow worker does). Returns name -> {transform: loaded class name}."""
    names = list(stagings)
    tarball = _staged_package(gcs, stagings[names[0]], tmp_path)
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(tarball),
        ],
        check=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    protos = {}
    for name in names:
        protos[name] = tmp_path / f"{name}.pb"
        protos[name].write_bytes(gcs.read_bytes(f"{stagings[name]}/pipeline.pb"))
    out = subprocess.run(
        [sys.executable, "-c", _UNPICKLE % {"repo": str(REPO)}, str(site), *map(str, protos.values())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(m.startswith(str(site)) for m in report["modules"]), report["modules"]
    assert {"voc", "ade20k", "folder"} <= set(report["datasets"]), report["datasets"]
    assert any(m.endswith("pipelines/datasets/_folder_table.py") for m in report["modules"]), report["modules"]
    return {name: report[str(path)] for name, path in protos.items()}


def test_staged_jobs_unpickle_on_a_clean_worker(gcs, preprocess_job, infer_job, tmp_path):
    """Install only the staged sdist, then unpickle every DoFn/CombineFn of both staged pipeline.pb files in a
    fresh interpreter that cannot import this checkout (no reliance on save_main_session or local state)."""
    loaded = unpickle_on_a_clean_worker(
        gcs, {"preprocess": preprocess_job.staging, "infer": infer_job.staging}, tmp_path
    )
    expected = {
        "preprocess": {"MakeRecords", "_ListSource", "_Assemble"},
        "infer": {"_ExceptionHandlingWrapperDoFn", "WritePredictions"},  # RunInference and its fns, wrapped
    }
    for name, fns in loaded.items():
        assert len(fns) >= 8, fns
        assert expected[name] <= set(fns.values()), (name, sorted(set(fns.values())))


def test_infer_cli_dry_run(gcs, model_on_gcs, images_on_gcs):
    """The command users run, with Dataflow flags and --dry_run=True: exits 0 quickly, writes no outputs."""
    out_dir = gcs.prefix("df-infer-cli")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.monotonic()
    proc = warm.run(
        [
            sys.executable,
            "-m",
            "pipelines.infer",
            "--model_dir",
            model_on_gcs,
            "--input",
            f"{images_on_gcs}/*.jpg",
            "--output_dir",
            out_dir,
            *dataflow_flags(gcs, "infer-cli"),
        ],
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 120
    assert gcs.list(out_dir) == []  # a dry run constructs the job and submits nothing


def test_flex_template_parameters_are_preprocess_flags():
    """templates/preprocess/metadata.json: every parameter is a preprocess flag, and a console-style launch
    (every parameter as --name=value, values matching the declared regexes) parses as a valid job."""
    import re

    from pipelines.preprocess import job as preprocess

    spec = json.loads((REPO / "templates" / "preprocess" / "metadata.json").read_text())
    flags = {a.dest for a in preprocess.build_arg_parser()._actions}
    example = {
        "dataset": "cityscapes",
        "input_dir": "gs://b/raw/cityscapes",
        "output_dir": "gs://b/records",
        "image_size": "512x1024",
        "num_shards": "0",
        "augment_copies": "1",
        "val_fraction": "0.1",
        "test_fraction": "0.2",
        "seed": "7",
        "resize_mode": "pad",
        "label_mode": "trimap",
        "image_format": "png",
    }
    names = [p["name"] for p in spec["parameters"]]
    assert sorted(names) == sorted(example) and set(names) <= flags
    for param in spec["parameters"]:
        for regex in param.get("regexes", []):
            assert re.fullmatch(regex, example[param["name"]]), param
    required = {a.dest for a in preprocess.build_arg_parser()._actions if a.required}
    assert required == {p["name"] for p in spec["parameters"] if not p["isOptional"]}
    config, beam_argv = preprocess.parse_args([f"--{k}={v}" for k, v in example.items()])
    assert config.image_size == (512, 1024) and beam_argv == []

"""``python -m trainer.launch``: run ``trainer.task`` on Vertex AI as a CustomJob.

    python -m trainer.launch --project P --region us-central1 --image_uri IMAGE \\
        --data_dir gs://B/records --model unet --job_dir gs://B/jobs/unet-1 \\
        [--machine_type n1-standard-8 --accelerator_type NVIDIA_TESLA_T4 --accelerator_count 1] \\
        [--replica_count 2] [--dry_run] [any trainer.task flag, e.g. --epochs 40 --batch_size 32]

One replica → one worker pool (several GPUs on it → ``MirroredStrategy``). ``--replica_count N`` > 1 → a chief
pool of 1 and a worker pool of N-1 on the same machine shape; Vertex AI sets ``TF_CONFIG`` on each machine and
``trainer.task --strategy auto`` turns it into ``MultiWorkerMirroredStrategy`` (only the chief exports).

The worker runs either the image (``--image_uri``, e.g. the repo's Dockerfile; command
``python -m trainer.task``) or the package (``--package_uri gs://…/segflow-0.1.0.tar.gz`` with
``--executor_image_uri``, an image with Python 3.11). Every flag this launcher does not know is checked against
``trainer.task``'s own parser and passed on. ``--dry_run`` prints the CustomJob as the JSON the API receives and
submits nothing. Credentials: Application Default Credentials only (``gcloud auth application-default login``
or the service account of the machine); none are taken as flags or logged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Optional, Sequence

from pipelines.shared import cli, flag_parser
from schemas import errors

NAME = "trainer.launch"
PROG = f"python -m {NAME}"
DEFAULT_MACHINE = "n1-standard-8"
TRAINER_MODULE = "trainer.task"


class LaunchError(errors.UsageError):
    """A bad flag; ``main`` prints it as one line and exits 2."""


def _accelerator_types() -> list[str]:
    from google.cloud.aiplatform_v1.types import AcceleratorType

    return [n for n in AcceleratorType.__members__ if n != "ACCELERATOR_TYPE_UNSPECIFIED"]


def _trainer_flags() -> list[str]:
    from trainer import task

    return task.build_parser().own_flags()


def build_parser() -> flag_parser.Parser:
    """The launcher's flags; any other flag must be one of ``trainer.task``'s, and is passed on to it."""
    p = flag_parser.Parser(
        NAME,
        __doc__,
        passes_on=_trainer_flags,
        passes_on_label="trainer.task flags",
        epilog="Other flags go to python -m trainer.task (checked against its parser first).",
    )
    p.add_flag(
        "--project",
        default=os.environ.get("GOOGLE_CLOUD_PROJECT"),
        default_text="$GOOGLE_CLOUD_PROJECT",
        help="Google Cloud project id",
    )
    p.add_flag("--region", default="us-central1", help="Vertex AI region")
    p.add_flag("--display_name", help="job name in the console", default_text="segflow-train-MODEL")
    image = p.add_mutually_exclusive_group(required=True)
    image.add_argument(
        "--image_uri",
        metavar="IMAGE_URI",
        help="worker image with segflow installed (the repo's Dockerfile) (required: this or --package_uri)",
    )
    image.add_argument(
        "--package_uri",
        metavar="PACKAGE_URI",
        help="gs:// URL of segflow's sdist (python setup.py sdist), run as the Python module "
        "trainer.task on --executor_image_uri (required: this or --image_uri)",
    )
    p.add_flag(
        "--executor_image_uri",
        help="with --package_uri: the image to install it on (must have Python 3.11)",
        default_text="none",
    )
    p.add_flag("--machine_type", default=DEFAULT_MACHINE, help="Compute Engine machine type per replica")
    p.add_flag(
        "--accelerator_type",
        type=str.upper,
        help="GPU type, e.g. NVIDIA_TESLA_T4, NVIDIA_L4, NVIDIA_TESLA_A100",
        default_text="CPU only",
    )
    p.add_flag(
        "--accelerator_count", type=int, minimum=1, help="GPUs per replica", default_text="1 with --accelerator_type"
    )
    p.add_flag(
        "--replica_count",
        type=int,
        default=1,
        minimum=1,
        help="machines; more than 1 = chief + workers, multi-worker training",
    )
    p.add_flag("--boot_disk_size_gb", type=int, default=100, minimum=10, help="boot disk per replica, in GB")
    p.add_flag(
        "--service_account",
        help="service account the job runs as",
        default_text="the Vertex AI custom code service agent",
    )
    p.add_flag(
        "--timeout_hours",
        type=float,
        minimum=0.0,
        exclusive_min=True,
        help="cancel the job after this long",
        default_text="no timeout",
    )
    p.add_flag("--dry_run", action="store_true", help="print the CustomJob JSON instead of submitting")
    # The three trainer flags the launcher must see (to check they are on gs://); passed on unchanged.
    p.add_flag("--data_dir", required=True, help="preprocess output, gs://")
    p.add_flag("--model", required=True, help="the network (a trainer.task --model)")
    p.add_flag("--job_dir", required=True, help="trainer output, gs:// (also the job's base output dir)")
    # No logging flags of its own: --log_level and --verbose are trainer.task's, passed on.
    return p


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def trainer_args(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    """The ``trainer.task`` argv each replica runs; ``--strategy auto`` unless the user chose one."""
    argv = ["--data_dir", args.data_dir, "--model", args.model, "--job_dir", args.job_dir, *extra]
    if not _given(extra, "--strategy"):
        argv += ["--strategy", "auto"]
    return argv


def _check_trainer_args(argv: list[str]) -> None:
    """``trainer.task`` must accept exactly these args: a typo fails here, not an hour into a paid job."""
    from trainer import task

    try:
        task.config_from_args(argv)
    except errors.UsageError as err:
        raise LaunchError(f"{TRAINER_MODULE} rejects its args: {err}") from None


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Launcher flags and the trainer argv; raises ``LaunchError`` with a one-line reason."""
    args, extra = build_parser().parse_known_args(list(argv))
    for flag in ("data_dir", "job_dir"):
        if not getattr(args, flag).startswith("gs://"):
            raise LaunchError(f"--{flag} must be a gs:// URL: Vertex AI machines cannot see {getattr(args, flag)}")
    if not args.project:
        raise LaunchError("--project is required (or set GOOGLE_CLOUD_PROJECT)")
    if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", args.project):
        raise LaunchError(f"--project must be a project id (lowercase, 6-30 chars), got {args.project!r}")
    if args.package_uri:
        if not args.package_uri.startswith("gs://"):
            raise LaunchError("--package_uri must be a gs:// URL of the sdist (python setup.py sdist)")
        if not args.executor_image_uri:
            raise LaunchError("--package_uri needs --executor_image_uri (an image with Python 3.11)")
    elif args.executor_image_uri:
        raise LaunchError("--executor_image_uri goes with --package_uri; --image_uri runs as given")
    if args.accelerator_type:
        known = _accelerator_types()
        if args.accelerator_type not in known:
            raise LaunchError(f"--accelerator_type {args.accelerator_type} is not one of {', '.join(known)}")
        if args.accelerator_count is None:
            args.accelerator_count = 1
    elif args.accelerator_count:
        raise LaunchError("--accelerator_count needs --accelerator_type")
    task_argv = trainer_args(args, extra)
    _check_trainer_args(task_argv)
    return args, task_argv


def build_custom_job(args: argparse.Namespace, task_argv: list[str]):
    """The ``google.cloud.aiplatform_v1.CustomJob`` for these flags (what ``--dry_run`` prints)."""
    from google.cloud.aiplatform_v1 import types
    from google.protobuf import duration_pb2

    machine = types.MachineSpec(machine_type=args.machine_type)
    if args.accelerator_type:
        machine.accelerator_type = types.AcceleratorType[args.accelerator_type]
        machine.accelerator_count = args.accelerator_count
    disk = types.DiskSpec(boot_disk_type="pd-ssd", boot_disk_size_gb=args.boot_disk_size_gb)

    def pool(replicas: int) -> types.WorkerPoolSpec:
        spec = types.WorkerPoolSpec(machine_spec=machine, replica_count=replicas, disk_spec=disk)
        if args.image_uri:
            spec.container_spec = types.ContainerSpec(
                image_uri=args.image_uri, command=["python", "-m", TRAINER_MODULE], args=task_argv
            )
        else:
            spec.python_package_spec = types.PythonPackageSpec(
                executor_image_uri=args.executor_image_uri,
                package_uris=[args.package_uri],
                python_module=TRAINER_MODULE,
                args=task_argv,
            )
        return spec

    # Vertex AI: pool 0 is the chief (exactly one replica); pool 1 holds the other workers. Each machine gets
    # TF_CONFIG with cluster {"chief": [...], "worker": [...]} and its own task.
    pools = [pool(1)] + ([pool(args.replica_count - 1)] if args.replica_count > 1 else [])
    spec = types.CustomJobSpec(
        worker_pool_specs=pools, base_output_directory=types.GcsDestination(output_uri_prefix=args.job_dir)
    )
    if args.service_account:
        spec.service_account = args.service_account
    if args.timeout_hours:
        spec.scheduling = types.Scheduling(timeout=duration_pb2.Duration(seconds=int(args.timeout_hours * 3600)))
    return types.CustomJob(display_name=args.display_name or f"segflow-train-{args.model}", job_spec=spec)


def job_spec_json(job) -> dict:
    """The CustomJob as the JSON body of ``projects.locations.customJobs.create``."""
    from google.cloud.aiplatform_v1 import types

    return json.loads(
        types.CustomJob.to_json(job, use_integers_for_enums=False, always_print_fields_with_no_presence=False)
    )


def submit(job, project: str, region: str):
    """Creates the CustomJob with Application Default Credentials; returns the created job."""
    from google.cloud import aiplatform_v1

    client = aiplatform_v1.JobServiceClient(client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"})
    return client.create_custom_job(parent=f"projects/{project}/locations/{region}", custom_job=job)


def launch(argv: Sequence[str]) -> str:
    """Builds the CustomJob for ``argv`` and submits it (``--dry_run``: prints it instead); returns what to
    print. Raises ``LaunchError`` for bad flags."""
    args, task_argv = parse(argv)
    job = build_custom_job(args, task_argv)
    if args.dry_run:
        return json.dumps(
            {"parent": f"projects/{args.project}/locations/{args.region}", "customJob": job_spec_json(job)},
            indent=2,
            sort_keys=True,
        )
    created = submit(job, args.project, args.region)
    job_id = created.name.rsplit("/", 1)[-1]
    return (
        f"submitted {created.name}\n  console: https://console.cloud.google.com/vertex-ai/locations/"
        f"{args.region}/training/{job_id}/cpu?project={args.project}\n  outputs: {args.job_dir}"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m trainer.launch``: the exit status; one stderr line for a bad flag (2)."""
    return cli.main(NAME, argv, launch, check=parse, summary=lambda text, _: text)


if __name__ == "__main__":
    cli.exit_process(main())

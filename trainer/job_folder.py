"""The training job's folder (JOB): who may write it, what a resume must match, and its JSON files.

JOB is the chief's for the whole run (``pipelines.shared.ownership``: one writer, only files a segflow trainer
wrote are ever deleted); the export is written aside and replaces the previous JOB/model and metrics.json only
once complete. A rerun resumes from JOB/checkpoints when its shape-changing flags and data match JOB/config.json.
"""

from __future__ import annotations

import json
import re
from typing import Optional

from pipelines.shared import folders, ownership
from pipelines.shared.tf_paths import join as join_path
from schemas import strict_json
from schemas.model_contract import TFLITE_FILES
from trainer.config import TrainConfig, UsageError


def write_json(path: str, payload: dict) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        # insertion order: class names stay in id order; a figure that could not be computed (NaN) is null
        f.write(strict_json.dumps(payload, what=path, absent_as_null=True, sort_keys=False) + "\n")


# Fields that must match between a run and the checkpoint it resumes: flags that change the variables' shapes
# or what the optimizer state means, and (under "data" in config.json) the dataset facts that do.
_RESUME_KEYS = ("model", "base_filters", "depth", "batch_size", "loss", "alpha")
_DATA_RESUME_KEYS = ("dataset", "num_classes", "class_names", "image_size")


# What a reader takes as the sign of a complete export: put in place last when a run publishes.
MARKERS = ("model/segflow_model.json", "metrics.json")
# What publishing an export replaces; checkpoints, logs and config.json stay (a resume needs them).
# The TFLite files too: a run that writes fewer types than the previous one leaves none of its stale ones.
PUBLISHED = ["model", "metrics.json", *TFLITE_FILES.values()]
# What an export of the previous release holds (a SavedModel and segflow_model.json): a file of the user's put in
# JOB/model since is not adopted, so never deleted.
_SAVED_MODEL_FILES = re.compile(
    r"^model/(saved_model\.pb|fingerprint\.pb|keras_metadata\.pb|segflow_model\.json"
    r"|variables/variables\.(index|data-\d{5}-of-\d{5})|assets/[^/]+)$"
)
_TENSORBOARD_EVENTS = re.compile(r"^logs/(train|validation)/events\.out\.tfevents\.[^/]+$")


def _json_object(data: Optional[bytes]) -> dict:
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _previous_release_files(where: "folders.Folder", kind: str) -> Optional[set]:
    """The files an earlier segflow trainer (before owner records) wrote in JOB, or None when JOB holds no such
    run: recognised by its ``model/segflow_model.json``, or a ``config.json`` / ``metrics.json`` with the
    trainer's fields. Only what that trainer writes is adopted: its export's files in ``model/``, the checkpoints its
    state files name and those state files, its TensorBoard event files, ``config.json`` and ``metrics.json``."""
    present = set(where.files())
    config = _json_object(where.read("config.json")) if "config.json" in present else {}
    metrics = _json_object(where.read("metrics.json")) if "metrics.json" in present else {}
    ours_config = {"data_dir", "job_dir", "model", "epochs"} <= config.keys()
    ours_metrics = {"model", "miou", "exported_epoch"} <= metrics.keys()
    ours_model = "model/segflow_model.json" in present
    if not (ours_config or ours_metrics or ours_model):
        return None
    adopted = {f for f, ours in (("config.json", ours_config), ("metrics.json", ours_metrics)) if ours}
    if ours_model or "model/saved_model.pb" in present:
        adopted |= {f for f in present if _SAVED_MODEL_FILES.match(f)}
    adopted |= {f for f in present if _TENSORBOARD_EVENTS.match(f)}
    from trainer import checkpoints

    for directory in ("checkpoints", "checkpoints/best"):
        steps, _ = checkpoints.read_state(where.full(directory))
        if steps:
            names = [f[len(directory) + 1 :] for f in present if f.startswith(directory + "/")]
            adopted.add(f"{directory}/{checkpoints.STATE_FILE}")
            adopted |= {f"{directory}/{n}" for step in steps for n in checkpoints.checkpoint_files(names, step)}
    return adopted


def claim_job(config: TrainConfig) -> "ownership.Claim":
    """The chief's hold on JOB for the run: refuses (one line, before anything is written) a JOB that holds
    other files than a segflow trainer's, or that another trainer writes now."""
    return ownership.claim(
        config.job_dir, "trainer", "--job_dir", adopt=_previous_release_files, staged=True, markers=MARKERS
    )


def record_new_files(claim: Optional["ownership.Claim"], rel: str, before: set) -> None:
    """Records the files under ``rel`` that appeared since ``before`` (a listing): this run's, written in place."""
    if claim is not None:
        claim.record(set(claim.where.files(rel)) - before)


def listing(claim: Optional["ownership.Claim"], rel: str) -> set:
    return set(claim.where.files(rel)) if claim is not None else set()


def pretrained(backbone_weights: Optional[str]) -> bool:
    return bool(backbone_weights) and backbone_weights != "none"


def data_facts(info) -> dict:
    """What JOB/config.json records of the dataset, for the resume check."""
    return {
        "dataset": info.metadata.dataset,
        "num_classes": info.num_classes,
        "class_names": list(info.metadata.class_names),
        "image_size": list(info.image_size),
    }


def check_resumable(config: TrainConfig, info, steps_per_epoch: int):
    """Refuses (one line) to resume a checkpoint made with other shape-changing flags or on other data, or one
    already past ``--epochs``, or checkpoints none of which reads back whole; returns the checkpoint to resume
    (``checkpoints.Found``), None when there is none."""
    import tensorflow as tf

    from trainer.checkpoints import find_checkpoint

    found = find_checkpoint(join_path(config.job_dir, "checkpoints"))
    step = found.step if found else 0
    path = join_path(config.job_dir, "config.json")
    if not step:
        return found
    previous = {}
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            previous = json.load(f)
    diff = [k for k in _RESUME_KEYS if k in previous and previous[k] != getattr(config, k)]
    # Pretrained or not decides the input convention (trainer.models.input_convention): it must not change.
    if "backbone_weights" in previous and pretrained(previous["backbone_weights"]) != pretrained(
        config.backbone_weights
    ):
        diff.append("backbone_weights (pretrained or not)")
    if diff:
        raise UsageError(
            f"--job_dir {config.job_dir} holds a run with different {', '.join(diff)}: "
            f"use a new --job_dir or the same flags to resume"
        )
    # config.json of an older segflow has no "data": the restore itself then reports a shape mismatch.
    before, now = previous.get("data") or {}, data_facts(info)
    changed = [k for k in _DATA_RESUME_KEYS if k in before and before[k] != now[k]]
    if changed:
        shown = [k for k in changed if k != "class_names"] or changed
        what = "; ".join(
            f"{k} {before[k]} there, {now[k]} in --data_dir" if k != "class_names" else "other class names"
            for k in shown
        )
        raise UsageError(
            f"--job_dir {config.job_dir} holds a run on other data ({what}): use a new --job_dir, "
            f"or the --data_dir it was trained on to resume"
        )
    total = config.epochs * steps_per_epoch
    if step > total:
        needed = -(-step // steps_per_epoch)
        raise UsageError(
            f"--job_dir {config.job_dir} holds a checkpoint at step {step}, past the {total} steps "
            f"of --epochs {config.epochs} ({steps_per_epoch} per epoch): pass --epochs {needed} or "
            f"more to continue it (its metrics.json would otherwise under-report the training), "
            f"or use a new --job_dir"
        )
    return found

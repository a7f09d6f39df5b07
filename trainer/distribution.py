"""Which ``tf.distribute`` strategy a run uses, and which task is the chief.

``auto``: MultiWorkerMirroredStrategy when TF_CONFIG names more than one worker (Vertex AI, Kubernetes),
MirroredStrategy on several GPUs, OneDeviceStrategy on one GPU, the default strategy on CPU.
The strategy must be created before TensorFlow runs any op (collectives are configured at start-up).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

import tensorflow as tf

from trainer.config import UsageError

logger = logging.getLogger(__name__)


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset or blank)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise UsageError(f"TF_CONFIG is not valid JSON ({e.msg}): fix or unset it")


def cluster_size(config: Optional[dict] = None) -> int:
    """Number of training tasks (chief + workers) TF_CONFIG names; 1 without TF_CONFIG."""
    cluster = (tf_config() if config is None else config).get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def task_info(config: Optional[dict] = None) -> tuple[str, int]:
    """(task type, index) of this process; ("chief", 0) without TF_CONFIG."""
    task = (tf_config() if config is None else config).get("task", {})
    return task.get("type", "chief"), int(task.get("index", 0))


def is_chief(config: Optional[dict] = None) -> bool:
    """The chief writes the export and metrics: task 'chief', or worker 0 when the cluster has no chief."""
    config = tf_config() if config is None else config
    task_type, index = task_info(config)
    if task_type == "chief":
        return True
    has_chief = bool(config.get("cluster", {}).get("chief"))
    return task_type == "worker" and index == 0 and not has_chief


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Creates the strategy for ``--strategy name``; logs the choice."""
    gpus = tf.config.list_physical_devices("GPU")
    workers = cluster_size()
    if name == "auto":
        if workers > 1:
            name = "multi_worker"
        elif len(gpus) > 1:
            name = "mirrored"
        elif len(gpus) == 1:
            name = "one_device"
        else:
            logger.info("strategy: default (1 process, CPU), 1 replica(s) in sync, 1 task(s)")
            return tf.distribute.get_strategy()
    if name == "multi_worker":
        if workers == 1:
            logger.warning("strategy multi_worker without a multi-worker TF_CONFIG: training as one worker")
        # RING collectives work on CPU and GPU alike; NCCL is picked automatically for GPUs by AUTO.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    else:
        raise UsageError(f"unknown strategy {name!r}")
    logger.info(
        "strategy: %s (%s), %d replica(s) in sync, %d task(s)",
        name,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        workers,
    )
    return strategy

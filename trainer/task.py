"""``python -m trainer.task``: train U-Net or FCN-8s on segflow records and export a serving SavedModel.

    python -m trainer.task --data_dir DST --model unet --job_dir JOB [--epochs 10] [--batch_size 8] ...

Writes JOB/checkpoints (resume with the same command after any interruption), JOB/logs (TensorBoard),
JOB/model (SavedModel serving raw image bytes, see trainer.export) and JOB/metrics.json (final evaluation).
The same command runs unchanged on one CPU, several GPUs (MirroredStrategy) or several machines
(MultiWorkerMirroredStrategy from TF_CONFIG, e.g. Vertex AI); only the chief writes the export and metrics.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from typing import Optional, Sequence

from schemas import cli
from trainer.config import TrainConfig, UsageError

logger = logging.getLogger(__name__)

NAME = "trainer.task"


def build_parser() -> cli.Parser:
    """The job's flags, one per ``TrainConfig`` field (its default, help and range are declared there), and
    ``--log_level``. Launchers (``trainer.launch``) check a job's args here. Imports no TensorFlow."""
    parser = cli.Parser(NAME, __doc__)
    cli.add_fields(parser, TrainConfig)
    parser.add_logging_flags(verbose=False)  # --verbose is Keras' progress output here (a TrainConfig field)
    return parser


def config_from_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Flags → a validated ``TrainConfig``; raises ``UsageError`` (``HelpShown`` for --help), never exits."""
    config = cli.config_from(TrainConfig, build_parser().parse_args(argv))
    config.validate()
    return config


def _write_json(path: str, payload: dict) -> None:
    import tensorflow as tf
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(payload, indent=2) + "\n")  # insertion order: class names stay in id order


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


# Fields that must match between a run and the checkpoint it resumes: flags that change the variables' shapes
# or what the optimizer state means, and (under "data" in config.json) the dataset facts that do.
_RESUME_KEYS = ("model", "base_filters", "depth", "batch_size", "loss")
_DATA_RESUME_KEYS = ("dataset", "num_classes", "class_names", "image_size")


def _data_facts(info) -> dict:
    """What JOB/config.json records of the dataset, for the resume check."""
    return {"dataset": info.metadata.dataset, "num_classes": info.num_classes,
            "class_names": list(info.metadata.class_names), "image_size": list(info.image_size)}


def _check_resumable(config: TrainConfig, info, steps_per_epoch: int) -> int:
    """Refuses (one line) to resume a checkpoint made with other shape-changing flags or on other data, or one
    already past ``--epochs``; returns the checkpoint's global step (0 when there is none)."""
    import tensorflow as tf

    from trainer.callbacks import checkpoint_step
    step = checkpoint_step(_join(config.job_dir, "checkpoints"))
    path = _join(config.job_dir, "config.json")
    if not step:
        return 0
    previous = {}
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            previous = json.load(f)
    diff = [k for k in _RESUME_KEYS if k in previous and previous[k] != getattr(config, k)]
    if diff:
        raise UsageError(f"--job_dir {config.job_dir} holds a run with different {', '.join(diff)}: "
                         f"use a new --job_dir or the same flags to resume")
    # config.json of an older segflow has no "data": the restore itself then reports a shape mismatch.
    before, now = previous.get("data") or {}, _data_facts(info)
    changed = [k for k in _DATA_RESUME_KEYS if k in before and before[k] != now[k]]
    if changed:
        shown = [k for k in changed if k != "class_names"] or changed
        what = "; ".join(f"{k} {before[k]} there, {now[k]} in --data_dir" if k != "class_names"
                         else "other class names" for k in shown)
        raise UsageError(f"--job_dir {config.job_dir} holds a run on other data ({what}): use a new --job_dir, "
                         f"or the --data_dir it was trained on to resume")
    total = config.epochs * steps_per_epoch
    if step > total:
        needed = -(-step // steps_per_epoch)
        raise UsageError(f"--job_dir {config.job_dir} holds a checkpoint at step {step}, past the {total} steps "
                         f"of --epochs {config.epochs} ({steps_per_epoch} per epoch): pass --epochs {needed} or "
                         f"more to continue it (its metrics.json would otherwise under-report the training), "
                         f"or use a new --job_dir")
    return step


def _data_loss(info, splits: list[str], error: Exception) -> Exception:
    """A ``DataError`` naming the shard behind a ``DataLossError`` (which names none), found by reading each."""
    from trainer import data as data_lib
    found = data_lib.find_corrupt_shard(info, splits)
    if found:
        path, why = found
        return data_lib.DataError(f"shard {path} is damaged ({why}): rerun python -m pipelines.preprocess "
                                  f"into {info.data_dir} (or into a fresh --output_dir)")
    return data_lib.DataError(f"reading the records in {info.data_dir} failed ({data_lib.op_error_line(error)}), "
                              f"though every shard reads cleanly now: check the storage and rerun")


def run(config: TrainConfig) -> dict:
    """Trains, evaluates and (on the chief) exports; returns the metrics dict (also JOB/metrics.json)."""
    config.validate()
    from trainer import data as data_lib
    # Refuse bad data and an unresumable --job_dir first (file reads only, no TensorFlow ops): one line, before
    # anything else is logged.
    info = data_lib.read_dataset(config.data_dir)
    steps_per_epoch = config.steps_per_epoch or max(1, info.count("train") // config.batch_size)
    _check_resumable(config, info, steps_per_epoch)
    # The strategy next: multi-worker collectives must be configured before TensorFlow runs any op.
    import tensorflow as tf

    from trainer import distribution
    strategy = distribution.make_strategy(config.strategy)
    chief = distribution.is_chief()
    _, task_index = distribution.task_info()

    import tf_keras as keras

    from trainer import callbacks as cb, export, losses, metrics as metrics_lib, models
    from trainer.normalization import with_transform

    info = data_lib.load_dataset_info(config.data_dir)
    h, w = info.image_size
    try:
        models.check_input_size(config.model, (h, w), config.depth)
    except ValueError as e:
        raise UsageError(str(e))
    if config.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(f"--batch_size {config.batch_size} must be a multiple of the "
                         f"{strategy.num_replicas_in_sync} replicas")
    class_weights = config.parse_class_weights(info.num_classes)
    if config.class_weights == "auto":
        class_weights = data_lib.median_frequency_weights(data_lib.class_pixel_counts(info))
        logger.info("class weights (median frequency): %s", [round(x, 3) for x in class_weights])
    eval_split = config.eval_split if info.shards.get(config.eval_split) else "train"
    if eval_split != config.eval_split:
        logger.warning("no %s records: evaluating on train", config.eval_split)

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    if config.mixed_precision and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    elif config.mixed_precision:
        logger.warning("--mixed_precision ignored: no GPU (float16 is slower than float32 on CPU)")

    val_steps = data_lib.eval_steps(info, eval_split, config.batch_size, config.validation_steps)
    with strategy.scope():
        network = models.build_model(config.model, (h, w, 3), info.num_classes, base_filters=config.base_filters,
                                     depth=config.depth, backbone_weights=config.backbone_weights)
        # The pipeline delivers raw uint8 images; the tft normalisation is the model's first layer.
        model = with_transform(network, info.transform_root, (h, w, 3))
        seg_metric = metrics_lib.ConfusionMatrixMetric(info.num_classes, info.ignore_label)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss=losses.SegmentationLoss(config.loss, class_weights, info.ignore_label),
                      metrics=[seg_metric], jit_compile=False)
        model.optimizer.build(model.trainable_variables)
        checkpoint = cb.ResumableCheckpoint(network, model.optimizer, _join(config.job_dir, "checkpoints"),
                                            checkpoint_steps=config.checkpoint_steps, is_chief=chief,
                                            worker_id=task_index)
    try:
        start_step = checkpoint.restore()
    except ValueError as e:  # variables of another shape: a job of an older segflow on other data
        raise UsageError(f"--job_dir {config.job_dir} holds a checkpoint that does not fit this model "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__}): use a new --job_dir")
    if chief:
        tf.io.gfile.makedirs(config.job_dir)
        _write_json(_join(config.job_dir, "config.json"), {**dataclasses.asdict(config), "data": _data_facts(info)})

    throughput = cb.Throughput(config.batch_size)
    callbacks = [checkpoint, throughput]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=_join(config.job_dir, "logs")))
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    if not chief:
        verbose = 0

    def train_ds(step: int):
        return data_lib.distributed_dataset(strategy, info, "train", config.batch_size, training=True,
                                            seed=config.seed, augment_images=config.augment,
                                            deterministic=config.deterministic,
                                            shuffle_buffer=config.shuffle_buffer, start_step=step)

    val_ds = data_lib.distributed_dataset(strategy, info, eval_split, config.batch_size, training=False,
                                          steps=val_steps)
    total_steps = config.epochs * steps_per_epoch
    started = time.time()
    step = start_step
    try:
        while step < total_steps:
            # A resumed run first finishes its interrupted epoch, then continues with whole epochs.
            epoch, offset = divmod(step, steps_per_epoch)
            end_epoch = epoch + 1 if offset else config.epochs
            model.fit(train_ds(step), initial_epoch=epoch, epochs=end_epoch,
                      steps_per_epoch=steps_per_epoch - offset if offset else steps_per_epoch,
                      validation_data=val_ds, validation_steps=val_steps, callbacks=callbacks, verbose=verbose,
                      shuffle=False)
            step = end_epoch * steps_per_epoch
        train_seconds = time.time() - started

        results = model.evaluate(val_ds, steps=val_steps, return_dict=True, verbose=0)
    except tf.errors.DataLossError as e:  # a shard damaged in place (same size): name it
        raise _data_loss(info, sorted({"train", eval_split}), e) from None
    matrix = seg_metric.matrix()  # every worker reads: the summed variable may need a collective
    weights = network.get_weights()
    summary = metrics_lib.summarize(matrix, info.metadata.class_names)
    report = {
        "model": config.model, "dataset": info.metadata.dataset, "eval_split": eval_split,
        "loss": float(results["loss"]), **summary,
        "epochs": config.epochs, "steps": total_steps, "global_batch_size": config.batch_size,
        "images_per_second": throughput.images_per_second, "train_seconds_this_run": round(train_seconds, 2),
        "resumed_from_step": start_step, "replicas": strategy.num_replicas_in_sync,
        "workers": distribution.cluster_size(), "image_size": [h, w],
    }
    if chief:
        keras.mixed_precision.set_global_policy("float32")  # the export is float32 for any serving hardware
        serving_network = models.build_model(config.model, (h, w, 3), info.num_classes,
                                             base_filters=config.base_filters, depth=config.depth)
        serving_network.set_weights(weights)
        serving_model = with_transform(serving_network, info.transform_root, (h, w, 3))
        export.export_model(serving_model, info, _join(config.job_dir, "model"), config.model)
        _write_json(_join(config.job_dir, "metrics.json"), report)
        logger.info("mIoU %.4f, pixel accuracy %.4f on %s; model in %s", report["miou"],
                     report["pixel_accuracy"], eval_split, _join(config.job_dir, "model"))
    if distribution.cluster_size() > 1:
        # Every worker waits here until the chief has exported: a worker that exits early takes down the
        # cluster's coordination service heartbeat while the chief still writes.
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m trainer.task``: the exit status; one stderr line for a bad flag (2) or bad data (1)."""
    def train(args: list[str]) -> dict:
        return run(config_from_args(args))

    def failure_line(error: BaseException) -> Optional[str]:
        reason = _storage_failure(error)
        return cli.error_line(NAME, reason) if reason else None

    return cli.main(NAME, argv, train, check=config_from_args, failure_line=failure_line, tensorflow=True)


def _storage_failure(error: BaseException) -> Optional[str]:
    """One line for a storage request that still failed after TensorFlow's own retries (its filesystems retry
    transient errors such as GCS 429/503 and resets, ``GCS_RETRY_CONFIG_*``; past that budget they raise
    "All N retry attempts failed"), or None for any other error, which keeps its traceback."""
    import tensorflow as tf

    if not isinstance(error, tf.errors.OpError) or "retry attempts failed" not in (error.message or ""):
        return None
    # The message names the request and (on its next line) the path; graph-node context ("[[{{node ...}}]]") and
    # anything after it are not for the user.
    lines = []
    for line in error.message.strip().splitlines():
        if "[[" in line:
            break
        lines.append(line)
    return "storage failed: " + " ".join(" ".join(lines).split())


if __name__ == "__main__":
    cli.exit_process(main())

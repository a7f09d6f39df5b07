"""One training run: ``run(config) -> TrainResult``. Trains, evaluates and (on the chief) exports.

Writes JOB/checkpoints (a rerun resumes from them after any interruption), JOB/logs (TensorBoard), JOB/model
(SavedModel serving raw image bytes, see trainer.export) and JOB/metrics.json (final evaluation). The same call
runs unchanged on one CPU, several GPUs (MirroredStrategy) or several machines (MultiWorkerMirroredStrategy from
TF_CONFIG, e.g. Vertex AI); only the chief writes the export and metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any, Optional

from pipelines.shared.tf_paths import join as join_path
from trainer import job_folder, preparation
from trainer.config import TrainConfig

logger = logging.getLogger("trainer.task")  # the command's name in its log lines, whichever module logs


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a run leaves: where, how far it trained, and the final evaluation (JOB/metrics.json's figures)."""

    job_dir: str
    model_dir: str  # JOB/model: the SavedModel (written by the chief)
    metrics_path: str  # JOB/metrics.json
    checkpoint_dir: str  # JOB/checkpoints: a rerun with the same config resumes from here
    epochs: int  # epochs trained in total (a resumed run counts the earlier ones)
    exported_epoch: int  # the epoch whose weights JOB/model holds (--export best or last)
    resumed_from_step: int  # 0 for a fresh run
    metrics: dict[str, Any]  # what JOB/metrics.json holds

    @property
    def miou(self) -> Optional[float]:
        """The exported model's mean IoU on the evaluation split (None when it has no labelled pixel)."""
        return self.metrics["miou"]


def run(config: TrainConfig) -> TrainResult:
    """Trains, evaluates and (on the chief) exports; returns where and what (the metrics are JOB/metrics.json's).
    Raises ``UsageError`` for a config no run could use and ``DataError`` for data it cannot train on."""
    job = preparation.prepare(config)
    try:
        preparation.build(job)
        preparation.restore(job)
        throughput, train_seconds = _train(job)
        report = _evaluate(job, throughput, train_seconds)
        weights = job.network.get_weights()  # every worker reads: some variables need a collective to read
        if job.chief:
            _export(job, weights, report)
    finally:
        if job.claim is not None:
            job.claim.release()
    from trainer import distribution

    if distribution.cluster_size() > 1:
        # Every worker waits here until the chief has exported: a worker that exits early takes down the
        # cluster's coordination service heartbeat while the chief still writes.
        import tensorflow as tf

        job.strategy.reduce(tf.distribute.ReduceOp.SUM, job.strategy.run(lambda: tf.constant(1.0)), axis=None)
    return TrainResult(
        job_dir=config.job_dir,
        model_dir=join_path(config.job_dir, "model"),
        metrics_path=join_path(config.job_dir, "metrics.json"),
        checkpoint_dir=join_path(config.job_dir, "checkpoints"),
        epochs=config.epochs,
        exported_epoch=int(report["exported_epoch"]),
        resumed_from_step=int(report["resumed_from_step"]),
        metrics=report,
    )


def _train(job: preparation.TrainingJob):
    """Fits up to ``--epochs``, in phases: a resumed run first finishes its interrupted epoch; the epochs
    with a frozen encoder (``--freeze_backbone_epochs``) are a phase of their own. Returns the throughput
    callback and the seconds spent."""
    import tensorflow as tf
    import tf_keras as keras

    from trainer import callbacks as cb, data as data_lib

    config, info, strategy = job.config, job.info, job.strategy
    throughput = cb.Throughput(config.batch_size)
    # The stop last: a step the stop lands in is counted and checkpointed like any other.
    callbacks = [job.checkpoint, job.best, throughput, cb.StopWhenInterrupted()]
    parameters = job.network.count_params()
    if parameters > cb.LARGE_FOR_CPU_PARAMETERS and not tf.config.list_logical_devices("GPU"):
        callbacks.append(cb.LargeModelOnCpu(config.model, parameters, job.steps_per_epoch))
    if job.chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=join_path(config.job_dir, "logs")))
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    if not job.chief:
        verbose = 0

    def train_ds(step: int):
        return data_lib.distributed_dataset(
            strategy,
            info,
            "train",
            config.batch_size,
            training=True,
            seed=config.seed & 0xFFFFFFFF,
            augment_images=config.augment,
            deterministic=config.deterministic,
            shuffle_buffer=config.shuffle_buffer,
            start_step=step,
        )

    val_ds = data_lib.distributed_dataset(
        strategy, info, job.eval_split, config.batch_size, training=False, steps=job.val_steps
    )
    job.val_ds = val_ds
    spe, frozen_epochs = job.steps_per_epoch, config.freeze_backbone_epochs
    started = time.time()
    step = job.start_step
    logs_before = job_folder.listing(job.claim, "logs")
    try:
        while step < job.total_steps:
            epoch, offset = divmod(step, spe)
            # Phase end: the interrupted epoch's end, the unfreeze epoch, or the last epoch.
            end_epoch = (
                epoch + 1 if offset else (min(frozen_epochs, config.epochs) if epoch < frozen_epochs else config.epochs)
            )
            preparation.set_encoder_frozen(job, epoch < frozen_epochs)
            job.model.fit(
                train_ds(step),
                initial_epoch=epoch,
                epochs=end_epoch,
                steps_per_epoch=spe - offset if offset else spe,
                validation_data=val_ds,
                validation_steps=job.val_steps,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,
            )
            step = end_epoch * spe
    except tf.errors.DataLossError as e:  # a shard damaged in place (same size): name it
        raise _data_loss(info, sorted({"train", job.eval_split}), e) from None
    except KeyboardInterrupt:  # Ctrl-C, or a stop (SIGTERM) that segflow's main turns into one
        _save_on_stop(job)
        raise
    finally:
        failing = sys.exc_info()[1] is not None
        try:
            job_folder.record_new_files(job.claim, "logs", logs_before)
        except Exception as e:  # noqa: BLE001 - a failing run's own error is the one to report, not this one
            if not failing:
                raise
            logger.warning("could not record this run's new files under logs/: %s", e)
    return throughput, time.time() - started


def _save_on_stop(job: preparation.TrainingJob) -> None:
    """A stopped run (Ctrl-C; SIGTERM: a Vertex AI preemption) saves a checkpoint of the steps done, so the same
    command resumes from there. Only in a one-worker run: a multi-worker save is a collective that workers
    which were not stopped would never join."""
    from trainer import distribution

    if distribution.cluster_size() > 1 or job.checkpoint is None:
        return
    step = int(job.checkpoint.step.numpy())
    if not step:
        return  # stopped before the first step: nothing to keep
    try:
        job.checkpoint.save()  # nothing to write when the checkpoint of this step is already there
    except Exception as e:  # noqa: BLE001 - the stop goes on: the previous checkpoint is still whole
        logger.warning("stopped: could not save a checkpoint (%s); the same command resumes from the last one", e)
        return
    logger.info(
        "stopped at step %d: saved %s; the same command resumes from there",
        step,
        join_path(job.config.job_dir, "checkpoints", f"ckpt-{step}"),
    )


def _evaluate(job: preparation.TrainingJob, throughput, train_seconds: float) -> dict:
    """Evaluates the model to export (``--export best``: the best validated epoch's weights; ``last``: the
    last epoch's) on the eval split; returns the report that becomes metrics.json."""
    import tensorflow as tf

    from trainer import distribution, metrics as metrics_lib

    config, info = job.config, job.info
    exported_epoch = config.epochs
    if config.export == "best":
        if job.best.epoch and job.best.restore_weights():
            exported_epoch = job.best.epoch
        else:
            logger.warning("--export best: no epoch was validated with a finite mIoU; exporting the last epoch")
    try:
        results = job.model.evaluate(job.val_ds, steps=job.val_steps, return_dict=True, verbose=0)
    except tf.errors.DataLossError as e:
        raise _data_loss(info, sorted({"train", job.eval_split}), e) from None
    matrix = job.seg_metric.matrix()  # every worker reads: the summed variable may need a collective
    summary = metrics_lib.summarize(matrix, info.metadata.class_names)
    h, w = info.image_size
    return {
        "model": config.model,
        "dataset": info.metadata.dataset,
        "eval_split": job.eval_split,
        "loss": float(results["loss"]),
        **summary,
        "epochs": config.epochs,
        "steps": job.total_steps,
        "global_batch_size": config.batch_size,
        "images_per_second": throughput.images_per_second,
        "train_seconds_this_run": round(train_seconds, 2),
        "resumed_from_step": job.start_step,
        "replicas": job.strategy.num_replicas_in_sync,
        "workers": distribution.cluster_size(),
        "image_size": [h, w],
        # Which weights JOB/model holds; the figures above are that model's.
        "export": config.export,
        "exported_epoch": exported_epoch,
        "input_convention": job.convention,
    }


def _export(job: preparation.TrainingJob, weights: list, report: dict) -> None:
    """Chief only: JOB/model (float32: the evaluated ``weights`` behind the same input convention) and
    JOB/metrics.json."""
    import tf_keras as keras

    from trainer import export, test_time, tflite
    from trainer.normalization import with_input_convention

    config, info = job.config, job.info
    keras.mixed_precision.set_global_policy("float32")  # the export is float32 for any serving hardware
    serving_network = preparation.build_network(config, job.image_shape, info.num_classes, None)
    serving_network.set_weights(weights)
    serving_model = with_input_convention(serving_network, job.convention, info.transform_root, job.image_shape)
    if config.test_time_flip:
        serving_model = test_time.flip_averaged(serving_model)
    claim = job.claim
    # Locally the export is written aside (claim.staging) and moved into place by renames once complete, so a
    # run that fails leaves the previous JOB/model whole. On gs:// (no rename) it is written in place, its
    # markers (segflow_model.json, metrics.json) aside until publication; files of the previous export that
    # this one does not rewrite are then deleted by the record.
    before = job_folder.listing(claim, "model") if not claim.staged else set()
    # TFLite first: its int8 gate may fail the export, before any file of it is written.
    tflite_info, report["tflite"] = tflite.export(
        serving_model,
        info,
        config.tflite_types(),
        claim.write_path,
        job.eval_split,
        convention=job.convention,
        max_int8_drop=config.max_int8_drop,
    )
    export.export_model(
        serving_model,
        info,
        claim.write_path("model"),
        config.model,
        info_path=claim.write_path("model/segflow_model.json"),
        tflite=tflite_info.to_dict() if tflite_info else None,
    )
    job_folder.write_json(claim.write_path("metrics.json"), report)
    written = None
    if not claim.staged:
        written = job_folder.listing(claim, "model") - (before - claim.previous)
        written |= {f.file for f in tflite_info.files} if tflite_info else set()
    claim.publish(written=written, replaces=job_folder.PUBLISHED)
    # mIoU is None when the eval split has no labelled pixel (no class to average: NaN, written as null).
    logger.info(
        "mIoU %s, pixel accuracy %s on %s (epoch %d of %d); model in %s",
        _figure(report["miou"]),
        _figure(report["pixel_accuracy"]),
        job.eval_split,
        report["exported_epoch"],
        config.epochs,
        join_path(config.job_dir, "model"),
    )


def _figure(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _data_loss(info, splits: list[str], error: Exception) -> Exception:
    """A ``DataError`` naming the shard behind a ``DataLossError`` (which names none), found by reading each."""
    from trainer import data_dir

    found = data_dir.find_corrupt_shard(info, splits)
    if found:
        path, why = found
        return data_dir.DataError(
            f"shard {path} is damaged ({why}): rerun python -m pipelines.preprocess "
            f"into {info.data_dir} (or into a fresh --output_dir)"
        )
    return data_dir.DataError(
        f"reading the records in {info.data_dir} failed ({data_dir.op_error_line(error)}), "
        f"though every shard reads cleanly now: check the storage and rerun"
    )

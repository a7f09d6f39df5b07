"""``python -m trainer.task``: train U-Net, FCN-8s or the MobileNetV2 U-Net on segflow records; export a SavedModel.

    python -m trainer.task --data_dir DST --model unet --job_dir JOB [--epochs 10] [--batch_size 8] ...

Writes JOB/checkpoints (resume with the same command after any interruption), JOB/logs (TensorBoard),
JOB/model (SavedModel serving raw image bytes, see trainer.export) and JOB/metrics.json (final evaluation).
JOB is the chief's for the whole run (``pipelines.shared.ownership``: one writer, only files a segflow trainer wrote are
ever deleted); the export is written aside and replaces the previous JOB/model and metrics.json only once
complete.
The same command runs unchanged on one CPU, several GPUs (MirroredStrategy) or several machines
(MultiWorkerMirroredStrategy from TF_CONFIG, e.g. Vertex AI); only the chief writes the export and metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import time
from typing import Optional, Sequence

from pipelines.shared import cli, ownership
from pipelines.shared.tf_paths import join as join_path
from schemas import strict_json
from trainer.config import TrainConfig, UsageError

logger = logging.getLogger("trainer.task")  # not __main__ under python -m: "trainer" logs at INFO

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
        # insertion order: class names stay in id order; a figure that could not be computed (NaN) is null
        f.write(strict_json.dumps(payload, what=path, absent_as_null=True, sort_keys=False) + "\n")


# Fields that must match between a run and the checkpoint it resumes: flags that change the variables' shapes
# or what the optimizer state means, and (under "data" in config.json) the dataset facts that do.
_RESUME_KEYS = ("model", "base_filters", "depth", "batch_size", "loss", "alpha")
_DATA_RESUME_KEYS = ("dataset", "num_classes", "class_names", "image_size")


# What a reader takes as the sign of a complete export: put in place last when a run publishes.
_MARKERS = ("model/segflow_model.json", "metrics.json")
# What publishing an export replaces; checkpoints, logs and config.json stay (a resume needs them).
_PUBLISHED = ["model", "metrics.json"]
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


def _previous_release_files(where: "ownership.Folder", kind: str) -> Optional[set]:
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
    from trainer import callbacks

    for directory in ("checkpoints", "checkpoints/best"):
        steps, _ = callbacks.read_state(where.full(directory))
        if steps:
            names = [f[len(directory) + 1 :] for f in present if f.startswith(directory + "/")]
            adopted.add(f"{directory}/{callbacks.STATE_FILE}")
            adopted |= {f"{directory}/{n}" for step in steps for n in callbacks.checkpoint_files(names, step)}
    return adopted


def _claim_job(config: TrainConfig) -> "ownership.Claim":
    """The chief's hold on JOB for the run: refuses (one line, before anything is written) a JOB that holds
    other files than a segflow trainer's, or that another trainer writes now."""
    return ownership.claim(
        config.job_dir, "trainer", "--job_dir", adopt=_previous_release_files, staged=True, markers=_MARKERS
    )


def _record_new_files(claim: Optional["ownership.Claim"], rel: str, before: set) -> None:
    """Records the files under ``rel`` that appeared since ``before`` (a listing): this run's, written in place."""
    if claim is not None:
        claim.record(set(claim.where.files(rel)) - before)


def _listing(claim: Optional["ownership.Claim"], rel: str) -> set:
    return set(claim.where.files(rel)) if claim is not None else set()


def _pretrained(backbone_weights: Optional[str]) -> bool:
    return bool(backbone_weights) and backbone_weights != "none"


def _data_facts(info) -> dict:
    """What JOB/config.json records of the dataset, for the resume check."""
    return {
        "dataset": info.metadata.dataset,
        "num_classes": info.num_classes,
        "class_names": list(info.metadata.class_names),
        "image_size": list(info.image_size),
    }


def _check_resumable(config: TrainConfig, info, steps_per_epoch: int):
    """Refuses (one line) to resume a checkpoint made with other shape-changing flags or on other data, or one
    already past ``--epochs``, or checkpoints none of which reads back whole; returns the checkpoint to resume
    (``callbacks.Found``), None when there is none."""
    import tensorflow as tf

    from trainer.callbacks import find_checkpoint

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
    if "backbone_weights" in previous and _pretrained(previous["backbone_weights"]) != _pretrained(
        config.backbone_weights
    ):
        diff.append("backbone_weights (pretrained or not)")
    if diff:
        raise UsageError(
            f"--job_dir {config.job_dir} holds a run with different {', '.join(diff)}: "
            f"use a new --job_dir or the same flags to resume"
        )
    # config.json of an older segflow has no "data": the restore itself then reports a shape mismatch.
    before, now = previous.get("data") or {}, _data_facts(info)
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


def _data_loss(info, splits: list[str], error: Exception) -> Exception:
    """A ``DataError`` naming the shard behind a ``DataLossError`` (which names none), found by reading each."""
    from trainer import data as data_lib

    found = data_lib.find_corrupt_shard(info, splits)
    if found:
        path, why = found
        return data_lib.DataError(
            f"shard {path} is damaged ({why}): rerun python -m pipelines.preprocess "
            f"into {info.data_dir} (or into a fresh --output_dir)"
        )
    return data_lib.DataError(
        f"reading the records in {info.data_dir} failed ({data_lib.op_error_line(error)}), "
        f"though every shard reads cleanly now: check the storage and rerun"
    )


@dataclasses.dataclass
class _Job:
    """What the steps of ``run`` hand each other: the data, the distribution and the model being trained."""

    config: TrainConfig
    info: object  # trainer.data.DatasetInfo
    steps_per_epoch: int
    strategy: object = None
    chief: bool = True
    task_index: int = 0
    eval_split: str = "val"
    val_steps: int = 1
    class_weights: Optional[list] = None
    network: object = None  # the network alone (what checkpoints hold)
    model: object = None  # raw uint8 images → input convention → network
    convention: str = "tft"
    seg_metric: object = None
    checkpoint: object = None
    best: object = None  # callbacks.BestCheckpoint
    start_step: int = 0
    resume_from: object = None  # callbacks.Found: the checkpoint to resume
    val_ds: object = None
    claim: Optional[ownership.Claim] = None  # the chief's hold on JOB

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    @property
    def image_shape(self) -> tuple:
        h, w = self.info.image_size
        return h, w, 3


def run(config: TrainConfig) -> dict:
    """Trains, evaluates and (on the chief) exports; returns the metrics dict (also JOB/metrics.json)."""
    job = _prepare(config)
    try:
        _build(job)
        _restore(job)
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
    return report


def _prepare(config: TrainConfig) -> _Job:
    """Checks the data, the --job_dir and the flags against them, sets up the strategy, seeds and precision."""
    config.validate()
    from trainer import data as data_lib

    # Refuse bad data and an unresumable --job_dir first (file reads only, no TensorFlow ops): one line, before
    # anything else is logged.
    info = data_lib.read_dataset(config.data_dir)
    steps_per_epoch = config.steps_per_epoch or max(1, info.count("train") // config.batch_size)
    from trainer import distribution

    # The chief takes JOB before reading its checkpoints (no other run writes them meanwhile); the other workers
    # only read it.
    claim = _claim_job(config) if distribution.is_chief() else None
    try:
        job = _prepare_job(config, info, steps_per_epoch, claim)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    return job


def _prepare_job(config: TrainConfig, info, steps_per_epoch: int, claim: Optional[ownership.Claim]) -> _Job:
    from trainer import data as data_lib

    found = _check_resumable(config, info, steps_per_epoch)
    # The strategy next: multi-worker collectives must be configured before TensorFlow runs any op.
    import tensorflow as tf
    import tf_keras as keras

    from trainer import distribution, models

    strategy = distribution.make_strategy(config.strategy)
    _, task_index = distribution.task_info()
    job = _Job(
        config,
        None,
        steps_per_epoch,
        strategy,
        distribution.is_chief(),
        task_index,
        start_step=found.step if found else 0,
        resume_from=found,
        claim=claim,
    )
    job.info = info = data_lib.load_dataset_info(config.data_dir)
    try:
        models.check_input_size(config.model, info.image_size, config.depth)
    except ValueError as e:
        raise UsageError(str(e))
    if config.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(
            f"--batch_size {config.batch_size} must be a multiple of the {strategy.num_replicas_in_sync} replicas"
        )
    job.class_weights = config.parse_class_weights(info.num_classes)
    if config.class_weights == "auto":
        job.class_weights = data_lib.median_frequency_weights(data_lib.class_pixel_counts(info))
        logger.info("class weights (median frequency): %s", [round(x, 3) for x in job.class_weights])
    job.eval_split = config.eval_split if info.shards.get(config.eval_split) else "train"
    if job.eval_split != config.eval_split:
        logger.warning("no %s records: evaluating on train", config.eval_split)
    job.val_steps = data_lib.eval_steps(info, job.eval_split, config.batch_size, config.validation_steps)

    # Any integer seeds, as in preprocess: its low 32 bits (what NumPy's seeding takes; 0..2**32-1 unchanged).
    keras.utils.set_random_seed(config.seed & 0xFFFFFFFF)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    if config.mixed_precision and gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    elif config.mixed_precision:
        logger.warning("--mixed_precision ignored: no GPU (float16 is slower than float32 on CPU)")
    return job


def _build_network(config: TrainConfig, shape, num_classes: int, backbone_weights: Optional[str]):
    from trainer import models

    try:
        return models.build_model(
            config.model,
            shape,
            num_classes,
            base_filters=config.base_filters,
            depth=config.depth,
            backbone_weights=backbone_weights,
            alpha=config.alpha,
        )
    except models.BackboneWeightsError as e:
        raise UsageError(str(e))


def _build(job: _Job) -> None:
    """The network (pretrained encoder weights loaded unless a checkpoint will replace them), its input
    convention, the compiled model, the optimizer with a slot for every weight, and the two checkpoints."""
    from trainer import callbacks as cb, metrics as metrics_lib, models, optim
    from trainer.normalization import with_input_convention

    config, info = job.config, job.info
    job.convention = models.input_convention(config.model, config.backbone_weights)
    # A resumed run takes every weight from its checkpoint: no download, and the weights file may be gone.
    weights = None if job.start_step else config.backbone_weights
    with job.strategy.scope():
        job.network = _build_network(config, job.image_shape, info.num_classes, weights)
        # The pipeline delivers raw uint8 images; the input convention is the model's first layer.
        job.model = with_input_convention(job.network, job.convention, info.transform_root, job.image_shape)
        job.seg_metric = metrics_lib.ConfusionMatrixMetric(info.num_classes, info.ignore_label)
        optimizer = optim.make_optimizer(
            config.learning_rate,
            job.total_steps,
            schedule=config.lr_schedule,
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
        )
        _compile(job, optimizer)
        # Slots for every weight, the encoder's included even while it is frozen: checkpoints then hold the same
        # variables before and after the unfreeze epoch, and a resume on either side restores them all.
        job.model.optimizer.build(job.model.trainable_variables)
        checkpoints = join_path(config.job_dir, "checkpoints")
        job.checkpoint = cb.ResumableCheckpoint(
            job.network,
            job.model.optimizer,
            checkpoints,
            checkpoint_steps=config.checkpoint_steps,
            is_chief=job.chief,
            worker_id=job.task_index,
            owner=job.claim,
            owner_dir="checkpoints",
        )
        job.best = cb.BestCheckpoint(
            job.network,
            join_path(checkpoints, "best"),
            monitor="val_miou",
            is_chief=job.chief,
            worker_id=job.task_index,
            owner=job.claim,
            owner_dir="checkpoints/best",
        )


def _compile(job: _Job, optimizer) -> None:
    """(Re)compiles the model: Keras collects the trainable weights when it compiles, so freezing or
    unfreezing the encoder takes a new compile (with the same optimizer, loss and metric objects)."""
    from trainer import losses

    info = job.info
    job.model.compile(
        optimizer=optimizer,
        loss=losses.SegmentationLoss(job.config.loss, job.class_weights, info.ignore_label),
        metrics=[job.seg_metric],
        jit_compile=False,
    )


def _restore(job: _Job) -> None:
    """Resumes from the latest checkpoint (and learns which epoch was best so far); writes JOB/config.json."""
    import tensorflow as tf

    config = job.config
    try:
        job.start_step = job.checkpoint.restore(job.resume_from)
        job.best.restore()
    except ValueError as e:  # variables of another shape: a job of an older segflow on other data
        raise UsageError(
            f"--job_dir {config.job_dir} holds a checkpoint that does not fit this model "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}): use a new --job_dir"
        )
    if job.chief:
        tf.io.gfile.makedirs(config.job_dir)
        if job.claim is not None:
            job.claim.record(["config.json"])
        _write_json(
            join_path(config.job_dir, "config.json"), {**dataclasses.asdict(config), "data": _data_facts(job.info)}
        )


def _set_encoder_frozen(job: _Job, frozen: bool) -> None:
    """Freezes (or unfreezes) the pretrained encoder and recompiles when that changes anything. A frozen
    encoder's batch-norm layers run in inference mode (Keras: a BatchNormalization with ``trainable=False``),
    as transfer learning wants: their statistics stay ImageNet's while the decoder learns."""
    from trainer import models

    layers = models.encoder_layers(job.network, job.config.model)
    if not layers or all(layer.trainable == (not frozen) for layer in layers):
        return
    for layer in layers:
        layer.trainable = not frozen
    with job.strategy.scope():
        _compile(job, job.model.optimizer)
    logger.info("encoder %s", "frozen" if frozen else "unfrozen: fine-tuning the whole network")


def _train(job: _Job):
    """Fits up to ``--epochs``, in phases: a resumed run first finishes its interrupted epoch; the epochs
    with a frozen encoder (``--freeze_backbone_epochs``) are a phase of their own. Returns the throughput
    callback and the seconds spent."""
    import tensorflow as tf
    import tf_keras as keras

    from trainer import callbacks as cb, data as data_lib

    config, info, strategy = job.config, job.info, job.strategy
    throughput = cb.Throughput(config.batch_size)
    callbacks = [job.checkpoint, job.best, throughput]
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
    logs_before = _listing(job.claim, "logs")
    try:
        while step < job.total_steps:
            epoch, offset = divmod(step, spe)
            # Phase end: the interrupted epoch's end, the unfreeze epoch, or the last epoch.
            end_epoch = (
                epoch + 1 if offset else (min(frozen_epochs, config.epochs) if epoch < frozen_epochs else config.epochs)
            )
            _set_encoder_frozen(job, epoch < frozen_epochs)
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
            _record_new_files(job.claim, "logs", logs_before)
        except Exception as e:  # noqa: BLE001 - a failing run's own error is the one to report, not this one
            if not failing:
                raise
            logger.warning("could not record this run's new files under logs/: %s", e)
    return throughput, time.time() - started


def _save_on_stop(job: _Job) -> None:
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


def _evaluate(job: _Job, throughput, train_seconds: float) -> dict:
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


def _export(job: _Job, weights: list, report: dict) -> None:
    """Chief only: JOB/model (float32: the evaluated ``weights`` behind the same input convention) and
    JOB/metrics.json."""
    import tf_keras as keras

    from trainer import export
    from trainer.normalization import with_input_convention

    config, info = job.config, job.info
    keras.mixed_precision.set_global_policy("float32")  # the export is float32 for any serving hardware
    serving_network = _build_network(config, job.image_shape, info.num_classes, None)
    serving_network.set_weights(weights)
    serving_model = with_input_convention(serving_network, job.convention, info.transform_root, job.image_shape)
    claim = job.claim
    # Locally the export is written aside (claim.staging) and moved into place by renames once complete, so a
    # run that fails leaves the previous JOB/model whole. On gs:// (no rename) it is written in place, its
    # markers (segflow_model.json, metrics.json) aside until publication; files of the previous export that
    # this one does not rewrite are then deleted by the record.
    before = _listing(claim, "model") if not claim.staged else set()
    export.export_model(
        serving_model,
        info,
        claim.write_path("model"),
        config.model,
        info_path=claim.write_path("model/segflow_model.json"),
    )
    _write_json(claim.write_path("metrics.json"), report)
    written = None if claim.staged else _listing(claim, "model") - (before - claim.previous)
    claim.publish(written=written, replaces=_PUBLISHED)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m trainer.task``: the exit status; one stderr line for a bad flag (2) or bad data (1)."""

    def train(args: list[str]) -> dict:
        return run(config_from_args(args))

    def failure_line(error: BaseException) -> Optional[str]:
        reason = _storage_failure(error)
        return cli.error_line(NAME, reason) if reason else None

    # --verbose is Keras' progress output here, not the logging flag (--log_level debug shows the libraries).
    return cli.main(
        NAME, argv, train, check=config_from_args, failure_line=failure_line, tensorflow=True, verbose_flag=False
    )


def _storage_failure(error: BaseException) -> Optional[str]:
    """One line for a storage request that still failed after TensorFlow's own retries (its filesystems retry
    transient errors such as GCS 429/503 and resets, ``GCS_RETRY_CONFIG_*``; past that budget they raise
    "All N retry attempts failed"), or None for any other error, which keeps its traceback."""
    import tensorflow as tf

    google = _google_storage_failure(error)
    if google is not None:
        return google
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


def _google_storage_failure(error: BaseException) -> Optional[str]:
    """One line for a Cloud Storage request that failed past google-cloud-storage's own retries (the JOB
    folder's owner record and lease on gs://, ``pipelines.shared.ownership``), searching the exception's causes; else
    None."""
    try:
        from google.api_core.exceptions import GoogleAPIError
    except ImportError:  # no google-cloud packages: TensorFlow's own client is the only one in use
        return None
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, GoogleAPIError):
            return "storage failed: " + " ".join(f"{type(current).__name__}: {current}".split())[:400]
        current = current.__cause__ or current.__context__
    return None


if __name__ == "__main__":
    cli.exit_process(main())

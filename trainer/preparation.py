"""The set-up of a training run: the data and JOB checked, the strategy, seeds and precision, the network behind
its input convention, compiled, with its checkpoints, restored when resuming.

``TrainingJob`` is what the steps of ``trainer.training.run`` hand each other.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from pipelines.shared import ownership
from pipelines.shared.tf_paths import join as join_path
from trainer import job_folder
from trainer.config import TrainConfig, UsageError

logger = logging.getLogger("trainer.task")  # the command's name in its log lines, whichever module logs


@dataclasses.dataclass
class TrainingJob:
    """What the steps of ``run`` hand each other: the data, the distribution and the model being trained."""

    config: TrainConfig
    info: object  # trainer.data_dir.DatasetInfo
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
    resume_from: object = None  # checkpoints.Found: the checkpoint to resume
    val_ds: object = None
    claim: Optional[ownership.Claim] = None  # the chief's hold on JOB

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    @property
    def image_shape(self) -> tuple:
        h, w = self.info.image_size
        return h, w, 3


def prepare(config: TrainConfig) -> TrainingJob:
    """Checks the data, the --job_dir and the flags against them, sets up the strategy, seeds and precision."""
    config.validate()
    from trainer import data_dir

    # Refuse bad data and an unresumable --job_dir first (file reads only, no TensorFlow ops): one line, before
    # anything else is logged.
    info = data_dir.read_dataset(config.data_dir)
    steps_per_epoch = config.steps_per_epoch or max(1, info.count("train") // config.batch_size)
    from trainer import distribution

    # The chief takes JOB before reading its checkpoints (no other run writes them meanwhile); the other workers
    # only read it.
    claim = job_folder.claim_job(config) if distribution.is_chief() else None
    try:
        job = _prepare_job(config, info, steps_per_epoch, claim)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    return job


def _prepare_job(config: TrainConfig, info, steps_per_epoch: int, claim: Optional[ownership.Claim]) -> TrainingJob:
    from trainer import data as data_lib, data_dir

    found = job_folder.check_resumable(config, info, steps_per_epoch)
    # The strategy next: multi-worker collectives must be configured before TensorFlow runs any op.
    import tensorflow as tf
    import tf_keras as keras

    from trainer import distribution, models

    strategy = distribution.make_strategy(config.strategy)
    _, task_index = distribution.task_info()
    job = TrainingJob(
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
    job.info = info = data_dir.load_dataset_info(config.data_dir)
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
        job.class_weights = data_dir.median_frequency_weights(data_dir.class_pixel_counts(info))
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


def build_network(config: TrainConfig, shape, num_classes: int, backbone_weights: Optional[str]):
    from trainer import models

    try:
        return models.build_model(
            config.model,
            shape,
            num_classes,
            base_filters=config.base_filters,
            depth=config.depth,
            batch_norm_momentum=config.batch_norm_momentum,
            backbone_weights=backbone_weights,
            alpha=config.alpha,
        )
    except models.BackboneWeightsError as e:
        raise UsageError(str(e))


def build(job: TrainingJob) -> None:
    """The network (pretrained encoder weights loaded unless a checkpoint will replace them), its input
    convention, the compiled model, the optimizer with a slot for every weight, and the two checkpoints."""
    from trainer import callbacks as cb, metrics as metrics_lib, models, optim
    from trainer.normalization import with_input_convention

    config, info = job.config, job.info
    job.convention = models.input_convention(config.model, config.backbone_weights)
    # A resumed run takes every weight from its checkpoint: no download, and the weights file may be gone.
    weights = None if job.start_step else config.backbone_weights
    with job.strategy.scope():
        job.network = build_network(config, job.image_shape, info.num_classes, weights)
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


def _compile(job: TrainingJob, optimizer) -> None:
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


def restore(job: TrainingJob) -> None:
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
        job_folder.write_json(
            join_path(config.job_dir, "config.json"),
            {**dataclasses.asdict(config), "data": job_folder.data_facts(job.info)},
        )


def set_encoder_frozen(job: TrainingJob, frozen: bool) -> None:
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

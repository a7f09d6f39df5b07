"""Training recipes on real Oxford-IIIT Pet photos: each lever of the ``pet_cpu`` preset measured on a fixed
validation split, scored the way ``pipelines.evaluate`` scores a test split (every photo at its original size,
the trimap's three classes, the official IoU rule), with and without test-time flip averaging.

    python bench/pet_recipes.py --pet_dir PET --work_dir /tmp/pet_recipes [--val_fraction 0.3]
        [--runs v0.5_preset,momentum_0.9,...] [--truth_ceiling] [--largest_region] [--scales 96,128,160]
        [--rescore]

PET is the authors' layout (``images/*.jpg``, ``annotations/trimaps/*.png``, ``annotations/trainval.txt``);
the photos are never copied. Records are made once with ``--image_size 128`` and ``--val_fraction`` (a run that
needs other preprocess flags, ``RUN_RECORDS``, gets records of its own with the same validation photos); each run is
``trainer.task --preset pet_cpu`` plus the run's flags (``RUNS`` below), trained from scratch in a fresh JOB, in
the order given; its wall time, CPU seconds and peak memory are measured around the whole training process. A
run's table row is printed as soon as it is scored, so a long bench shows its figures as it goes.
``--largest_region`` scores each mask a second time after a post-processing step (``largest_region``);
``--scales`` scores each model a last time with multi-scale test-time averaging (``score_scales``), the evaluation
of DeepLab and its successors; ``--rescore`` scores the runs' models already in WORK/jobs again, without training
them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
from typing import Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.common import measure_cpu  # noqa: E402
from schemas import features  # noqa: E402
from schemas.labels import pet_spec, pet_trimap_to_train_ids  # noqa: E402
from schemas.scores import mean_iou, per_class_iou  # noqa: E402

PET_CLASSES = pet_spec("trimap").class_names

# Each run: the flags given on top of --preset pet_cpu, one change at a time. Every run exports without flip
# averaging (--no_test_time_flip): the bench scores each model with and without it.
# The runs keep the network every table row names: pet_cpu as it was until it took 24 filters for 45 epochs.
PLAIN = ["--no_test_time_flip", "--base_filters", "16", "--epochs", "60"]
RUNS: dict[str, list[str]] = {
    "v0.5_preset": [*PLAIN, "--epochs", "20", "--batch_norm_momentum", "0.99"],  # pet_cpu as v0.5 shipped it
    "momentum_0.9": [*PLAIN, "--epochs", "20"],
    "momentum_0.9_class_weights": [*PLAIN, "--epochs", "20", "--class_weights", "auto"],
    "momentum_0.9_deeplabv3plus": [*PLAIN, "--epochs", "20", "--model", "deeplabv3plus"],
    "momentum_0.9_deeplabv3plus_24": [*PLAIN, "--epochs", "20", "--model", "deeplabv3plus", "--base_filters", "24"],
    "preset": PLAIN,  # pet_cpu until 24 filters: momentum 0.9, 16 filters, 60 epochs
    # The U-Net's width at depth 4: at equal epochs, then for as long as the 30-minute budget allows.
    "width_8": [*PLAIN, "--epochs", "20", "--base_filters", "8"],
    "width_24": [*PLAIN, "--epochs", "20", "--base_filters", "24"],
    "width_24_45_epochs": [*PLAIN, "--epochs", "45", "--base_filters", "24"],
    "width_24_36_epochs": [*PLAIN, "--epochs", "36", "--base_filters", "24"],
    "width_20_50_epochs": [*PLAIN, "--epochs", "50", "--base_filters", "20"],
    # The learning rate: pet_cpu's 2e-3 doubled (the preset's model was still improving at its 51st epoch of 60).
    "learning_rate_4e-3": [*PLAIN, "--learning_rate", "4e-3"],
    # Half the batch: twice the updates in the same epochs, for a model still improving at the end of its budget.
    "batch_size_8": [*PLAIN, "--batch_size", "8"],
    # Regularisation of today's pet_cpu network (24 filters, 45 epochs): decoupled weight decay (AdamW).
    "width_24_weight_decay_0.05": [*PLAIN, "--epochs", "45", "--base_filters", "24", "--weight_decay", "0.05"],
    # The thin border, weighted: median-frequency class weights on today's network (they were -0.002 at 16 filters).
    "width_24_class_weights": [*PLAIN, "--epochs", "45", "--base_filters", "24", "--class_weights", "auto"],
    # What twice pet_cpu's budget buys its network: the same run for 90 epochs (a bound, not a preset).
    "width_24_90_epochs": [*PLAIN, "--epochs", "90", "--base_filters", "24"],
    # What online augmentation (flip, scale-and-crop, colour) earns today's network.
    "width_24_no_augment": [*PLAIN, "--epochs", "45", "--base_filters", "24", "--no_augment"],
    # oneDNN's kernels, which the commands turn on on x86-64 (pipelines/shared/cli.py): the CPU a training takes
    # with and without them, at 16 and at 24 filters (4 epochs each: the cost, not the score).
    "onednn_off_4_epochs": [*PLAIN, "--epochs", "4"],
    "onednn_on_4_epochs": [*PLAIN, "--epochs", "4"],
    "width_24_onednn_off_4_epochs": [*PLAIN, "--epochs", "4", "--base_filters", "24"],
    "width_24_onednn_on_4_epochs": [*PLAIN, "--epochs", "4", "--base_filters", "24"],
    # Offline augmentation: one augmented copy of each training photo, cropped from the full-resolution photo before
    # the resize (preprocess --augment_copies 1: 392 training records), for half the epochs (the same steps).
    "width_24_offline_copy": [*PLAIN, "--epochs", "23", "--base_filters", "24"],
}
# A run's records, where they are not the shared ones: preprocess's flags on top of the shared records' (the split is
# the same: it is a function of each photo's name and --val_fraction).
RUN_RECORDS: dict[str, list[str]] = {"width_24_offline_copy": ["--augment_copies", "1"]}
# A run's environment on top of this process's (the commands keep a value the caller set).
RUN_ENVIRONMENT: dict[str, dict[str, str]] = {
    name: {"TF_ENABLE_ONEDNN_OPTS": "0"} for name in RUNS if "onednn_off" in name
}


def _val_ids(records: str) -> list[str]:
    import tensorflow as tf

    ids = []
    for path in sorted(glob.glob(os.path.join(records, "val-*.tfrecord.gz"))):
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(raw.numpy())
            ids.append(example.features.feature[features.IMAGE_FILENAME].bytes_list.value[0].decode())
    return ids


def trimap_train_ids(pet_dir: str, example_id: str) -> np.ndarray:
    """The photo's trimap as train ids (pet, background, border; 255 unlabelled), at the photo's own size."""
    from PIL import Image

    with Image.open(os.path.join(pet_dir, "annotations", "trimaps", f"{example_id}.png")) as trimap:
        return pet_trimap_to_train_ids(np.asarray(trimap))


def confusion(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The 3x3 confusion matrix (rows: the truth's class) of ``predicted`` class ids against ``truth``'s train ids,
    its unlabelled pixels left out."""
    labelled = truth != 255
    pairs = truth[labelled].astype(np.int64) * 3 + predicted[labelled]
    return np.bincount(pairs, minlength=9).reshape(3, 3)


def largest_region(class_ids: np.ndarray) -> np.ndarray:
    """The mask with one pet: the pixels not background (pet or border) outside their largest 4-connected region
    become background, and the background holes that region encloses become pet. The usual clean-up for a
    one-object-per-photo dataset, against masks with islands (the issue counted ~5 "pets" per real photo)."""
    from scipy import ndimage

    background = PET_CLASSES.index("background")
    regions, count = ndimage.label(class_ids != background)
    if count == 0:
        return class_ids
    largest = regions == 1 + int(np.argmax(np.bincount(regions.ravel())[1:]))
    cleaned = np.where((regions > 0) & ~largest, background, class_ids)
    cleaned[ndimage.binary_fill_holes(largest) & ~largest] = PET_CLASSES.index("pet")
    return cleaned.astype(class_ids.dtype)


def score(model_dir: str, pet_dir: str, ids: list[str], flip: bool, post_steps: tuple = ()) -> list[np.ndarray]:
    """Per-class IoU of the exported model on ``ids`` at each photo's original size, as served, then after each of
    ``post_steps`` (functions of the class-id mask); ``flip``: the mean of the probabilities of the photo and of its
    mirror image (mirrored back) before the upsampling and argmax."""
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)
    pre, predict, post = (model.signatures[s] for s in ("preprocess", "predict_resized", "postprocess"))
    matrices = np.zeros((1 + len(post_steps), 3, 3), np.int64)
    for example_id in ids:
        with open(os.path.join(pet_dir, "images", f"{example_id}.jpg"), "rb") as f:
            prepared = pre(image_bytes=tf.constant(f.read()))
        image = prepared["image"][None]
        probabilities = predict(images=image)["probabilities"]
        if flip:
            mirrored = predict(images=tf.reverse(image, [2]))["probabilities"]
            probabilities = 0.5 * (probabilities + tf.reverse(mirrored, [2]))
        class_ids = post(probabilities=probabilities[0], height=prepared["height"], width=prepared["width"])
        class_ids = class_ids["class_ids"].numpy()
        truth = trimap_train_ids(pet_dir, example_id)
        for matrix, step in zip(matrices, (lambda mask: mask, *post_steps)):
            matrix += confusion(truth, step(class_ids))
    return [per_class_iou(matrix) for matrix in matrices]


def network_at_size(job: str, size: int):
    """JOB's exported network (its best checkpoint: the weights JOB/model holds) rebuilt for ``size`` x ``size``
    uint8 images, its input convention first, as a function of a batch giving softmax probabilities. The networks
    are fully convolutional: any size their depth divides runs."""
    import tensorflow as tf

    from trainer.models import build_model, input_convention
    from trainer.normalization import with_input_convention

    with open(os.path.join(job, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(job, "metrics.json")) as f:
        exported_epoch = json.load(f)["exported_epoch"]
    best = tf.train.latest_checkpoint(os.path.join(job, "checkpoints", "best"))
    if config["export"] != "best" or not best or int(best.rsplit("-", 1)[1]) != exported_epoch:
        raise SystemExit(f"{job}: its best checkpoint is not the exported model's; train it with --export best")
    shape = (size, size, 3)
    network = build_model(
        config["model"],
        shape,
        config["data"]["num_classes"],
        base_filters=config["base_filters"],
        depth=config["depth"],
        batch_norm_momentum=config["batch_norm_momentum"],
        alpha=config["alpha"],
    )
    tf.train.Checkpoint(model=network).read(best).expect_partial()
    convention = input_convention(config["model"], config["backbone_weights"])
    if convention != "tft":
        model = with_input_convention(network, convention, config["data_dir"], shape)
    else:
        # The tensorflow-transform graph takes the records' size only; the model contract gives its per-channel
        # normalisation (for the TFLite file), which score_scales checks against the exported model.
        with open(os.path.join(job, "model", "segflow_model.json")) as f:
            tflite = json.load(f).get("tflite") or {}
        if "channel_mean" not in tflite:
            raise SystemExit(f"{job}: its model contract has no per-channel normalisation; export it with --tflite")
        mean, std = (tf.constant(tflite[k], tf.float32) for k in ("channel_mean", "channel_std"))

        def model(images, training):
            return network((tf.cast(images, tf.float32) - mean) / std, training=training)

    return tf.function(lambda images: tf.nn.softmax(model(images, training=False), axis=-1))


def score_scales(job: str, pet_dir: str, ids: list[str], sizes: list[int]) -> np.ndarray:
    """Per-class IoU with multi-scale test-time averaging: each photo decoded and resized to each of ``sizes`` by
    the served rule, the flip-averaged probabilities at each size restored to the photo's size, their mean's
    argmax. The network rebuilt at the records' own size is first checked against the exported one."""
    import tensorflow as tf

    from pipelines.shared import pixels_graph

    networks = {size: network_at_size(job, size) for size in sizes}
    exported = tf.saved_model.load(os.path.join(job, "model"))
    with open(os.path.join(job, "model", "segflow_model.json")) as f:
        own_size = json.load(f)["image_size"][0]
    with open(os.path.join(pet_dir, "images", f"{ids[0]}.jpg"), "rb") as f:
        image = exported.signatures["preprocess"](image_bytes=tf.constant(f.read()))["image"][None]
    rebuilt = networks.get(own_size) or network_at_size(job, own_size)
    gap = float(
        tf.reduce_max(tf.abs(rebuilt(image) - exported.signatures["predict_resized"](images=image)["probabilities"]))
    )
    if gap > 1e-4:
        raise SystemExit(f"{job}: the network rebuilt from its best checkpoint differs from JOB/model by {gap}")
    matrix = np.zeros((3, 3), np.int64)
    for example_id in ids:
        with open(os.path.join(pet_dir, "images", f"{example_id}.jpg"), "rb") as f:
            encoded = tf.constant(f.read())
        restored = []
        for size, network in networks.items():
            image, height, width = pixels_graph.decode_image_for_model(encoded, (size, size))
            image = pixels_graph.resize_image(image, (size, size), content_hw=(height, width))[None]
            pair = network(tf.concat([image, tf.reverse(image, [2])], 0))
            probabilities = 0.5 * (pair[0] + tf.reverse(pair[1], [1]))
            restored.append(pixels_graph.restore_size(probabilities, height, width, (size, size)))
        class_ids = pixels_graph.argmax_channels(tf.add_n(restored)).numpy()
        matrix += confusion(trimap_train_ids(pet_dir, example_id), class_ids)
    return per_class_iou(matrix)


def truth_ceiling(pet_dir: str, ids: list[str], size: int) -> np.ndarray:
    """Per-class IoU of a perfect ``size`` x ``size`` prediction served at each photo's original size: the trimap
    itself resized to the records' size by preprocess's mask rule, one-hot, restored by the served rule (the
    scores bilinearly to the photo's size, then the argmax): what a network exact at 128x128 would score (one with
    softer scores at edges could differ slightly)."""
    import tensorflow as tf

    from pipelines.shared.pixels_graph import restore_size
    from pipelines.shared.pixels_host import resize_mask_host

    matrix = np.zeros((3, 3), np.int64)
    for example_id in ids:
        truth = trimap_train_ids(pet_dir, example_id)
        small = resize_mask_host(truth, (size, size))
        scores = tf.one_hot(small.astype(np.int32), 3)  # Pet trimaps label every pixel: no 255 to score
        restored = restore_size(scores, truth.shape[0], truth.shape[1], (size, size))
        matrix += confusion(truth, tf.argmax(restored, -1).numpy())
    return per_class_iou(matrix)


def _records(args: argparse.Namespace, flags: list[str]) -> str:
    """The records made with ``flags`` on top of the shared ones' (made on first use): WORK/records[_FLAGS]."""
    records = os.path.join(args.work_dir, "_".join(["records", *(f.lstrip("-") for f in flags)]))
    if not os.path.exists(os.path.join(records, "metadata.json")):
        preprocess = [sys.executable, "-m", "pipelines.preprocess", "--dataset", "pet", "--input_dir", args.pet_dir]
        preprocess += ["--output_dir", records, "--image_size", "128", "--val_fraction", str(args.val_fraction)]
        measure_cpu([*preprocess, *flags])
    return records


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pet_dir", required=True, help="Oxford-IIIT Pet in the authors' layout")
    parser.add_argument("--work_dir", required=True, help="records and one JOB per run go here")
    parser.add_argument("--val_fraction", type=float, default=0.3)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}; '' for none")
    parser.add_argument(
        "--truth_ceiling", action="store_true", help="first score the trimaps themselves at 128x128 (truth_ceiling)"
    )
    parser.add_argument(
        "--largest_region", action="store_true", help="also score each mask after largest_region (extra columns)"
    )
    parser.add_argument(
        "--scales", default="", help="comma-separated sizes, e.g. 96,128,160: also score multi-scale (extra columns)"
    )
    parser.add_argument("--rescore", action="store_true", help="score the runs' models in WORK/jobs; train nothing")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.scales.split(",") if s]
    runs = [r for r in args.runs.split(",") if r]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; choose from {list(RUNS)}")

    records = _records(args, [])
    ids = _val_ids(records)
    print(f"validation photos: {len(ids)}; records: {records}", flush=True)
    post_steps = (largest_region,) if args.largest_region else ()
    extra = " mIoU, largest region | with flip, largest region | border, with flip, largest region |" * bool(post_steps)
    extra += f" mIoU, scales {args.scales} | border, scales {args.scales} |" * bool(sizes)
    print(
        "| run | flags on pet_cpu | train wall s | CPU s | peak RSS GB | val mIoU | pet | background | border "
        "| mIoU with flip |" + extra
    )
    print("|---|---|---|---|---|---|---|---|---|---|" + "---|" * (3 * len(post_steps) + 2 * bool(sizes)))
    if args.truth_ceiling:
        ceiling = truth_ceiling(args.pet_dir, ids, 128)
        cells = ["truth_ceiling", "(no network: the trimap at 128x128, served)", "-", "-", "-"]
        cells += [f"{mean_iou(ceiling):.3f}", *(f"{v:.3f}" for v in ceiling), "-"]
        print("| " + " | ".join(cells) + " |", flush=True)
    for name in runs:
        job = os.path.join(args.work_dir, "jobs", name)
        if args.rescore:
            if not os.path.exists(os.path.join(job, "bench_scores.json")):
                raise SystemExit(f"{job}: no scored model of run {name} to score again; run it without --rescore")
            with open(os.path.join(job, "bench_scores.json")) as f:
                measured = json.load(f)
            wall, cpu, peak = (measured.get(k, float("nan")) for k in ("wall_s", "cpu_s", "peak_bytes"))
        else:
            shutil.rmtree(job, ignore_errors=True)  # a fresh run, never a resumed one
            data_dir = _records(args, RUN_RECORDS.get(name, []))
            if data_dir != records and _val_ids(data_dir) != ids:
                raise SystemExit(f"{data_dir}: its validation photos are not the shared records'")
            train = [sys.executable, "-m", "trainer.task", "--data_dir", data_dir, "--preset", "pet_cpu"]
            train += ["--job_dir", job, "--verbose", "2", *RUNS[name]]
            wall, peak, cpu, _ = measure_cpu(train, env={**os.environ, **RUN_ENVIRONMENT.get(name, {})})
        plain, *plain_post = score(os.path.join(job, "model"), args.pet_dir, ids, False, post_steps)
        flipped, *flipped_post = score(os.path.join(job, "model"), args.pet_dir, ids, True, post_steps)
        cells = [name, " ".join(RUNS[name]) or "(the preset)", f"{wall:.0f}", f"{cpu:.0f}", f"{peak / 1e9:.2f}"]
        cells += [f"{mean_iou(plain):.3f}", *(f"{v:.3f}" for v in plain), f"{mean_iou(flipped):.3f}"]
        for cleaned, cleaned_flipped in zip(plain_post, flipped_post):
            border = cleaned_flipped[PET_CLASSES.index("border")]
            cells += [f"{mean_iou(cleaned):.3f}", f"{mean_iou(cleaned_flipped):.3f}", f"{border:.3f}"]
        if sizes:
            averaged = score_scales(job, args.pet_dir, ids, sizes)
            cells += [f"{mean_iou(averaged):.3f}", f"{averaged[PET_CLASSES.index('border')]:.3f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
        if not args.rescore:
            with open(os.path.join(job, "bench_scores.json"), "w") as f:
                scores = {"plain": plain.tolist(), "flip": flipped.tolist(), "wall_s": wall, "cpu_s": cpu}
                json.dump({**scores, "peak_bytes": peak}, f)


if __name__ == "__main__":
    main()

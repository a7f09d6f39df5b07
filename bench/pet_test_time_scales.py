"""Multi-scale test-time inference, measured on a trained ``pet_cpu`` job: the mean of the class probabilities
predicted at several input scales (each scale's scores resized back to the records' size), with and without
flip averaging, scored like ``bench/pet_recipes.py`` scores its runs (each validation photo at its original size,
the trimap's three classes, the official IoU rule).

    python bench/pet_test_time_scales.py --pet_dir PET --work_dir /tmp/pet_recipes --run preset

JOB is ``WORK_DIR/jobs/RUN``, trained by ``bench/pet_recipes.py`` (records in ``WORK_DIR/records``). The network
is rebuilt at each scale's size from JOB's best checkpoint (a U-Net is fully convolutional: the same weights
at any size divisible by 2**depth); its input is the photo as ``preprocess`` serves it (the records' geometry),
normalised by the records' transform graph, then resized to the scale. Scale 1 alone reproduces ``pet_recipes``'
figures for the job (a check that the rebuilt network is the exported one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.pet_recipes import _val_ids, confusion, trimap_train_ids  # noqa: E402
from schemas.scores import mean_iou, per_class_iou  # noqa: E402

# Sets of scales (factors of the records' size) whose probabilities are averaged.
SCALE_SETS: dict[str, tuple[float, ...]] = {
    "1": (1.0,),
    "0.75": (0.75,),
    "1.25": (1.25,),
    "1.5": (1.5,),
    "0.875,1,1.125": (0.875, 1.0, 1.125),
    "0.75,1,1.25": (0.75, 1.0, 1.25),
    "1,1.25": (1.0, 1.25),
    "1,1.25,1.5": (1.0, 1.25, 1.5),
    "0.75,1,1.25,1.5": (0.75, 1.0, 1.25, 1.5),
}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pet_dir", required=True, help="Oxford-IIIT Pet in the authors' layout")
    parser.add_argument("--work_dir", required=True, help="bench/pet_recipes.py's --work_dir")
    parser.add_argument("--run", required=True, help="the pet_recipes run whose JOB is scored")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from trainer.models import build_model
    from trainer.normalization import TransformNormalization

    records, job = os.path.join(args.work_dir, "records"), os.path.join(args.work_dir, "jobs", args.run)
    with open(os.path.join(job, "config.json")) as f:
        config = json.load(f)
    size = config["data"]["image_size"][0]
    shape = dict(base_filters=config["base_filters"], depth=config["depth"])
    shape["batch_norm_momentum"] = config["batch_norm_momentum"]
    trained = build_model(config["model"], (size, size, 3), 3, **shape)
    best = tf.train.latest_checkpoint(os.path.join(job, "checkpoints", "best"))
    tf.train.Checkpoint(model=trained).read(best).expect_partial()
    sides = sorted({int(round(size * s)) for scales in SCALE_SETS.values() for s in scales})
    networks = {}
    for side in sides:
        networks[side] = build_model(config["model"], (side, side, 3), 3, **shape)
        networks[side].set_weights(trained.get_weights())
    normalise = TransformNormalization(records)
    served = tf.saved_model.load(os.path.join(job, "model"))
    preprocess, postprocess = served.signatures["preprocess"], served.signatures["postprocess"]

    def probabilities(image: tf.Tensor, side: int, flip: bool) -> tf.Tensor:
        # Normalised at the records' size (the transform graph's input shape), then resized: the normalisation is
        # per channel and affine, so it commutes with a resize whose weights sum to 1.
        x = normalise(tf.cast(image[None], tf.float32))
        if side != size:
            x = tf.image.resize(x, (side, side), method="bilinear", antialias=side < size)
        p = tf.nn.softmax(networks[side](x, training=False))
        if flip:
            mirrored = tf.nn.softmax(networks[side](tf.reverse(x, [2]), training=False))
            p = 0.5 * (p + tf.reverse(mirrored, [2]))
        if side != size:
            p = tf.image.resize(p, (size, size), method="bilinear")
        return p[0]

    matrices = {(name, flip): np.zeros((3, 3), np.int64) for name in SCALE_SETS for flip in (False, True)}
    ids = _val_ids(records)
    for example_id in ids:
        with open(os.path.join(args.pet_dir, "images", f"{example_id}.jpg"), "rb") as f:
            prepared = preprocess(image_bytes=tf.constant(f.read()))
        truth = trimap_train_ids(args.pet_dir, example_id)
        at = {(side, flip): probabilities(prepared["image"], side, flip) for side in sides for flip in (False, True)}
        for name, scales in SCALE_SETS.items():
            for flip in (False, True):
                mean = tf.add_n([at[(int(round(size * s)), flip)] for s in scales]) / len(scales)
                out = postprocess(probabilities=mean, height=prepared["height"], width=prepared["width"])
                matrices[(name, flip)] += confusion(truth, out["class_ids"].numpy())
    print(f"{args.run}: {len(ids)} validation photos, best checkpoint {os.path.basename(best)}")
    print("| scales | flip averaged | val mIoU | pet | background | border |")
    print("|---|---|---|---|---|---|")
    for (name, flip), matrix in matrices.items():
        iou = per_class_iou(matrix)
        cells = [name, "yes" if flip else "no", f"{mean_iou(iou):.4f}", *(f"{v:.4f}" for v in iou)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""``make demo``: the whole mission on generated Pet-layout data, on this machine, in a few minutes.

    python -m pipelines.tools.demo --work_dir out/demo [--num_examples 96] [--epochs 12] [--image_size 64]

1. generate a Pet-layout dataset (``pipelines.tools.synthetic``) to train on, and a separate set of generated
   held-out images (``heldout_*``: other pictures, other sizes, never trained on);
2. preprocess the training set to TFRecords (``pipelines.preprocess``, DirectRunner);
3. train a small U-Net (``python -m trainer.task`` in a subprocess: pipelines never import the trainer);
4. run inference with instances over the held-out images (``pipelines.infer``);
5. score the predictions against the held-out images' trimaps (``pipelines.evaluate``);
6. draw ``report.html`` / ``report.png``: input | ground truth | prediction | instances.
Prints the mIoU and where everything is.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Optional, Sequence

from pipelines.datasets import pet
from pipelines.shared import logs
from pipelines.tools import synthetic


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def _done(start: float) -> None:
    print(f"   ({time.monotonic() - start:.0f} s)", flush=True)


def _shown(module: str, *lines: list[str]) -> list[str]:
    """Prints the command a step runs, as a user would type it (one flag group per line), and returns its
    flags: each step runs exactly the command shown, so the demo is a recipe to copy."""
    text = " \\\n      ".join(shlex.join(line) for line in lines)
    print(f"   $ python -m {module} {text}", flush=True)
    return [flag for line in lines for flag in line]


def _finished_training(job: str, epochs: int) -> bool:
    """Whether ``job`` already holds a training that reached ``epochs`` (a rerun of the demo): the trainer
    then resumes with nothing left to train and exports the same model, which the demo says rather than
    announcing a training."""
    try:
        with open(os.path.join(job, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return False
    return metrics.get("epochs") == epochs


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.tools.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work_dir", default="out/demo", help="everything goes here (default out/demo)")
    parser.add_argument("--num_examples", type=int, default=96, help="generated training examples")
    parser.add_argument(
        "--num_heldout",
        "--num_new",
        dest="num_heldout",
        type=int,
        default=12,
        help="generated held-out images to run inference on (default 12; --num_new is its old name)",
    )
    parser.add_argument("--image_size", type=int, default=64, help="model input size (square)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--augment_copies",
        type=int,
        default=1,
        help="offline-augmented copies per training example (more steps per epoch)",
    )
    parser.add_argument("--base_filters", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the libraries' start-up lines and warnings (hidden by default)",
    )
    args = parser.parse_args(argv)
    if args.augment_copies < 0:
        parser.exit(2, "pipelines.tools.demo: error: --augment_copies must be >= 0\n")
    for name in ("num_examples", "num_heldout", "image_size", "epochs", "batch_size", "base_filters", "depth"):
        if getattr(args, name) < 1:
            parser.exit(2, f"pipelines.tools.demo: error: --{name} must be >= 1\n")
    return args


def run(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    from pipelines import evaluate, infer, preprocess
    from pipelines.common.flags import quiet_beam_logs
    from pipelines.evaluate import report
    from pipelines.evaluate.job import format_table

    quiet_beam_logs()
    work = os.path.abspath(args.work_dir)
    raw, heldout = os.path.join(work, "data", pet.DATASET.name), os.path.join(work, "data", "pet_heldout")
    records, job, out = os.path.join(work, "records"), os.path.join(work, "job"), os.path.join(work, "predictions")
    os.makedirs(work, exist_ok=True)
    began = time.monotonic()

    t = _step(f"1/6 generating {args.num_examples} Pet-layout training examples and {args.num_heldout} held-out images")
    synthetic.write_pet_dataset(raw, args.num_examples, size=(96, 128), seed=args.seed)
    # Other pictures (another seed, another size), named heldout_* so that no file shares a training file's name.
    synthetic.write_pet_dataset(heldout, args.num_heldout, size=(120, 160), seed=args.seed + 1000, id_prefix="heldout_")
    _done(t)

    t = _step("2/6 preprocess → TFRecords (Beam DirectRunner)")
    preprocess.run(
        *preprocess.from_args(
            _shown(
                "pipelines.preprocess",
                ["--dataset", pet.DATASET.name, "--input_dir", raw, "--output_dir", records],
                ["--image_size", str(args.image_size), "--val_fraction", "0.15"],
                ["--augment_copies", str(args.augment_copies), "--seed", str(args.seed)],
            )
        )
    )
    _done(t)

    train = [
        ["--data_dir", records, "--model", "unet", "--job_dir", job],
        ["--epochs", str(args.epochs), "--batch_size", str(args.batch_size)],
        ["--base_filters", str(args.base_filters), "--depth", str(args.depth), "--learning_rate", "0.003"],
        # Bit-reproducible: the same mIoU on every run (and, for this small model on 2 CPU cores, ~12 % faster
        # than the default's parallel data order).
        ["--seed", str(args.seed), "--verbose", "2", "--deterministic"],
    ]
    finished = _finished_training(job, args.epochs)
    t = _step(
        f"3/6 train a U-Net ({args.epochs} epochs, subprocess: python -m trainer.task)"
        + (f": {job} already holds this finished training, reused (delete it to train again)" if finished else "")
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-m", "trainer.task", *_shown("trainer.task", *train)], check=True, env=env)
    _done(t)

    t = _step("4/6 infer with instances (Beam RunInference)")
    inferred = infer.run(
        *infer.from_args(
            _shown(
                "pipelines.infer",
                ["--model_dir", os.path.join(job, "model")],
                ["--input", os.path.join(heldout, "images", "*"), "--output_dir", out],
                ["--instances", "--overlay"],
            )
        )
    )
    _done(t)

    t = _step("5/6 evaluate (Beam: per-image confusion matrices, CombineGlobally)")
    doc = evaluate.run(
        *evaluate.from_args(
            _shown(
                "pipelines.evaluate",
                ["--predictions", os.path.join(out, "masks"), "--ground_truth", heldout, "--dataset", pet.DATASET.name],
            )
        )
    ).document
    print(format_table(doc))  # run() returns the document; the command line's main prints it
    _done(t)

    t = _step("6/6 report")
    paths = report.run(
        _shown(
            "pipelines.evaluate.report",
            ["--output_dir", out, "--dataset", pet.DATASET.name, "--ground_truth", heldout, "--max_images", "8"],
        )
    )
    _done(t)

    miou = doc.get("mean_iou")
    print(f"\nsegflow demo finished in {time.monotonic() - began:.0f} s")
    print(
        f"  mIoU on {doc['images']} generated held-out images: {miou:.4f}" if miou is not None else "  no scored images"
    )
    print(f"  training data     {raw}")
    print(f"  held-out images   {heldout}")
    print(f"  records           {records}")
    print(f"  model             {os.path.join(job, 'model')}   (training metrics: {os.path.join(job, 'metrics.json')})")
    print(
        f"  predictions       {out}/masks, color, overlay, instances   "
        f"({inferred.images_written} images, {inferred.instances} instances, {inferred.dead_letters} dead letters)"
    )
    print(f"  evaluation        {os.path.join(out, 'evaluation.json')}")
    print(f"  report            {paths['html']}  and  {paths['png']}")
    return {"mean_iou": miou, "report": paths, "evaluation": doc, "counters": inferred.counters}


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Quiet as the programs themselves are: TensorFlow's native start-up lines and Beam's known
    # warnings are dropped, here and in the trainer's subprocess, unless --verbose.
    verbose = logs.setup_logging(argv)
    try:
        with logs.native_stderr_filtered(verbose):
            logs.start_tensorflow()
            run(argv)
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"pipelines.tools.demo: error: training failed (exit {err.returncode}); see its log above")


if __name__ == "__main__":
    main()

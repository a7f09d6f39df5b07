"""TFLite vs SavedModel: model size and CPU latency per image, same model, same machine, same run.

    python bench/tflite.py [--sizes 128,256] [--repeats 50] [--threads 1] [--job_dirs JOB1,JOB2]

For each input size, the pet_cpu network (U-Net, 16 base filters, depth 4) is trained for a few steps on generated
Pet data preprocessed at that size (``--tflite all``: the trainer's own export writes the SavedModel and the three
TFLite files; the weights' quality does not change the cost), or ``--job_dirs`` names trained JOBs (one per size).
Then, in this one process, on the same images at the records' size, batch 1:

  SavedModel: ``predict_resized`` of ``tf.saved_model.load(JOB/model)`` (TensorFlow, ``--threads`` intra-op
  threads), plus the argmax, i.e. class ids as the TFLite files give them;
  TFLite: ``tf.lite.Interpreter`` on each file (``--threads`` threads; XNNPACK, TensorFlow's default delegate).

Each is called 5 times to warm up, then ``--repeats`` times; the median wall milliseconds and the median CPU
milliseconds (this process's, all threads) per call are printed, with the size on disk (SavedModel: the whole
folder). Rounds alternate between the runtimes so load drift hits them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def train_job(root: str, size: int) -> str:
    """Generated Pet data → records at ``size`` → a few steps of pet_cpu's network, exported with --tflite all."""
    from pipelines.preprocess import PreprocessConfig, run as preprocess
    from pipelines.tools import synthetic
    from trainer import TrainConfig, run as train

    raw, dst, job = (os.path.join(root, f"{name}{size}") for name in ("raw", "dst", "job"))
    synthetic.write_pet_dataset(raw, 24, size=(size, size), seed=0)
    preprocess(
        PreprocessConfig(dataset="pet", input_dir=raw, output_dir=dst, image_size=(size, size)),
        ["--direct_running_mode", "in_memory"],
    )
    fields = dict(epochs=1, steps_per_epoch=2, batch_size=4, warmup_steps=0, verbose=0)
    train(TrainConfig.from_preset("pet_cpu", data_dir=dst, job_dir=job, tflite="all", max_int8_drop=1.0, **fields))
    return job


def timed(call, repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) per call after 5 warm-up calls."""
    for _ in range(5):
        call()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        call()
        walls.append((time.perf_counter() - w) * 1e3)
        cpus.append((time.process_time() - c) * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def bench_job(job: str, repeats: int, threads: int) -> list[tuple[str, str, int, float, float]]:
    import numpy as np
    import tensorflow as tf

    from schemas import model_contract as contract
    from trainer import tflite

    info = contract.ModelInfo.from_json(open(os.path.join(job, "model", contract.MODEL_INFO_FILE)).read())
    h, w = info.image_size
    image = np.random.default_rng(0).integers(0, 256, size=(1, h, w, 3), dtype=np.uint8)
    predict = tf.saved_model.load(os.path.join(job, "model")).signatures[contract.PREDICT_RESIZED]
    tensor = tf.constant(image)

    def saved_model():
        return tf.argmax(predict(images=tensor)["probabilities"], axis=-1).numpy()

    runners = {}
    for kind in contract.TFLITE_TYPES:
        content = open(os.path.join(job, contract.TFLITE_FILES[kind]), "rb").read()
        runners[kind] = tflite.interpreter(content, num_threads=threads).get_signature_runner()
    rows = {"SavedModel": [folder_bytes(os.path.join(job, "model")), [], []]}
    for kind in runners:
        rows[f"TFLite {kind}"] = [os.path.getsize(os.path.join(job, contract.TFLITE_FILES[kind])), [], []]
    calls = {"SavedModel": saved_model}
    calls.update({f"TFLite {k}": (lambda r=r: r(images=image)["class_ids"]) for k, r in runners.items()})
    for _ in range(3):  # alternating rounds
        for name, call in calls.items():
            wall, cpu = timed(call, repeats)
            rows[name][1].append(wall)
            rows[name][2].append(cpu)
    shape = f"{h}x{w}"
    return [(shape, name, n, statistics.median(ws), statistics.median(cs)) for name, (n, ws, cs) in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256", help="record sizes (square), one model each")
    parser.add_argument("--job_dirs", default=None, help="trained JOBs to measure instead (comma-separated)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads = TFLite threads")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    with tempfile.TemporaryDirectory() as root:
        jobs = args.job_dirs.split(",") if args.job_dirs else [train_job(root, int(s)) for s in args.sizes.split(",")]
        print(f"threads {args.threads}, {args.repeats} calls x 3 rounds, batch 1, medians")
        print("| input | runtime | size on disk | wall ms / image | CPU ms / image |")
        print("|---|---|---|---|---|")
        for job in jobs:
            for shape, name, size, wall, cpu in bench_job(job, args.repeats, args.threads):
                print(f"| {shape} | {name} | {size / 1e6:.2f} MB | {wall:.2f} | {cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()

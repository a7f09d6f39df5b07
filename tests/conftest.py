"""Fixtures shared across the suite. Expensive artefacts (a preprocessed dataset, a trained tiny model, a
loopback GCS server) are session-scoped and built once, so the whole suite stays fast on 2 cores."""

import os
import signal

# Interrupts reach the commands the tests start, as they would from a terminal, however the suite was started. A
# script's background job (``make test &`` without job control) starts with SIGINT ignored, which every process it
# starts inherits; segflow's commands leave an ignored SIGINT ignored (pipelines/shared/cli.py, as ``nohup`` asks),
# so the tests that stop a run with SIGINT would wait for a stop that never comes. Python's own handler again,
# here and, through exec, in every process started from here (each xdist worker imports this file too).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Quiet TensorFlow and keep it from grabbing every core in every worker process the tests start.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# TensorFlow's own CPU kernels, where the commands turn oneDNN's on (pipelines/shared/cli.py; a caller's value is
# kept, so every command the tests start, in-process or not, runs the same kernels). The suite's networks are tiny
# (4-16 filters, 32-64 px): there oneDNN's set-up of each new shape outweighs its kernels, and the whole suite took
# 1,759 CPU-s with them against 1,580 without (back to back, 2 workers), while a real network's training takes
# 25-30 % less CPU with them (docs/benchmarks.md). The tests that start a command with its own default run it with
# oneDNN: tests/test_schemas.py's probe (the setting), tests/test_cli.py's quiet runs (its start-up line hidden).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# One fixture module per area; each defines its session-scoped artefacts.
pytest_plugins = [
    "tests.fixtures.data",  # raw datasets in the real layouts, and preprocessed records
    "tests.fixtures.model",  # a tiny trained model and its export
    "tests.fixtures.gcs",  # a real GCS JSON-API server on loopback
    "tests.fixtures.gcs_tls",  # TensorFlow's own GCS client reaching it, in a private namespace (root)
]


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core this process may run on, at most 4 (each worker holds TensorFlow and the
    shared artefacts' readers in memory, and the end-to-end tests start processes of their own).

    Not more workers than cores, though the tests wait (on processes they start, on the storage clients' retry
    back-off) for about 12 % of their time: on 2 cores, back to back, 2 workers took 687 s and 1,224 CPU-s, 3 took
    712 s and 1,376 CPU-s, 4 took 785 s and 1,483 CPU-s. The CPU grows faster than the waits are filled, as every
    worker's TensorFlow thread pools contend for the same cores (TensorFlow's own threads cut to 1 per process:
    724 s, 1,289 CPU-s)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


# The modules holding the longest end-to-end tests (CI's --durations=20), longest first. They run before the rest
# so that the run ends on short tests: under --dist worksteal an idle worker takes queued tests from a busy one, but
# a test already running cannot be split, and a two-minute test started last leaves the other worker idle.
LONGEST_FIRST = (
    "test_gcs_trainer.py",
    "test_trainer.py",
    "test_demo.py",
    "test_preprocess.py",
    "test_progress.py",
    "test_cli.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """Moves the modules in ``LONGEST_FIRST`` to the front, in that order; a module's tests keep their order and
    stay together (a module-scoped fixture is built once per worker that runs the module)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))

"""``python -m pipelines.common.sdk_worker``: the SDK worker process of the local runner's multi-processing mode.

Beam's own worker (``apache_beam.runners.worker.sdk_worker_main``), run to the end of its harness, then ended
without the interpreter's teardown: a worker that has loaded TensorFlow and tensorflow-transform spends 1-2 s of
CPU unwinding them after its last bundle (every module, TF's thread pools, gRPC channels), and the job waits for
every worker to exit before it returns. Everything the job needs from a worker has been sent over the Fn API by
then; the harness has closed its log handler, and standard streams are flushed here.
"""

from __future__ import annotations

import logging
import sys

from apache_beam.runners.worker import sdk_worker_main

from pipelines.shared.cli import exit_process


def run_harness() -> int:
    """Runs Beam's SDK harness, configured by this process's environment as the runner sets it; returns the
    exit status it asks for.

    TensorFlow's log records go to the runner with every other record (the harness sends the root logger's to
    it), where the job's log level and filters apply: TensorFlow gives its logger a handler of its own on
    stderr when it is first used before the harness sets up logging, which would print, unfiltered, what the
    job's own log does not show (tensorflow-transform's INFO lines on every run).
    """
    tensorflow_logger = logging.getLogger("tensorflow")
    for handler in list(tensorflow_logger.handlers):
        tensorflow_logger.removeHandler(handler)
    try:
        sdk_worker_main.main(sys.argv)
    except SystemExit as e:  # the status the harness asked for
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:  # noqa: BLE001 - sdk_worker_main has logged it; the runner reads the exit status
        return 1
    return 0


def main() -> None:
    exit_process(run_harness())


if __name__ == "__main__":
    main()

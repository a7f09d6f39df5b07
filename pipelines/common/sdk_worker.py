"""``python -m pipelines.common.sdk_worker``: the SDK worker process of the local runner's multi-processing mode.

Beam's own worker (``apache_beam.runners.worker.sdk_worker_main``), run to the end of its harness, then ended
without the interpreter's teardown: a worker that has loaded TensorFlow and tensorflow-transform spends 1-2 s of
CPU unwinding them after its last bundle (every module, TF's thread pools, gRPC channels), and the job waits for
every worker to exit before it returns. Everything the job needs from a worker has been sent over the Fn API by
then; the harness has closed its log handler, and standard streams are flushed here.
"""

from __future__ import annotations

import sys

from apache_beam.runners.worker import sdk_worker_main

from schemas.cli import exit_process


def main() -> None:
    status = 0
    try:
        sdk_worker_main.main(sys.argv)
    except SystemExit as e:  # the status the harness asked for
        status = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:  # sdk_worker_main has logged it; the runner reads the exit status
        status = 1
    exit_process(status)


if __name__ == "__main__":
    main()

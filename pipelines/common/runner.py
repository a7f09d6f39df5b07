"""Pipeline options shared by every segflow Beam job: fast local defaults, every Beam option overridable."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import shlex
from typing import Iterator, NoReturn, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from pipelines.common import direct_defaults, forkserver
from pipelines.shared import cli

_DIRECT_RUNNERS = ("DirectRunner", "direct", "SwitchingDirectRunner")

# Why these figures: ``pipelines.common.direct_defaults`` (beside the help that states the rule without Beam).
THREADED_UP_TO_CORES = direct_defaults.THREADED_UP_TO_CORES
PROCESSES_FROM_INPUT_BYTES = direct_defaults.PROCESSES_FROM_INPUT_BYTES
THREADS_BELOW_INPUT_BYTES = direct_defaults.THREADS_BELOW_INPUT_BYTES
# The threads are the FnApiRunner's embedded workers (``in_memory`` with ``direct_num_workers`` > 1: one
# in-process SDK worker per thread, bundles split across them), not ``multi_threading``, which runs the same
# threads behind a loopback gRPC data plane that encodes every element: same 3000 inputs, 2 cores, 0.5-0.6 s
# less per run and a quicker shutdown.
THREADED_MODE = "in_memory"
# The SDK worker of multi-processing mode: Beam's own, ended without the interpreter's teardown (see the module);
# forked by a fork server when the job started one (``start_workers``).
WORKER_COMMAND = " ".join(shlex.quote(a) for a in forkserver.plain_worker_command())
# The fork server the next multi-processing pipeline takes (``start_workers``): one per pipeline, since it serves
# exactly that pipeline's workers.
_waiting_server: Optional[forkserver.ForkServer] = None


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(a == f"--{flag}" or a.startswith(f"--{flag}=") for a in argv)


def check_beam_flags(beam_argv: Sequence[str]) -> None:
    """Raises ValueError naming the flags that are neither the job's nor any Beam option's.

    Beam itself only logs and drops unknown flags, so a typo (``--num_shard 4``, ``--runer Dataflow``) would
    run a different job than the one asked for; segflow jobs fail instead.
    """
    parser = beam_option_parser()
    said = io.StringIO()
    try:
        # argparse prints Beam's whole usage (150 lines) and its error before exiting: keep only the error.
        with contextlib.redirect_stderr(said):
            _, unknown = parser.parse_known_args(list(beam_argv))
    except SystemExit:
        reason = said.getvalue().strip().splitlines()[-1:] or [""]
        reason = re.sub(r"^\S+: error: ", "", reason[0])
        raise ValueError(f"invalid Beam option: {reason or ' '.join(beam_argv)}") from None
    if unknown:
        flags = [a.split("=", 1)[0] for a in unknown if a.startswith("-")]
        raise ValueError(f"unknown flag(s) {' '.join(flags or unknown)}: not a flag of this job nor a Beam option")
    _check_runner_name(PipelineOptions(list(beam_argv)).view_as(StandardOptions).runner)


class _ParserBuilt(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


def beam_option_parser() -> argparse.ArgumentParser:
    """The parser Beam reads its options with, every option class imported so far registered on it, as
    ``PipelineOptions.get_all_options`` builds it (no abbreviations): taken from its public
    ``add_extra_args_fn`` hook, which Beam calls with the parser once the options are registered, before it
    parses anything (left there, so nothing is parsed or logged twice)."""

    def take(parser: argparse.ArgumentParser) -> None:
        raise _ParserBuilt(parser)

    try:
        PipelineOptions([]).get_all_options(add_extra_args_fn=take)
    except _ParserBuilt as built:
        return built.parser
    raise RuntimeError("PipelineOptions.get_all_options did not call add_extra_args_fn with its parser")


def _check_runner_name(name: Optional[str]) -> None:
    """Raises ValueError for a ``--runner`` Beam would not find (it would fail only once the job is built, with a
    traceback): neither one of its runner names, with or without ``Runner`` and in any case, nor a module path."""
    if not name or "." in name:  # a PipelineRunner subclass's full name: Beam imports it
        return
    known = {n.lower(): n for n in StandardOptions.KNOWN_RUNNER_NAMES}
    if name.lower() in known or f"{name.lower()}runner" in known:
        return
    import difflib

    close = difflib.get_close_matches(name.lower(), list(known), n=1)
    hint = f"did you mean {known[close[0]]}? " if close else ""
    raise ValueError(
        f"unknown --runner {name} ({hint}one of {', '.join(StandardOptions.KNOWN_RUNNER_NAMES)}, or a "
        "PipelineRunner's full module path)"
    )


def default_running_mode(cores: int, input_bytes: Optional[int] = None, early_workers: bool = False) -> str:
    """The local runner's mode when no flag names one: threads on one core, where processes only add start-up;
    processes on more when ``early_workers`` (the job starts them through a fork server whose imports overlap
    its own: ``early_workers_possible``); otherwise threads (``THREADED_MODE``) for an input of under
    ``THREADS_BELOW_INPUT_BYTES`` on any machine, and on machines of up to ``THREADED_UP_TO_CORES`` cores unless
    the job reads ``PROCESSES_FROM_INPUT_BYTES`` or more (``input_bytes``, when the job knows it), and processes
    on more cores."""
    if cores <= 1:
        return THREADED_MODE
    if early_workers:
        return "multi_processing"
    if input_bytes is not None and input_bytes < THREADS_BELOW_INPUT_BYTES:
        return THREADED_MODE
    if cores <= THREADED_UP_TO_CORES and (input_bytes is None or input_bytes < PROCESSES_FROM_INPUT_BYTES):
        return THREADED_MODE
    return "multi_processing"


def early_workers_possible() -> bool:
    """True, where fork servers are supported, inside a segflow program's ``main`` (``cli.in_program_main``), or
    when a fork server is already waiting: a program starts its workers' fork server before it imports
    TensorFlow (``start_workers``), the two imports overlap, and worker processes start within ~0.2 s of
    threads on 2 cores and run faster. A Python caller (a notebook, a test) keeps ``default_running_mode``'s
    size rule: its process may have TensorFlow loaded already, and the server's own imports (~4.5 s on 2 cores)
    would not overlap anything. Decided by the entry point alone, never by what the process imported before."""
    return forkserver.supported() and (_waiting_server is not None or cli.in_program_main())


def make_pipeline_options(
    beam_argv: Sequence[str], input_bytes: Optional[int] = None, early_workers: bool = False
) -> PipelineOptions:
    """Builds ``PipelineOptions`` from the flags the job did not consume.

    Defaults, each overridden by the matching flag: the DirectRunner with one worker per core, as threads or
    processes by ``default_running_mode`` (the DirectRunner's own default is a single in-memory worker, which
    leaves cores idle on image work); ``input_bytes``: how much the job will read, if known; ``early_workers``:
    the job starts its worker processes early (``start_workers``). No ``save_main_session``: every DoFn lives in
    an importable module, which is what Dataflow workers (installing the package through ``--setup_file``) need
    as well.
    """
    argv = list(beam_argv)
    options = PipelineOptions(argv)
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"
    if standard.runner in _DIRECT_RUNNERS + ("BundleBasedDirectRunner",):
        direct = options.view_as(DirectOptions)
        if not _given(argv, "direct_running_mode"):
            direct.direct_running_mode = default_running_mode(os.cpu_count() or 1, input_bytes, early_workers)
        if not _given(argv, "direct_num_workers"):
            direct.direct_num_workers = max(1, os.cpu_count() or 1)
    options.view_as(SetupOptions).save_main_session = False
    return options


def is_remote(options: PipelineOptions) -> bool:
    """True when the job runs on workers that are not this process's machine (e.g. Dataflow)."""
    runner = (options.view_as(StandardOptions).runner or "").lower()
    return "dataflow" in runner


def local_runner(options: PipelineOptions) -> Optional[beam.runners.PipelineRunner]:
    """The FnApiRunner when the options name the DirectRunner, else None (Beam builds the named runner).

    Beam 2.77's DirectRunner first tries the Prism runner, which it downloads from GitHub on first use: offline
    that costs seconds and a failed download before falling back; online it silently swaps in a runner that
    ignores ``--direct_running_mode``. For batch pipelines like segflow's the DirectRunner's own choice after
    Prism is the FnApiRunner (which honours ``--direct_num_workers`` / ``--direct_running_mode``): go there
    directly, built exactly as the DirectRunner builds it.
    """
    if options.view_as(StandardOptions).runner not in _DIRECT_RUNNERS:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision_info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return _LocalRunner(provision_info=provision_info)


def start_workers(options: PipelineOptions, preload: Sequence[str]) -> None:
    """When ``options`` run the local runner in multi-processing mode, starts the fork server of the next
    pipeline's workers (``forkserver``) now, importing ``preload`` (the modules the job's DoFns use) while this
    process goes on with its own start-up; a no-op otherwise, where fork servers are unsupported, or when one
    is already waiting. Jobs call it as early as they know their options; ``discard_workers`` after the run."""
    global _waiting_server
    direct = options.view_as(DirectOptions)
    if (
        _waiting_server is not None
        or options.view_as(StandardOptions).runner not in _DIRECT_RUNNERS
        or direct.direct_running_mode != "multi_processing"
    ):
        return
    _waiting_server = forkserver.start(_worker_count(direct), preload)


def workers_waiting() -> bool:
    """Whether a fork server started by ``start_workers`` waits for the next pipeline."""
    return _waiting_server is not None


def discard_workers() -> None:
    """Stops a fork server that no pipeline took (e.g. the job failed before it ran one)."""
    global _waiting_server
    server, _waiting_server = _waiting_server, None
    if server is not None:
        server.discard()


def _worker_count(direct: DirectOptions) -> int:
    return direct.direct_num_workers or os.cpu_count() or 1  # 0: one per core, as the FnApiRunner reads it


def _take_server(workers: int) -> Optional[forkserver.ForkServer]:
    global _waiting_server
    server = _waiting_server
    if server is None or server.workers != workers:
        return None
    _waiting_server = None
    return server


class _LocalRunner(fn_runner.FnApiRunner):
    """The FnApiRunner, whose multi-processing mode starts segflow's worker command instead of Beam's: the
    waiting fork server's (``start_workers``), else ``WORKER_COMMAND``.

    That mode is the runner's default mode with every stage sent to worker subprocesses started by a command line,
    which the runner hard-codes; so here the default mode runs on that environment with this command.
    """

    def __init__(self, provision_info: fn_runner.ExtendedProvisionInfo):
        super().__init__(provision_info=provision_info)
        self._segflow_provision_info = provision_info

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> beam.runners.runner.PipelineResult:
        # Scoped to the run: importing segflow changes no logger of the importing process.
        with _without_in_memory_workers_warning():
            return self._run_pipeline(pipeline, options)

    def _run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> beam.runners.runner.PipelineResult:
        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return super().run_pipeline(pipeline, options)
        server = _take_server(_worker_count(direct))
        command = server.worker_command if server is not None else WORKER_COMMAND
        # A runner of this one pipeline, built on the worker command's environment (the constructor's public
        # parameter); in the default mode, it runs every stage there.
        on_workers = fn_runner.FnApiRunner(
            default_environment=SubprocessSDKEnvironment.from_command_string(command),
            provision_info=self._segflow_provision_info,
        )
        direct.direct_running_mode = THREADED_MODE
        try:
            return on_workers.run_pipeline(pipeline, options)
        finally:  # the caller's options as they were
            direct.direct_running_mode = "multi_processing"
            if server is not None:
                server.close()


class _DropInMemoryWorkersWarning(logging.Filter):
    """The FnApiRunner warns that ``in_memory`` with several workers has no parallel effect; it does (its
    ParallelBundleManager splits each stage's bundles across one embedded worker per thread), so the warning
    would only mislead on every local run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "direct_running_mode should be" not in record.getMessage()


FN_RUNNER_LOGGER = "apache_beam.runners.portability.fn_api_runner.fn_runner"


@contextlib.contextmanager
def _without_in_memory_workers_warning() -> Iterator[None]:
    """The FnApiRunner's logger drops ``_DropInMemoryWorkersWarning``'s record for the block, and only then."""
    logger = logging.getLogger(FN_RUNNER_LOGGER)
    drop = _DropInMemoryWorkersWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def leave_parallelism_to_beam(inter_op_threads: Optional[int] = None) -> None:
    """Makes TensorFlow run each op on the calling thread, for DoFns whose worker already runs one bundle per
    core: TF's own intra-op pool on top only oversubscribes the cores and spends CPU handing work between
    threads (a 375x500x3 argmax: 0.38 ms of CPU on one thread, 0.81 ms split over two).

    ``inter_op_threads``: TF's pool for running a graph's independent ops (default: one per core, so the
    concurrent bundles' graph calls do not queue behind each other: inference on 2 cores ran 5 % faster than
    with 1). Call before the process's first TensorFlow op; once TF is initialised (e.g. a test process that
    already ran TF) its settings cannot change and are kept.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads or os.cpu_count() or 1)
    except RuntimeError:
        pass


def new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A ``beam.Pipeline`` on ``options`` (the FnApiRunner for the DirectRunner, see ``local_runner``)."""
    return beam.Pipeline(runner=local_runner(options), options=options)


def exit_process(code: int = 0) -> NoReturn:
    """Ends a job's command-line process with ``code`` once its work is done and flushed, skipping the
    interpreter's teardown (``pipelines.shared.cli.exit_process``: 0.8-1.4 s on 2 cores with TensorFlow,
    tensorflow-transform and Beam loaded). Only for ``__main__``: never from a library or a test process."""
    cli.exit_process(code)

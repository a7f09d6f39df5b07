"""What ``run`` checks before any worker starts: the two folders apart, the Beam flags, an input that holds files.

Each check raises ``UsageError`` (exit status 2) for flags to fix, or ``DataError`` (1) for a missing or empty
input, with the flag to check.
"""

from __future__ import annotations

import os
from typing import Sequence

from pipelines import datasets
from pipelines.preprocess.options import PROG, PreprocessConfig
from pipelines.shared import folders
from schemas.errors import DataError, UsageError

# The storage and runner modules import Beam (~1.6 s): they are imported in the functions that read storage or
# Beam's flags, so that importing the job (to parse flags, to answer --help) stays light.


def check_folders(config: PreprocessConfig) -> None:
    """--output_dir must lie outside --input_dir and the other way round, by their resolved paths (".", "..",
    links): DST inside SRC makes a rerun read its own outputs as inputs, and SRC inside DST puts the dataset in
    the folder this job rewrites and cleans."""
    from pipelines.common import storage

    input_dir, output_dir = config.input_dir, config.output_dir
    out_in, in_out = storage.same_or_inside(output_dir, input_dir), storage.same_or_inside(input_dir, output_dir)
    if out_in:
        where = "the same folder as --input_dir" if in_out else f"inside --input_dir {input_dir}"
        raise UsageError(
            f"--output_dir {output_dir} is {where}: a rerun would read its own outputs as inputs; "
            "choose an --output_dir outside the dataset"
        )
    if in_out:
        raise UsageError(
            f"--input_dir {input_dir} is inside --output_dir {output_dir}, which preprocess rewrites "
            "and cleans; choose an --output_dir outside the dataset"
        )


def check_input_dir(config: PreprocessConfig) -> None:
    """The commonest --input_dir mistakes, on a local folder, answered before Beam and TensorFlow load (under a
    second, where listing it through Beam takes seconds): the folder missing or a file, or the dataset's own
    input folder (``images/``) or a folder inside it named instead of the dataset's root. An input folder that
    is there but holds nothing is ``check_input``'s to find. gs:// folders are left to ``check_input``. Raises
    ``DataError``: a missing or unusable input is exit status 1, as in every segflow command (CONTRACT.md)."""
    if folders.is_remote(config.input_dir):
        return
    root = os.path.normpath(folders.local_path(config.input_dir))
    dataset = datasets.get(config.dataset)
    inner = os.path.join(*dataset.input_folder)
    if not os.path.exists(root):
        raise DataError(f"no input files: --input_dir {config.input_dir} does not exist; check --input_dir")
    if not os.path.isdir(root):
        raise DataError(f"--input_dir {config.input_dir} is a file, not the dataset's folder; check --input_dir")
    if os.path.isdir(os.path.join(root, inner)):
        if not _holds_a_file(os.path.join(root, inner)):  # check_input's finding, before the heavy imports
            raise _no_input_files(config)
        return
    ancestor = root
    while os.path.basename(ancestor) and os.path.basename(ancestor) != dataset.input_folder[0]:
        ancestor = os.path.dirname(ancestor)
    if os.path.basename(ancestor) == dataset.input_folder[0]:
        what = f"the {inner} folder itself; use its parent," if ancestor == root else f"inside the {inner} folder; use"
        raise DataError(
            f"--input_dir {config.input_dir} is {what} the dataset's root: --input_dir {os.path.dirname(ancestor)}"
        )
    raise DataError(
        f"--input_dir {config.input_dir} has no {inner}/ folder (expected {config.dataset} layout: "
        f"{dataset.input_layout}); check --input_dir"
    )


def _no_input_files(config: PreprocessConfig) -> DataError:
    layout = datasets.get(config.dataset).input_layout
    return DataError(
        f"no input files under {config.input_dir} (expected {config.dataset} layout: {layout}); check --input_dir"
    )


def _holds_a_file(folder: str) -> bool:
    """Whether ``folder`` or a folder below it (links followed, as ``storage.list_files`` follows them) holds a
    file; stops at the first one found."""
    for _, _, files in os.walk(folder, followlinks=True):
        if files:
            return True
    return False


def check_pipeline_args(pipeline_args: Sequence[str]) -> None:
    """Every flag that is not the job's must be a Beam option with a value Beam takes."""
    from pipelines.common import runner as runner_lib

    try:
        runner_lib.check_beam_flags(list(pipeline_args))
    except ValueError as e:
        raise UsageError(f"{e} (see {PROG} --help)") from None


def check_input(config: PreprocessConfig, count_up_to: int = 0) -> int:
    """Fails fast (``DataError``), before any worker starts, when the input holds nothing to read; returns the
    bytes of the files in the dataset's input folder, counted up to ``count_up_to`` (the listing stops there).

    The folder is listed literally (``storage.list_files``: no glob, links followed), as discovery does.
    """
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common import storage

    dataset = datasets.get(config.dataset)
    folder = FileSystems.join(config.input_dir, *dataset.input_folder)
    listed = iter(storage.list_files(folder))
    try:
        first = next(listed, None)
    except Exception as e:  # e.g. a bucket that does not exist or cannot be read
        raise DataError(
            f"cannot list {folder} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); check --input_dir"
        ) from None
    if first is None:
        raise _no_input_files(config)
    if first.error is not None and first.path == storage.printable_path(folder):  # the folder itself
        raise DataError(f"{first.path}: {first.error}; check --input_dir")
    total = first.size
    for entry in listed:
        if total >= count_up_to:
            break
        total += entry.size
    return total

"""Every private API of Apache Beam, TensorFlow and tensorflow-transform that segflow uses, in one place.

Each entry fetches one name the library does not promise to keep (a leading underscore, a module outside the
library's public API) and raises ``PrivateApiChanged``, naming the installed version, when it is gone: never a
silent fallback. Its docstring says what segflow needs it for and which public route was checked instead.
``tests/test_private_apis.py`` checks every entry against the installed libraries (the name exists, with the
shape segflow relies on) and fails when any other module reaches a private name of these libraries itself.

Replaced by public routes (same output, measured): Beam's option parser (``_BeamArgumentParser``) by the parser
``PipelineOptions.get_all_options`` hands its ``add_extra_args_fn`` (``pipelines.common.runner``); the FnApiRunner's
``_default_environment`` by its constructor's ``default_environment``; Beam's ``_TFRecordUtil`` by the published
TFRecord framing with ``google-crc32c`` (``pipelines.common.tfrecord``).

Here, not in ``pipelines.common``, because the trainer uses two of them (``tests/test_layering.py``: the trainer
imports ``pipelines.shared`` and nothing else of ``pipelines``); importing this module imports none of the
libraries: each entry imports what it fetches when called.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable

# The distribution that installs each library's top-level package, for the version in the error.
_DISTRIBUTIONS = {
    "apache_beam": "apache-beam",
    "tensorflow": "tensorflow",
    "tensorflow_transform": "tensorflow-transform",
}


class PrivateApiChanged(RuntimeError):
    """A private name segflow relies on is gone or changed in the installed library: segflow needs an update."""


def installed_version(package: str) -> str:
    """``package``'s installed distribution and version, e.g. ``apache-beam 2.77.0``."""
    from importlib import metadata

    distribution = _DISTRIBUTIONS.get(package.split(".")[0], package.split(".")[0])
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return f"{distribution} (version unknown)"


def changed(module: str, name: str, why: str) -> PrivateApiChanged:
    """The error for ``module.name`` gone or changed (``why``)."""
    return PrivateApiChanged(
        f"segflow needs {module}.{name}, which {installed_version(module)} {why}: update "
        "pipelines/shared/private_apis.py for this version (see its entry for what segflow uses it for)"
    )


def fetch(module: str, name: str) -> Any:
    """``module.name`` (``name`` may be dotted), or ``PrivateApiChanged`` naming the installed version."""
    try:
        found: Any = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as err:
        raise changed(module, name, f"no longer has ({err})") from err
    return found


def _callable(module: str, name: str) -> Callable[..., Any]:
    found = fetch(module, name)
    if not callable(found):
        raise changed(module, name, f"has as a {type(found).__name__}, not a function")
    return found


# ---------------------------------------------------------------------------------------------- Apache Beam
def argparse_option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string ``parser`` accepts, from argparse's ``_option_string_actions`` (the standard
    library's, not Beam's: argparse lists its options nowhere publicly).

    Used to write ``pipelines/common/beam_flags.txt`` (every ``--flag`` of Beam's options), which refuses a
    mistyped flag without importing Beam. Checked public route: ``format_help()``'s text, which would also
    match flags named in help sentences."""
    actions = getattr(parser, "_option_string_actions", None)
    if not isinstance(actions, dict):
        raise changed("argparse", "ArgumentParser._option_string_actions", "no longer has as a dict")
    return list(actions)


# -------------------------------------------------------------------------------------- tensorflow-transform
def tft_analysis_cache_entry_keys() -> Callable[..., Any]:
    """``tensorflow_transform.beam.analysis_graph_builder.get_analysis_cache_entry_keys(preprocessing_fn, specs,
    dataset_keys, force_tf_compat_v1)``: the analyzer cache keys of a preprocessing_fn's analyzers.

    Preprocess computes the train split's sums as it makes the records and hands them to tensorflow-transform as
    its analyzer cache, so that no image crosses a stage; the cache is keyed by these keys. Not exported by
    ``tensorflow_transform.beam``. Checked public route: ``AnalyzeDataset`` on the pixels themselves, which holds
    every image of the split between stages (~10 MiB each at 512x1024, the job's memory growing with the data)."""
    return _callable("tensorflow_transform.beam.analysis_graph_builder", "get_analysis_cache_entry_keys")


def tft_sum_accumulator_coder() -> Any:
    """The ``CacheCoder`` tensorflow-transform reads a sum analyzer's cache entry with (``encode_cache(list)`` →
    bytes): ``tensorflow_transform.analyzers.NumPyCombiner``'s ``accumulator_coder`` (a numeric combiner's,
    which ``tft.sum`` uses; not part of tensorflow-transform's public API).

    The cache entries preprocess feeds (see ``tft_analysis_cache_entry_keys``) are encoded with it, so that they
    are what tensorflow-transform itself would have cached. Checked public route: the same as there."""
    import numpy as np

    combiner = _callable("tensorflow_transform.analyzers", "NumPyCombiner")
    try:
        coder = combiner(np.sum, 0, [np.int64], [()]).accumulator_coder
    except (TypeError, AttributeError) as err:
        raise changed("tensorflow_transform.analyzers", "NumPyCombiner.accumulator_coder", f"changed ({err})")
    if not callable(getattr(coder, "encode_cache", None)):
        raise changed("tensorflow_transform.analyzers", "NumPyCombiner.accumulator_coder", "has no encode_cache")
    return coder


# ---------------------------------------------------------------------------------------------- TensorFlow
def tf_update_checkpoint_state() -> Callable[..., None]:
    """``tensorflow.python.checkpoint.checkpoint_management.update_checkpoint_state_internal``: writes a checkpoint
    folder's ``checkpoint`` state file atomically, with ``save_relative_paths=True``.

    The trainer prunes and records checkpoints itself (it deletes only the files it wrote) and writes the state
    file ``tf.train.latest_checkpoint`` and ``tf.train.CheckpointManager`` read, with paths relative to the
    folder so that a JOB copied elsewhere still resumes. Checked public route:
    ``tf.compat.v1.train.update_checkpoint_state``, which always writes the paths as given (absolute)."""
    return _callable("tensorflow.python.checkpoint.checkpoint_management", "update_checkpoint_state_internal")


def tf_checkpoint_state_class() -> type:
    """``tensorflow.python.training.checkpoint_state_pb2.CheckpointState``: the state file's protocol buffer.

    The trainer parses a checkpoint folder's state file itself, to say why it cannot be trusted (not a state
    file, a name that is not a segflow checkpoint) instead of resuming from the wrong place. Checked public route:
    ``tf.train.get_checkpoint_state``, which returns this proto but logs and hides a file it cannot parse."""
    found = fetch("tensorflow.python.training.checkpoint_state_pb2", "CheckpointState")
    if not isinstance(found, type):
        raise changed("tensorflow.python.training.checkpoint_state_pb2", "CheckpointState", "has, not as a class")
    return found

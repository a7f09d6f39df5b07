"""The private Beam / TensorFlow / tensorflow-transform names segflow uses: each still there, with the shape segflow
relies on, and none used outside ``pipelines/shared/private_apis.py``.

A library upgrade that renames or reshapes one fails here, by name, instead of in a job's run.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import pathlib
from typing import Iterator

import pytest

from pipelines.shared import private_apis

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCANNED = ("schemas", "pipelines", "trainer", "bench")
THE_LIST = ROOT / "pipelines" / "shared" / "private_apis.py"
LIBRARIES = ("apache_beam", "tensorflow", "tensorflow_transform", "tfx_bsl", "tf_keras")
# The module's own helpers, not entries.
HELPERS = {"installed_version", "changed", "fetch"}
# Every entry, with the test below that checks it (a new entry without a test fails test_every_entry_is_tested).
TESTED = {
    "argparse_option_strings",
    "tft_analysis_cache_entry_keys",
    "tft_sum_accumulator_coder",
    "tf_update_checkpoint_state",
    "tf_checkpoint_state_class",
}


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_every_entry_is_tested():
    entries = {
        name
        for name, value in vars(private_apis).items()
        if inspect.isfunction(value) and value.__module__ == private_apis.__name__ and not name.startswith("_")
    }
    assert entries - HELPERS == TESTED


def test_a_missing_name_fails_naming_the_installed_version():
    import apache_beam

    with pytest.raises(private_apis.PrivateApiChanged, match=f"apache-beam {apache_beam.__version__}"):
        private_apis.fetch("apache_beam.io.tfrecordio", "_NoSuchName.write_record")
    with pytest.raises(private_apis.PrivateApiChanged, match="tensorflow-transform"):
        private_apis.fetch("tensorflow_transform.no_such_module", "x")


def test_argparse_option_strings_lists_every_flag():
    parser = argparse.ArgumentParser()
    parser.add_argument("--segflow", "-s")
    assert sorted(private_apis.argparse_option_strings(parser)) == ["--help", "--segflow", "-h", "-s"]


def test_tft_analysis_cache_entry_keys_takes_what_preprocess_passes():
    keys = private_apis.tft_analysis_cache_entry_keys()
    assert _parameters(keys)[:4] == ["preprocessing_fn", "specs", "dataset_keys", "force_tf_compat_v1"]


def test_tft_sum_accumulator_coder_encodes_exact_int64_sums_as_json():
    coder = private_apis.tft_sum_accumulator_coder()
    values = [2**53 + 1, [3, 2**40 + 7, 0]]  # past float precision: the sums must stay exact
    for value in values:
        encoded = coder.encode_cache([value])
        assert encoded == json.dumps([value]).encode("utf-8")
        assert coder.decode_cache(encoded).tolist() == [value]


def test_tf_update_checkpoint_state_writes_relative_paths(tmp_path):
    update = private_apis.tf_update_checkpoint_state()
    assert {"save_dir", "model_checkpoint_path", "all_model_checkpoint_paths", "save_relative_paths"} <= set(
        _parameters(update)
    )
    update(str(tmp_path), f"{tmp_path}/ckpt-2", [f"{tmp_path}/ckpt-1", f"{tmp_path}/ckpt-2"], save_relative_paths=True)
    text = (tmp_path / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-2"' in text and str(tmp_path) not in text


def test_tf_checkpoint_state_class_parses_a_state_file():
    from google.protobuf import text_format

    state = private_apis.tf_checkpoint_state_class()()
    text_format.Parse('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n', state)
    assert state.model_checkpoint_path == "ckpt-2" and list(state.all_model_checkpoint_paths) == ["ckpt-2"]


# ------------------------------------------------------------------------------------------ the scan
def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_module(dotted: str) -> bool:
    parts = dotted.split(".")
    # ``tensorflow.python`` is TensorFlow's implementation tree, outside its public ``tf.*`` API.
    return any(_is_private(p) for p in parts) or parts[:2] == ["tensorflow", "python"]


def private_uses(source: str) -> Iterator[tuple[int, str]]:
    """(line, what) for each private name of ``LIBRARIES`` that ``source`` imports or reaches through a name it
    imported from them: ``from apache_beam.x import _y``, ``import tensorflow.python.z``, ``beam.x._y``."""
    tree = ast.parse(source)
    origins: dict[str, str] = {}  # local name → the library name it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    if _private_module(alias.name):
                        yield node.lineno, f"import {alias.name}"
                    origins[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in LIBRARIES:
                continue
            if _private_module(node.module):
                yield node.lineno, f"from {node.module} import ..."
            for alias in node.names:
                if _is_private(alias.name):
                    yield node.lineno, f"from {node.module} import {alias.name}"
                origins[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in origins:
                yield node.lineno, f"{origins[root.id]}...{node.attr}"


def _scanned_files() -> Iterator[pathlib.Path]:
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path != THE_LIST:
                yield path


@pytest.mark.parametrize(
    "source",
    [
        "from apache_beam.io.tfrecordio import _TFRecordUtil",
        "from tensorflow.python.checkpoint import checkpoint_management",
        "import apache_beam as beam\nbeam.io.tfrecordio._TFRecordUtil.write_record",
        "from apache_beam.runners.portability.fn_api_runner import fn_runner\nfn_runner.FnApiRunner._run_stage",
        "import tensorflow_transform.beam as tft_beam\ntft_beam._private_thing",
        "import tensorflow.python.training.checkpoint_state_pb2",
    ],
)
def test_the_scan_finds_a_private_use(source):
    assert list(private_uses(source)), source


def test_the_scan_leaves_public_uses_and_own_names_alone():
    source = (
        "import apache_beam as beam\nimport tensorflow as tf\nclass _Mine: pass\n"
        "beam.Map(len)\ntf.__version__\nself_obj = _Mine()\nself_obj._x = 1\n"
    )
    assert list(private_uses(source)) == []


def test_no_private_library_name_is_used_outside_the_list():
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _scanned_files()
        for line, what in private_uses(path.read_text(encoding="utf-8"))
    ]
    assert not found, "private library names used outside pipelines/shared/private_apis.py:\n" + "\n".join(found)

"""preprocess answers ``--help`` and bad job flags without importing Beam or TensorFlow (~5 s on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = r"""
import sys
from pipelines.preprocess import job as preprocess
for argv in (["--help"], ["--dataset", "pet"], ["--dataset", "pet", "--input_dir", "a", "--output_dir", "b",
                                                  "--image_size", "3"],
             ["--dataset", "pet", "--input_dir", "a", "--output_dir", "b", "--image_size", "8", "--runer", "x"]):
    try:
        code = preprocess.main(argv)
    except SystemExit as e:
        code = e.code
    assert code in (0, 2), code
print("loaded:", sorted(m for m in ("apache_beam", "tensorflow", "tensorflow_transform") if m in sys.modules))
"""


def test_help_and_flag_errors_import_neither_beam_nor_tensorflow():
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout, result.stdout
    assert "--image_size must be H or H,W" in result.stderr and "--input_dir" in result.stderr
    assert "unknown flag --runer (did you mean --runner?)" in result.stderr


def test_light_copies_of_schema_constants_agree():
    from pipelines.preprocess import options as preprocess
    from pipelines.shared import pixel_rules

    assert preprocess.RESIZE_MODES == pixel_rules.RESIZE_MODES


_PACKAGE_PROBE = r"""
import sys
import pipelines.preprocess as preprocess
config, pipeline_args = preprocess.from_args(
    ["--dataset", "pet", "--input_dir", "a", "--output_dir", "b", "--image_size", "8", "--runner", "DirectRunner"]
)
assert isinstance(config, preprocess.PreprocessConfig) and pipeline_args == ["--runner", "DirectRunner"]
print("light:", sorted(m for m in ("apache_beam", "tensorflow", "tensorflow_transform") if m in sys.modules))
missing = [name for name in preprocess.__all__ if getattr(preprocess, name, None) is None]
print("missing:", missing)
"""


@pytest.mark.slow  # resolving every exported name loads Beam and TensorFlow in a subprocess
def test_package_exports_its_api_lazily():
    """``import pipelines.preprocess`` and its config and flag parser load neither Beam nor TensorFlow; every name
    in ``__all__`` resolves (the transforms and the job load Beam when first used)."""
    result = subprocess.run(
        [sys.executable, "-c", _PACKAGE_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "light: []" in result.stdout and "missing: []" in result.stdout, result.stdout

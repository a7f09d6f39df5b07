"""``python -m pipelines.infer`` / ``pipelines.evaluate`` answer --help and flag errors before importing Beam."""

import os
import subprocess
import sys
import time

import pytest

from pipelines.common import flags
from schemas.errors import UsageError
from tests import test_evaluate_checks as evaluate_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = (
    "import runpy, sys; sys.argv = ['x'] + sys.argv[2:]\n"
    "try:\n    runpy.run_module(%r, run_name='__main__')\n"
    "except SystemExit as e:\n    code = e.code\n"
    "print('BEAM' if 'apache_beam' in sys.modules else 'NOBEAM', 'TF' if 'tensorflow' in sys.modules "
    "else 'NOTF', code)\n"
)
JOB_FLAGS = {
    "pipelines.infer": ["--model_dir", "m", "--input", "x", "--output_dir", "o"],
    "pipelines.evaluate": ["--predictions", "p", "--ground_truth", "g", "--dataset", "pet"],
}


@pytest.mark.parametrize("module", sorted(JOB_FLAGS))
@pytest.mark.parametrize("case", ["help", "bad_value", "missing", "unknown"])
def test_help_and_flag_errors_answer_without_beam(module, case):
    argv = {
        "help": ["--help"],
        "missing": JOB_FLAGS[module][:2],
        "bad_value": JOB_FLAGS[module] + (["--batch_size", "0"] if module.endswith("infer") else ["--split"]),
        "unknown": JOB_FLAGS[module] + ["--runer=DataflowRunner"],
    }[case]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE % module, module] + argv,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    elapsed = time.perf_counter() - start
    assert done.stdout.split()[-3:] == ["NOBEAM", "NOTF", "0" if case == "help" else "2"], done.stdout + done.stderr
    if case == "unknown":
        assert "unknown flag --runer (did you mean --runner?)" in done.stderr
    assert elapsed < 10  # a sanity bound only; the start-up figure is measured, not tested


def test_beam_flag_list_matches_the_installed_beam():
    # Regenerate with `python -m pipelines.common.flags` after a Beam upgrade.
    assert flags.known_beam_flags() == frozenset(flags.live_beam_flags())


def test_a_known_beam_flag_still_goes_to_beam():
    from pipelines import infer
    from pipelines.infer import options as infer_options

    args, beam_argv = infer.from_args(JOB_FLAGS["pipelines.infer"] + ["--direct_num_workers", "2"])
    assert beam_argv == ["--direct_num_workers", "2"] and args.max_instances == infer_options.DEFAULT_MAX_INSTANCES
    with pytest.raises(UsageError, match="invalid Beam option"):  # the value, checked by Beam itself
        infer.from_args(JOB_FLAGS["pipelines.infer"] + ["--direct_num_workers=x"])


def test_default_batch_bounds_follow_the_model_element_size():
    from pipelines import infer
    from pipelines.infer.transforms import default_batch_bounds
    from schemas.labels import spec_for
    from schemas.model_contract import ModelInfo

    names = list(spec_for("cityscapes", None).class_names)

    def info(height, width):
        return ModelInfo(
            dataset="cityscapes",
            label_mode="cityscapes",
            num_classes=19,
            class_names=names,
            ignore_label=255,
            image_size=[height, width],
            resize_mode="stretch",
            model="unet",
        )

    assert default_batch_bounds(info(128, 256)) == (1, 8)
    assert default_batch_bounds(info(512, 1024)) == (1, 8)  # 41 MB each
    assert default_batch_bounds(info(1024, 2048)) == (1, 3)  # 166 MB each
    assert default_batch_bounds(info(4096, 4096)) == (1, 1)
    args, _ = infer.from_args(["--model_dir", "m", "--input", "x", "--output_dir", "o"])
    assert args.batch_size is None and args.postprocess == "host"


def test_the_packages_export_their_api_without_loading_beam_and_evaluate_never_imports_tensorflow(tmp_path):
    """``from pipelines.infer import InferConfig`` (and evaluate's) is light: the public names load their module
    on first use (PEP 562), so a config is built, and a command answers --help, before Beam is imported. Scoring
    masks needs PIL and numpy only: a whole evaluate run in the same fresh interpreter leaves TensorFlow
    unimported (its import is ~5 s of a run that otherwise takes ~3 s)."""
    src = tmp_path / "src"
    ids = evaluate_checks._pet(src)
    masks = evaluate_checks._perfect_predictions(src, ids, tmp_path / "out")
    probe = (
        "import sys\n"
        "import pipelines.infer as infer, pipelines.evaluate as evaluate\n"
        "from pipelines.infer import InferConfig\n"
        "from pipelines.evaluate import EvaluateConfig\n"
        "InferConfig(model_dir='m', input=['x'], output_dir='o')\n"
        f"config = EvaluateConfig(predictions={str(masks)!r}, ground_truth={str(src)!r}, dataset='pet')\n"
        "light = 'apache_beam' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "assert set(infer.__all__) >= {'InferConfig', 'InferResult', 'run', 'from_args', 'SegmentImages'}\n"
        "assert set(evaluate.__all__) >= {'EvaluateConfig', 'EvaluateResult', 'run', 'from_args', 'ScoreMasks'}\n"
        "assert evaluate.ScoreMasks.__module__ == 'pipelines.evaluate.transforms'\n"
        "beam = 'apache_beam' in sys.modules\n"
        "evaluate.run(config, ['--direct_running_mode', 'in_memory'])\n"
        "tensorflow = 'tensorflow' in sys.modules\n"
        "assert infer.SegmentImages.__module__ == 'pipelines.infer.transforms'\n"
        "print('LIGHT' if light else 'HEAVY', beam, 'TF' if tensorflow else 'NOTF')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # Light until a transform was asked for, which loads Beam; no TensorFlow after a whole evaluate run.
    assert done.stdout.split()[-3:] == ["LIGHT", "True", "NOTF"], done.stdout

"""The dataset registry (``pipelines.datasets``): what it lists, what every dataset module provides, that the jobs
never branch on a dataset's name, and that a new dataset is one file (a toy one, registered here, is discovered and
preprocessed through the DirectRunner)."""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
import pickle
import subprocess
import sys
import textwrap

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not a pytest class
from apache_beam.testing.util import assert_that, equal_to

from pipelines import datasets
from pipelines.datasets.base import DEAD_LETTER_TAG, Dataset, Example, SplitFractions
from pipelines.datasets.discovery import Discover
from pipelines.tools import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAM_FLAGS = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


# ------------------------------------------------------------------------------------------- the registry
def test_registry_lists_pet_and_cityscapes_in_command_line_order():
    assert datasets.names()[:2] == ("pet", "cityscapes")
    assert [datasets.get(n).name for n in datasets.names()] == list(datasets.names())
    with pytest.raises(ValueError, match="unknown dataset 'coco'; choose one of pet, cityscapes, "):
        datasets.get("coco")


def test_every_dataset_provides_every_field_the_jobs_need():
    for name in datasets.names():
        dataset = datasets.get(name)
        assert isinstance(dataset, Dataset) and dataset.name == name
        for field in dataclasses.fields(Dataset):
            value = getattr(dataset, field.name)
            assert value is not None, (name, field.name)
            if field.name not in (
                "label_modes",
                "evaluate_label_modes",
                "metadata_extra",
                "fixed_labels",
                "labels_file",
            ):
                assert value, (name, field.name)  # a title, a folder, a format: never empty
        assert dataset.record_image_format in ("png", "jpeg")
        assert 0 < dataset.mask_bytes_per_pixel < 4
        assert set(dataset.evaluate_label_modes) <= set(dataset.label_modes)
        assert bool(dataset.label_modes) != bool(dataset.fixed_labels), name  # modes, or why there are none
        # A table that comes with the data (folder's classes.json) is there once the source is read:
        # tests/test_dataset_folder.py checks it on its sample.
        for mode in (dataset.label_modes or (None,)) if not dataset.labels_file else ():
            spec = dataset.label_spec(mode)
            assert spec.dataset == name and spec.num_classes == len(spec.palette) >= 2
            luts = dataset.train_id_luts(mode or "")
            assert luts and all(
                lut.dtype == np.uint8 and lut.shape == (256,) and lut[255] == 255 for lut in luts.values()
            )
            assert all(v == 255 or v < spec.num_classes for lut in luts.values() for v in lut.tolist())
        for split in (None, "val"):
            layouts = dataset.ground_truth_layouts(split)
            assert layouts and all(layout.depth >= 0 and layout.suffix.endswith(".png") for layout in layouts)
        sources = dataset.discovery_sources()
        assert sources and pickle.loads(pickle.dumps(sources)) == sources  # Beam ships them to the workers
        assert pickle.loads(pickle.dumps(dataset)) == dataset


def test_names_and_dataset_fields_load_neither_beam_nor_tensorflow():
    """The --dataset choices and the flag checks read the registry before Beam loads (``--help`` < 1 s)."""
    probe = (
        "import sys\nfrom pipelines import datasets\nfrom pipelines.preprocess import job\n"
        "print([(n, datasets.get(n).label_modes, datasets.get(n).record_image_format) for n in datasets.names()])\n"
        "try:\n    job.parse_args(['--dataset', 'cityscapes', '--input_dir', 'a', '--output_dir', 'b',"
        " '--image_size', '8', '--label_mode', 'binary'])\n"
        "except job.UsageError as e:\n    print(e)\n"
        "print('loaded:', sorted(m for m in ('apache_beam', 'tensorflow') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout and "'pet'" in result.stdout, result.stdout
    assert "--label_mode applies to Pet only" in result.stdout, result.stdout


# ------------------------------------------------------------------- no dataset branches outside the registry
def dataset_branches(source: str, names: tuple[str, ...]) -> list[str]:
    """Where ``source`` spells a dataset out: a string that is a dataset's name (``"pet"``, a dict key, a choice
    list), or a comparison of something called ``*dataset*`` with a string (``dataset == "ade20k"``)."""
    found = []

    def is_dataset_ref(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and "dataset" in node.id.lower()) or (
            isinstance(node, ast.Attribute) and "dataset" in node.attr.lower()
        )

    def is_string(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.append(f"line {node.lineno}: the name {node.value!r}")
        elif isinstance(node, ast.Compare):
            sides = [node.left] + list(node.comparators)
            if any(is_dataset_ref(s) for s in sides) and any(
                is_string(s) or (isinstance(s, (ast.Tuple, ast.List, ast.Set)) and any(map(is_string, s.elts)))
                for s in sides
            ):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_branch_checker_finds_each_way_of_spelling_a_dataset_out():
    names = ("pet", "cityscapes")
    for bad in (
        'if config.dataset == "cityscapes":\n    pass\n',
        'x = args.dataset != "ade20k"\n',
        'ok = dataset in ("ade20k", "voc")\n',
        'AUTO_IMAGE_FORMAT = {"pet": "jpeg"}\n',
        'p.add_argument("--dataset", choices=("pet", "cityscapes"))\n',
        'spec = spec_for("pet", mode)\n',
    ):
        assert dataset_branches(bad, names), bad
    for good in (
        "fmt = datasets.get(config.dataset).record_image_format\n",
        'p.add_argument("--dataset", choices=datasets.names())\n',
        '"""A docstring may say pet and "cityscapes"."""\n',
        'if dataset.label_modes and mode == "trimap":\n    pass\n',
    ):
        assert not dataset_branches(good, names), good


def test_no_dataset_branches_in_the_jobs_or_the_trainer():
    """Only ``pipelines/datasets/`` may name a dataset; the jobs and the trainer ask the registry."""
    found = []
    for top in ("pipelines", "trainer"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            if os.path.relpath(folder, ROOT).replace(os.sep, "/").startswith("pipelines/datasets"):
                continue
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as handle:
                    hits = dataset_branches(handle.read(), datasets.names())
                found.extend(f"{os.path.relpath(path, ROOT)} {hit}" for hit in hits)
    assert not found, "ask pipelines.datasets instead:\n" + "\n".join(found)


# -------------------------------------------------------------------------------------- discovery in Beam
def test_discovery_transforms_mix_no_yield_and_return(caplog):
    """Beam warns "Using yield and return in the process method of ..." when a DoFn's ``process`` does both
    (``_AssemblePet`` did); every dataset's discovery builds without it."""
    caplog.set_level(logging.WARNING)
    pipeline = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(BEAM_FLAGS))
    for name in datasets.names():
        _ = pipeline | f"Discover{name}" >> Discover(datasets.get(name), "/nowhere", SplitFractions(0.1, 0.2))
    assert not [r.getMessage() for r in caplog.records if "yield and return" in r.getMessage()]


# ----------------------------------------------------------------------- a third dataset is one new file
TOY_MODULE = '''
"""Toy: ``pics/<id>.png`` photos, ``masks/<id>.png`` masks (0 = background, 1 = thing), splits by hash."""
from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.common.deadletter_record import DeadLetter
from pipelines.datasets.base import Dataset, Example, GroundTruthLayout, basename, split_from_hash
from schemas.labels import LabelSpec

ROLES = {"pics": "image", "masks": "mask"}


def _lut():
    lut = np.full(256, 255, np.uint8)
    lut[0], lut[1] = 0, 1
    return lut


@dataclasses.dataclass(frozen=True)
class Toy(Dataset):
    def label_spec(self, label_mode=None):
        return LabelSpec(self.name, "things", ("background", "thing"), ((0, 0, 0), (255, 0, 0)),
                         np.arange(256).astype(np.uint8), (1,))

    def mask_problem(self, native, kind):
        bad = sorted(set(np.unique(native).tolist()) - {0, 1})
        return f"mask has values {bad} outside {{0, 1}}" if bad else None

    def train_id_luts(self, label_mode):
        return {None: _lut()}

    def discovery_sources(self):
        return [("pics",), ("masks",)]

    def list_source(self, source, input_dir, files):
        (folder,) = source
        for listed in files.list_files(files.join(input_dir, folder)):
            if listed.error is None and listed.path.endswith(".png"):
                yield basename(listed.path)[:-4], (ROLES[folder], listed.path)
            else:
                yield DeadLetter(listed.path, listed.error or "not a PNG", "discover")

    def assemble(self, key, parts, facts, fractions):
        found = dict(parts)
        if len(found) == 2:
            split = split_from_hash(key, fractions.val_fraction, fractions.test_fraction)
            yield Example(key, split, found["image"], found["mask"])
        else:
            for role, path in parts:
                yield DeadLetter(path, f"{role} without its partner", "pair")

    def example_id(self, stem):
        return stem

    def to_train_ids(self, native, label_mode):
        return _lut()[native]

    def ground_truth_layouts(self, split):
        return [GroundTruthLayout(("masks",), 1, ".png")]


DATASET = Toy(name="toy", title="Toy", label_modes=(), fixed_labels="Toy has one label table",
              evaluate_label_modes=(), record_image_format="png", mask_bytes_per_pixel=0.1, input_folder=("pics",),
              input_layout="pics/<id>.png", metadata_extra=(), example_id_hint="<id>")
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy dataset module (one file, outside the tree) registered, and a tiny folder in its layout."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "toy_segset.py").write_text(textwrap.dedent(TOY_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(code))
    datasets.register("toy", "toy_segset")
    src = tmp_path / "src"
    rng = np.random.default_rng(3)
    for i in range(6):
        synthetic.write_file(
            str(src / "pics" / f"t{i}.png"), synthetic.encode_png(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
        )
        if i != 5:  # t5 has no mask
            mask = np.zeros((20, 24), np.uint8)
            mask[5:15, 6:18] = 1
            synthetic.write_file(str(src / "masks" / f"t{i}.png"), synthetic.encode_png(mask))
    (src / "masks" / "notes.txt").write_text("not a mask")
    yield src
    datasets.unregister("toy")


def test_a_third_dataset_is_one_file_discovered_through_the_direct_runner(toy):
    assert "toy" in datasets.names()
    fractions = SplitFractions(0.2, 0.2)
    expected = [
        Example(
            f"t{i}",
            datasets.base.split_from_hash(f"t{i}", 0.2, 0.2),
            str(toy / "pics" / f"t{i}.png"),
            str(toy / "masks" / f"t{i}.png"),
        )
        for i in range(5)
    ]
    with BeamTestPipeline(argv=BEAM_FLAGS) as p:
        found = p | "DiscoverToy" >> Discover(datasets.get("toy"), str(toy), fractions)
        assert_that(found["examples"], equal_to(expected), label="Examples")
        assert_that(
            found[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.path, d.error)),
            equal_to(
                [
                    (str(toy / "masks" / "notes.txt"), "not a PNG"),
                    (str(toy / "pics" / "t5.png"), "image without its partner"),
                ]
            ),
            label="DeadLetters",
        )


@pytest.mark.slow
def test_a_third_dataset_is_preprocessed_without_touching_the_jobs(toy, tmp_path):
    from pipelines.preprocess import PreprocessConfig, run

    config = PreprocessConfig(
        "toy", str(toy), str(tmp_path / "dst"), image_size=(16, 16), val_fraction=0.2, test_fraction=0.2
    )
    metadata = run(config, BEAM_FLAGS).metadata
    assert metadata.dataset == "toy" and metadata.class_names == ["background", "thing"]
    assert metadata.image_format == "png" and sum(metadata.counts.values()) == 5 and metadata.dead_letter_count == 2

"""The documented Python API of infer and evaluate runs as documented: every ```python block of docs/api.md's
``## Infer`` and ``## Evaluate`` sections (one namespace: the Evaluate examples continue the Infer ones), with
the suite's tiny trained Pet model; and the transforms' contracts a user pipeline relies on."""

from __future__ import annotations

import pathlib
import tempfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipelines.evaluate.transforms import to_train_ids
from tests.test_api_preprocess import python_blocks

pytestmark = pytest.mark.slow

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_api_examples_run(pet_job_dir, tmp_path, monkeypatch):
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    infer_blocks, evaluate_blocks = python_blocks(text, "Infer"), python_blocks(text, "Evaluate")
    assert len(infer_blocks) >= 4, "the set-up, run(InferConfig), SegmentImages, build_pipeline with a progress sink"
    assert len(evaluate_blocks) >= 2, "run(EvaluateConfig) and a user pipeline with ScoreMasks"
    monkeypatch.setenv("SEGFLOW_MODEL_DIR", str(pet_job_dir / "model"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict = {"__name__": "docs_api_infer"}
    for section, blocks in (("Infer", infer_blocks), ("Evaluate", evaluate_blocks)):
        for block in blocks:
            exec(compile(block, f"docs/api.md (## {section})", "exec"), namespace)  # noqa: S102 - the doc's own code
    work = pathlib.Path(namespace["work_dir"])
    assert (work / "predictions" / "summary.json").is_file() and (work / "predictions" / "evaluation.json").is_file()
    assert namespace["paths"], "no image was generated: the pipeline example checked nothing"


def _image_bytes(pet_raw_dir, count: int) -> list[tuple[str, bytes]]:
    return [(p.stem, p.read_bytes()) for p in sorted((pet_raw_dir / "images").glob("*.jpg"))[:count]]


def test_segment_images_takes_bytes_or_paths_and_gives_the_jobs_masks(pet_job_dir, pet_raw_dir, tmp_path):
    """A user's (key, bytes) and the job's (stem, path) give the same class ids; a too large image and undecodable
    bytes are dead letters with the job's record (the path, or the key for bytes; the reason; the stage)."""
    from pipelines import infer

    model_dir = str(pet_job_dir / "model")
    images = _image_bytes(pet_raw_dir, 3)
    paths = sorted((pet_raw_dir / "images").glob("*.jpg"))[:3]
    result = infer.run(
        infer.InferConfig(model_dir=model_dir, input=[str(p) for p in paths], output_dir=str(tmp_path / "out")),
        ["--direct_running_mode", "in_memory"],
    )
    assert result.images_written == 3
    expected = {
        stem: to_train_ids(np.asarray(Image.open(tmp_path / "out" / "masks" / f"{stem}.png")), "pet", "trimap")
        for stem, _ in images
    }

    def same_as_the_job(keyed):
        key, segmentation = keyed
        return key, bool(np.array_equal(segmentation.class_ids, expected[key])), segmentation.path

    with TestPipeline() as p:  # one pipeline, two uses of the transform
        given = p | "Bytes" >> beam.Create(images + [("broken", b"\x89PNG not really")])
        segmented, dead = given | "SegmentBytes" >> infer.SegmentImages(model_dir, max_pixels=10**9)
        assert_that(
            segmented | "SameAsTheJob" >> beam.Map(same_as_the_job),
            equal_to([(k, True, None) for k, _ in images]),
            label="Masks",
        )
        assert_that(
            dead | "Undecodable" >> beam.Map(lambda d: (d.path, d.stage, "decodable" in d.error)),
            equal_to([("broken", "preprocess", True)]),
            label="Dead",
        )
        by_path = p | "Paths" >> beam.Create([(paths[0].stem, str(paths[0]))])
        segmented, dead = by_path | "SegmentPaths" >> infer.SegmentImages(model_dir, max_pixels=100)
        assert_that(segmented, equal_to([]), label="NoneSegmented")
        assert_that(
            dead | "OverTheLimit" >> beam.Map(lambda d: (d.path, d.stage, "over --max_pixels 100" in d.error)),
            equal_to([(str(paths[0]), "preprocess", True)]),
            label="TooLarge",
        )


def test_score_masks_scores_arrays_as_the_job_scores_files(tmp_path):
    """ScoreMasks on arrays gives the job's arithmetic; a pair of another size is an error of the document."""
    from pipelines.evaluate import ScoreMasks
    from pipelines.evaluate.transforms import confusion_matrix, scores

    rng = np.random.default_rng(3)
    truth = [rng.integers(1, 4, (6, 8)).astype(np.uint8) for _ in range(3)]
    guess = [np.where(rng.random(t.shape) < 0.3, 2, t).astype(np.uint8) for t in truth]
    total = sum(confusion_matrix(t.astype(int) - 1, g.astype(int) - 1, 3) for t, g in zip(truth, guess))
    expected = scores(total)
    odd = (np.ones((2, 2), np.uint8), np.ones((3, 3), np.uint8))
    with TestPipeline() as p:
        doc = p | beam.Create(list(zip(guess, truth)) + [odd]) | ScoreMasks("pet")
        assert_that(
            doc | beam.Map(lambda d: (d["images"], d["confusion_matrix"], round(d["mean_iou"], 12), len(d["errors"]))),
            equal_to([(3, total.tolist(), round(float(expected["mean_iou"]), 12), 1)]),
        )

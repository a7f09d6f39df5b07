"""Cityscapes as users have it on disk: cityscapesScripts' trainId maps beside the release,
and frames whose instanceIds are missing. Discovery runs on the real DirectRunner (``Discover``)."""

from __future__ import annotations

import os
import pathlib

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines import datasets
from pipelines.common import storage
from pipelines.datasets import cityscapes
from pipelines.datasets.base import DEAD_LETTER_TAG, SplitFractions
from pipelines.datasets.discovery import Discover
from pipelines.tools import synthetic

BEAM_FLAGS = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


def _discover(src: pathlib.Path, examples: list[str], dead: list[tuple[str, str, str]]) -> int:
    """Runs ``Discover`` over ``src``, asserting its example ids are ``examples`` and its dead letters ``dead``
    ((path relative to src, stage, reason), in any order); returns the derived-files counter."""
    p = beam.Pipeline(options=PipelineOptions(BEAM_FLAGS))
    found = p | Discover(datasets.get("cityscapes"), str(src), SplitFractions(0.0, 0.0))
    prefix = str(src) + "/"
    assert_that(found["examples"] | beam.Map(lambda e: e.example_id), equal_to(examples), label="Examples")
    assert_that(
        found[DEAD_LETTER_TAG] | beam.Map(lambda d: (d.path[len(prefix) :], d.stage, d.error)),
        equal_to(dead),
        label="DeadLetters",
    )
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name(cityscapes.DERIVED_COUNTER))["counters"]
    return sum(c.committed for c in counters)


def _gt(src: pathlib.Path, split: str, frame: str) -> pathlib.Path:
    return src / "gtFine" / split / frame.split("_")[0]


def test_cityscapes_scripts_train_id_maps_are_skipped_and_counted_not_dead_lettered(tmp_path):
    src = tmp_path / "cityscapes"
    frames = synthetic.write_cityscapes_dataset(str(src), frames_per_split={"train": 2, "val": 1}, size=(16, 32))
    # What cityscapesScripts' createTrainIdLabelImgs / createTrainIdInstanceImgs write beside each frame.
    for split, ids in frames.items():
        for frame in ids:
            gt = _gt(src, split, frame)
            synthetic.write_file(
                str(gt / f"{frame}_gtFine_labelTrainIds.png"), synthetic.encode_png(np.zeros((16, 32), np.uint8))
            )
            synthetic.write_file(
                str(gt / f"{frame}_gtFine_instanceTrainIds.png"), synthetic.encode_png(np.zeros((16, 32), np.uint8))
            )
    # Per frame: the colour rendering (written by the generator) and the two trainId maps.
    derived = 3 * sum(len(ids) for ids in frames.values())
    assert _discover(src, [f for ids in frames.values() for f in ids], []) == derived


def test_a_frame_without_instance_ids_is_dead_lettered_with_its_label_ids(tmp_path):
    """Every Cityscapes record carries the instance mask (the contract): a train/val frame without its
    ``_gtFine_instanceIds.png`` is two dead letters (image, labelIds) saying which file to restore, never a
    record without it. A test frame (placeholder labels, image-only records) needs none."""
    src = tmp_path / "cityscapes"
    frames = synthetic.write_cityscapes_dataset(
        str(src), frames_per_split={"train": 2, "val": 1, "test": 1}, size=(16, 32)
    )
    lacking = frames["train"][1]
    os.remove(_gt(src, "train", lacking) / f"{lacking}_gtFine_instanceIds.png")
    test_frame = frames["test"][0]
    os.remove(_gt(src, "test", test_frame) / f"{test_frame}_gtFine_instanceIds.png")

    city = lacking.split("_")[0]
    restore = f"(restore {lacking}_gtFine_instanceIds.png from gtFine)"
    _discover(
        src,
        [frames["train"][0], frames["val"][0], test_frame],
        [
            (
                f"gtFine/train/{city}/{lacking}_gtFine_labelIds.png",
                "pair",
                f"labelIds without gtFine instanceIds {restore}",
            ),
            (
                f"leftImg8bit/train/{city}/{lacking}_leftImg8bit.png",
                "pair",
                f"image without gtFine instanceIds {restore}",
            ),
        ],
    )


def test_an_unreadable_instance_ids_file_is_named_in_its_frame_dead_letters(tmp_path):
    src = tmp_path / "cityscapes"
    frames = synthetic.write_cityscapes_dataset(str(src), frames_per_split={"train": 1}, size=(16, 32))
    frame = frames["train"][0]
    instances = _gt(src, "train", frame) / f"{frame}_gtFine_instanceIds.png"
    os.remove(instances)
    os.symlink(tmp_path / "nowhere.png", instances)  # a broken link: listed, but cannot be read
    listed = next(f for f in storage.list_files(str(instances.parent)) if f.path == str(instances))
    assert listed.error is not None
    why = f"({instances}: {listed.error})"
    city = frame.split("_")[0]
    _discover(
        src,
        [],
        [
            (f"gtFine/train/{city}/{frame}_gtFine_instanceIds.png", "discover", listed.error),
            (f"gtFine/train/{city}/{frame}_gtFine_labelIds.png", "pair", f"labelIds without gtFine instanceIds {why}"),
            (f"leftImg8bit/train/{city}/{frame}_leftImg8bit.png", "pair", f"image without gtFine instanceIds {why}"),
        ],
    )

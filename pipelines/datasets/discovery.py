"""Discovery of a dataset's examples, by id, in Beam (local paths and ``gs://`` alike).

``Discover(dataset, input_dir, fractions)`` runs the dataset module's own functions (``pipelines.datasets.base.
Dataset``: ``discovery_sources``, ``list_source``, ``assemble``) inside the pipeline, and routes what they yield:
keyed parts to the grouping, ``DeadLetter``s to the ``dead_letter`` output, ``Fact``s to a side input of the
assembly, ``Count``s to the job's counters. The dataset modules stay free of Beam; this is the one place that
turns them into transforms.

The dataset folders are listed with ``storage.list_files``: the ``--input_dir`` is a literal path (``in[1]`` is a
folder name, not a character class), every file under a dataset folder is seen whatever its name (backslashes
included), symbolic links to files and folders are followed, and an entry that cannot be read (a broken or
looping link, a name that is not UTF-8) becomes a dead letter naming it. Each file is classified on its own (its
id and role, or a dead letter for a stray), and an example is assembled by *grouping on the id*: an image, its
annotation(s) and, for Pet, its list-file rows meet in one ``GroupByKey`` value. Nothing is ever paired by
sorting two file lists and zipping them, and nothing is gathered on the driver.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.common import storage
from pipelines.common.deadletter_record import DeadLetter
from pipelines.datasets.base import DEAD_LETTER_TAG, Count, Dataset, Fact, SplitFractions

FACTS_TAG = "facts"


class BeamFiles:
    """``base.Files`` through Beam's ``FileSystems`` and ``pipelines.common.storage`` (literal listings)."""

    def join(self, root: str, *parts: str) -> str:
        return FileSystems.join(root, *parts)

    def list_files(self, folder: str) -> Iterable[storage.ListedFile]:
        return storage.list_files(folder)

    def list_folder(self, folder: str) -> Iterable[storage.ListedFile]:
        return storage.list_folder(folder)

    def read(self, path: str) -> bytes:
        with FileSystems.open(path) as handle:
            return handle.read()


class _Route(beam.DoFn):
    """Sends what a dataset function yields where it belongs (module docstring)."""

    def setup(self) -> None:
        self._counters: dict[str, beam.metrics.metricbase.Counter] = {}

    def _routed(self, items: Iterable) -> Iterator:
        for item in items:
            if isinstance(item, DeadLetter):
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, item)
            elif isinstance(item, Fact):
                yield beam.pvalue.TaggedOutput(FACTS_TAG, item.value)
            elif isinstance(item, Count):
                if item.name not in self._counters:
                    self._counters[item.name] = Metrics.counter("segflow", item.name)
                self._counters[item.name].inc(item.n)
            else:
                yield item


class _ListSource(_Route):
    """One of the dataset's sources → keyed parts (main), dead letters, facts."""

    def __init__(self, dataset: Dataset, input_dir: str):
        self._dataset = dataset
        self._input_dir = input_dir

    def process(self, source: tuple) -> Iterator:
        yield from self._routed(self._dataset.list_source(source, self._input_dir, BeamFiles()))


class _Assemble(_Route):
    """(key, parts) → ``Example`` (main), dead letters."""

    def __init__(self, dataset: Dataset, fractions: SplitFractions):
        self._dataset = dataset
        self._fractions = fractions

    def process(self, element: tuple[str, Iterable], facts: list[str]) -> Iterator:
        key, parts = element
        yield from self._routed(self._dataset.assemble(key, list(parts), list(facts), self._fractions))


class Discover(beam.PTransform):
    """Pipeline root → PCollections ``examples`` (``Example``) and ``dead_letter`` (``DeadLetter``)."""

    def __init__(self, dataset: Dataset, input_dir: str, fractions: SplitFractions):
        super().__init__()
        self._dataset = dataset
        self._input_dir = input_dir
        self._fractions = fractions

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        listed = (
            pbegin
            | "Sources" >> beam.Create(self._dataset.discovery_sources())
            | "List"
            >> beam.ParDo(_ListSource(self._dataset, self._input_dir)).with_outputs(
                DEAD_LETTER_TAG, FACTS_TAG, main="parts"
            )
        )
        assembled = (
            listed.parts
            | "GroupById" >> beam.GroupByKey()
            | "Assemble"
            >> beam.ParDo(
                _Assemble(self._dataset, self._fractions), facts=beam.pvalue.AsList(listed[FACTS_TAG])
            ).with_outputs(DEAD_LETTER_TAG, main="examples")
        )
        dead = (listed[DEAD_LETTER_TAG], assembled[DEAD_LETTER_TAG]) | "DeadLetters" >> beam.Flatten()
        return {"examples": assembled.examples, DEAD_LETTER_TAG: dead}

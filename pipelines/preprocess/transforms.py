"""Preprocess's steps as Beam ``PTransform``s that take and return ``PCollection``s, to use in any pipeline.

    examples = p | ReadDataset("pet", raw_dir)                   # {"examples": Example, "dead_letter": DeadLetter}
    made = examples["examples"] | MakeRecords(config)             # .records: Record, ["dead_letter"], ["analyze"]
    (examples["examples"], examples["dead_letter"]) | WriteDataset(config, temp_dir)   # DST, metadata.json last

``WriteDataset`` is the job minus discovery: ``build_pipeline`` is ``ReadDataset`` then ``WriteDataset``.
It writes ``config.output_dir`` in place; ``job.run`` adds what a command needs around it (the folder's claim
and lease, staging and publication, scratch space, the runner's options).
"""

from __future__ import annotations

from typing import Optional, Union

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import datasets
from pipelines.common import progress, storage
from pipelines.common.deadletter import WriteDeadLetters
from pipelines.datasets.base import DEAD_LETTER_TAG, Dataset, SplitFractions
from pipelines.datasets.discovery import Discover
from pipelines.preprocess import records as records_lib
from pipelines.preprocess.metadata import write_metadata
from pipelines.preprocess.options import PreprocessConfig
from pipelines.preprocess.records import ANALYZE_TAG, RecordOptions
from pipelines.preprocess.shards import WriteShards, plan_shards
from pipelines.preprocess.stats import AnalyzeAndWriteTransform
from schemas.metadata import METADATA_FILE

EXAMPLES_TAG = "examples"
RECORDS_TAG = "records"


class ReadDataset(beam.PTransform):
    """Pipeline root → ``{"examples": Example, "dead_letter": DeadLetter}``: every source example of a dataset
    in its authors' layout under ``input_dir`` (local or gs://), with its split, and a dead letter for each input
    that cannot become one. Nothing is read before the pipeline runs."""

    def __init__(
        self,
        dataset: Union[str, Dataset],
        input_dir: str,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
    ):
        super().__init__()
        self._dataset = datasets.get(dataset) if isinstance(dataset, str) else dataset
        self._input_dir = input_dir
        self._fractions = SplitFractions(val_fraction, test_fraction)

    @classmethod
    def from_config(cls, config: PreprocessConfig) -> "ReadDataset":
        return cls(config.source_dataset(), config.input_dir, config.val_fraction, config.test_fraction)

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        return pbegin | "Discover" >> Discover(self._dataset, self._input_dir, self._fractions)


class MakeRecords(beam.PTransform):
    """``Example``s → tagged outputs: ``records`` (``shards.Record``: split, sort key, a serialized
    ``tf.train.Example`` in the contract's feature keys; 1 + ``augment_copies`` per train example), ``dead_letter``
    (an input that cannot be decoded or does not match its mask) and ``analyze`` (what the statistics read)."""

    def __init__(self, config: Union[PreprocessConfig, RecordOptions]):
        super().__init__()
        self._options = config.record_options() if isinstance(config, PreprocessConfig) else config

    def expand(self, examples: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return examples | "Make" >> beam.ParDo(records_lib.MakeRecords(self._options)).with_outputs(
            DEAD_LETTER_TAG, ANALYZE_TAG, main=RECORDS_TAG
        )


class WriteDataset(beam.PTransform):
    """``(examples, dead letters)`` → DST at ``config.output_dir``: the shards, ``dead_letter/``, the statistics
    with ``transform_fn/``, and metadata.json last (at ``metadata_path``, default in DST). Returns a one-element
    PCollection: metadata.json's path once written, None when every input was a dead letter.

    ``temp_dir``: tensorflow-transform's scratch folder (a local one is also where shards are gathered);
    ``sink``: counts each example once made into records or a dead letter (``pipelines.common.progress``).
    """

    def __init__(
        self,
        config: PreprocessConfig,
        temp_dir: str,
        metadata_path: Optional[str] = None,
        sink: Optional[progress.Sink] = None,
    ):
        super().__init__()
        self._config = config
        self._temp_dir = temp_dir
        self._metadata_path = metadata_path or FileSystems.join(config.output_dir, METADATA_FILE)
        self._sink = sink

    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        examples, discovery_dead = inputs
        config = self._config
        copies = {"train": 1 + config.augment_copies, "val": 1, "test": 1}
        plan = (
            examples
            | "ExampleSplit" >> beam.Map(lambda e: e.split)
            | "CountExamples" >> beam.combiners.Count.PerElement()
            | "ExampleCounts" >> beam.combiners.ToDict()
            | "PlanShards" >> beam.Map(plan_shards, copies, estimated_record_bytes(config), config.num_shards)
        )
        # Counted once the fused MakeRecords after it made the example's records (or its dead letter).
        made = (
            examples | "Progress" >> beam.ParDo(progress.CountDone(self._sink)) | "MakeRecords" >> MakeRecords(config)
        )
        dead_count = (
            (discovery_dead, made[DEAD_LETTER_TAG])
            | "AllDeadLetters" >> beam.Flatten()
            | "WriteDeadLetters" >> WriteDeadLetters(config.output_dir)
        )
        # On this machine, shards are gathered through scratch files rather than the runner's memory.
        spill_dir = FileSystems.join(self._temp_dir, "spill") if storage.is_local(self._temp_dir) else None
        shard_writer = WriteShards(config.output_dir, plan, spill_dir)
        written = made[RECORDS_TAG] | "WriteShards" >> shard_writer
        spec = config.label_spec
        stats = made[ANALYZE_TAG] | "Statistics" >> AnalyzeAndWriteTransform(
            config.output_dir,
            self._temp_dir,
            config.image_size,
            spec.num_classes,
            spec.ignore_label,
            config.analyze_batch_size,
            config.image_format,
        )
        return (
            examples.pipeline
            | "Metadata" >> beam.Create([None])
            | "WriteMetadata"
            >> beam.Map(
                write_metadata,
                config,
                self._metadata_path,
                dead_letters=beam.pvalue.AsSingleton(dead_count),
                written=beam.pvalue.AsSingleton(written),
                per_shard=beam.pvalue.AsList(shard_writer.per_shard),
                stats=beam.pvalue.AsList(stats),
            )
        )


def estimated_record_bytes(config: PreprocessConfig) -> int:
    """A serialized record's rough size, for the default shard count (photos: PNG ~0.7 byte per RGB sample,
    JPEG ~0.2; masks compress well)."""
    pixels = config.image_size[0] * config.image_size[1]
    per_image = 3 * pixels * (0.7 if config.image_format == "png" else 0.2)
    per_masks = pixels * datasets.get(config.dataset).mask_bytes_per_pixel
    return int(per_image + per_masks) + 200


def build_pipeline(
    p: beam.Pipeline,
    config: PreprocessConfig,
    temp_dir: str,
    metadata_path: Optional[str] = None,
    sink: Optional[progress.Sink] = None,
) -> beam.PCollection:
    """The whole job on ``p``: ``ReadDataset`` then ``WriteDataset``; returns ``WriteDataset``'s PCollection
    (metadata.json's path once written, None when every input was a dead letter). ``metadata_path``: where
    metadata.json goes (default: in ``config.output_dir``; a run that writes in place puts it aside for its
    publication); ``sink``: the job's progress (``WriteDataset``). Nothing here touches the input: discovery happens
    when the pipeline runs, on whichever runner."""
    found = p | f"Discover{datasets.get(config.dataset).title}" >> ReadDataset.from_config(config)
    return (found[EXAMPLES_TAG], found[DEAD_LETTER_TAG]) | "WriteDataset" >> WriteDataset(
        config, temp_dir, metadata_path, sink
    )

"""Training-split statistics with tensorflow-transform, written as ``DST/transform_fn/`` and read back.

The train split's images and labels (at record resolution, as the trainer sees them) are analysed with the
shared ``schemas.transform.make_preprocessing_fn``: per-channel mean and standard deviation, and per-class pixel
counts. ``tft_beam.WriteTransformFn(DST)`` publishes the graph; once it is published the constants are read
back *from that graph* (a one-example dummy input through ``tft.TFTransformOutput``), so ``metadata.json`` can
never disagree with what the trainer and the serving model apply.
"""
from __future__ import annotations

from typing import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines import storage
from schemas import transform as schema_transform
from schemas.metadata import DatasetStats


def median_frequency_weights(class_pixel_counts: Sequence[int]) -> tuple[list[float], list[float]]:
    """(class_frequency, class_weights): freq_c = count_c / sum(counts); weight_c = median(freq of present
    classes) / freq_c (Eigen & Fergus' median-frequency balancing); 0 for classes with no pixels."""
    counts = np.asarray(class_pixel_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return [0.0] * len(counts), [0.0] * len(counts)
    freq = counts / total
    present = freq > 0
    median = float(np.median(freq[present]))
    weights = np.where(present, median / np.where(present, freq, 1.0), 0.0)
    return [float(f) for f in freq], [float(w) for w in weights]


def read_stats(transform_output_dir: str, image_size: Sequence[int], num_classes: int) -> DatasetStats:
    """Runs the published transform graph on a dummy example and returns the analysed constants."""
    import tensorflow as tf
    import tensorflow_transform as tft

    height, width = int(image_size[0]), int(image_size[1])
    output = tft.TFTransformOutput(transform_output_dir)
    values = output.transform_raw_features({
        schema_transform.RAW_IMAGE: tf.zeros([1, height, width, 3], tf.float32),
        schema_transform.RAW_LABEL: tf.zeros([1, height, width], tf.int64),
    })
    mean = values[schema_transform.STAT_CHANNEL_MEAN].numpy()[0]
    std = values[schema_transform.STAT_CHANNEL_STD].numpy()[0]
    counts = values[schema_transform.STAT_CLASS_PIXEL_COUNTS].numpy()[0]
    freq, weights = median_frequency_weights(counts[:num_classes])
    # Rounded so metadata.json reads well and reruns print identical text whatever the float summation order.
    return DatasetStats(
        channel_mean=[round(float(v), 4) for v in mean],
        channel_std=[round(float(v), 4) for v in std],
        class_pixel_counts=[int(v) for v in counts[:num_classes]],
        class_frequency=[round(v, 6) for v in freq],
        class_weights=[round(v, 6) for v in weights],
    )


class AnalyzeAndWriteTransform(beam.PTransform):
    """Raw train features (``{'image': float32 [H, W, 3], 'label': int64 [H, W]}`` per example) → writes
    ``output_dir/transform_fn`` (+ ``transformed_metadata``) and returns a one-element PCollection holding the
    ``DatasetStats`` read back from it."""

    def __init__(self, output_dir: str, temp_dir: str, image_size: Sequence[int], num_classes: int,
                 ignore_label: int, batch_size: int = 64):
        super().__init__()
        self._output_dir = output_dir
        self._temp_dir = temp_dir
        self._image_size = tuple(int(s) for s in image_size)
        self._num_classes = num_classes
        self._ignore_label = ignore_label
        self._batch_size = batch_size

    def expand(self, raw: beam.PCollection) -> beam.PCollection:
        import tensorflow_transform.beam as tft_beam
        from tensorflow_transform.tf_metadata import dataset_metadata

        height, width = self._image_size
        raw_metadata = dataset_metadata.DatasetMetadata.from_feature_spec(
            schema_transform.raw_feature_spec(height, width))
        preprocessing_fn = schema_transform.make_preprocessing_fn(self._num_classes, self._ignore_label)
        # Big enough batches that per-batch graph runs are cheap, small enough that a batch of Cityscapes-size
        # float images stays within a worker's memory.
        # TensorFlow writes gs:// with its own GCS client (fixed endpoint, not Beam's retries, deaf to
        # STORAGE_EMULATOR_HOST): for a remote DST the graph is written under the job's temp dir, then
        # published with Beam FileSystems (pipelines.storage).
        write_dir = self._output_dir
        if not storage.is_local(self._output_dir):
            write_dir = FileSystems.join(self._temp_dir, "transform_output")
        with tft_beam.Context(temp_dir=self._temp_dir, desired_batch_size=self._batch_size):
            transform_fn = (raw, raw_metadata) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
            published = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(write_dir)
        if write_dir != self._output_dir:
            published = published | "PublishTransformFn" >> beam.Map(_publish_transform, write_dir,
                                                                     self._output_dir)
        image_size, num_classes = self._image_size, self._num_classes
        return (published
                | "ReadBackStats" >> beam.Map(lambda _: read_stats(write_dir, image_size, num_classes)))


def _publish_transform(_: object, src: str, dst: str) -> None:
    """Copies tensorflow-transform's two output folders from ``src`` to ``dst`` with Beam FileSystems."""
    import tensorflow_transform as tft

    for folder in (tft.TFTransformOutput.TRANSFORM_FN_DIR, tft.TFTransformOutput.TRANSFORMED_METADATA_DIR):
        storage.replace_tree(FileSystems.join(src, folder), FileSystems.join(dst, folder))

"""Training-split statistics with tensorflow-transform, written as ``DST/transform_fn/`` and read back.

The train split's images and labels (at record resolution, as the trainer sees them) are analysed with the
shared ``schemas.transform.make_preprocessing_fn``: per-channel mean and standard deviation, and per-class pixel
counts. ``tft_beam.WriteTransformFn(DST)`` publishes the graph; once it is published the constants are read
back *from that graph* (a one-example dummy input through ``tft.TFTransformOutput``), so ``metadata.json`` can
never disagree with what the trainer and the serving model apply.

A dataset without train examples (only ``val``/``test``: an evaluation set) has no statistics: the analysis still
runs (see ``AnalyzeAndWriteTransform``), but its graph is discarded and ``DST/transform_fn/`` is removed, so what
DST holds never describes data it does not contain.
"""
from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines import storage
from pipelines.records import ANALYZE_ENCODED, ANALYZE_IMAGE, ANALYZE_LABEL
from schemas import transform as schema_transform
from schemas.metadata import DatasetStats

if TYPE_CHECKING:  # pyarrow comes with tensorflow-transform; imported where batches are built
    import pyarrow as pa


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


_VALUES = np.arange(256, dtype=np.int64)


class ExactMomentsFn(beam.CombineFn):
    """Per-channel pixel count, sum and sum of squares in exact integers, over ``DecodedBatch``es (uint8 pixels).

    The tft graph derives the same moments from exact int64 sums too, but keeps them as float32 constants;
    these integers give ``metadata.json`` its float64 mean and std, and ``read_stats`` checks the two agree.
    """

    def create_accumulator(self) -> tuple[int, list[int], list[int]]:
        return 0, [0, 0, 0], [0, 0, 0]

    def add_input(self, acc, batch: "DecodedBatch"):
        n, s, q = acc
        pixels = np.asarray(batch.images, dtype=np.uint8).reshape(-1, 3)
        # A 256-bin histogram per channel, then sum and sum of squares from it: exact, and much cheaper than
        # widening every pixel to int64.
        histogram = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(3)])
        sums, squares = histogram @ _VALUES, histogram @ (_VALUES * _VALUES)
        return n + pixels.shape[0], [a + int(b) for a, b in zip(s, sums)], [a + int(b) for a, b in zip(q, squares)]

    def merge_accumulators(self, accumulators):
        n, s, q = self.create_accumulator()
        for an, as_, aq in accumulators:
            n += an
            s = [a + b for a, b in zip(s, as_)]
            q = [a + b for a, b in zip(q, aq)]
        return n, s, q

    def extract_output(self, acc) -> tuple[list[float], list[float]]:
        n, s, q = acc
        if n == 0:
            return [0.0] * 3, [0.0] * 3
        mean = [a / n for a in s]
        var = [max(b / n - m * m, 0.0) for b, m in zip(q, mean)]
        return mean, [float(np.sqrt(v)) for v in var]


def read_stats(transform_output_dir: str, image_size: Sequence[int], num_classes: int,
               exact_moments: tuple[list[float], list[float]] | None = None) -> DatasetStats:
    """Runs the published transform graph on a dummy example and returns the analysed constants.

    With ``exact_moments`` (from ``ExactMomentsFn``), mean and std are reported from those after checking that
    the graph's own constants agree with them, so metadata.json is deterministic and never disagrees with
    the graph beyond float rounding.
    """
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
    if exact_moments is not None:
        exact_mean, exact_std = exact_moments
        if not (np.allclose(mean, exact_mean, rtol=1e-3, atol=1e-2)
                and np.allclose(std, np.maximum(exact_std, schema_transform.MIN_STD), rtol=1e-3, atol=1e-2)):
            raise RuntimeError(f"tensorflow-transform statistics {mean}/{std} disagree with exact moments "
                               f"{exact_mean}/{exact_std}")
        mean, std = exact_mean, np.maximum(exact_std, schema_transform.MIN_STD)
    freq, weights = median_frequency_weights(counts[:num_classes])
    # Rounded so metadata.json reads well and reruns print identical text whatever the float summation order.
    return DatasetStats(
        channel_mean=[round(float(v), 4) for v in mean],
        channel_std=[round(float(v), 4) for v in std],
        class_pixel_counts=[int(v) for v in counts[:num_classes]],
        class_frequency=[round(v, 6) for v in freq],
        class_weights=[round(v, 6) for v in weights],
    )


def _tensor_adapter_config(height: int, width: int):
    """Arrow schema + dense tensor representations of the raw features (``schemas.transform.raw_feature_spec``).

    Handing tensorflow-transform Arrow RecordBatches built straight from numpy (one flat column per feature)
    skips its per-instance dict conversion, which at 128x128 costs more than decoding the image did.
    """
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tensor_adapter

    def representation(column: str, shape: Sequence[int]) -> schema_pb2.TensorRepresentation:
        rep = schema_pb2.TensorRepresentation()
        rep.dense_tensor.column_name = column
        for dim in shape:
            rep.dense_tensor.shape.dim.add().size = int(dim)
        return rep

    arrow_schema = pa.schema([pa.field(schema_transform.RAW_IMAGE, pa.large_list(pa.float32())),
                              pa.field(schema_transform.RAW_LABEL, pa.large_list(pa.int64()))])
    return arrow_schema, tensor_adapter.TensorAdapterConfig(arrow_schema, {
        schema_transform.RAW_IMAGE: representation(schema_transform.RAW_IMAGE, [height, width, 3]),
        schema_transform.RAW_LABEL: representation(schema_transform.RAW_LABEL, [height, width]),
    })


class DecodedBatch(NamedTuple):
    """Analysis examples as the trainer reads them: uint8 ``images [B, H, W, 3]`` and ``labels [B, H, W]``."""

    images: np.ndarray
    labels: np.ndarray


class DecodeAnalysisBatch(beam.DoFn):
    """A list of analysis elements (``pipelines.records.ANALYZE_*`` keys) → one ``DecodedBatch``.

    Encoded record images are decoded with the trainer's own decoder (``schemas.features.decode_image``), the
    whole batch in one graph call: the same op and settings as training, so the statistics describe exactly the
    pixels the model will see, without an eager TensorFlow call per image.
    """

    def __init__(self, image_format: str, image_size: Sequence[int]):
        self._format = image_format
        self._size = (int(image_size[0]), int(image_size[1]))
        self._decode = None

    def setup(self) -> None:
        import tensorflow as tf

        from schemas import features

        height, width = self._size
        image_format = self._format

        def decode_one(encoded: tf.Tensor) -> tf.Tensor:
            return features.decode_image({features.IMAGE_ENCODED: encoded, features.IMAGE_HEIGHT: height,
                                          features.IMAGE_WIDTH: width}, image_format)

        # autograph=False: nothing to convert (no Python control flow), and converting map_fn's lambda costs
        # ~0.4 s of tracing per worker.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def decode(encoded: tf.Tensor) -> tf.Tensor:
            return tf.map_fn(decode_one, encoded, fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8))

        self._decode = decode

    def process(self, batch: Sequence[dict]) -> Iterator[DecodedBatch]:
        images: list = [b[ANALYZE_IMAGE] for b in batch]
        pending = [i for i, b in enumerate(batch) if b[ANALYZE_IMAGE] is None]
        if pending:
            decoded = self._decode(np.array([batch[i][ANALYZE_ENCODED] for i in pending], dtype=object)).numpy()
            for i, image in zip(pending, decoded):
                images[i] = image
        yield DecodedBatch(np.stack(images).astype(np.uint8, copy=False),
                           np.stack([b[ANALYZE_LABEL] for b in batch]).astype(np.uint8, copy=False))


class BatchCoder(beam.coders.Coder):
    """Beam's pickling, with a size estimate that does not encode: for analysis batches (``DecodedBatch``,
    Arrow ``RecordBatch``).

    Beam estimates the bytes of every output it counts by encoding a sample of the elements (the first ten of
    each bundle, then ~10/N), and the default coder for these types pickles. An analysis batch is 4 MB
    (uint8) or 21 MB (the float32/int64 columns tft reads) at 128x128: preprocessing 3000 Pet images pickled
    1.4 GB that way only to measure it, in the middle of the records stage. ``estimate_size`` here is the
    arrays' own byte count.
    """

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def estimate_size(self, value: Any) -> int:
        if isinstance(value, DecodedBatch):
            return int(value.images.nbytes + value.labels.nbytes)
        return int(value.nbytes)  # pyarrow.RecordBatch: the bytes its buffers hold

    def is_deterministic(self) -> bool:
        return False


def register_batch_coder() -> type:
    """Makes ``BatchCoder`` the coder of ``DecodedBatch`` and Arrow ``RecordBatch`` PCollections (also those
    tensorflow-transform derives from our batches); returns the RecordBatch type, for output type hints."""
    import pyarrow as pa

    for element_type in (DecodedBatch, pa.RecordBatch):
        beam.coders.registry.register_coder(element_type, BatchCoder)
    return pa.RecordBatch


def empty_record_batch(arrow_schema) -> "pa.RecordBatch":
    """A RecordBatch of zero examples in the analysis schema: every sum analyzer's neutral element."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(
        [pa.LargeListArray.from_arrays(pa.array([0], pa.int64()), pa.array([], field.type.value_type))
         for field in arrow_schema], schema=arrow_schema)


def _empty_batch_if_none(_: object, arrow_schema, n: int) -> Iterator["pa.RecordBatch"]:
    if n == 0:
        yield empty_record_batch(arrow_schema)


def to_record_batch(batch: DecodedBatch, arrow_schema) -> "pa.RecordBatch":
    """A ``DecodedBatch`` → one RecordBatch with flat list columns (float32 image, int64 label)."""
    import pyarrow as pa

    def column(array: np.ndarray, dtype) -> pa.LargeListArray:
        flat = array.reshape(len(array), -1).astype(dtype)
        offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int64)
        return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat.ravel()))

    return pa.RecordBatch.from_arrays([column(batch.images, np.float32), column(batch.labels, np.int64)],
                                      schema=arrow_schema)


class AnalyzeAndWriteTransform(beam.PTransform):
    """Analysis elements of the train split (``pipelines.records.ANALYZE_*``: the record image or its encoded
    bytes, and the train-id mask; cast to the transform's float32/int64 only when batched, so what crosses Beam
    stages stays small) → writes ``output_dir/transform_fn`` (+ ``transformed_metadata``) and returns a
    one-element PCollection holding the ``DatasetStats`` read back from it, or None when there were no train
    examples (then no ``transform_fn/`` is left in ``output_dir``)."""

    def __init__(self, output_dir: str, temp_dir: str, image_size: Sequence[int], num_classes: int,
                 ignore_label: int, batch_size: int = 64, image_format: str = "png"):
        super().__init__()
        self._image_format = image_format
        self._output_dir = output_dir
        self._temp_dir = temp_dir
        self._image_size = tuple(int(s) for s in image_size)
        self._num_classes = num_classes
        self._ignore_label = ignore_label
        self._batch_size = batch_size

    def expand(self, raw: beam.PCollection) -> beam.PCollection:
        import tensorflow_transform.beam as tft_beam

        height, width = self._image_size
        arrow_schema, adapter_config = _tensor_adapter_config(height, width)
        preprocessing_fn = schema_transform.make_preprocessing_fn(self._num_classes, self._ignore_label)
        record_batch_type = register_batch_coder()
        decoded = (raw
                   | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size,
                                                   max_batch_size=self._batch_size)
                   | "Decode" >> beam.ParDo(DecodeAnalysisBatch(self._image_format, self._image_size))
                   .with_output_types(DecodedBatch))
        batches = (decoded
                   | "ToRecordBatch" >> beam.Map(to_record_batch, arrow_schema).with_output_types(record_batch_type))
        # tensorflow-transform cannot analyse zero batches: the sum of the per-class counts (a vector whose length
        # the graph only knows at run time) then comes out as a scalar, and tracing the final graph fails. With no
        # train examples the analysis gets one zero-row batch (adds nothing to any sum) and its graph is dropped
        # below. Only then: a normal dataset's analysis input, and so its graph's bytes, are unchanged.
        train_count = raw | "CountTrain" >> beam.combiners.Count.Globally()
        padding = (raw.pipeline
                   | "NoTrainPadding" >> beam.Create([None])
                   | "EmptyBatchIfNoTrain" >> beam.FlatMap(_empty_batch_if_none, arrow_schema,
                                                           n=beam.pvalue.AsSingleton(train_count))
                   .with_output_types(record_batch_type))
        batches = (batches, padding) | "AnalysisInput" >> beam.Flatten()
        # desired_batch_size: our batches go through as they are; big enough that per-batch graph runs are
        # cheap, small enough that a batch of Cityscapes-size float images fits a worker's memory.
        # TensorFlow writes gs:// with its own GCS client (fixed endpoint, not Beam's retries, deaf to
        # STORAGE_EMULATOR_HOST): for a remote DST the graph is written under the job's temp dir, then
        # published with Beam FileSystems (pipelines.storage). See docs/cloud.md.
        write_dir = self._output_dir
        if not storage.is_local(self._output_dir):
            write_dir = FileSystems.join(self._temp_dir, "transform_output")
        with tft_beam.Context(temp_dir=self._temp_dir, desired_batch_size=self._batch_size):
            transform_fn = (batches, adapter_config) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
            published = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(write_dir)
        if write_dir != self._output_dir:
            published = published | "PublishTransformFn" >> beam.Map(
                _publish_transform, write_dir, self._output_dir, n=beam.pvalue.AsSingleton(train_count))
        moments = decoded | "ExactMoments" >> beam.CombineGlobally(ExactMomentsFn())
        return (published
                | "ReadBackStats" >> beam.Map(_read_back_stats, write_dir, self._output_dir, self._image_size,
                                              self._num_classes, m=beam.pvalue.AsSingleton(moments),
                                              n=beam.pvalue.AsSingleton(train_count)))


def _transform_folders() -> tuple[str, str]:
    import tensorflow_transform as tft

    return tft.TFTransformOutput.TRANSFORM_FN_DIR, tft.TFTransformOutput.TRANSFORMED_METADATA_DIR


def _publish_transform(_: object, src: str, dst: str, n: int) -> None:
    """Copies tensorflow-transform's two output folders from ``src`` to ``dst`` with Beam FileSystems (not
    when there were no train examples: that graph is dropped)."""
    if n:
        for folder in _transform_folders():
            storage.replace_tree(FileSystems.join(src, folder), FileSystems.join(dst, folder))


def _read_back_stats(_: object, write_dir: str, output_dir: str, image_size: Sequence[int], num_classes: int,
                     m: tuple[list[float], list[float]], n: int) -> DatasetStats | None:
    """The published graph's ``DatasetStats``; None with no train examples, after removing ``output_dir``'s
    transform folders (the graph of a zero-row batch, or an earlier run's)."""
    if n == 0:
        for folder in _transform_folders():
            storage.remove_tree(FileSystems.join(output_dir, folder))
        return None
    return read_stats(write_dir, image_size, num_classes, m)

"""Training-split statistics with tensorflow-transform, written as ``DST/transform_fn/`` and read back.

The train split's images and labels (at record resolution, as the trainer sees them) are analysed with the
shared ``schemas.transform.make_preprocessing_fn``: per-channel mean and standard deviation, and per-class pixel
counts, all sums: tensorflow-transform gets them as exact totals of per-example histograms (see
``AnalyzeAndWriteTransform``) and never reads an image. ``tft_beam.WriteTransformFn(DST)`` publishes the graph;
once it is published the constants are read back *from that graph* (a one-example dummy input through
``tft.TFTransformOutput``), so ``metadata.json`` can never disagree with what the trainer and the serving model
apply.

A dataset without train examples (only ``val``/``test``: an evaluation set) has no statistics: the analysis still
runs (see ``AnalyzeAndWriteTransform``), but its graph is discarded and ``DST/transform_fn/`` is removed, so what
DST holds never describes data it does not contain.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.preprocess.records import AnalysisInput, channel_histogram
from schemas import transform as schema_transform
from schemas.class_balance import class_balance
from schemas.metadata import DatasetStats

_VALUES = np.arange(256, dtype=np.int64)


class AnalysisTotals(NamedTuple):
    """The train split's sufficient statistics: every analyzer of the transform graph is a sum of these.

    ``image_histogram`` int64 ``[3, 256]`` (pixels per grey level per channel), ``label_histogram`` int64
    ``[256]`` (pixels per train id, 255 = ignore), ``examples`` (train records analysed).
    """

    examples: int
    image_histogram: np.ndarray
    label_histogram: np.ndarray

    @property
    def pixels(self) -> int:
        return int(self.image_histogram[0].sum())

    def channel_sums(self) -> tuple[list[int], list[int]]:
        """Per-channel sum and sum of squares of the pixel values, exact (Python ints)."""
        sums = [int(v) for v in self.image_histogram @ _VALUES]
        squares = [int(v) for v in self.image_histogram @ (_VALUES * _VALUES)]
        return sums, squares

    def exact_moments(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation in float64, from the exact integer sums."""
        n = self.pixels
        if n == 0:
            return [0.0] * 3, [0.0] * 3
        sums, squares = self.channel_sums()
        mean = [a / n for a in sums]
        var = [max(b / n - m * m, 0.0) for b, m in zip(squares, mean)]
        return mean, [float(np.sqrt(v)) for v in var]

    def class_pixel_counts(self, num_classes: int, ignore_label: int) -> list[int]:
        """Pixels per train id ``0 .. num_classes - 1``, the ignore label counted as none (as the graph does)."""
        counts = [int(v) for v in self.label_histogram[:num_classes]]
        if 0 <= ignore_label < num_classes:
            counts[ignore_label] = 0
        return counts


class TotalsFn(beam.CombineFn):
    """``pipelines.preprocess.records.AnalysisInput`` histograms → one ``AnalysisTotals``, in exact int64 sums.

    Combines as it goes (a few KiB per accumulator), so the analysis holds no image however many examples
    the train split has.
    """

    def create_accumulator(self) -> list:
        return [0, np.zeros((3, 256), np.int64), np.zeros(256, np.int64)]

    def add_input(self, acc: list, element: AnalysisInput) -> list:
        if element.image_histogram is None:
            raise ValueError("an analysis input reached the totals undecoded")
        acc[0] += int(element.examples)
        acc[1] += element.image_histogram
        acc[2] += element.label_histogram
        return acc

    def merge_accumulators(self, accumulators) -> list:
        merged = self.create_accumulator()
        for examples, images, labels in accumulators:
            merged[0] += examples
            merged[1] += images
            merged[2] += labels
        return merged

    def extract_output(self, acc: list) -> AnalysisTotals:
        return AnalysisTotals(int(acc[0]), acc[1], acc[2])


def read_stats(
    transform_output_dir: str,
    image_size: Sequence[int],
    num_classes: int,
    exact_moments: tuple[list[float], list[float]] | None = None,
) -> DatasetStats:
    """Runs the published transform graph on a dummy example and returns the analysed constants.

    With ``exact_moments`` (``AnalysisTotals.exact_moments``), mean and std are reported from those after checking that
    the graph's own constants agree with them, so metadata.json is deterministic and never disagrees with
    the graph beyond float rounding.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    height, width = int(image_size[0]), int(image_size[1])
    output = tft.TFTransformOutput(transform_output_dir)
    values = output.transform_raw_features(
        {
            schema_transform.RAW_IMAGE: tf.zeros([1, height, width, 3], tf.float32),
            schema_transform.RAW_LABEL: tf.zeros([1, height, width], tf.int64),
        }
    )
    mean = values[schema_transform.STAT_CHANNEL_MEAN].numpy()[0]
    std = values[schema_transform.STAT_CHANNEL_STD].numpy()[0]
    counts = values[schema_transform.STAT_CLASS_PIXEL_COUNTS].numpy()[0]
    if exact_moments is not None:
        exact_mean, exact_std = exact_moments
        if not (
            np.allclose(mean, exact_mean, rtol=1e-3, atol=1e-2)
            and np.allclose(std, np.maximum(exact_std, schema_transform.MIN_STD), rtol=1e-3, atol=1e-2)
        ):
            raise RuntimeError(
                f"tensorflow-transform statistics {mean}/{std} disagree with exact moments {exact_mean}/{exact_std}"
            )
        mean, std = exact_mean, np.maximum(exact_std, schema_transform.MIN_STD)
    return dataset_stats(mean, std, counts[:num_classes])


def dataset_stats(mean: Sequence[float], std: Sequence[float], class_pixel_counts: Sequence[int]) -> DatasetStats:
    """metadata.json's statistics; class frequencies and weights by ``schemas.class_balance`` (the trainer's
    rule for ``--class_weights auto`` too)."""
    freq, weights = class_balance(class_pixel_counts)
    # Rounded so metadata.json reads well and reruns print identical text whatever the float summation order.
    return DatasetStats(
        channel_mean=[round(float(v), 4) for v in mean],
        channel_std=[round(float(v), 4) for v in std],
        class_pixel_counts=[int(v) for v in class_pixel_counts],
        class_frequency=[round(v, 6) for v in freq],
        class_weights=[round(v, 6) for v in weights],
    )


def _tensor_adapter_config(height: int, width: int):
    """Arrow schema + dense tensor representations of the raw features (``schemas.transform.raw_feature_spec``):
    what tensorflow-transform traces the graph from (it reads no data of that schema, see
    ``AnalyzeAndWriteTransform``)."""
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tensor_adapter

    def representation(column: str, shape: Sequence[int]) -> schema_pb2.TensorRepresentation:
        rep = schema_pb2.TensorRepresentation()
        rep.dense_tensor.column_name = column
        for dim in shape:
            rep.dense_tensor.shape.dim.add().size = int(dim)
        return rep

    arrow_schema = pa.schema(
        [
            pa.field(schema_transform.RAW_IMAGE, pa.large_list(pa.float32())),
            pa.field(schema_transform.RAW_LABEL, pa.large_list(pa.int64())),
        ]
    )
    return arrow_schema, tensor_adapter.TensorAdapterConfig(
        arrow_schema,
        {
            schema_transform.RAW_IMAGE: representation(schema_transform.RAW_IMAGE, [height, width, 3]),
            schema_transform.RAW_LABEL: representation(schema_transform.RAW_LABEL, [height, width]),
        },
    )


class DecodeAnalysisBatch(beam.DoFn):
    """A list of ``AnalysisInput``s holding encoded JPEG records → one ``AnalysisInput`` of the whole batch, its
    image histogram counted from the decoded pixels.

    The records are decoded with the trainer's own decoder (``schemas.features.decode_image``), the whole batch
    in one graph call: the same op and settings as training, so the statistics describe exactly the pixels the
    model will see (PIL's IDCT differs by a few levels), without an eager TensorFlow call per image.
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
            return features.decode_image(
                {features.IMAGE_ENCODED: encoded, features.IMAGE_HEIGHT: height, features.IMAGE_WIDTH: width},
                image_format,
            )

        # autograph=False: nothing to convert (no Python control flow), and converting map_fn's lambda costs
        # ~0.4 s of tracing per worker.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
        def decode(encoded: tf.Tensor) -> tf.Tensor:
            return tf.map_fn(decode_one, encoded, fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8))

        self._decode = decode

    def decode(self, encoded: Sequence[bytes]) -> np.ndarray:
        """uint8 ``[B, H, W, 3]``: the records as the trainer decodes them."""
        return self._decode(np.array(list(encoded), dtype=object)).numpy()

    def process(self, batch: Sequence[AnalysisInput]) -> Iterator[AnalysisInput]:
        images = np.zeros((3, 256), np.int64)
        labels = np.zeros(256, np.int64)
        pending = [b.image_encoded for b in batch if b.image_histogram is None]
        if pending:
            images += channel_histogram(self.decode(pending))
        for b in batch:
            if b.image_histogram is not None:
                images += b.image_histogram
            labels += b.label_histogram
        yield AnalysisInput(sum(int(b.examples) for b in batch), images, None, labels)


# Which tensorflow-transform analyzer of ``schemas.transform.make_preprocessing_fn`` sums what: its analyzers
# are named by the order the graph creates them (``sum``, ``sum_1``, ...), and their cache entry keys carry the
# name. Checked against the traced graph in ``analyzer_cache_entries``.
_ANALYZER_SUMS = ("sum", "sum_1", "sum_2", "sum_3")  # pixel count, channel sums, squares, class pixel counts


def analyzer_cache_entries(preprocessing_fn, specs: dict, dataset_key) -> dict[str, bytes]:
    """``{analyzer name: its cache entry key}`` for the graph's four sum analyzers (see ``_ANALYZER_SUMS``)."""
    from pipelines.shared import private_apis

    keys = private_apis.tft_analysis_cache_entry_keys()(preprocessing_fn, specs, [dataset_key], False)
    by_name = {}
    for key in keys:
        name = key.split(b"[", 1)[1].split(b"]", 1)[0].decode() if b"[" in key else ""
        by_name[name] = key
    if sorted(by_name) != sorted(_ANALYZER_SUMS) or not all(b"CacheableCombineAccumulate" in k for k in keys):
        raise RuntimeError(
            f"the transform graph's analyzers are {sorted(keys)}, not the four sums this analysis "
            f"feeds ({', '.join(_ANALYZER_SUMS)}): update pipelines.preprocess.stats with the "
            "preprocessing_fn"
        )
    return by_name


def encoded_accumulator(totals: AnalysisTotals, analyzer: str, num_classes: int, ignore_label: int) -> bytes:
    """The cache entry of one sum analyzer, encoded by tensorflow-transform's own coder of a sum's accumulator (a
    list with one value per analyzer input), holding the train split's exact int64 sum."""
    from pipelines.shared import private_apis

    sums, squares = totals.channel_sums()
    value = {
        "sum": totals.pixels,
        "sum_1": sums,
        "sum_2": squares,
        "sum_3": totals.class_pixel_counts(num_classes, ignore_label),
    }[analyzer]
    return private_apis.tft_sum_accumulator_coder().encode_cache([value])


class AnalyzeAndWriteTransform(beam.PTransform):
    """``pipelines.preprocess.records.AnalysisInput``s of the train split → writes ``output_dir/transform_fn`` (+
    ``transformed_metadata``) and returns a one-element PCollection holding the ``DatasetStats`` read back from
    it, or None when there were no train examples (then no ``transform_fn/`` is left in ``output_dir``).

    Every analyzer of the transform graph is a sum (pixel count, per-channel sums and sums of squares, per-class
    pixel counts), so the analysis streams: histograms are combined as the records are made (``TotalsFn``),
    and tensorflow-transform gets the totals as its analyzer cache, a dataset it then never reads. It traces and
    writes the very same graph with the very same constants as when it summed the pixels itself, without any
    frame crossing a stage (the runner on this machine holds every element that does: ~10 MiB of float32 and
    int64 per 512x1024 example, which grew the job's memory with the dataset).
    """

    def __init__(
        self,
        output_dir: str,
        temp_dir: str,
        image_size: Sequence[int],
        num_classes: int,
        ignore_label: int,
        batch_size: int = 64,
        image_format: str = "png",
    ):
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
        from tensorflow_transform.beam import analyzer_cache
        from tfx_bsl.tfxio.tensor_adapter import TensorAdapter

        height, width = self._image_size
        _, adapter_config = _tensor_adapter_config(height, width)
        preprocessing_fn = schema_transform.make_preprocessing_fn(self._num_classes, self._ignore_label)
        if self._image_format != "png":  # JPEG records: decoded a batch at a time with the trainer's decoder
            raw = (
                raw
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "Decode" >> beam.ParDo(DecodeAnalysisBatch(self._image_format, self._image_size))
            )
        totals = raw | "Totals" >> beam.CombineGlobally(TotalsFn())
        dataset_key = analyzer_cache.DatasetKey("train")
        entries = analyzer_cache_entries(
            preprocessing_fn, TensorAdapter(adapter_config).OriginalTypeSpecs(), dataset_key
        )
        cache = {
            key: totals
            | f"Accumulator[{name}]" >> beam.Map(encoded_accumulator, name, self._num_classes, self._ignore_label)
            for name, key in sorted(entries.items())
        }
        # TensorFlow writes gs:// with its own GCS client (fixed endpoint, not Beam's retries, deaf to
        # STORAGE_EMULATOR_HOST): for a remote DST the graph is written under the job's temp dir, then
        # published with Beam FileSystems (pipelines.common.storage). See docs/cloud.md.
        write_dir = self._output_dir
        if not storage.is_local(self._output_dir):
            write_dir = FileSystems.join(self._temp_dir, "transform_output")
        with tft_beam.Context(temp_dir=self._temp_dir, desired_batch_size=self._batch_size):
            transform_fn, _ = (
                {dataset_key: None},
                {dataset_key: analyzer_cache.DatasetCache(cache, None)},
                adapter_config,
            ) | "Analyze" >> tft_beam.AnalyzeDatasetWithCache(preprocessing_fn, pipeline=raw.pipeline)
            published = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(write_dir)
        totals_side = beam.pvalue.AsSingleton(totals)
        if write_dir != self._output_dir:
            published = published | "PublishTransformFn" >> beam.Map(
                _publish_transform, write_dir, self._output_dir, totals=totals_side
            )
        return published | "ReadBackStats" >> beam.Map(
            _read_back_stats, write_dir, self._output_dir, self._image_size, self._num_classes, totals=totals_side
        )


def _transform_folders() -> tuple[str, str]:
    import tensorflow_transform as tft

    return tft.TFTransformOutput.TRANSFORM_FN_DIR, tft.TFTransformOutput.TRANSFORMED_METADATA_DIR


def _publish_transform(_: object, src: str, dst: str, totals: AnalysisTotals) -> None:
    """Copies tensorflow-transform's two output folders from ``src`` to ``dst`` with Beam FileSystems (not
    when there were no train examples: that graph is dropped)."""
    if totals.examples:
        for folder in _transform_folders():
            # An earlier run's files that this graph does not overwrite go at publication, by the owner record.
            storage.copy_tree(FileSystems.join(src, folder), FileSystems.join(dst, folder))


def _read_back_stats(
    _: object, write_dir: str, output_dir: str, image_size: Sequence[int], num_classes: int, totals: AnalysisTotals
) -> DatasetStats | None:
    """The published graph's ``DatasetStats``; None with no train examples, after removing the graph of empty
    totals this run wrote (an earlier run's goes at publication, by the owner record)."""
    if totals.examples == 0:
        if write_dir == output_dir:
            for folder in _transform_folders():
                storage.remove_tree(FileSystems.join(write_dir, folder))
        return None
    return read_stats(write_dir, image_size, num_classes, totals.exact_moments())

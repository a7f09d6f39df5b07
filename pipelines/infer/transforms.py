"""Infer's Beam transforms, for the job and for a user's own pipeline.

``SegmentImages(model_dir)``: (key, image) → (key, ``Segmentation``), and dead letters beside. It is Beam's
``RunInference`` on segflow's ``ModelHandler`` (``pipelines.infer.model.SegflowModelHandler``, keyed), with the
model's own ``preprocess`` signature as the handler's preprocess fn (``DecodeForModel``), the class ids at each
image's original size (and its instances) as the postprocess fn (``SegmentationFromScores``), and
``RunInference(...).with_exception_handling()`` for the inputs that cannot be segmented.
``WritePredictions(output_dir, model_info)``: (key, ``Segmentation``) → masks/, color/, overlay/, instances/
files under ``output_dir`` (``pipelines.infer.outputs``), one summary row per image.
``AssignOutputNames``: path → (stem, path), a stem unique across the job.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Any, Iterable, NamedTuple, Optional, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.utils import shared

from pipelines import datasets
from pipelines.common import storage
from pipelines.common.deadletter import DeadLetter
from pipelines.common.runner import leave_parallelism_to_beam
from pipelines.infer import outputs, upsample
from pipelines.infer.instances import Instance, extract_instances
from pipelines.infer.model import SegflowModel, SegflowModelHandler, acquire_model, read_model_info
from pipelines.infer.options import DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PIXELS
from schemas.labels import LabelSpec, spec_from_table
from schemas.model_contract import ModelInfo

NAMESPACE = "segflow_infer"
# What one element in a RunInference batch holds: its model-size input (uint8 x 3) and scores (float32 x C).
# The default batch MAX keeps a batch's elements within this (8 when they fit: a 512x1024 19-class model's
# elements are 41 MB each); the full-size work happens after the batch, one image at a time.
BATCH_BYTES = 512 << 20
DEFAULT_MAX_BATCH = 8


def default_batch_bounds(model_info: ModelInfo) -> tuple[int, int]:
    """--batch_size when not given: 1 to ``DEFAULT_MAX_BATCH`` elements, fewer when ``BATCH_BYTES`` would not
    hold that many model-size inputs and scores (``image_size`` x (3 + 4 x ``num_classes``) bytes each)."""
    height, width = model_info.image_size
    per_element = height * width * (3 + 4 * model_info.num_classes)
    return 1, max(1, min(DEFAULT_MAX_BATCH, BATCH_BYTES // max(per_element, 1)))


# ---------------------------------------------------------------------------------------------- naming
def _key_by_stem(path: str) -> tuple[str, str]:
    return outputs.base_stem(path), path


def _assign_names(group: tuple[str, Iterable[str]]) -> Iterable[tuple[str, str]]:
    _, paths = group
    paths = sorted(paths)
    names = outputs.unique_stems(paths)
    for path in paths:
        yield names[path], path


class AssignOutputNames(beam.PTransform):
    """path → (stem, path) with a stem unique across the whole job.

    Files are grouped by their plain stem (only names travel, not bytes), so two inputs called ``x.jpg`` in
    different folders get distinct, deterministic names.
    """

    def expand(self, files: beam.PCollection) -> beam.PCollection:
        return (
            files
            | "KeyByStem" >> beam.Map(_key_by_stem)
            | "GroupByStem" >> beam.GroupByKey()
            | "UniqueNames" >> beam.FlatMap(_assign_names)
        )


# ---------------------------------------------------------------------------------------------- the records
class Segmentation(NamedTuple):
    """One segmented image: ``class_ids`` int32 [H, W] train ids at the input's original size; ``path``: the
    file read (None for bytes given in the PCollection); ``instances`` (with ``instances=True``) and ``image``
    (the decoded input, uint8 [H, W, 3], with ``overlay=True``), else None."""

    path: Optional[str]
    class_ids: np.ndarray
    instances: Optional[list[Instance]] = None
    image: Optional[np.ndarray] = None


class InFlight(NamedTuple):
    """What travels beside an image's model input through ``RunInference`` (the keyed handler's key)."""

    key: Any
    path: Optional[str]
    height: int
    width: int
    data: Optional[bytes]  # the encoded input, kept only for an overlay of bytes given in the PCollection


class Rejected(Exception):
    """An input that cannot be segmented; its message is the dead letter's one-line reason.

    Raised by the handler's pre/postprocess fns for ``RunInference(...).with_exception_handling(exc_class=
    Rejected)``; any other exception (a model that fails on a whole batch, a bug) still fails the job. Beam's
    dead-letter output carries ``(element, (type, repr(exception), traceback))``: ``repr`` is the reason itself,
    so the record keeps infer's ``{"path", "error", "stage"}`` format rather than a Python repr."""

    def __repr__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")


def pixel_limit_reason(data: bytes, max_pixels: int) -> Optional[str]:
    """Why an image is over ``max_pixels`` (its size from the header: nothing is decoded), else None.

    Bytes PIL cannot identify pass (the model's decoder then gives its own reason).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:  # PIL's own cap, far above any sane --max_pixels
        found = _PIL_PIXELS.search(str(err))
        pixels = int(found.group(1)) if found else None
        if pixels is not None and pixels <= max_pixels:
            return None
        return f"image has {pixels or 'too many'} pixels, over --max_pixels {max_pixels}"
    except Exception:  # noqa: BLE001 - not an image PIL knows: left to the model's decoder
        return None
    if width * height > max_pixels:
        return (
            f"image is {width}x{height} = {width * height} pixels, over --max_pixels {max_pixels} "
            f"(raise the flag if the workers have the memory)"
        )
    return None


class _UsesModel:
    """The process-wide ``SegflowModel``, acquired on first use: a preprocess/postprocess fn is a plain
    callable (``beam.Map``), with no ``setup`` to load it in."""

    def __init__(self, model_dir: str, handle: shared.Shared, cache_dir: Optional[str]):
        self._model_dir, self._handle, self._cache_dir = model_dir, handle, cache_dir
        self._model: Optional[SegflowModel] = None

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _model=None)  # workers load their own

    def model(self) -> SegflowModel:
        if self._model is None:
            leave_parallelism_to_beam()  # before the model's first op
            self._model = acquire_model(self._handle, self._model_dir, self._cache_dir)
        return self._model


class DecodeForModel(_UsesModel):
    """The handler's preprocess fn: (key, path or encoded bytes) → (``InFlight``, uint8 [Hm, Wm, 3]) by the
    model's ``preprocess`` signature; ``Rejected`` for an empty, undecodable or too large input.

    The pixel limit (``max_pixels``, read from the header before anything is decoded) is a per-input check of
    segflow's own, so it lives here rather than in Beam's handler, which has no per-element limits."""

    def __init__(self, model_dir: str, handle: shared.Shared, cache_dir: Optional[str], max_pixels: int, keep: bool):
        super().__init__(model_dir, handle, cache_dir)
        self._max_pixels, self._keep = max_pixels, keep
        self._images = Metrics.counter(NAMESPACE, "images_read")
        self._failed = Metrics.counter(NAMESPACE, "images_unreadable")
        self._too_large = Metrics.counter(NAMESPACE, "images_too_large")

    def __call__(self, element: tuple[Any, Union[str, bytes]]) -> tuple[InFlight, np.ndarray]:
        key, image = element
        path = image if isinstance(image, str) else None
        try:
            data = storage.read_bytes(path) if path is not None else bytes(image)
            if not data:
                raise ValueError("empty file")
            too_large = pixel_limit_reason(data, self._max_pixels)
            if too_large:
                self._too_large.inc()
                raise Rejected(too_large)
            model_input, height, width = self.model().preprocess(data)
        except Rejected:
            raise
        except Exception as err:  # noqa: BLE001 - any unreadable input becomes a dead letter, never a crash
            self._failed.inc()
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise Rejected(reason[:500]) from None
        self._images.inc()
        return InFlight(key, path, height, width, data if self._keep and path is None else None), model_input


class SegmentationFromScores(_UsesModel):
    """The handler's postprocess fn: (``InFlight``, ``PredictionResult``) → (key, ``Segmentation``): class ids
    at the original size (host: ``pipelines.infer.upsample``; graph: the model's ``postprocess`` signature),
    instances and the decoded input when asked; ``Rejected`` when that fails."""

    def __init__(
        self,
        model_dir: str,
        handle: shared.Shared,
        cache_dir: Optional[str],
        model_info: ModelInfo,
        *,
        instances: bool,
        min_instance_area: int,
        max_instances: Optional[int],
        overlay: bool,
        postprocess: str,
    ):
        super().__init__(model_dir, handle, cache_dir)
        self._info = model_info
        self._instances, self._min_area, self._max_instances = instances, min_instance_area, max_instances
        self._overlay, self._host = overlay, postprocess == "host"
        self._spec: Optional[LabelSpec] = None
        self._failed = Metrics.counter(NAMESPACE, "postprocess_failed")

    def __call__(self, element: tuple[InFlight, PredictionResult]) -> tuple[Any, Segmentation]:
        flight, result = element
        try:
            score = probabilities = None
            if self._host:
                # The signature's class ids and instance scores, bit for bit, without its [H, W, C] volume.
                scores = np.asarray(result.inference, dtype=np.float32)
                size, mode = self._info.image_size, self._info.resize_mode
                class_ids = upsample.class_ids(scores, flight.height, flight.width, size, mode)
                if self._instances:
                    score = upsample.mean_score(scores, flight.height, flight.width, size, mode)
            else:
                class_ids, probabilities = self.model().postprocess(
                    result.inference, flight.height, flight.width, with_probabilities=self._instances
                )
            image = self._decoded(flight) if self._overlay else None
            found = None
            if self._instances:
                spec = self._spec = self._spec or label_spec(self._info)
                names = list(spec.class_names)
                found = extract_instances(
                    class_ids,
                    probabilities,
                    spec.instance_train_ids,
                    # Pet trimaps have a predicted border class: that is the model's own boundary evidence.
                    border_train_id=names.index("border") if "border" in names else None,
                    min_area=self._min_area,
                    max_instances=self._max_instances,
                    score=score,
                )
        except Exception as err:  # noqa: BLE001 - one bad image must not stop the job
            self._failed.inc()
            raise Rejected(f"postprocess failed: {err}"[:500]) from None
        return flight.key, Segmentation(flight.path, class_ids, found, image)

    @staticmethod
    def _decoded(flight: InFlight) -> np.ndarray:
        import tensorflow as tf

        from pipelines.shared.pixels_graph import decode_image_bytes

        data = flight.data if flight.path is None else storage.read_bytes(flight.path)
        return decode_image_bytes(tf.constant(data)).numpy()


def label_spec(model_info: ModelInfo) -> LabelSpec:
    """The model's label table as ``segflow_model.json`` carries it (any dataset, ``folder``'s own classes
    included); the dataset's fixed table for an info file written before ``label_table`` existed."""
    if model_info.label_table is not None:
        return spec_from_table(
            model_info.dataset,
            model_info.label_mode,
            model_info.class_names,
            model_info.ignore_label,
            model_info.label_table,
        )
    return datasets.get(model_info.dataset).label_spec(model_info.label_mode)


def _preprocess_dead_letter(failure: tuple) -> DeadLetter:
    (key, image), (_, reason, _) = failure
    return DeadLetter(image if isinstance(image, str) else str(key), reason, "preprocess")


def _postprocess_dead_letter(failure: tuple) -> DeadLetter:
    (flight, _), (_, reason, _) = failure
    return DeadLetter(flight.path if flight.path is not None else str(flight.key), reason, "postprocess")


class SegmentImages(beam.PTransform):
    """(key, image) → ``(segmented, dead_letters)``: (key, ``Segmentation``) per image, and a ``DeadLetter``
    (path or key, reason, stage) per input that cannot be segmented.

    ``image``: a path (str, read through Beam FileSystems: local or gs://) or the encoded bytes. The keyword
    arguments are ``InferConfig``'s fields of the same names (the ``--`` flags of ``python -m pipelines.infer``);
    ``model_info``: the model's ``segflow_model.json`` when already read (read from ``model_dir`` otherwise)."""

    def __init__(
        self,
        model_dir: str,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        instances: bool = False,
        min_instance_area: int = 20,
        max_instances: Optional[int] = DEFAULT_MAX_INSTANCES,
        overlay: bool = False,
        batch_size: Optional[tuple[int, int]] = None,
        model_calls: str = "batch",
        postprocess: str = "host",
        model_copies: Optional[int] = None,
        large_model: bool = False,
        model_cache_dir: Optional[str] = None,
        model_info: Optional[ModelInfo] = None,
    ):
        super().__init__()
        self._model_dir = model_dir
        self._info = model_info or read_model_info(model_dir)
        handle = shared.Shared()  # one model per process for the handler and both fns
        min_batch, max_batch = batch_size or default_batch_bounds(self._info)
        decode = DecodeForModel(model_dir, handle, model_cache_dir, max_pixels, keep=overlay)
        segment = SegmentationFromScores(
            model_dir,
            handle,
            model_cache_dir,
            self._info,
            instances=instances,
            min_instance_area=min_instance_area,
            max_instances=max_instances,
            overlay=overlay,
            postprocess=postprocess,
        )
        self._handler = (
            KeyedModelHandler(
                SegflowModelHandler(
                    model_dir,
                    cache_dir=model_cache_dir,
                    shared_handle=handle,
                    min_batch_size=min_batch,
                    max_batch_size=max_batch,
                    model_copies=model_copies,
                    large_model=large_model,
                    model_calls=model_calls,
                )
            )
            .with_preprocess_fn(decode)
            .with_postprocess_fn(segment)
        )

    def expand(self, images: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        segmented, failed = images | "RunInference" >> RunInference(self._handler).with_exception_handling(
            exc_class=Rejected
        )
        # failed.failed_inferences stays empty: the model step raises no Rejected (a failing batch fails the job).
        dead = (
            failed.failed_preprocessing[0] | "PreprocessDeadLetters" >> beam.Map(_preprocess_dead_letter),
            failed.failed_postprocessing[0] | "PostprocessDeadLetters" >> beam.Map(_postprocess_dead_letter),
        ) | "DeadLetters" >> beam.Flatten()
        return segmented, dead


class WritePredictions(beam.DoFn):
    """(key, ``Segmentation``) → writes masks/, color/ (overlay/, instances/) under ``output_dir`` with ``key``
    as the file stem; yields the image's summary row (``outputs.write_prediction``)."""

    def __init__(self, output_dir: str, model_info: ModelInfo):
        self._output_dir, self._info = output_dir, model_info
        self._written = Metrics.counter(NAMESPACE, "images_written")
        self._instance_count = Metrics.counter(NAMESPACE, "instances")

    def setup(self) -> None:
        self._spec = label_spec(self._info)

    def process(self, element: tuple[Any, Segmentation]) -> Iterable[dict]:
        stem, segmentation = element
        # Write errors are not caught: storage failures are retried by the runner, not turned into lost images.
        summary = outputs.write_prediction(
            self._output_dir,
            stem,
            segmentation.class_ids,
            self._spec,
            image=segmentation.image,
            instances=segmentation.instances,
            source_path=segmentation.path or "",
        )
        self._written.inc()
        self._instance_count.inc(summary["instances"])
        yield summary

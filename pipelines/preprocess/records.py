"""One source example → its records (the original plus offline-augmented copies) and its analysis features.

Reads the example's files through Beam ``FileSystems``, decodes by content (``pipelines.common.decode``), maps native
labels to train ids (``schemas.labels``), brings image and masks to the record size with the serving graph's
resize geometry (the host twins in ``pipelines.shared.pixels_host``: antialiased for images, nearest neighbour for
masks, so no label is ever invented), encodes and builds a ``tf.train.Example`` (``schemas.features``). Anything
that fails becomes a dead letter with the path and the reason, a mask with values outside its dataset's label set
included (the dataset's ``mask_problem``); nothing is dropped or remapped silently.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from PIL import Image

from pipelines import datasets
from pipelines.common.deadletter import DeadLetter
from pipelines.common.decode import (
    DecodeError,
    decode_rgb_image,
    encode_image,
    encode_instance_mask,
    encode_mask,
)
from pipelines.common.runner import leave_parallelism_to_beam
from pipelines.common.storage import read_bytes
from pipelines.datasets.base import DEAD_LETTER_TAG, Dataset, Example
from pipelines.preprocess import augment
from pipelines.preprocess.shards import Record, record_key
from pipelines.shared import pixels_host

ANALYZE_TAG = "analyze"


class AnalysisInput(NamedTuple):
    """What the training-split statistics need from train originals with a mask: sufficient statistics, never the
    pixels themselves (every statistic the transform graph computes is a sum, see ``pipelines.preprocess.stats``).

    ``image_histogram`` int64 ``[3, 256]``: per-channel counts of each grey level of the record image, as the
    trainer decodes it. A PNG record is lossless, so it is counted from the array here; a JPEG record is sent as
    its ``image_encoded`` bytes (``image_histogram`` None) and counted after the trainer's own decoder has run on
    a whole batch of them (TensorFlow's IDCT differs from PIL's by a few levels). ``label_histogram`` int64
    ``[256]``: counts of each train id in the record mask (255 = ignore). ``examples``: how many records the
    histograms describe (1 here; a decoded batch's sum later).
    """

    examples: int
    image_histogram: Optional[np.ndarray]
    image_encoded: Optional[bytes]
    label_histogram: np.ndarray


def channel_histogram(image: np.ndarray | Image.Image) -> np.ndarray:
    """int64 ``[3, 256]``: how many pixels of ``image`` (uint8 ``[..., W, 3]``, one image or a batch, or an RGB
    PIL image) have each level, per channel."""
    if isinstance(image, Image.Image):
        return np.asarray(image.histogram(), dtype=np.int64).reshape(3, 256)
    pixels = np.ascontiguousarray(image, dtype=np.uint8)
    rows = pixels.reshape(-1, pixels.shape[-2], 3) if pixels.ndim >= 3 else pixels.reshape(1, -1, 3)
    # PIL's histogram counts all three channels in one C pass: ~7x faster than np.bincount, which first widens
    # every value to a 64-bit index.
    return np.asarray(Image.fromarray(rows, "RGB").histogram(), dtype=np.int64).reshape(3, 256)


def label_histogram(mask: np.ndarray) -> np.ndarray:
    """int64 ``[256]``: how many pixels of the uint8 train-id ``mask`` hold each value."""
    values = np.ascontiguousarray(mask, dtype=np.uint8)
    values = values.reshape(-1, values.shape[-1]) if values.ndim >= 2 else values.reshape(1, -1)
    return np.asarray(Image.fromarray(values, "L").histogram(), dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class RecordOptions:
    """What a record looks like; everything the DoFn needs, picklable."""

    dataset: Union[str, Dataset]  # a name, or the dataset as its source defines it (``Dataset.with_source``)
    image_size: tuple[int, int]
    resize_mode: str = "stretch"
    label_mode: str = "trimap"
    image_format: str = "png"
    jpeg_quality: int = 95
    augment_copies: int = 0
    seed: int = 0
    ignore_label: int = 255


def _fit(
    array: np.ndarray | Image.Image,
    reference_hw: tuple[int, int],
    size: Sequence[int],
    mode: str,
    *,
    is_mask: bool,
    fill: int = 0,
) -> np.ndarray | Image.Image:
    """Resizes ``array`` (an image as an array or a PIL image, returned alike) to the record canvas with the
    ``pipelines.shared.pixels_host`` host twins, padding in mode ``pad``.

    The content box comes from ``reference_hw``, the full-resolution size of what is being fitted, not from the
    array itself: a JPEG decoded at 1/4 scale and its full-size mask then land on exactly the same pixels.
    """
    if is_mask:
        return pixels_host.resize_mask_host(array, size, mode, ignore_label=fill, content_hw=reference_hw)
    return pixels_host.resize_image_host(array, size, mode, content_hw=reference_hw)


def _orientation_hint(image_bytes: bytes, mask_hw: tuple[int, ...], full_hw: tuple[int, int]) -> str:
    """Why a mask may have the image's size turned by 90 degrees: it was drawn on the stored, unturned pixels."""
    orientation = pixels_host.exif_orientation_host(image_bytes)
    if pixels_host.orientation_swaps_axes(orientation) and tuple(mask_hw) == (full_hw[1], full_hw[0]):
        return (
            f"; the image is displayed turned (EXIF orientation {orientation}) and the mask matches the stored, "
            f"unturned pixels: draw masks on the image as displayed, or remove the image's orientation tag"
        )
    return ""


class MakeRecords(beam.DoFn):
    """``Example`` → ``Record``s (main), analysis features (tag ``analyze``, train originals), dead letters."""

    def __init__(self, options: RecordOptions):
        self._o = options
        self._luts: dict[Optional[int], np.ndarray] = {}

    def setup(self) -> None:
        # Beam runs one worker per core; TF's own thread pools on top would only oversubscribe them. The only TF
        # work here is the statistics' batch decode, one graph at a time per worker: one inter-op thread.
        leave_parallelism_to_beam(inter_op_threads=1)
        # Every lookup this job can use, keyed as the dataset picks them per example (Pet mode 'species' has one
        # per species; otherwise one, keyed None).
        self._dataset = datasets.get(self._o.dataset) if isinstance(self._o.dataset, str) else self._o.dataset
        self._luts = self._dataset.train_id_luts(self._o.label_mode)
        if any(int(lut[self._o.ignore_label]) != self._o.ignore_label for lut in self._luts.values()):
            raise ValueError(
                f"label lookup does not keep {self._o.ignore_label} (ignore) as is; masks could not be "
                f"mapped after padding"
            )
        self._read = Metrics.counter("segflow", "examples_read")
        self._failed = Metrics.counter("segflow", "examples_dead_lettered")

    def _train_id_lut(self, example: Example) -> np.ndarray:
        """uint8[256]: this example's native mask value → train id (255 = ignore)."""
        try:
            return self._luts[self._dataset.train_id_lut_key(example, self._o.label_mode)]
        except ValueError as e:  # the reason no lookup applies, e.g. a Pet species that no list file gives
            raise DecodeError(str(e)) from None

    def process(self, example: Example) -> Iterator:
        self._read.inc()
        try:
            outputs = list(self._records(example))
        except DecodeError as e:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                DeadLetter(e.args[1] if len(e.args) > 1 else example.image_path, str(e.args[0]), "decode"),
            )
            return
        yield from outputs

    def _records(self, example: Example) -> Iterator:
        """The example's records, copy 0 (the original) first, each followed by its analysis input if any."""
        copies = 1 + (self._o.augment_copies if example.split == "train" else 0)
        image_bytes, image, full_hw = self._decode_image(example, copies)
        mask = self._decode_mask(example, image_bytes, full_hw)
        lut = self._train_id_lut(example) if mask is not None else None
        instances = self._decode_instances(example, full_hw)
        for copy in range(copies):
            img, mask_out, inst_out = self._fit_copy(example, copy, full_hw, image, mask, lut, instances)
            image_encoded = encode_image(img, self._o.image_format, self._o.jpeg_quality)
            yield self._record(example, copy, image_encoded, mask_out, inst_out)
            if copy == 0 and example.split == "train" and mask_out is not None:
                yield beam.pvalue.TaggedOutput(ANALYZE_TAG, self._analysis_input(img, image_encoded, mask_out))

    def _decode_image(self, example: Example, copies: int) -> tuple[bytes, Image.Image, tuple[int, int]]:
        """(encoded bytes, RGB image, full-resolution (height, width)) of the example's image."""
        size = self._o.image_size
        # Decode-time downscaling must leave enough pixels for the smallest crop an augmented copy takes.
        min_scale = augment.AUGMENTATION.offline_min_crop if copies > 1 else 1.0
        need = (int(np.ceil(size[0] / min_scale)), int(np.ceil(size[1] / min_scale)))
        try:
            image_bytes = read_bytes(example.image_path)
            image, full_hw = decode_rgb_image(image_bytes, need)
        except DecodeError as e:
            raise DecodeError(f"image: {e}", example.image_path) from None
        return image_bytes, image, full_hw

    def _decode_mask(self, example: Example, image_bytes: bytes, full_hw: tuple[int, int]) -> Optional[np.ndarray]:
        """The native (not yet mapped) class mask at the image's full size, or None when the example has none."""
        if not example.mask_path:
            return None
        return self._decode_label_file(
            example,
            example.mask_path,
            "mask",
            "mask",
            8,
            full_hw,
            lambda shape: (
                f"mask {example.mask_path} is {shape[1]}x{shape[0]} (width x height)"
                f"{_orientation_hint(image_bytes, shape, full_hw)}"
            ),
        )

    def _decode_instances(self, example: Example, full_hw: tuple[int, int]) -> Optional[np.ndarray]:
        """The 16-bit instance-id map at the image's full size, or None when the example has none."""
        if not example.instance_path:
            return None
        return self._decode_label_file(
            example,
            example.instance_path,
            "instance mask",
            "instances",
            16,
            full_hw,
            lambda shape: f"instance mask is {shape[1]}x{shape[0]}",
        )

    def _decode_label_file(
        self,
        example: Example,
        path: str,
        what: str,
        kind: str,
        bits: int,
        full_hw: tuple[int, int],
        size_mismatch: Callable[[tuple[int, ...]], str],
    ) -> np.ndarray:
        """A label file (``what``: "mask" or "instance mask") decoded and checked against the dataset's label set
        (``kind`` for ``native_mask_problem``) and the image's full size; a ``DecodeError`` naming the image
        otherwise (``size_mismatch(shape)`` ends the size message)."""
        try:
            native = self._dataset.read_mask(read_bytes(path), what, bits=bits)
        except DecodeError as e:
            raise DecodeError(f"{what} {path}: {e}", example.image_path) from None
        problem = self._dataset.mask_problem(native, kind)
        if problem:
            raise DecodeError(f"{what} {path}: {problem}", example.image_path)
        if native.shape != full_hw:
            raise DecodeError(
                f"image is {full_hw[1]}x{full_hw[0]} but its {size_mismatch(native.shape)}", example.image_path
            )
        return native

    def _fit_copy(
        self,
        example: Example,
        copy: int,
        full_hw: tuple[int, int],
        image: Image.Image,
        mask: Optional[np.ndarray],
        lut: Optional[np.ndarray],
        instances: Optional[np.ndarray],
    ) -> tuple[np.ndarray | Image.Image, Optional[np.ndarray], Optional[np.ndarray]]:
        """Copy ``copy`` (0 = the original) at the record size: (image, train-id mask or None, instances or None).

        Native values are mapped to train ids after the crop, flip and nearest-neighbour resize, which only pick
        pixels, so mapping commutes with them: the same result on ~1/10 of the pixels. Padding is added as
        ignore, which every lookup maps to itself (checked in setup).
        """
        o = self._o
        params = augment.augment_params(o.seed, example.example_id, copy)
        ref_hw = full_hw
        if copy:
            top, left, bottom, right = augment.crop_box_pixels(full_hw[0], full_hw[1], params.box)
            ref_hw = (bottom - top, right - left)
        # The original stays a PIL image from decode to encode (no copy through numpy); a copy is cropped,
        # flipped and jittered as an array.
        source = image if params == augment.IDENTITY else np.asarray(image)
        img = _fit(augment.apply_geometry(source, params), ref_hw, o.image_size, o.resize_mode, is_mask=False)
        img = augment.apply_colour(img, params)
        mask_out = inst_out = None
        if mask is not None:
            mask_out = np.take(
                lut,
                _fit(
                    augment.apply_geometry(mask, params),
                    ref_hw,
                    o.image_size,
                    o.resize_mode,
                    is_mask=True,
                    fill=o.ignore_label,
                ),
            )
        if instances is not None:
            inst_out = _fit(
                augment.apply_geometry(instances, params), ref_hw, o.image_size, o.resize_mode, is_mask=True, fill=0
            )
        return img, mask_out, inst_out

    def _record(
        self,
        example: Example,
        copy: int,
        image_encoded: bytes,
        mask_out: Optional[np.ndarray],
        inst_out: Optional[np.ndarray],
    ) -> Record:
        from schemas.features import build_example

        record = build_example(
            image_encoded=image_encoded,
            image_format=self._o.image_format,
            height=self._o.image_size[0],
            width=self._o.image_size[1],
            source_id=example.example_id,
            mask_png=encode_mask(mask_out) if mask_out is not None else None,
            instance_png=encode_instance_mask(inst_out) if inst_out is not None else None,
            class_label=example.class_label,
            species=example.species,
            augment_copy=copy,
        )
        return Record(example.split, record_key(example.example_id, copy), record.SerializeToString(deterministic=True))

    def _analysis_input(
        self, img: np.ndarray | Image.Image, image_encoded: bytes, mask_out: np.ndarray
    ) -> AnalysisInput:
        """A train original's statistics input.

        The analysis must see exactly the pixels training will read, but only as histograms (a few KiB, not a
        frame per example held between stages). PNG is lossless: counted from the array itself. A JPEG record
        goes as its bytes, decoded later a whole batch per graph call with the trainer's own decoder (TF's default
        IDCT differs from PIL's by a few levels; one eager call per image cost more than the rest of the analysis).
        """
        png = self._o.image_format == "png"
        return AnalysisInput(
            1, channel_histogram(img) if png else None, None if png else image_encoded, label_histogram(mask_out)
        )

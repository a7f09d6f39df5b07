"""What every dataset module provides (``Dataset``), and what all datasets share.

Shared: the ``Example`` discovery hands to the record maker, the split by a stable hash of the id, the dead-letter
tag, the small records a dataset's discovery functions yield (``Fact``, ``Count``, plus ``DeadLetter`` and keyed
parts) and the path helpers they use. Which Beam transform runs those functions is ``pipelines.datasets.discovery``:
the dataset modules themselves never import Beam, so the jobs' flag checks (label modes, record format) and
``--help`` can read them in well under a second.

A dataset module holds one ``Dataset`` subclass and one instance of it named ``DATASET``; ``pipelines.datasets``
finds it by the module's name (see ``docs/datasets.md``).
"""

from __future__ import annotations

import abc
import dataclasses
import posixpath
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple, Optional, Protocol, Union

from pipelines.common.deadletter_record import DeadLetter
from pipelines.common.hashing import stable_fraction

if TYPE_CHECKING:
    import numpy as np

    from pipelines.common.storage import ListedFile
    from schemas.labels import LabelSpec

# The tagged output of discovery and of the record maker that carries ``DeadLetter``s.
DEAD_LETTER_TAG = "dead_letter"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


class Example(NamedTuple):
    """One source example, ready to be read and turned into records."""

    example_id: str
    split: str
    image_path: str
    mask_path: Optional[str] = None  # Pet trimap / Cityscapes labelIds; None = image-only record
    instance_path: Optional[str] = None  # Cityscapes instanceIds
    class_label: Optional[int] = None  # Pet breed, 0-based
    species: Optional[int] = None  # Pet species, 0 = cat, 1 = dog
    listed: bool = True  # Pet: False when list files exist but name no split for this id


class SplitFractions(NamedTuple):
    """``--val_fraction`` / ``--test_fraction``: how a dataset without split folders hashes ids into splits."""

    val_fraction: float
    test_fraction: float


class Fact(NamedTuple):
    """Something one listing found that every assembly needs to see (e.g. which Pet list files exist): discovery
    gathers the facts of all sources and hands them to ``Dataset.assemble`` as a list of ``value``s."""

    value: str


class Count(NamedTuple):
    """Add ``n`` to the job counter ``segflow/<name>`` (a dataset's discovery functions stay free of Beam)."""

    name: str
    n: int = 1


class Broken(NamedTuple):
    """A part that was found but cannot be read (e.g. a broken link), keyed by its id so that its partner's
    dead letter can say why the partner is alone. Its own dead letter is emitted where it is listed."""

    role: str
    path: str
    error: str


# A keyed part of an example: (key, (role, value)); every part of one key meets in ``Dataset.assemble``.
Part = tuple[str, tuple[str, object]]
Listed = Union[Part, DeadLetter, Fact, Count]
Assembled = Union[Example, DeadLetter, Count]


class Files(Protocol):
    """The storage a dataset's discovery functions read through (given by ``pipelines.datasets.discovery``)."""

    def join(self, root: str, *parts: str) -> str: ...

    def list_files(self, folder: str) -> Iterable["ListedFile"]: ...  # every file under the folder, recursively

    def list_folder(self, folder: str) -> Iterable["ListedFile"]: ...  # the folder's own entries

    def read(self, path: str) -> bytes: ...


class GroundTruthLayout(NamedTuple):
    """Where evaluate looks for ground-truth masks: files ``depth`` folders below ``root/<folder...>`` (``depth``
    1 = directly in it; 0 = at any depth, for layouts whose users nest folders freely) whose names end with
    ``suffix``."""

    folder: tuple[str, ...]
    depth: int
    suffix: str

    def pattern_parts(self) -> tuple[str, ...]:
        """The layout as glob parts below the root, for messages (``("trimaps", "*.png")``)."""
        return self.folder + (("**",) if self.depth == 0 else ("*",) * (self.depth - 1)) + ("*" + self.suffix,)


class SplitImages(NamedTuple):
    """What infer reads for ``--input_dir SRC --dataset NAME [--split S]`` (``Dataset.split_images``)."""

    images: list[str]  # the image files, sorted
    unreadable: list[tuple[str, str]]  # (path, why) for image entries found that cannot be read (a broken link)
    missing_ids: list[str]  # ids the split's list names that have no image, sorted (the user must see them)


def split_from_hash(example_id: str, val_fraction: float, test_fraction: float = 0.0) -> str:
    """train / val / test from a stable hash of the id alone (not the seed: splits never move)."""
    u = stable_fraction("split", example_id)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def basename(path: str) -> str:
    # Local paths here are POSIX and gs:// names use "/": a backslash is part of a name, never a separator.
    return posixpath.basename(path)


def relative(path: str, root: str) -> str:
    """``path`` relative to the folder ``root`` it was listed under ("/"-separated), else its base name."""
    prefix = (root[len("file://") :] if root.startswith("file://") else root).rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else basename(path)


def alone_because(broken: list[Broken], role: str) -> str:
    """`` (<path>: <why>)`` when the missing ``role`` part of an example exists but cannot be read, else ''."""
    found = sorted(b.path + ": " + b.error for b in broken if b.role == role)
    return f" ({'; '.join(found)})" if found else ""


@dataclasses.dataclass(frozen=True)
class Dataset(abc.ABC):
    """Everything the jobs need to know about one dataset: its fields here, its behaviour in the methods below.

    Fields:
      name: the ``--dataset`` value (and the module's name).
      title: how messages and transform labels name it (``DiscoverPet``).
      label_modes: the preprocess ``--label_mode``s it accepts; () when it has one fixed label table, and then
        ``fixed_labels`` says which (for the message when a mode is given anyway).
      evaluate_label_modes: the evaluate ``--label_mode``s (classes that can be scored from masks alone).
      record_image_format: what ``--image_format auto`` means for it (the source's codec family).
      mask_bytes_per_pixel: a record's masks, bytes per pixel once compressed (the default shard count).
      input_folder: the folder below ``--input_dir`` that must hold files, and ``input_layout`` what they look
        like (the message when it holds none).
      metadata_extra: entries it adds to ``metadata.json``'s ``extra``.
      example_id_hint: what a file name must carry to be paired by evaluate (the message when it does not).
      labels_file: the file in the dataset's root that holds its label table (``folder``: ``classes.json``), read
        by ``with_source``; "" when the table is fixed (then ``label_spec`` needs no source).
    """

    name: str
    title: str
    label_modes: tuple[str, ...]
    fixed_labels: str
    evaluate_label_modes: tuple[str, ...]
    record_image_format: str
    mask_bytes_per_pixel: float
    input_folder: tuple[str, ...]
    input_layout: str
    metadata_extra: tuple[tuple[str, str], ...]
    example_id_hint: str
    labels_file: str = ""

    # ------------------------------------------------------------------------------------------ labels
    @abc.abstractmethod
    def label_spec(self, label_mode: Optional[str] = None) -> "LabelSpec":
        """The ``schemas.labels`` table for ``label_mode`` (ignored when ``label_modes`` is empty)."""

    @abc.abstractmethod
    def train_id_luts(self, label_mode: str) -> dict[Optional[int], "np.ndarray"]:
        """Every native value → train id lookup (uint8[256]) a job in ``label_mode`` uses, keyed as
        ``train_id_lut_key`` picks them (None when one lookup serves every example)."""

    @abc.abstractmethod
    def mask_problem(self, native: "np.ndarray", kind: str) -> Optional[str]:
        """Why a native ``kind`` (``"mask"`` or ``"instances"``) array cannot be this dataset's annotation (the
        values outside its label set), or None when every value is valid."""

    def with_source(self, input_dir: str, files: Files) -> "Dataset":
        """This dataset as the source at ``input_dir`` defines it. A dataset whose label table comes with its data
        (``folder``: ``classes.json``) returns a copy carrying that table, which the jobs then hand to their
        pipelines (it pickles) and write into ``metadata.json``; a dataset with a fixed table returns itself.
        Raises ``ValueError`` (the one line to show) when the source's table is missing or malformed: the jobs
        call this before Beam starts."""
        return self

    def read_mask(self, data: bytes, what: str = "mask", bits: int = 8) -> "np.ndarray":
        """An annotation file's bytes → the [H, W] array of native values that ``mask_problem``,
        ``train_id_luts`` and ``to_train_ids`` take; ``ValueError`` (the reason) when it is not one. The default
        reads a single-channel label PNG (``bits`` 8: uint8, 16: int32); a dataset whose masks need more (RGB
        colour-coded masks, 16-bit values) maps them here."""
        from pipelines.common.decode import decode_label_map  # PIL: loaded where masks are read, not for --help

        return decode_label_map(data, what, bits=bits)

    def train_id_lut_key(self, example: Example, label_mode: str) -> Optional[int]:
        """Which of ``train_id_luts`` maps ``example``'s mask; raises ``ValueError`` (the reason) when none can."""
        return None

    # --------------------------------------------------------------------------------------- discovery
    @abc.abstractmethod
    def discovery_sources(self) -> list[tuple]:
        """What discovery lists, one picklable item each (e.g. a folder and the role of its files)."""

    @abc.abstractmethod
    def list_source(self, source: tuple, input_dir: str, files: Files) -> Iterator[Listed]:
        """One of ``discovery_sources`` → keyed parts, dead letters, facts and counts."""

    @abc.abstractmethod
    def assemble(
        self, key: str, parts: list[tuple[str, object]], facts: list[str], fractions: SplitFractions
    ) -> Iterator[Assembled]:
        """Every part of one key (and every source's facts) → its ``Example`` and/or dead letters."""

    # ---------------------------------------------------------------------------------------- evaluate
    @abc.abstractmethod
    def example_id(self, stem: str) -> Optional[str]:
        """The id that pairs a prediction (by its output stem) with its ground truth; None when there is none."""

    @abc.abstractmethod
    def to_train_ids(self, native: "np.ndarray", label_mode: str) -> "np.ndarray":
        """A native annotation (uint8 [H, W]) → train ids (255 = not an evaluated class)."""

    @abc.abstractmethod
    def ground_truth_layouts(self, split: Optional[str]) -> list[GroundTruthLayout]:
        """Where evaluate looks for ground truth below ``--ground_truth``, first match wins."""

    def literal_id(self, path: str, root: str, role: str) -> Optional[str]:
        """The id of the file ``path`` listed under the dataset folder ``root`` from its whole path there, for a
        dataset whose ids are paths (``folder``: ``site_a/0001``, so that a file name repeated across sub-folders
        stays two ids); ``role``: ``"image"`` (below ``input_folder``) or ``"mask"`` (a ground-truth mask). None
        (the default): the id comes from the file name alone (``example_id``)."""
        return None

    def evaluate_split_ids(self, split: str, ground_truth: str, files: Files) -> Optional[frozenset[str]]:
        """The ids of the dataset's own ``split`` (evaluate's ``--split``) as the ground truth lists them (Pet's
        ``annotations/<split>.txt``), or None where a split is a folder that ``ground_truth_layouts(split)``
        names. Raises ``ValueError`` (the one line to show) when the dataset or the ground truth has no such
        split."""
        return None

    # ------------------------------------------------------------------------------------------- infer
    def split_images(self, input_dir: str, split: Optional[str], files: Files) -> SplitImages:
        """The images infer reads for ``--input_dir``/``--dataset``/``--split``. Default: the image files
        (``IMAGE_EXTENSIONS``, not hidden) below ``input_folder``; of a ``split``, those whose ``example_id`` the
        split's list names (``evaluate_split_ids``; the listed ids without an image in ``missing_ids``) or, where
        the split is a folder (``evaluate_split_ids`` None), those below ``input_folder/<split>/``. So a dataset
        gets ``--split`` in infer from what it tells evaluate. Raises ``ValueError`` (the one line to show) when
        the dataset or ``input_dir`` has no such split."""
        folder = files.join(input_dir, *self.input_folder)
        ids = None if split is None else self.evaluate_split_ids(split, input_dir, files)
        if split is not None and ids is None:
            folder = files.join(folder, split)
        found = [
            f
            for f in files.list_files(folder)
            if not basename(f.path).startswith(".") and posixpath.splitext(f.path)[1].lower() in IMAGE_EXTENSIONS
        ]

        def id_of(path: str) -> Optional[str]:
            return self.literal_id(path, input_dir, "image") or self.example_id(posixpath.splitext(basename(path))[0])

        if ids is not None:
            found = [f for f in found if id_of(f.path) in ids]
        elif split is not None and not found:
            raise ValueError(
                f"--split {split}: no {self.name} images in {folder} (layout: {self.input_layout}); name a split "
                "the dataset folder has, or leave --split out"
            )
        seen = {id_of(f.path) for f in found}
        return SplitImages(
            sorted(f.path for f in found if f.error is None),
            sorted((f.path, f.error) for f in found if f.error is not None),
            sorted(ids - seen) if ids is not None else [],
        )

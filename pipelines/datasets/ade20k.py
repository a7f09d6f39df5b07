"""ADE20K SceneParsing (``ADEChallengeData2016``), as distributed: its layout, ids, labels and splits.

``--input_dir`` is the ``ADEChallengeData2016`` folder of ``ADEChallengeData2016.zip``: ``images/{training,
validation}/ADE_<split>_<n>.jpg`` and ``annotations/{training,validation}/ADE_<split>_<n>.png`` (single-channel:
0 = "other", ignored; 1..150 the classes of ``objectInfo150``, learned as train ids 0..149, mmsegmentation's
``reduce_zero_label``). The split is the folder's: ``training`` → train, ``validation`` → val; the separate test
release's images, put in ``images/testing/``, become image-only test records. An example is an image and its
annotation, grouped on ``<split>/<file stem>``; the other files of the release (``objectInfo150.txt``,
``sceneCategories.txt``) lie outside the two folders and are not read.

Labels: ``schemas.labels`` ADE20K table (``ade20k_spec``, the names and palette in ``schemas.label_tables``); one
label mode.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import TYPE_CHECKING, Iterator, Optional, Union

import numpy as np

from pipelines.common.deadletter_record import DeadLetter
from pipelines.datasets.base import (
    IMAGE_EXTENSIONS,
    Assembled,
    Broken,
    Dataset,
    Example,
    Files,
    GroundTruthLayout,
    Listed,
    SplitFractions,
    SplitImages,
    alone_because,
    basename,
    relative,
)
from schemas import labels

if TYPE_CHECKING:
    from pipelines.common.storage import ListedFile

IMAGE_FOLDER, ANNOTATION_FOLDER = "images", "annotations"
FOLDERS = {"image": IMAGE_FOLDER, "annotation": ANNOTATION_FOLDER}  # role -> folder under --input_dir
# The release's split folders → segflow's splits.
SPLIT_FOLDERS = {"training": "train", "validation": "val", "testing": "test"}
FOLDER_OF_SPLIT = {split: folder for folder, split in SPLIT_FOLDERS.items()}


# ------------------------------------------------------------------------------------------- discovery
def classify_ade20k_file(path: str, root: str, role: str) -> Union[tuple[str, tuple[str, str]], DeadLetter]:
    """A file under ``images/`` (role ``image``) or ``annotations/`` (``annotation``) → ('<split>/<stem>', (role,
    path)), or a dead letter for one that cannot be an example's part."""
    folder = FOLDERS[role]
    rel = relative(path, f"{root.rstrip('/')}/{folder}")
    name = basename(path)
    if name.startswith("."):
        return DeadLetter(path, f"hidden file in {folder}/ (e.g. macOS metadata), not an image", "discover")
    stem, ext = posixpath.splitext(name)
    if ext.lower() not in (IMAGE_EXTENSIONS if role == "image" else (".png",)):
        what = "an image" if role == "image" else "a PNG annotation"
        return DeadLetter(path, f"not {what} ({ext or 'no extension'}) in {folder}/", "discover")
    split_folder = rel.split("/", 1)[0] if rel.count("/") == 1 else None
    if split_folder not in SPLIT_FOLDERS:
        return DeadLetter(
            path,
            f"not directly in {folder}/{{{','.join(SPLIT_FOLDERS)}}}/ (the ADEChallengeData2016 layout)",
            "discover",
        )
    return f"{SPLIT_FOLDERS[split_folder]}/{stem}", (role, path)


def ade20k_part(listed: ListedFile, root: str, role: str) -> Iterator[Listed]:
    """One entry listed under ``images/`` or ``annotations/`` → a keyed part and/or a dead letter."""
    named = classify_ade20k_file(listed.path, root, role)
    if listed.error is not None:
        if not isinstance(named, DeadLetter):
            yield named[0], ("broken", Broken(role, listed.path, listed.error))
        yield DeadLetter(listed.path, listed.error, "discover")
    else:
        yield named


def _image_preference(path: str) -> tuple[int, str]:
    return (0 if posixpath.splitext(path)[1].lower() in (".jpg", ".jpeg") else 1, path)


def assemble_ade20k(key: str, parts: list[tuple[str, object]]) -> Iterator[Assembled]:
    """('<split>/<stem>', parts) → an ``Example``, or dead letters for unpaired parts (a test image needs none)."""
    split, example_id = key.split("/", 1)
    images = sorted((v for r, v in parts if r == "image"), key=_image_preference)
    annotations = sorted(v for r, v in parts if r == "annotation")
    broken: list[Broken] = [v for r, v in parts if r == "broken"]
    folder = FOLDER_OF_SPLIT[split]
    for extra in images[1:]:
        yield DeadLetter(extra, f"second image for id {example_id} (kept {basename(images[0])})", "pair")
    if not images:
        why = alone_because(broken, "image")
        for path in annotations:
            yield DeadLetter(
                path, f"annotation without image (no readable images/{folder}/{example_id}.jpg){why}", "pair"
            )
    elif annotations:
        yield Example(example_id, split, images[0], annotations[0])
    elif split == "test":
        yield Example(example_id, split, images[0])  # the test release has no annotations: image-only records
    else:
        why = alone_because(broken, "annotation")
        yield DeadLetter(images[0], f"image without annotations/{folder}/{example_id}.png{why}", "pair")


def _split_folder(split: str) -> str:
    """``--split`` (segflow's train/val/test, or the release's folder name) → the release's folder name."""
    if split in SPLIT_FOLDERS:
        return split
    if split in FOLDER_OF_SPLIT:
        return FOLDER_OF_SPLIT[split]
    raise ValueError(
        f"ADE20K's splits are {', '.join(f'{s} ({f}/)' for s, f in FOLDER_OF_SPLIT.items())}, not {split!r}"
    )


# --------------------------------------------------------------------------------------------- the dataset
@dataclasses.dataclass(frozen=True)
class Ade20k(Dataset):
    def label_spec(self, label_mode: Optional[str] = None) -> labels.LabelSpec:
        return labels.spec_for(self.name)

    def mask_problem(self, native: np.ndarray, kind: str) -> Optional[str]:
        return labels.native_mask_problem(self.name, native, kind)

    def train_id_luts(self, label_mode: str) -> dict[Optional[int], np.ndarray]:
        return {None: labels.ade20k_label_lut()}

    def discovery_sources(self) -> list[tuple]:
        return [(role,) for role in FOLDERS]

    def list_source(self, source: tuple, input_dir: str, files: Files) -> Iterator[Listed]:
        (role,) = source
        for listed in files.list_files(files.join(input_dir, FOLDERS[role])):
            yield from ade20k_part(listed, input_dir, role)

    def assemble(
        self, key: str, parts: list[tuple[str, object]], facts: list[str], fractions: SplitFractions
    ) -> Iterator[Assembled]:
        return assemble_ade20k(key, parts)

    def example_id(self, stem: str) -> Optional[str]:
        return stem

    def to_train_ids(self, native: np.ndarray, label_mode: str) -> np.ndarray:
        return np.take(labels.ade20k_label_lut(), np.asarray(native, dtype=np.uint8))

    def ground_truth_layouts(self, split: Optional[str]) -> list[GroundTruthLayout]:
        # The release (annotations/<folder>/), one split folder, or, without --split, every split or a flat folder.
        if split:
            folder = _split_folder(split)
            return [GroundTruthLayout((ANNOTATION_FOLDER, folder), 1, ".png"), GroundTruthLayout((folder,), 1, ".png")]
        return [GroundTruthLayout((ANNOTATION_FOLDER,), 2, ".png"), GroundTruthLayout((), 1, ".png")]

    def evaluate_split_ids(self, split: str, ground_truth: str, files: Files) -> Optional[frozenset[str]]:
        _split_folder(split)  # a split that is not one of ADE20K's: the one line to show
        return None  # a split is a folder, which ground_truth_layouts names

    def split_images(self, input_dir: str, split: Optional[str], files: Files) -> SplitImages:
        # The split folders carry the release's names (validation/), not segflow's (val).
        return super().split_images(input_dir, None if split is None else _split_folder(split), files)


DATASET = Ade20k(
    name="ade20k",
    title="ADE20K",
    label_modes=(),
    fixed_labels="ADE20K always uses its 150 classes",
    evaluate_label_modes=(),
    record_image_format="jpeg",  # ADE20K images are JPEGs (see Pet's)
    mask_bytes_per_pixel=0.2,  # scenes: many regions of many classes
    input_folder=(IMAGE_FOLDER,),
    input_layout="ADEChallengeData2016: images/{training,validation}/<id>.jpg, annotations/<split>/<id>.png",
    metadata_extra=(),
    example_id_hint="ADE_<split>_<number>, e.g. ADE_val_00000001",
)

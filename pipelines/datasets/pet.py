"""Oxford-IIIT Pet, as distributed: everything segflow knows about its layout, ids, labels and splits.

``images/<Breed_N>.jpg``, ``annotations/trimaps/<Breed_N>.png``, optional ``annotations/{list,trainval,test}.txt``
(``#`` comment header; rows ``<id> <class 1..37> <species 1|2> <breed id>``). An example is an image and its
trimap, grouped on the file stem; the list files give its breed, species and official split (``trainval`` is
carved into train/val by a stable hash of the id, ``--val_fraction``; without list files, ``--test_fraction`` of
the ids are hashed into test). Labels: ``schemas.labels`` Pet trimap tables, in one of three label modes.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import TYPE_CHECKING, Iterator, NamedTuple, Optional, Union

import numpy as np

from pipelines.common.deadletter_record import DeadLetter
from pipelines.datasets.base import (
    IMAGE_EXTENSIONS,
    Assembled,
    Broken,
    Count,
    Dataset,
    Example,
    Fact,
    Files,
    GroundTruthLayout,
    Listed,
    SplitFractions,
    alone_because,
    basename,
    relative,
    split_from_hash,
)
from schemas import labels

if TYPE_CHECKING:
    from pipelines.common.storage import ListedFile

LIST_FILES = ("list.txt", "trainval.txt", "test.txt")
SPLIT_LIST_FILES = ("trainval.txt", "test.txt")
FOLDERS = {"image": "images/", "trimap": "annotations/trimaps/"}  # role -> folder under --input_dir
ANNOTATIONS = "annotations"  # where the list files are
# Examples that train without a breed/species label: list files exist, but name no split for their id.
UNLISTED_COUNTER = "pet_unlisted_examples"


class ListRow(NamedTuple):
    source: str  # which list file: list / trainval / test
    class_label: Optional[int]
    species: Optional[int]


# ------------------------------------------------------------------------------------------- discovery
def classify_pet_file(path: str, role: str) -> Union[tuple[str, tuple[str, str]], DeadLetter]:
    """A file under ``images/`` (role ``image``) or ``annotations/trimaps/`` (role ``trimap``) → (id, (role,
    path)), or a dead letter for a file that cannot be an example's part."""
    name = basename(path)
    folder = FOLDERS[role]
    if name.startswith("._"):
        return DeadLetter(path, f"macOS AppleDouble metadata file in {folder}, not an image", "discover")
    if name.startswith("."):
        return DeadLetter(path, f"hidden file in {folder}", "discover")
    stem, ext = posixpath.splitext(name)
    allowed = IMAGE_EXTENSIONS if role == "image" else (".png",)
    if ext.lower() not in allowed:
        return DeadLetter(
            path,
            f"not an {'image' if role == 'image' else 'trimap'} file ({ext or 'no extension'}) in {folder}",
            "discover",
        )
    return stem, (role, path)


def parse_pet_list(text: str, source: str, path: str) -> Iterator[Union[tuple[str, tuple[str, ListRow]], DeadLetter]]:
    """Rows of a Pet list file (``#`` lines are comments) → (id, ('list', row)); malformed rows → dead letter."""
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            class_label = int(fields[1]) - 1 if len(fields) > 1 else None
            species = int(fields[2]) - 1 if len(fields) > 2 else None
            if class_label is not None and not 0 <= class_label < 37:
                raise ValueError(f"class id {class_label + 1} outside 1..37")
            if species is not None and species not in (0, 1):
                raise ValueError(f"species {species + 1} is not 1 (cat) or 2 (dog)")
        except ValueError as e:
            yield DeadLetter(f"{path}:{number}", f"malformed list row {line!r}: {e}", "discover")
            continue
        yield fields[0], ("list", ListRow(source, class_label, species))


def pet_part(listed: ListedFile, folder: str, role: str) -> Iterator[Listed]:
    """One entry listed under a Pet folder (role ``image``: ``images/``, ``trimap``: ``annotations/trimaps/``)
    → a keyed part ``(id, (role, path))``, and/or a dead letter for what cannot be an example's part.

    Pet files lie directly in their folder: a file in a subfolder is a dead letter, never read (the real
    archive has none; a nested copy would otherwise meet its original as a duplicate id).
    """
    where = FOLDERS[role]
    nested = "/" in relative(listed.path, folder)
    if listed.error is not None:
        named = classify_pet_file(listed.path, role)
        if not isinstance(named, DeadLetter) and not nested:
            yield named[0], ("broken", Broken(role, listed.path, listed.error))
        yield DeadLetter(listed.path, listed.error, "discover")
    elif nested:
        yield DeadLetter(
            listed.path, f"in a subfolder of {where}: Pet files must lie directly in {where}, not read", "discover"
        )
    else:
        yield classify_pet_file(listed.path, role)


def read_pet_lists(annotations_dir: str, files: Files) -> Iterator[Listed]:
    """The annotations folder → keyed list rows, a ``Fact`` per list file that exists, dead letters."""
    present = {basename(f.path): f for f in files.list_folder(annotations_dir) if basename(f.path) in LIST_FILES}
    for name in LIST_FILES:
        if name not in present:
            continue
        if present[name].error is not None:  # e.g. a broken link: say so rather than ignore the list
            yield DeadLetter(present[name].path, present[name].error, "discover")
            continue
        yield Fact(name)
        text = files.read(present[name].path).decode("utf-8", errors="replace")
        yield from parse_pet_list(text, name[:-4], present[name].path)


def _image_preference(path: str) -> tuple[int, str]:
    ext = posixpath.splitext(path)[1].lower()
    return (0 if ext in (".jpg", ".jpeg") else 1, path)


def _split(example_id: str, rows: list[ListRow], list_files: list[str], fractions: SplitFractions) -> tuple[str, bool]:
    """(split, listed): the official split when a list file names the id, else one hashed from the id."""
    sources = {row.source for row in rows}
    if "test" in sources:
        return "test", True
    if "trainval" in sources:
        return split_from_hash(example_id, fractions.val_fraction), True
    if any(name in SPLIT_LIST_FILES for name in list_files):
        # Real Pet: a few images are in no list file. They are not in the official test set, so they may train
        # without leaking into test; they just lack a breed/species label.
        return split_from_hash(example_id, fractions.val_fraction), False
    return split_from_hash(example_id, fractions.val_fraction, fractions.test_fraction), True


def assemble_pet(
    example_id: str, parts: list[tuple[str, object]], list_files: list[str], fractions: SplitFractions
) -> Iterator[Assembled]:
    """(id, [(role, value)]) → an ``Example`` with its split, or dead letters for the unpaired parts.

    An id that is only listed (no files) yields nothing: nothing was read, so there is nothing to account for.
    """
    images = sorted((v for r, v in parts if r == "image"), key=_image_preference)
    trimaps = sorted(v for r, v in parts if r == "trimap")
    rows: list[ListRow] = [v for r, v in parts if r == "list"]
    broken: list[Broken] = [v for r, v in parts if r == "broken"]
    for extra in images[1:]:
        yield DeadLetter(extra, f"second image for id {example_id} (kept {basename(images[0])})", "pair")
    for extra in trimaps[1:]:
        yield DeadLetter(extra, f"second trimap for id {example_id}", "pair")
    if trimaps and not images:
        yield DeadLetter(
            trimaps[0],
            "trimap without image (no readable images/<id>.* for this id)" + alone_because(broken, "image"),
            "pair",
        )
    elif images and not trimaps:
        yield DeadLetter(
            images[0],
            "image without trimap (no readable annotations/trimaps/<id>.png)" + alone_because(broken, "trimap"),
            "pair",
        )
    elif images and trimaps:
        split, listed = _split(example_id, rows, list_files, fractions)
        if not listed:
            yield Count(UNLISTED_COUNTER)
        class_label = next((r.class_label for r in rows if r.class_label is not None), None)
        species = next((r.species for r in rows if r.species is not None), None)
        yield Example(example_id, split, images[0], trimaps[0], None, class_label, species, listed)


# --------------------------------------------------------------------------------------------- the dataset
@dataclasses.dataclass(frozen=True)
class Pet(Dataset):
    def label_spec(self, label_mode: Optional[str] = None) -> labels.LabelSpec:
        return labels.spec_for(self.name, label_mode)

    def mask_problem(self, native: np.ndarray, kind: str) -> Optional[str]:
        return labels.native_mask_problem(self.name, native, kind)

    def train_id_luts(self, label_mode: str) -> dict[Optional[int], np.ndarray]:
        # Mode 'species' maps the pet pixels to the example's species: one lookup per species.
        return {
            species: labels.pet_trimap_lut(label_mode, species)
            for species in ((0, 1) if label_mode == "species" else (None,))
        }

    def train_id_lut_key(self, example: Example, label_mode: str) -> Optional[int]:
        if label_mode != "species":
            return None
        if example.species is None:
            raise ValueError("label mode 'species' needs the species, but this id is in no list file")
        return example.species

    def discovery_sources(self) -> list[tuple]:
        return [("files", role, tuple(where.rstrip("/").split("/"))) for role, where in FOLDERS.items()] + [
            ("lists", ANNOTATIONS, (ANNOTATIONS,))
        ]

    def list_source(self, source: tuple, input_dir: str, files: Files) -> Iterator[Listed]:
        kind, role, parts = source
        folder = files.join(input_dir, *parts)
        if kind == "lists":
            yield from read_pet_lists(folder, files)
        else:
            for listed in files.list_files(folder):
                yield from pet_part(listed, folder, role)

    def assemble(
        self, key: str, parts: list[tuple[str, object]], facts: list[str], fractions: SplitFractions
    ) -> Iterator[Assembled]:
        return assemble_pet(key, parts, facts, fractions)

    def example_id(self, stem: str) -> Optional[str]:
        return stem

    def to_train_ids(self, native: np.ndarray, label_mode: str) -> np.ndarray:
        return labels.pet_trimap_to_train_ids(native, label_mode)

    def ground_truth_layouts(self, split: Optional[str]) -> list[GroundTruthLayout]:
        return [
            GroundTruthLayout(("annotations", "trimaps"), 1, ".png"),
            GroundTruthLayout(("trimaps",), 1, ".png"),
            GroundTruthLayout((), 1, ".png"),
        ]

    def evaluate_split_ids(self, split: str, ground_truth: str, files: Files) -> Optional[frozenset[str]]:
        # Only the official lists name a split: train/val are hashed out of trainval by --val_fraction, which
        # the ground truth does not record.
        lists = {name[: -len(".txt")]: name for name in sorted(SPLIT_LIST_FILES)}
        if split not in lists:
            raise ValueError(
                f"Pet's own splits are {' and '.join(lists)} ({', '.join(f'{ANNOTATIONS}/{n}' for n in lists.values())}"
                f"), not {split!r}: train and val are carved out of trainval by preprocess's --val_fraction"
            )
        folder = files.join(ground_truth, ANNOTATIONS)
        found = [f for f in files.list_folder(folder) if basename(f.path) == lists[split] and f.error is None]
        if not found:
            raise ValueError(
                f"--split {split} needs Pet's list {files.join(folder, lists[split])}, which is not there (or not "
                "readable): name the Pet root, the folder that holds annotations/, or leave --split out"
            )
        text = files.read(found[0].path).decode("utf-8", errors="replace")
        return frozenset(
            row[0] for row in parse_pet_list(text, split, found[0].path) if not isinstance(row, DeadLetter)
        )


DATASET = Pet(
    name="pet",
    title="Pet",
    label_modes=labels.PET_LABEL_MODES,
    fixed_labels="",
    # Species needs each image's species, which a mask alone does not carry.
    evaluate_label_modes=("trimap", "binary"),
    # Pet photos are JPEGs: a q95 4:4:4 JPEG record costs nothing a model can see, and decodes ~4x faster than a
    # PNG of the same pixels on every training epoch.
    record_image_format="jpeg",
    mask_bytes_per_pixel=0.1,  # a trimap: three values in large blobs
    input_folder=("images",),
    input_layout="images/<Breed_N>.jpg",
    metadata_extra=(),
    example_id_hint="<Breed_N>",
)

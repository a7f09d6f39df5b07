"""Discovery of dataset examples by id (local paths and ``gs://`` alike).

The dataset folders are listed inside the pipeline with ``storage.list_files``: the ``--input_dir`` is a literal
path (``in[1]`` is a folder name, not a character class), every file under a dataset folder is seen whatever its
name (backslashes included), symbolic links to files and folders are followed, and an entry that cannot be read
(a broken or looping link, a name that is not UTF-8) becomes a dead letter naming it. Each file is classified on
its own (its id and role, or a dead letter for a stray), and an example is assembled by *grouping on the id*: an
image, its annotation(s) and its list-file rows meet in one ``GroupByKey`` value. Nothing is ever paired by
sorting two file lists and zipping them, and nothing is gathered on the driver.

Oxford-IIIT Pet (as distributed): ``images/<Breed_N>.jpg``, ``annotations/trimaps/<Breed_N>.png``, optional
``annotations/{list,trainval,test}.txt`` (``#`` comment header; rows ``<id> <class 1..37> <species 1|2>
<breed id>``). Cityscapes: ``leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png`` with
``gtFine/<split>/<city>/<frame>_gtFine_{labelIds,instanceIds}.png``.
"""
from __future__ import annotations

import posixpath
import re
from typing import Iterable, Iterator, NamedTuple, Optional, Union

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.common import storage
from pipelines.common.deadletter import DeadLetter
from pipelines.common.hashing import stable_fraction

DEAD_LETTER_TAG = "dead_letter"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
PET_LIST_FILES = ("list.txt", "trainval.txt", "test.txt")
PET_FOLDERS = {"image": "images/", "trimap": "annotations/trimaps/"}  # role -> folder under --input_dir
CITYSCAPES_SPLITS = ("train", "val", "test")
# Cityscapes files that are derived from the ones we read (colour renderings, polygons): not inputs.
CITYSCAPES_DERIVED_SUFFIXES = ("_gtFine_color.png", "_gtFine_polygons.json")


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


class _ListRow(NamedTuple):
    source: str  # which list file: list / trainval / test
    class_label: Optional[int]
    species: Optional[int]


def _basename(path: str) -> str:
    # Local paths here are POSIX and gs:// names use "/": a backslash is part of a name, never a separator.
    return posixpath.basename(path)


def _relative(path: str, root: str) -> str:
    """``path`` relative to the folder ``root`` it was listed under ("/"-separated), else its base name."""
    prefix = (root[len("file://"):] if root.startswith("file://") else root).rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else _basename(path)


class _Broken(NamedTuple):
    """A part that was found but cannot be read (e.g. a broken link), keyed by its id so that its partner's
    dead letter can say why the partner is alone. Its own dead letter is emitted where it is listed."""

    role: str
    path: str
    error: str


def _alone_because(broken: list[_Broken], role: str) -> str:
    """`` (<path>: <why>)`` when the missing ``role`` part of an example exists but cannot be read, else ''."""
    found = sorted(b.path + ": " + b.error for b in broken if b.role == role)
    return f" ({'; '.join(found)})" if found else ""


def split_from_hash(example_id: str, val_fraction: float, test_fraction: float = 0.0) -> str:
    """train / val / test from a stable hash of the id alone (not the seed: splits never move)."""
    u = stable_fraction("split", example_id)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


# ---------------------------------------------------------------------------------------------------- Pet
def classify_pet_file(path: str, role: str) -> Union[tuple[str, tuple[str, str]], DeadLetter]:
    """A file under ``images/`` (role ``image``) or ``annotations/trimaps/`` (role ``trimap``) → (id, (role,
    path)), or a dead letter for a file that cannot be an example's part."""
    name = _basename(path)
    folder = "images/" if role == "image" else "annotations/trimaps/"
    if name.startswith("._"):
        return DeadLetter(path, f"macOS AppleDouble metadata file in {folder}, not an image", "discover")
    if name.startswith("."):
        return DeadLetter(path, f"hidden file in {folder}", "discover")
    stem, ext = posixpath.splitext(name)
    allowed = IMAGE_EXTENSIONS if role == "image" else (".png",)
    if ext.lower() not in allowed:
        return DeadLetter(path, f"not an {'image' if role == 'image' else 'trimap'} file ({ext or 'no extension'})"
                                f" in {folder}", "discover")
    return stem, (role, path)


def parse_pet_list(text: str, source: str, path: str) -> Iterator[Union[tuple[str, tuple[str, _ListRow]],
                                                                        DeadLetter]]:
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
        yield fields[0], ("list", _ListRow(source, class_label, species))


def pet_part(listed: storage.ListedFile, folder: str, role: str) -> Iterator:
    """One entry listed under a Pet folder (role ``image``: ``images/``, ``trimap``: ``annotations/trimaps/``)
    → a keyed part ``(id, (role, path))``, and/or a dead letter (tagged) for what cannot be an example's part.

    Pet files lie directly in their folder: a file in a subfolder is a dead letter, never read (the real
    archive has none; a nested copy would otherwise meet its original as a duplicate id).
    """
    where = PET_FOLDERS[role]
    if listed.error is not None:
        named = classify_pet_file(listed.path, role)
        if not isinstance(named, DeadLetter) and "/" not in _relative(listed.path, folder):
            yield named[0], ("broken", _Broken(role, listed.path, listed.error))
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(listed.path, listed.error, "discover"))
        return
    if "/" in _relative(listed.path, folder):
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
            listed.path, f"in a subfolder of {where}: Pet files must lie directly in {where}, not read",
            "discover"))
        return
    result = classify_pet_file(listed.path, role)
    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, result) if isinstance(result, DeadLetter) else result


class _ListPet(beam.DoFn):
    """A (role, folder) → one keyed element per file under the folder, or a dead letter."""

    def process(self, item: tuple[str, str]) -> Iterator:
        role, folder = item
        for listed in storage.list_files(folder):
            yield from pet_part(listed, folder, role)


class _ReadPetLists(beam.DoFn):
    """The annotations directory → keyed list rows (and the names of the list files that exist, tagged)."""

    def process(self, annotations_dir: str) -> Iterator:
        present = {_basename(f.path): f for f in storage.list_folder(annotations_dir)
                   if _basename(f.path) in PET_LIST_FILES}
        for name in PET_LIST_FILES:
            if name not in present:
                continue
            if present[name].error is not None:  # e.g. a broken link: say so rather than ignore the list
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                    present[name].path, present[name].error, "discover"))
                continue
            yield beam.pvalue.TaggedOutput("present", name)
            with FileSystems.open(present[name].path) as handle:
                text = handle.read().decode("utf-8", errors="replace")
            for row in parse_pet_list(text, name[:-4], present[name].path):
                if isinstance(row, DeadLetter):
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, row)
                else:
                    yield row


def _image_preference(path: str) -> tuple[int, str]:
    ext = posixpath.splitext(path)[1].lower()
    return (0 if ext in (".jpg", ".jpeg") else 1, path)


class _AssemblePet(beam.DoFn):
    """(id, [(role, value)]) → an ``Example`` with its split, or dead letters for the unpaired parts."""

    def __init__(self, val_fraction: float, test_fraction: float):
        self._val_fraction = val_fraction
        self._test_fraction = test_fraction
        self._unlisted = Metrics.counter("segflow", "pet_unlisted_examples")

    def process(self, element: tuple[str, Iterable], split_files: list[str]) -> Iterator:
        example_id, parts = element
        images = sorted((v for r, v in parts if r == "image"), key=_image_preference)
        trimaps = sorted(v for r, v in parts if r == "trimap")
        rows: list[_ListRow] = [v for r, v in parts if r == "list"]
        broken: list[_Broken] = [v for r, v in parts if r == "broken"]
        for extra in images[1:]:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                extra, f"second image for id {example_id} (kept {_basename(images[0])})", "pair"))
        for extra in trimaps[1:]:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                extra, f"second trimap for id {example_id}", "pair"))
        if not images and not trimaps:
            return  # listed, but no files: nothing was read, so nothing to account for
        if not images:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                trimaps[0], "trimap without image (no readable images/<id>.* for this id)"
                + _alone_because(broken, "image"), "pair"))
            return
        if not trimaps:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                images[0], "image without trimap (no readable annotations/trimaps/<id>.png)"
                + _alone_because(broken, "trimap"), "pair"))
            return
        sources = {row.source for row in rows}
        has_split_files = any(name in ("trainval.txt", "test.txt") for name in split_files)
        listed = True
        if "test" in sources:
            split = "test"
        elif "trainval" in sources:
            split = split_from_hash(example_id, self._val_fraction)
        elif has_split_files:
            # Real Pet: a few images are in no list file. They are not in the official test set, so they may
            # train without leaking into test; they just lack a breed/species label.
            listed = False
            self._unlisted.inc()
            split = split_from_hash(example_id, self._val_fraction)
        else:
            split = split_from_hash(example_id, self._val_fraction, self._test_fraction)
        class_label = next((r.class_label for r in rows if r.class_label is not None), None)
        species = next((r.species for r in rows if r.species is not None), None)
        yield Example(example_id, split, images[0], trimaps[0], None, class_label, species, listed)


class DiscoverPet(beam.PTransform):
    """Pipeline root → PCollections ``examples`` (``Example``) and ``dead_letter`` (``DeadLetter``)."""

    def __init__(self, input_dir: str, val_fraction: float, test_fraction: float):
        super().__init__()
        self._input_dir = input_dir
        self._val_fraction = val_fraction
        self._test_fraction = test_fraction

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        folders = [(role, FileSystems.join(self._input_dir, *where.rstrip("/").split("/")))
                   for role, where in PET_FOLDERS.items()]
        annotations = FileSystems.join(self._input_dir, "annotations")
        files = (pbegin
                 | "Folders" >> beam.Create(folders)
                 | "List" >> beam.ParDo(_ListPet()).with_outputs(DEAD_LETTER_TAG, main="parts"))
        lists = (pbegin
                 | "AnnotationsDir" >> beam.Create([annotations])
                 | "ReadLists" >> beam.ParDo(_ReadPetLists()).with_outputs(DEAD_LETTER_TAG, "present",
                                                                          main="rows"))
        assembled = ((files.parts, lists.rows)
                     | "AllParts" >> beam.Flatten()
                     | "GroupById" >> beam.GroupByKey()
                     | "Assemble" >> beam.ParDo(_AssemblePet(self._val_fraction, self._test_fraction),
                                                split_files=beam.pvalue.AsList(lists.present)
                                                ).with_outputs(DEAD_LETTER_TAG, main="examples"))
        dead = ((files[DEAD_LETTER_TAG], lists[DEAD_LETTER_TAG], assembled[DEAD_LETTER_TAG])
                | "DeadLetters" >> beam.Flatten())
        return {"examples": assembled.examples, DEAD_LETTER_TAG: dead}


# --------------------------------------------------------------------------------------------- Cityscapes
_CS_IMAGE = re.compile(r"^(?P<split>[^/]+)/(?P<city>[^/]+)/(?P<id>(?P=city)_\d+_\d+)_leftImg8bit\.png$")
_CS_GT = re.compile(r"^(?P<split>[^/]+)/(?P<city>[^/]+)/(?P<id>(?P=city)_\d+_\d+)_gtFine_"
                    r"(?P<kind>labelIds|instanceIds)\.png$")


def classify_cityscapes_file(path: str, root: str, folder: str
                             ) -> Union[None, tuple[str, tuple[str, str]], DeadLetter]:
    """A file under ``leftImg8bit/`` or ``gtFine/`` → ('<split>/<id>', (role, path)), None for a derived file
    segflow does not read (colour renderings, polygons), or a dead letter for a stray."""
    rel = _relative(path, FileSystems.join(root, folder))
    name = _basename(path)
    if name.startswith("._"):
        return DeadLetter(path, f"macOS AppleDouble metadata file in {folder}/, not an image", "discover")
    if folder == "gtFine" and name.endswith(CITYSCAPES_DERIVED_SUFFIXES):
        return None
    m = (_CS_IMAGE if folder == "leftImg8bit" else _CS_GT).match(rel)
    if not m:
        return DeadLetter(path, f"unexpected file in {folder}/ (expected <split>/<city>/<city>_<seq>_<frame>_"
                                f"{'leftImg8bit.png' if folder == 'leftImg8bit' else 'gtFine_labelIds.png'})",
                          "discover")
    if m.group("split") not in CITYSCAPES_SPLITS:
        return DeadLetter(path, f"split {m.group('split')!r} is not one of {', '.join(CITYSCAPES_SPLITS)}",
                          "discover")
    role = "image" if folder == "leftImg8bit" else m.group("kind")
    return f"{m.group('split')}/{m.group('id')}", (role, path)


def cityscapes_part(listed: storage.ListedFile, root: str, folder: str) -> Iterator:
    """One entry listed under ``leftImg8bit/`` or ``gtFine/`` → a keyed part, and/or a dead letter (tagged);
    nothing for a derived file segflow does not read."""
    named = classify_cityscapes_file(listed.path, root, folder)
    if listed.error is not None:
        if isinstance(named, tuple):
            yield named[0], ("broken", _Broken(named[1][0], listed.path, listed.error))
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(listed.path, listed.error, "discover"))
    elif isinstance(named, DeadLetter):
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, named)
    elif named is not None:
        yield named


class _ListCityscapes(beam.DoFn):
    """A folder name (``leftImg8bit`` / ``gtFine``) → one keyed element per file under it, or a dead letter."""

    def __init__(self, root: str):
        self._root = root
        self._derived = Metrics.counter("segflow", "cityscapes_derived_files_not_read")

    def process(self, folder: str) -> Iterator:
        for listed in storage.list_files(FileSystems.join(self._root, folder)):
            found = False
            for item in cityscapes_part(listed, self._root, folder):
                found = True
                yield item
            if not found:
                self._derived.inc()  # colour renderings / polygons: known companions, counted not read


class _AssembleCityscapes(beam.DoFn):
    """('<split>/<id>', parts) → ``Example``. ``test`` ships placeholder labels: image-only records."""

    def __init__(self):
        self._missing_instances = Metrics.counter("segflow", "cityscapes_missing_instance_ids")

    def process(self, element: tuple[str, Iterable]) -> Iterator:
        key, parts = element
        split, example_id = key.split("/", 1)
        by_role: dict[str, list[str]] = {}
        broken: list[_Broken] = []
        for role, value in parts:
            if role == "broken":
                broken.append(value)
            else:
                by_role.setdefault(role, []).append(value)
        images = sorted(by_role.get("image", []))
        labels = sorted(by_role.get("labelIds", []))
        instances = sorted(by_role.get("instanceIds", []))
        if not images:
            for path in labels + instances:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                    path, "annotation without image (no readable leftImg8bit/<split>/<city>/<id>_leftImg8bit.png)"
                    + _alone_because(broken, "image"), "pair"))
            return
        if split == "test":
            # The public test annotations are all 'unlabeled' placeholders: they are not inputs to learn from.
            yield Example(example_id, split, images[0])
            return
        if not labels:
            why = _alone_because(broken, "labelIds")
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                images[0], "image without gtFine labelIds" + why, "pair"))
            for path in instances:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, DeadLetter(
                    path, "instanceIds without gtFine labelIds" + why, "pair"))
            return
        if not instances:
            self._missing_instances.inc()
        yield Example(example_id, split, images[0], labels[0], instances[0] if instances else None)


class DiscoverCityscapes(beam.PTransform):
    """Pipeline root → PCollections ``examples`` and ``dead_letter``; the split is the folder's."""

    def __init__(self, input_dir: str):
        super().__init__()
        self._input_dir = input_dir

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        files = (pbegin
                 | "Folders" >> beam.Create(["leftImg8bit", "gtFine"])
                 | "List" >> beam.ParDo(_ListCityscapes(self._input_dir)).with_outputs(DEAD_LETTER_TAG,
                                                                                        main="parts"))
        assembled = (files.parts
                     | "GroupById" >> beam.GroupByKey()
                     | "Assemble" >> beam.ParDo(_AssembleCityscapes()).with_outputs(DEAD_LETTER_TAG,
                                                                                    main="examples"))
        dead = (files[DEAD_LETTER_TAG], assembled[DEAD_LETTER_TAG]) | "DeadLetters" >> beam.Flatten()
        return {"examples": assembled.examples, DEAD_LETTER_TAG: dead}

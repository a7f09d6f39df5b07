"""Cityscapes (gtFine): everything segflow knows about its layout, ids, labels and splits.

``leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png`` with ``gtFine/<split>/<city>/<frame>_gtFine_{labelIds,
instanceIds}.png``, ``<frame>`` = ``<city>_<seq>_<frame no>``. An example is a frame, grouped on
``<split>/<frame>``; its split is its folder's. ``test`` ships placeholder labels, so its frames become
image-only records. A ``train``/``val`` frame needs both its labelIds and its instanceIds: a Cityscapes record
carries the instance mask (the contract's ``image/segmentation/instance/encoded``), so a frame without one is a
dead letter, never a record that silently lacks it. Labels: the official ``cityscapesscripts`` table in
``schemas.labels`` (19 trainIds); there is one label mode.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Iterator, Optional, Union

import numpy as np

from pipelines.common.deadletter_record import DeadLetter
from pipelines.datasets.base import (
    Assembled,
    Broken,
    Count,
    Dataset,
    Example,
    Files,
    GroundTruthLayout,
    Listed,
    SplitFractions,
    alone_because,
    basename,
    relative,
)
from schemas import labels
from schemas.records import SPLITS

if TYPE_CHECKING:
    from pipelines.common.storage import ListedFile

IMAGE_FOLDER, LABEL_FOLDER = "leftImg8bit", "gtFine"
LABEL_SUFFIX = "_gtFine_labelIds.png"
# Files derived from the ones we read: not inputs, counted not read. The colour renderings and polygons ship
# with gtFine; cityscapesScripts' createTrainIdLabelImgs / createTrainIdInstanceImgs write the trainId maps
# beside them, in most users' folders (segflow maps labelIds to trainIds itself).
DERIVED_SUFFIXES = (
    "_gtFine_color.png",
    "_gtFine_polygons.json",
    "_gtFine_labelTrainIds.png",
    "_gtFine_instanceTrainIds.png",
)
DERIVED_COUNTER = "cityscapes_derived_files_not_read"

_IMAGE = re.compile(r"^(?P<split>[^/]+)/(?P<city>[^/]+)/(?P<id>(?P=city)_\d+_\d+)_leftImg8bit\.png$")
_GT = re.compile(
    r"^(?P<split>[^/]+)/(?P<city>[^/]+)/(?P<id>(?P=city)_\d+_\d+)_gtFine_"
    r"(?P<kind>labelIds|instanceIds)\.png$"
)
# A frame id anywhere in a file stem (evaluate pairs predictions named after their input by it).
_FRAME_ID = re.compile(r"([A-Za-z]+_\d{6}_\d{6})")


# ------------------------------------------------------------------------------------------- discovery
def classify_cityscapes_file(path: str, root: str, folder: str) -> Union[None, tuple[str, tuple[str, str]], DeadLetter]:
    """A file under ``leftImg8bit/`` or ``gtFine/`` → ('<split>/<id>', (role, path)), None for a derived file
    segflow does not read (``DERIVED_SUFFIXES``), or a dead letter for a stray."""
    rel = relative(path, f"{root.rstrip('/')}/{folder}")
    name = basename(path)
    if name.startswith("._"):
        return DeadLetter(path, f"macOS AppleDouble metadata file in {folder}/, not an image", "discover")
    if folder == LABEL_FOLDER and name.endswith(DERIVED_SUFFIXES):
        return None
    m = (_IMAGE if folder == IMAGE_FOLDER else _GT).match(rel)
    if not m:
        return DeadLetter(
            path,
            f"unexpected file in {folder}/ (expected <split>/<city>/<city>_<seq>_<frame>_"
            f"{'leftImg8bit.png' if folder == IMAGE_FOLDER else 'gtFine_labelIds.png'})",
            "discover",
        )
    if m.group("split") not in SPLITS:
        return DeadLetter(path, f"split {m.group('split')!r} is not one of {', '.join(SPLITS)}", "discover")
    role = "image" if folder == IMAGE_FOLDER else m.group("kind")
    return f"{m.group('split')}/{m.group('id')}", (role, path)


def cityscapes_part(listed: ListedFile, root: str, folder: str) -> Iterator[Listed]:
    """One entry listed under ``leftImg8bit/`` or ``gtFine/`` → a keyed part, and/or a dead letter; a count for a
    derived file segflow does not read."""
    named = classify_cityscapes_file(listed.path, root, folder)
    if listed.error is not None:
        if isinstance(named, tuple) and not isinstance(named, DeadLetter):
            yield named[0], ("broken", Broken(named[1][0], listed.path, listed.error))
        yield DeadLetter(listed.path, listed.error, "discover")
    elif named is None:
        yield Count(DERIVED_COUNTER)  # colour renderings, polygons, trainId maps: counted not read
    else:
        yield named


def assemble_cityscapes(key: str, parts: list[tuple[str, object]]) -> Iterator[Assembled]:
    """('<split>/<id>', parts) → ``Example``, or dead letters for the unpaired parts (a train/val frame needs its
    image, labelIds and instanceIds). ``test`` ships placeholder labels: image-only records."""
    split, example_id = key.split("/", 1)
    by_role: dict[str, list[str]] = {}
    broken: list[Broken] = []
    for role, value in parts:
        if role == "broken":
            broken.append(value)
        else:
            by_role.setdefault(role, []).append(value)
    images = sorted(by_role.get("image", []))
    label_ids = sorted(by_role.get("labelIds", []))
    instances = sorted(by_role.get("instanceIds", []))
    if not images:
        for path in label_ids + instances:
            yield DeadLetter(
                path,
                "annotation without image (no readable leftImg8bit/<split>/<city>/"
                "<id>_leftImg8bit.png)" + alone_because(broken, "image"),
                "pair",
            )
    elif split == "test":
        # The public test annotations are all 'unlabeled' placeholders: they are not inputs to learn from.
        yield Example(example_id, split, images[0])
    elif not label_ids:
        why = alone_because(broken, "labelIds")
        yield DeadLetter(images[0], "image without gtFine labelIds" + why, "pair")
        for path in instances:
            yield DeadLetter(path, "instanceIds without gtFine labelIds" + why, "pair")
    elif not instances:
        # A record promises the instance mask: dead letters rather than a record that quietly lacks it.
        why = alone_because(broken, "instanceIds") or f" (restore {example_id}_gtFine_instanceIds.png from gtFine)"
        yield DeadLetter(images[0], "image without gtFine instanceIds" + why, "pair")
        for path in label_ids:
            yield DeadLetter(path, "labelIds without gtFine instanceIds" + why, "pair")
    else:
        yield Example(example_id, split, images[0], label_ids[0], instances[0])


# --------------------------------------------------------------------------------------------- the dataset
@dataclasses.dataclass(frozen=True)
class Cityscapes(Dataset):
    def label_spec(self, label_mode: Optional[str] = None) -> labels.LabelSpec:
        return labels.spec_for(self.name)

    def mask_problem(self, native: np.ndarray, kind: str) -> Optional[str]:
        return labels.native_mask_problem(self.name, native, kind)

    def train_id_luts(self, label_mode: str) -> dict[Optional[int], np.ndarray]:
        return {None: labels.cityscapes_label_id_to_train_id()}

    def discovery_sources(self) -> list[tuple]:
        return [(IMAGE_FOLDER,), (LABEL_FOLDER,)]

    def list_source(self, source: tuple, input_dir: str, files: Files) -> Iterator[Listed]:
        (folder,) = source
        for listed in files.list_files(files.join(input_dir, folder)):
            yield from cityscapes_part(listed, input_dir, folder)

    def assemble(
        self, key: str, parts: list[tuple[str, object]], facts: list[str], fractions: SplitFractions
    ) -> Iterator[Assembled]:
        return assemble_cityscapes(key, parts)

    def example_id(self, stem: str) -> Optional[str]:
        found = _FRAME_ID.search(stem)
        return found.group(1) if found else None

    def to_train_ids(self, native: np.ndarray, label_mode: str) -> np.ndarray:
        return labels.cityscapes_label_ids_to_train_ids(native)

    def ground_truth_layouts(self, split: Optional[str]) -> list[GroundTruthLayout]:
        # The release (gtFine/<split>/<city>/), one split folder (<split>/<city>/), or a flat folder of masks.
        below = (split,) if split else ()
        depth = 2 if split else 3
        return [
            GroundTruthLayout((LABEL_FOLDER,) + below, depth, LABEL_SUFFIX),
            GroundTruthLayout(below, depth, LABEL_SUFFIX),
            GroundTruthLayout((), 1, LABEL_SUFFIX),
        ]


DATASET = Cityscapes(
    name="cityscapes",
    title="Cityscapes",
    label_modes=(),
    fixed_labels="Cityscapes always uses the 19 trainIds",
    evaluate_label_modes=(),
    # Cityscapes frames are PNGs: keep them lossless, as DeepLab's build_cityscapes_data does.
    record_image_format="png",
    mask_bytes_per_pixel=0.2,  # labelIds and instanceIds: many small regions
    input_folder=(IMAGE_FOLDER,),
    input_layout="leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png",
    metadata_extra=(("cityscapes_test", "image-only records"),),
    example_id_hint="<city>_<seq>_<frame>",
)

"""Label definitions: how each dataset's native annotation maps to train ids, and back.

Oxford-IIIT Pet trimaps, per the dataset's own README: 1 = pet, 2 = background, 3 = not classified (border).
Cityscapes: the official table from ``cityscapesscripts.helpers.labels`` (34 labelIds + license plate), of
which 19 have trainIds 0..18; everything else maps to the ignore label 255. Pascal VOC 2012 (21 classes, 255 =
the void border) and ADE20K (150 classes as values 1..150, 0 = other) from ``schemas.label_tables``.

Which native values a mask may hold is decided here, once (``native_mask_problem``): a Pet trimap only 1/2/3,
a Cityscapes ``labelIds`` map only the table's labelIds (0..33), an ``instanceIds`` map only labelIds (stuff and
crowds) or ``labelId * 1000 + n`` (objects). Anything else is a dead letter naming the values found, never a
silent remap (a zero-based trimap would turn background into pet).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

from schemas import label_tables

IGNORE_LABEL = 255

PET_TRIMAP_PET = 1
PET_TRIMAP_BACKGROUND = 2
PET_TRIMAP_BORDER = 3
PET_LABEL_MODES = ("trimap", "binary", "species")
# Species as numbered in the Pet list.txt (1 = cat, 2 = dog); stored 0-based in records.
PET_SPECIES_NAMES = ("cat", "dog")


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """How one dataset/label mode is learned and written back.

    Attributes:
      dataset: ``"pet"`` or ``"cityscapes"``.
      mode: label mode (Pet: trimap/binary/species; Cityscapes: ``"trainids"``).
      class_names: name of each train id, index = train id.
      palette: RGB colour of each train id, for visualisations.
      to_native: uint8[256] lookup from a train id to the dataset's native annotation value (what users
        compare with their ground truth: Pet trimap values, Cityscapes labelIds); 255 maps to the native
        'unlabelled' value. uint16 where a native value is above 255 (a ``folder`` dataset's 16-bit masks).
      instance_train_ids: train ids whose pixels form countable objects (instances).
    """

    dataset: str
    mode: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    to_native: np.ndarray
    instance_train_ids: tuple[int, ...]
    ignore_label: int = IGNORE_LABEL

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _lut(pairs: dict[int, int], default: int) -> np.ndarray:
    lut = np.full(256, default, dtype=np.uint8)
    for src, dst in pairs.items():
        lut[src] = dst
    return lut


# ---------------------------------------------------------------------------------------------- Pet
_PET_PET_COLOUR = (220, 20, 60)
_PET_BACKGROUND_COLOUR = (0, 0, 0)
_PET_BORDER_COLOUR = (255, 255, 255)


def pet_spec(mode: str = "trimap") -> LabelSpec:
    """The Pet label spec for ``mode`` (see ``PET_LABEL_MODES``)."""
    if mode == "trimap":
        names, palette = ("pet", "background", "border"), (_PET_PET_COLOUR, _PET_BACKGROUND_COLOUR, _PET_BORDER_COLOUR)
        to_native = _lut({0: PET_TRIMAP_PET, 1: PET_TRIMAP_BACKGROUND, 2: PET_TRIMAP_BORDER}, PET_TRIMAP_BORDER)
        instances: tuple[int, ...] = (0,)
    elif mode == "binary":
        names, palette = ("pet", "background"), (_PET_PET_COLOUR, _PET_BACKGROUND_COLOUR)
        to_native = _lut({0: PET_TRIMAP_PET, 1: PET_TRIMAP_BACKGROUND}, PET_TRIMAP_BORDER)
        instances = (0,)
    elif mode == "species":
        names, palette = ("background", "cat", "dog"), (_PET_BACKGROUND_COLOUR, (255, 165, 0), (30, 144, 255))
        to_native = _lut({0: PET_TRIMAP_BACKGROUND, 1: PET_TRIMAP_PET, 2: PET_TRIMAP_PET}, PET_TRIMAP_BORDER)
        instances = (1, 2)
    else:
        raise ValueError(f"unknown Pet label mode {mode!r}; choose one of {', '.join(PET_LABEL_MODES)}")
    return LabelSpec("pet", mode, names, palette, to_native, instances)


def pet_trimap_lut(mode: str = "trimap", species: Optional[int] = None) -> np.ndarray:
    """uint8[256] lookup: Pet trimap value (1/2/3) → train id for ``mode``; every other value → 255 (ignore).

    ``species`` (0 = cat, 1 = dog) is required for mode ``species``.
    """
    if mode == "trimap":
        return _lut({PET_TRIMAP_PET: 0, PET_TRIMAP_BACKGROUND: 1, PET_TRIMAP_BORDER: 2}, IGNORE_LABEL)
    if mode == "binary":
        return _lut({PET_TRIMAP_PET: 0, PET_TRIMAP_BACKGROUND: 1}, IGNORE_LABEL)
    if mode == "species":
        if species not in (0, 1):
            raise ValueError("label mode 'species' needs the example's species (0 = cat, 1 = dog) from list.txt")
        return _lut({PET_TRIMAP_PET: 1 + species, PET_TRIMAP_BACKGROUND: 0}, IGNORE_LABEL)
    raise ValueError(f"unknown Pet label mode {mode!r}; choose one of {', '.join(PET_LABEL_MODES)}")


# The native values a mask may hold (module docstring): every other value makes the example a dead letter.
PET_TRIMAP_VALUES = (PET_TRIMAP_PET, PET_TRIMAP_BACKGROUND, PET_TRIMAP_BORDER)
# How many out-of-set values a dead-letter reason lists before saying "…".
_LISTED_VALUES = 10


def _values_text(values: Sequence[int]) -> str:
    shown = ", ".join(str(v) for v in values[:_LISTED_VALUES])
    return f"[{shown}{', ...' if len(values) > _LISTED_VALUES else ''}]"


def _set_text(values: Sequence[int]) -> str:
    """``{1, 2, 3}``; runs of more than three values as ``a..b`` (``{0..20, 255}``)."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    parts = [f"{r[0]}..{r[-1]}" if len(r) > 3 else ", ".join(map(str, r)) for r in runs]
    return "{" + ", ".join(parts) + "}"


def _outside(array: np.ndarray, valid: Sequence[int]) -> list[int]:
    """Sorted distinct values of ``array`` (non-negative ints) that are not in ``valid``."""
    array = np.asarray(array)
    if array.size == 0:
        return []
    low, high = min(valid), max(valid)
    if len(set(valid)) == high - low + 1 and low <= array.min() and array.max() <= high:
        # Every label set here is a contiguous range, and valid masks are the rule: two min/max passes
        # (0.06 ms for a 375x500 trimap) instead of an int64 copy and a bincount (0.4 ms) per mask.
        return []
    counts = np.bincount(array.ravel().astype(np.int64), minlength=1)
    counts[[v for v in valid if v < len(counts)]] = 0
    return [int(v) for v in np.flatnonzero(counts)]


def native_mask_problem(dataset: str, mask: np.ndarray, kind: str = "mask") -> Optional[str]:
    """Why ``mask`` (native values, [H, W]) cannot be a ``dataset`` annotation, or None when every value is valid.

    ``kind``: ``"mask"`` (Pet trimap / Cityscapes labelIds) or ``"instances"`` (Cityscapes instanceIds). The
    reason names the values found outside the set, e.g. ``trimap has values [0, 4] outside {1, 2, 3}``.
    """
    if dataset == "pet":
        bad = _outside(mask, PET_TRIMAP_VALUES)
        return f"trimap has values {_values_text(bad)} outside {_set_text(PET_TRIMAP_VALUES)}" if bad else None
    if dataset in _INDEX_TABLES:
        _, values, what = _INDEX_TABLES[dataset]
        bad = _outside(mask, values)
        return f"{what} has values {_values_text(bad)} outside {_set_text(values)}" if bad else None
    if dataset != "cityscapes":
        raise ValueError(f"unknown dataset {dataset!r}; choose 'pet' or 'cityscapes'")
    ids = cityscapes_label_ids()
    if kind == "mask":
        bad = _outside(mask, ids)
        return (
            f"labelIds has values {_values_text(bad)} outside the Cityscapes label table {_set_text(ids)}"
            if bad
            else None
        )
    if kind != "instances":
        raise ValueError(f"unknown mask kind {kind!r}; choose 'mask' or 'instances'")
    values = np.asarray(mask).astype(np.int64)
    # instanceIds: a labelId below 1000, labelId * 1000 + instance number from 1000 on.
    classes = np.where(values >= 1000, values // 1000, values)
    bad_classes = set(_outside(classes, ids))
    if not bad_classes:
        return None
    bad = [int(v) for v in np.unique(values[np.isin(classes, sorted(bad_classes))])]
    return (
        f"instanceIds has values {_values_text(bad)} whose class part (the value, or value // 1000 from 1000 "
        f"on) is not a Cityscapes labelId {_set_text(ids)}"
    )


def pet_trimap_to_train_ids(trimap: np.ndarray, mode: str = "trimap", species: Optional[int] = None) -> np.ndarray:
    """Maps a Pet trimap (uint8 [H, W], values 1/2/3) to train ids (uint8 [H, W], 255 = ignore).

    Any value outside 1..3 becomes 255. ``species`` (0 = cat, 1 = dog) is required for mode ``species``.
    """
    # np.take: ~1.7x faster than lut[trimap]
    return np.take(pet_trimap_lut(mode, species), np.asarray(trimap, dtype=np.uint8))


# --------------------------------------------------------------------------------------- Cityscapes
# The official table, not retyped: every Label(name, id, trainId, category, ..., hasInstances, ..., color).
CITYSCAPES_LABELS: Sequence = tuple(cs_labels.labels)
CITYSCAPES_NUM_CLASSES = 19


def _cityscapes_train_labels() -> list:
    train = sorted((label for label in CITYSCAPES_LABELS if 0 <= label.trainId < 255), key=lambda label: label.trainId)
    assert [label.trainId for label in train] == list(range(CITYSCAPES_NUM_CLASSES)), "unexpected Cityscapes table"
    return train


def cityscapes_label_ids() -> tuple[int, ...]:
    """The labelIds a ``*_gtFine_labelIds.png`` may hold: every id of the official table that fits a uint8 (0..33;
    the license plate's -1 never appears in label maps)."""
    return tuple(sorted({int(label.id) for label in CITYSCAPES_LABELS if 0 <= label.id < 256}))


def cityscapes_label_id_to_train_id() -> np.ndarray:
    """uint8[256] lookup: labelId → trainId (255 for every label that is not evaluated, and unknown ids)."""
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.id < 256 and 0 <= label.trainId < 255:
            lut[label.id] = label.trainId
    return lut


def cityscapes_spec() -> LabelSpec:
    train = _cityscapes_train_labels()
    # 255 (ignore) goes back to labelId 0 ('unlabeled'), which the official evaluator ignores.
    to_native = _lut({label.trainId: label.id for label in train}, 0)
    return LabelSpec(
        dataset="cityscapes",
        mode="trainids",
        class_names=tuple(label.name for label in train),
        palette=tuple(tuple(label.color) for label in train),
        to_native=to_native,
        instance_train_ids=tuple(label.trainId for label in train if label.hasInstances),
    )


def cityscapes_label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps a ``*_gtFine_labelIds.png`` array (uint8 [H, W]) to trainIds (uint8 [H, W], 255 = ignore)."""
    return cityscapes_label_id_to_train_id()[np.asarray(label_ids, dtype=np.uint8)]


# ------------------------------------------------------------------------------ Pascal VOC 2012, ADE20K
# Both annotate with one class index per pixel (VOC: palette PNGs, whose index is the class; ADE20K: grey PNGs),
# from the official tables in ``schemas.label_tables``.
VOC_VOID = 255  # the border VOC draws around objects and its 'difficult' regions: ignored in training and scoring
VOC_NUM_CLASSES = len(label_tables.VOC_CLASS_NAMES)
VOC_MASK_VALUES = tuple(range(VOC_NUM_CLASSES)) + (VOC_VOID,)
# ADE20K SceneParsing's 'other objects': none of the 150 classes, ignored (mmseg's reduce_zero_label).
ADE20K_OTHER = 0
ADE20K_NUM_CLASSES = len(label_tables.ADE20K_CLASS_NAMES)
ADE20K_MASK_VALUES = tuple(range(ADE20K_NUM_CLASSES + 1))
# The mode name of the one label table each has (metadata.json's label_mode).
INDEX_LABEL_MODE = "classes"


def voc_colour_map(n: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The VOC devkit's colour map (``VOClabelcolormap.m``): the bits of each index spread over R, G and B from the
    top bit down. Index 0 is black, 1 (aeroplane) (128, 0, 0), 255 (void) (224, 224, 192)."""
    colours = []
    for index in range(n):
        rgb = [0, 0, 0]
        value = index
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
        colours.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colours)


def voc_label_lut() -> np.ndarray:
    """uint8[256] lookup: a VOC class index (0..20) is its train id; void (255) and anything else → 255."""
    return _lut({v: v for v in range(VOC_NUM_CLASSES)}, IGNORE_LABEL)


def voc_spec() -> LabelSpec:
    # Train ids are the VOC indices, so a prediction is written back as the index the devkit reads; ignore → void.
    return LabelSpec(
        dataset="voc",
        mode=INDEX_LABEL_MODE,
        class_names=label_tables.VOC_CLASS_NAMES,
        palette=voc_colour_map(VOC_NUM_CLASSES),
        to_native=_lut({v: v for v in range(VOC_NUM_CLASSES)}, VOC_VOID),
        instance_train_ids=tuple(range(1, VOC_NUM_CLASSES)),  # the 20 object classes, not background
    )


def ade20k_label_lut() -> np.ndarray:
    """uint8[256] lookup: ADE20K value 1..150 → train id 0..149; 0 ('other') and anything else → 255."""
    return _lut({v: v - 1 for v in range(1, ADE20K_NUM_CLASSES + 1)}, IGNORE_LABEL)


def ade20k_spec() -> LabelSpec:
    return LabelSpec(
        dataset="ade20k",
        mode=INDEX_LABEL_MODE,
        class_names=label_tables.ADE20K_CLASS_NAMES,
        palette=label_tables.ADE20K_PALETTE,
        to_native=_lut({t: t + 1 for t in range(ADE20K_NUM_CLASSES)}, ADE20K_OTHER),
        # objectInfo150's objects (its Stuff column 0): countable, so --instances separates them.
        instance_train_ids=tuple(v - 1 for v in range(1, ADE20K_NUM_CLASSES + 1) if v not in label_tables.ADE20K_STUFF),
    )


# dataset -> (its spec, the values its masks may hold, how a reason names a mask)
_INDEX_TABLES = {
    "voc": (voc_spec, VOC_MASK_VALUES, "VOC class mask"),
    "ade20k": (ade20k_spec, ADE20K_MASK_VALUES, "ADE20K annotation"),
}


def spec_for(dataset: str, mode: Optional[str] = None) -> LabelSpec:
    """The label spec of ``dataset`` (``pet``, ``cityscapes``, ``voc``, ``ade20k``) in ``mode`` (Pet only)."""
    if dataset == "pet":
        return pet_spec(mode or "trimap")
    if dataset in _INDEX_TABLES:
        if mode not in (None, INDEX_LABEL_MODE):
            raise ValueError(f"{dataset} has one label mode, {INDEX_LABEL_MODE!r}")
        return _INDEX_TABLES[dataset][0]()
    if dataset == "cityscapes":
        if mode not in (None, "trainids"):
            raise ValueError("Cityscapes has one label mode, 'trainids'")
        return cityscapes_spec()
    raise ValueError(f"unknown dataset {dataset!r}; choose 'pet' or 'cityscapes'")


# ------------------------------------------------------------------------------- the table that travels
def label_table(spec: LabelSpec) -> dict:
    """What ``metadata.json`` and ``segflow_model.json`` carry of ``spec`` beside its class names and ignore
    label (``label_table`` there): the palette, each train id's native value, the native value of ignore and the
    instance classes. Infer, evaluate and the report rebuild the spec from it (``spec_from_table``), so a
    dataset whose table comes with its data (``folder``) needs no code of its own downstream."""
    n = spec.num_classes
    return {
        "palette": [[int(c) for c in colour] for colour in spec.palette],
        "native_values": [int(v) for v in spec.to_native[:n]],
        "native_ignore": int(spec.to_native[spec.ignore_label]),
        "instance_train_ids": [int(t) for t in spec.instance_train_ids],
    }


def spec_from_table(dataset: str, mode: str, class_names: Sequence[str], ignore_label: int, table: dict) -> LabelSpec:
    """The ``LabelSpec`` a ``label_table`` (and the class names and ignore label beside it) describes."""
    native = [int(v) for v in table["native_values"]]
    if len(native) != len(class_names) or len(table["palette"]) != len(class_names):
        raise ValueError(
            f"label_table has {len(native)} native values and {len(table['palette'])} colours for "
            f"{len(class_names)} classes"
        )
    fill = int(table["native_ignore"])
    dtype = np.uint8 if max(native + [fill]) < 256 else np.uint16  # 16-bit masks keep their values
    to_native = np.full(256, fill, dtype=dtype)
    to_native[: len(native)] = native
    return LabelSpec(
        dataset=dataset,
        mode=mode,
        class_names=tuple(class_names),
        palette=tuple(tuple(int(c) for c in colour) for colour in table["palette"]),
        to_native=to_native,
        instance_train_ids=tuple(int(t) for t in table.get("instance_train_ids", ())),
        ignore_label=int(ignore_label),
    )


def colorize(train_ids: np.ndarray, spec: LabelSpec) -> np.ndarray:
    """uint8 [H, W] train ids → uint8 [H, W, 3] palette image (ignore pixels black)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: spec.num_classes] = np.asarray(spec.palette, dtype=np.uint8)
    return palette[np.asarray(train_ids, dtype=np.uint8)]

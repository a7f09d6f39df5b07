"""Generates small datasets in the real Oxford-IIIT Pet and Cityscapes layouts.

Used by ``make demo``, the tests and the benchmarks, so none of them needs a download. Pet-like examples are
textured objects (the pets) with a border band, on textured backgrounds, annotated as trimaps exactly as the
Pet README defines them (1 = pet, 2 = background, 3 = not classified / border). Cityscapes-like frames are
street-ish scenes painted with official labelIds, with instance ids for cars and people.

    python -m pipelines.tools.synthetic --dataset pet --output_dir data/pet --num_examples 60
"""

from __future__ import annotations

import argparse
import io
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipelines import datasets
from pipelines.datasets import cityscapes, pet
from pipelines.tools import synthetic_benchmarks, synthetic_folder

# The 37 Pet breeds; cats are capitalised in the real dataset, dogs are not. CLASS-ID is the 1-based index in
# this case-insensitive alphabetical order, as in the real list.txt.
PET_BREEDS: tuple[str, ...] = tuple(
    sorted(
        [
            "Abyssinian",
            "Bengal",
            "Birman",
            "Bombay",
            "British_Shorthair",
            "Egyptian_Mau",
            "Maine_Coon",
            "Persian",
            "Ragdoll",
            "Russian_Blue",
            "Siamese",
            "Sphynx",
            "american_bulldog",
            "american_pit_bull_terrier",
            "basset_hound",
            "beagle",
            "boxer",
            "chihuahua",
            "english_cocker_spaniel",
            "english_setter",
            "german_shorthaired",
            "great_pyrenees",
            "havanese",
            "japanese_chin",
            "keeshond",
            "leonberger",
            "miniature_pinscher",
            "newfoundland",
            "pomeranian",
            "pug",
            "saint_bernard",
            "samoyed",
            "scottish_terrier",
            "shiba_inu",
            "staffordshire_bull_terrier",
            "wheaten_terrier",
            "yorkshire_terrier",
        ],
        key=str.lower,
    )
)

PET_LIST_HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n"
    "#ID: 1:37 Class ids\n"
    "#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-25:Cat 1:12:Dog\n"
    "#All images with 1st letter as captial are cat images\n"
    "#images with small first letter are dog images\n"
)


def _is_cat(breed: str) -> bool:
    return breed[0].isupper()


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random colour texture: a base colour, a smooth gradient, stripes and pixel noise (float [H, W, 3])."""
    base = rng.uniform(30, 225, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.05, 0.35)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq)[..., None] * rng.uniform(5, 30, size=3)
    gradient = (yy / max(height, 1))[..., None] * rng.uniform(-40, 40, size=3)
    noise = rng.normal(0, rng.uniform(4, 14), size=(height, width, 3))
    return base + stripes + gradient + noise


def pet_example(
    rng: np.random.Generator, height: int, width: int, border: Optional[int] = None
) -> tuple[np.ndarray, np.ndarray]:
    """One Pet-like example: uint8 RGB [H, W, 3] and a uint8 trimap [H, W] with values 1/2/3."""
    border = border or max(2, round(min(height, width) / 40))
    shape = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(shape)
    # The pet: a body ellipse plus one or two head/limb blobs, so outlines are not all convex.
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.15, 0.32) * height, rng.uniform(0.15, 0.32) * width
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    for _ in range(int(rng.integers(1, 3))):
        a = rng.uniform(0, 2 * np.pi)
        r = rng.uniform(0.35, 0.6) * min(rx, ry)
        px, py = cx + np.cos(a) * rx * 0.9, cy + np.sin(a) * ry * 0.9
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    inside = np.asarray(shape) > 127
    # Border band = pixels within `border` of the outline, on either side (the Pet "not classified" ring).
    grown = np.asarray(shape.filter(ImageFilter.MaxFilter(2 * border + 1))) > 127
    shrunk = np.asarray(shape.filter(ImageFilter.MinFilter(2 * border + 1))) > 127
    trimap = np.full((height, width), 2, dtype=np.uint8)
    trimap[shrunk] = 1
    trimap[grown & ~shrunk] = 3

    background = _texture(rng, height, width)
    pet = _texture(rng, height, width)
    # Keep the pet distinguishable: shift its colour away from the background's mean.
    pet += np.sign(pet.mean(axis=(0, 1)) - background.mean(axis=(0, 1)) + 1e-3) * 35
    image = np.where(inside[..., None], pet, background)
    return np.clip(image, 0, 255).astype(np.uint8), trimap


def encode_jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_file(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_pet_dataset(
    root: str,
    num_examples: int,
    *,
    size: Sequence[int] = (375, 500),
    seed: int = 0,
    test_fraction: float = 0.25,
    list_files: bool = True,
    vary_size: bool = True,
    id_prefix: str = "",
) -> list[str]:
    """Writes ``num_examples`` Pet-like examples under ``root`` in the Pet layout; returns their ids.

    Layout: ``images/<id_prefix><Breed>_<n>.jpg``, ``annotations/trimaps/<id_prefix><Breed>_<n>.png`` and, with
    ``list_files``, ``annotations/{list,trainval,test}.txt`` (``list.txt`` with the real file's ``#`` header).
    ``id_prefix`` keeps a second generated set's names apart from the first's (``heldout_Abyssinian_1``).
    ``size`` is (height, width); with ``vary_size`` each example's size varies by up to ±20%, as real photos do.
    """
    rng = np.random.default_rng(seed)
    ids, rows = [], []
    counters: dict[str, int] = {}
    for i in range(num_examples):
        breed = PET_BREEDS[int(rng.integers(len(PET_BREEDS)))]
        counters[breed] = counters.get(breed, 0) + 1
        example_id = f"{id_prefix}{breed}_{counters[breed]}"
        height, width = size
        if vary_size:
            height = int(height * rng.uniform(0.8, 1.2))
            width = int(width * rng.uniform(0.8, 1.2))
        image, trimap = pet_example(np.random.default_rng([seed, i]), height, width)
        write_file(os.path.join(root, "images", f"{example_id}.jpg"), encode_jpeg(image))
        write_file(os.path.join(root, "annotations", "trimaps", f"{example_id}.png"), encode_png(trimap))
        class_id = PET_BREEDS.index(breed) + 1
        species = 1 if _is_cat(breed) else 2
        same_species = [b for b in PET_BREEDS if _is_cat(b) == _is_cat(breed)]
        rows.append((example_id, class_id, species, same_species.index(breed) + 1))
        ids.append(example_id)
    if list_files:
        ann = os.path.join(root, "annotations")
        lines = [f"{r[0]} {r[1]} {r[2]} {r[3]}\n" for r in rows]
        is_test = [rng.uniform() < test_fraction for _ in rows]
        write_file(os.path.join(ann, "list.txt"), (PET_LIST_HEADER + "".join(lines)).encode())
        trainval = "".join(line for line, test in zip(lines, is_test) if not test)
        write_file(os.path.join(ann, "trainval.txt"), trainval.encode())
        write_file(os.path.join(ann, "test.txt"), "".join(line for line, test in zip(lines, is_test) if test).encode())
    return ids


def write_pet_quirks_dataset(root: str, *, size: Sequence[int] = (60, 80), seed: int = 0) -> dict:
    """Writes a Pet-layout dataset with every quirk of the real archive; returns the expected routing.

    Quirks: PNG (RGBA) and GIF (palette) images named ``.jpg``, grayscale and CMYK JPEGs, a truncated JPEG, a
    ``.mat`` file in ``images/`` (sharing an id with a good image, as in the real archive), macOS ``._*``
    files in ``images/`` and ``annotations/trimaps/``, an image listed in no list file, list files with ``#``
    headers, a trimap without image, an image without trimap, and an image whose trimap has another size.

    Returns ``{"records": {id: split or None}, "dead_letters": {relative path: reason substring},
    "listed": {id: (class 0-based, species 0-based)}}``; split None = train or val (hashed).
    """
    height, width = size
    records: dict[str, Optional[str]] = {}
    dead: dict[str, str] = {}
    listed: dict[str, tuple[int, int]] = {}
    trainval_rows, test_rows = [], []

    def example(i: int) -> tuple[np.ndarray, np.ndarray]:
        return pet_example(np.random.default_rng([seed, 1000 + i]), height, width)

    def put(
        example_id: str, image_bytes: Optional[bytes], trimap: Optional[np.ndarray], split: Optional[str] = "trainval"
    ) -> None:
        if image_bytes is not None:
            write_file(os.path.join(root, "images", f"{example_id}.jpg"), image_bytes)
        if trimap is not None:
            write_file(os.path.join(root, "annotations", "trimaps", f"{example_id}.png"), encode_png(trimap))
        if split is not None:
            breed = example_id.rsplit("_", 1)[0]
            row = f"{example_id} {PET_BREEDS.index(breed) + 1} {1 if _is_cat(breed) else 2} 1\n"
            (test_rows if split == "test" else trainval_rows).append(row)
            listed[example_id] = (PET_BREEDS.index(breed), 0 if _is_cat(breed) else 1)

    # Plain examples, some in test.
    for i, breed in enumerate(("Abyssinian", "beagle", "boxer", "pug", "samoyed", "Siamese")):
        image, trimap = example(i)
        split = "test" if i % 3 == 2 else "trainval"
        put(f"{breed}_{i + 1}", encode_jpeg(image), trimap, split)
        records[f"{breed}_{i + 1}"] = "test" if split == "test" else None
    # Decodable oddities → records (converted to RGB).
    image, trimap = example(10)
    rgba = np.dstack([image, np.full(image.shape[:2], 200, np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    put("Bengal_7", buf.getvalue(), trimap)
    records["Bengal_7"] = None
    image, trimap = example(11)
    buf = io.BytesIO()
    Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE).save(buf, format="GIF")
    put("Birman_7", buf.getvalue(), trimap)
    records["Birman_7"] = None
    image, trimap = example(12)
    buf = io.BytesIO()
    Image.fromarray(image).convert("L").save(buf, format="JPEG", quality=90)
    put("Bombay_7", buf.getvalue(), trimap, "test")
    records["Bombay_7"] = "test"
    image, trimap = example(13)
    buf = io.BytesIO()
    Image.fromarray(image).convert("CMYK").save(buf, format="JPEG", quality=90)
    put("Persian_7", buf.getvalue(), trimap)
    records["Persian_7"] = None
    # An image in no list file: still a record (train/val by hash), without breed/species.
    image, trimap = example(14)
    put("Sphynx_7", encode_jpeg(image), trimap, split=None)
    records["Sphynx_7"] = None
    # Dead letters.
    image, trimap = example(15)
    data = encode_jpeg(image)
    put("Ragdoll_7", data[: len(data) // 2], trimap)
    dead["images/Ragdoll_7.jpg"] = "truncated"
    write_file(os.path.join(root, "images", "Abyssinian_1.mat"), b"MATLAB 5.0 MAT-file, not an image" + bytes(64))
    dead["images/Abyssinian_1.mat"] = "not an image"
    write_file(os.path.join(root, "images", "._Abyssinian_1.jpg"), b"\x00\x05\x16\x07" + bytes(80))
    dead["images/._Abyssinian_1.jpg"] = "AppleDouble"
    write_file(os.path.join(root, "annotations", "trimaps", "._Abyssinian_1.png"), b"\x00\x05\x16\x07" + bytes(80))
    dead["annotations/trimaps/._Abyssinian_1.png"] = "AppleDouble"
    _, trimap = example(16)
    put("Russian_Blue_7", None, trimap)
    dead["annotations/trimaps/Russian_Blue_7.png"] = "trimap without image"
    image, _ = example(17)
    put("havanese_7", encode_jpeg(image), None)
    dead["images/havanese_7.jpg"] = "image without trimap"
    image, trimap = example(18)
    put("keeshond_7", encode_jpeg(image), trimap[: height - 6, : width - 8])
    dead["images/keeshond_7.jpg"] = "mask"
    ann = os.path.join(root, "annotations")
    write_file(os.path.join(ann, "list.txt"), (PET_LIST_HEADER + "".join(trainval_rows + test_rows)).encode())
    write_file(os.path.join(ann, "trainval.txt"), ("# trainval split\n" + "".join(trainval_rows)).encode())
    write_file(os.path.join(ann, "test.txt"), ("#test split\n\n" + "".join(test_rows)).encode())
    return {"records": records, "dead_letters": dead, "listed": listed}


# ------------------------------------------------------------------------------------------ Cityscapes
# labelIds from the official table (cityscapesscripts.helpers.labels); names kept for readability.
_CS = {
    "unlabeled": 0,
    "ego vehicle": 1,
    "road": 7,
    "sidewalk": 8,
    "building": 11,
    "pole": 17,
    "vegetation": 21,
    "sky": 23,
    "person": 24,
    "car": 26,
}


def cityscapes_frame(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One street-like frame: uint8 RGB [H, W, 3], uint8 labelIds [H, W], int32 instanceIds [H, W]."""
    from cityscapesscripts.helpers.labels import id2label

    label = np.full((height, width), _CS["building"], dtype=np.uint8)
    horizon = int(height * rng.uniform(0.3, 0.45))
    label[:horizon] = _CS["sky"]
    road_top = int(height * rng.uniform(0.55, 0.65))
    label[road_top:] = _CS["road"]
    sw = int(width * rng.uniform(0.1, 0.2))
    label[road_top:, :sw] = _CS["sidewalk"]
    label[int(height * 0.93) :] = _CS["ego vehicle"]
    tree_x = int(rng.integers(width // 2, width - width // 8))
    label[horizon - height // 10 : road_top, tree_x : tree_x + width // 8] = _CS["vegetation"]
    pole_x = int(rng.integers(sw, width // 2))
    label[horizon : road_top + height // 20, pole_x : pole_x + max(2, width // 128)] = _CS["pole"]
    instance = label.astype(np.int32)
    # Cars on the road and people on the sidewalk; some touch each other, as in real streets.
    counters = {"car": 0, "person": 0}
    for cls, n, (hmin, hmax), (wmin, wmax), x_range in (
        ("car", int(rng.integers(1, 4)), (0.12, 0.2), (0.15, 0.25), (sw, width)),
        ("person", int(rng.integers(1, 3)), (0.2, 0.3), (0.03, 0.06), (0, max(sw, width // 6))),
    ):
        for _ in range(n):
            h = int(height * rng.uniform(hmin, hmax))
            w = int(width * rng.uniform(wmin, wmax))
            x0 = int(rng.integers(x_range[0], max(x_range[0] + 1, x_range[1] - w)))
            y1 = int(height * rng.uniform(0.7, 0.9))
            y0 = max(0, y1 - h)
            label[y0:y1, x0 : x0 + w] = _CS[cls]
            instance[y0:y1, x0 : x0 + w] = _CS[cls] * 1000 + counters[cls]
            counters[cls] += 1
    label[:2, :] = _CS["unlabeled"]  # a little void, which the evaluators ignore
    instance[:2, :] = _CS["unlabeled"]
    palette = np.zeros((256, 3), dtype=np.float32)
    for lid, lab in id2label.items():
        if 0 <= lid < 256:
            palette[lid] = lab.color
    image = palette[label] + rng.normal(0, 10, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label, instance


def write_cityscapes_dataset(
    root: str,
    *,
    frames_per_split: Optional[dict[str, int]] = None,
    size: Sequence[int] = (256, 512),
    seed: int = 0,
    cities: Optional[dict[str, Sequence[str]]] = None,
) -> dict[str, list[str]]:
    """Writes a Cityscapes-layout dataset under ``root``; returns the frame ids per split.

    ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_{labelIds,instanceIds,color}.png``. As in the real
    release, ``test`` frames come with placeholder annotations (all 'unlabeled').
    """
    from cityscapesscripts.helpers.labels import id2label

    frames_per_split = frames_per_split or {"train": 4, "val": 2, "test": 1}
    # As in the real release, each split has its own cities, so frame ids never repeat across splits.
    cities = cities or {"train": ("aachen", "bremen"), "val": ("frankfurt", "lindau"), "test": ("berlin", "bielefeld")}
    height, width = size
    out: dict[str, list[str]] = {}
    index = 0
    for split, n in frames_per_split.items():
        out[split] = []
        for i in range(n):
            city = cities[split][i % len(cities[split])]
            frame_id = f"{city}_{i:06d}_{(19 + i * 7):06d}"
            image, label, instance = cityscapes_frame(np.random.default_rng([seed, index]), height, width)
            index += 1
            if split == "test":
                label = np.zeros_like(label)
                instance = np.zeros_like(instance)
            colour = np.zeros((height, width, 3), dtype=np.uint8)
            for lid in np.unique(label):
                colour[label == lid] = id2label[int(lid)].color
            img_dir = os.path.join(root, "leftImg8bit", split, city)
            gt_dir = os.path.join(root, "gtFine", split, city)
            write_file(os.path.join(img_dir, f"{frame_id}_leftImg8bit.png"), encode_png(image))
            write_file(os.path.join(gt_dir, f"{frame_id}_gtFine_labelIds.png"), encode_png(label))
            write_file(os.path.join(gt_dir, f"{frame_id}_gtFine_color.png"), encode_png(colour))
            buf = io.BytesIO()
            Image.fromarray(instance.astype(np.uint16)).save(buf, format="PNG")  # 16-bit, as released
            write_file(os.path.join(gt_dir, f"{frame_id}_gtFine_instanceIds.png"), buf.getvalue())
            out[split].append(frame_id)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=[n for n in datasets.names() if n in _WRITERS], required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--num_examples",
        type=int,
        default=60,
        help="Pet: examples; Cityscapes: frames per split train/val (test gets a quarter)",
    )
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_examples <= 0:
        parser.error("--num_examples must be positive")
    _WRITERS[args.dataset](args)


def _write_pet(args: argparse.Namespace) -> None:
    size = (args.height or 375, args.width or 500)
    ids = write_pet_dataset(args.output_dir, args.num_examples, size=size, seed=args.seed)
    print(f"wrote {len(ids)} Pet-layout examples under {args.output_dir}")


def _write_cityscapes(args: argparse.Namespace) -> None:
    size = (args.height or 256, args.width or 512)
    n = args.num_examples
    split_ids = write_cityscapes_dataset(
        args.output_dir,
        size=size,
        seed=args.seed,
        frames_per_split={"train": n, "val": max(1, n // 2), "test": max(1, n // 4)},
    )
    print(
        f"wrote Cityscapes-layout frames under {args.output_dir}: "
        + ", ".join(f"{k}={len(v)}" for k, v in split_ids.items())
    )


# The datasets this tool can generate, by registry name (a dataset without a writer is not offered).
_WRITERS = {
    pet.DATASET.name: _write_pet,
    cityscapes.DATASET.name: _write_cityscapes,
    synthetic_folder.NAME: synthetic_folder.write_from_args,
    **synthetic_benchmarks.WRITERS,
}


if __name__ == "__main__":
    main()

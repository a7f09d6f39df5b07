"""Instance extraction and output naming: pure numpy/scipy, on hand-made arrays."""

import numpy as np
import pytest

from pipelines.infer import outputs
from pipelines.infer.instances import extract_instances, instance_id_map, split_touching
from schemas.labels import spec_for


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def test_watershed_splits_two_touching_discs_at_the_neck():
    shape = (60, 100)
    left, right = _disc(shape, 30, 30, 18), _disc(shape, 30, 62, 16)
    parts = split_touching(left | right)
    assert parts.max() == 2
    # Each part is (almost exactly) one of the discs: the cut runs through the neck.
    a, b = parts == 1, parts == 2
    assert (a & left).sum() / a.sum() > 0.97 and (b & right).sum() / b.sum() > 0.97


@pytest.mark.parametrize("name", ["rectangle", "ellipse", "rectangle_with_holes"])
def test_watershed_keeps_one_convex_object_whole(name):
    shape = (60, 100)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    if name == "ellipse":
        mask = ((yy - 30) / 20) ** 2 + ((xx - 50) / 45) ** 2 < 1
    else:
        mask = np.zeros(shape, bool)
        mask[10:40, 5:90] = True
        if name == "rectangle_with_holes":
            mask[10:40, 5:90] &= np.random.default_rng(0).uniform(size=(30, 85)) > 0.03
    assert split_touching(mask).max() == 1


def test_watershed_is_fast_and_correct_at_cityscapes_resolution():
    shape = (1024, 2048)
    blob = np.zeros(shape, bool)
    blob[300:700, 100:900] = True  # two rectangles overlapping over most of their height: one object
    blob[400:800, 880:1500] = True
    blob |= _disc(shape, 500, 1700, 150) | _disc(shape, 500, 1960, 130)  # two discs touching at a neck
    found = extract_instances(np.where(blob, 13, 0), None, (13,))
    assert len(found) == 3
    rectangles = np.zeros(shape, bool)
    rectangles[300:700, 100:900] = True
    rectangles[400:800, 880:1500] = True
    by_x = sorted(found, key=lambda i: i.bbox[0])
    assert abs(by_x[0].area - rectangles.sum()) < 0.01 * rectangles.sum()
    for inst, disc in zip(by_x[1:], (_disc(shape, 500, 1700, 150), _disc(shape, 500, 1960, 130))):
        assert (inst.mask & disc).sum() > 0.95 * inst.area


def test_pet_border_separates_touching_pets_and_only_then():
    shape = (60, 100)
    pets = _disc(shape, 30, 30, 18) | _disc(shape, 30, 62, 16)
    class_ids = np.where(pets, 0, 1)  # 0 pet, 1 background, 2 border
    probs = np.zeros(shape + (3,), np.float32)
    probs[..., 0] = np.where(pets, 0.9, 0.1)
    probs[..., 1] = 1 - probs[..., 0]
    # Without boundary evidence the blob is one pet.
    assert len(extract_instances(class_ids, probs, (0,), border_train_id=2)) == 1
    # The model paints a border band between them: two pets, border pixels given back to their pets.
    separated = class_ids.copy()
    separated[:, 45:49][pets[:, 45:49]] = 2
    found = extract_instances(separated, probs, (0,), border_train_id=2)
    assert len(found) == 2
    assert found[0].bbox[0] < found[1].bbox[0]  # left pet first
    assert sum(i.area for i in found) == pets.sum()  # border band re-assigned, nothing lost
    assert all(abs(i.score - 0.9) < 1e-6 for i in found)
    assert not (found[0].mask & found[1].mask).any()


def test_min_area_drops_specks_and_bbox_is_xywh():
    class_ids = np.ones((20, 30), np.int32)
    class_ids[2:12, 3:13] = 0  # 100 px
    class_ids[15:17, 25:27] = 0  # 4 px speck
    found = extract_instances(class_ids, None, (0,), border_train_id=2, min_area=5)
    assert len(found) == 1
    assert found[0].bbox == [3, 2, 10, 10] and found[0].area == 100


def test_instance_id_map_uses_label_id_times_1000_plus_k():
    spec = spec_for("cityscapes")
    car, person = spec.class_names.index("car"), spec.class_names.index("person")
    class_ids = np.full((10, 20), spec.class_names.index("road"), np.int32)
    class_ids[1:4, 1:5] = car
    class_ids[1:4, 10:15] = car
    class_ids[6:9, 2:4] = person
    found = extract_instances(class_ids, None, spec.instance_train_ids)
    native = spec.to_native[class_ids.astype(np.uint8)]
    ids = instance_id_map(found, native, spec.to_native)
    assert ids.dtype == np.uint16
    assert set(np.unique(ids)) == {7, 24000, 26000, 26001}  # road stays labelId 7
    rows = outputs.instance_records("x", found, spec)
    assert [r["id"] for r in rows] == [24000, 26000, 26001]
    assert [r["class"] for r in rows] == ["person", "car", "car"]


@pytest.mark.parametrize(
    "path, stem",
    [
        ("/data/images/Abyssinian_1.jpg", "Abyssinian_1"),
        ("gs://b/x/frankfurt_000000_000294_leftImg8bit.png", "frankfurt_000000_000294_leftImg8bit"),
        ("/d/../../etc/passwd", "passwd"),
        ("/d/..jpg", "image"),
        ("/d/.hidden.png", "hidden"),
        ("/d/a b?c*d.JPEG", "a_b_c_d"),
        ("C:\\pics\\cat.gif", "cat"),
        ("/d/weird+name.bmp", "weird_name"),
    ],
)
def test_base_stem_is_safe(path, stem):
    assert outputs.base_stem(path) == stem
    assert "/" not in stem and not stem.startswith(".")


def test_unique_stems_disambiguate_shared_names_deterministically():
    paths = ["/a/cat.jpg", "/b/cat.jpg", "/b/dog.png", "/c/cat.png"]
    names = outputs.unique_stems(paths)
    assert names["/b/dog.png"] == "dog"
    cats = [names[p] for p in paths if "cat" in p]
    assert len(set(cats)) == 3 and all(n.startswith("cat+") for n in cats)
    assert outputs.unique_stems(reversed(paths)) == names
    # A file literally named like a hashed stem cannot collide: '+' never survives base_stem.
    assert outputs.base_stem(f"/z/{cats[0]}.png") != cats[0]

"""Offline (preprocess) and online (trainer) augmentation draw from one parameter set
(pipelines.shared.augmentation.AUGMENTATION): a range changed in one path only, or a number written into either
path again, fails here."""

import dataclasses
import inspect
import re

import numpy as np

from pipelines.shared.augmentation import AUGMENTATION, AugmentationParameters


def test_the_parameter_set_is_frozen_and_keeps_each_paths_numbers():
    assert dataclasses.is_dataclass(AUGMENTATION) and AugmentationParameters.__dataclass_params__.frozen
    # Today's outputs: changing a number changes every augmented record and training run (say so when you do).
    assert dataclasses.asdict(AUGMENTATION) == dict(
        flip_probability=0.5,
        max_brightness_delta=20.0,
        min_contrast=0.8,
        max_contrast=1.2,
        min_saturation=0.8,
        max_saturation=1.2,
        offline_min_crop=0.75,
        offline_max_shift=0.08,
        online_min_zoom=1.0,
        online_max_zoom=1.3,
    )


def _range_numbers(function) -> set[float]:
    """The shared set's numbers written literally in ``function``'s body (after its docstring)."""
    source = inspect.getsource(function).split('"""')[-1]
    shared = {v for v in dataclasses.asdict(AUGMENTATION).values() if v not in (0.0, 1.0)}
    return {float(n) for n in re.findall(r"(?<![\w.])\d+\.\d+", source)} & shared


def test_neither_path_writes_its_own_ranges():
    from pipelines.preprocess import augment as offline
    from trainer import data

    assert _range_numbers(offline.augment_params) == set() and _range_numbers(data.augment) == set()


def test_offline_draws_follow_the_shared_ranges(monkeypatch):
    from pipelines.preprocess import augment as offline

    wide = dataclasses.replace(AUGMENTATION, max_brightness_delta=200.0, min_contrast=3.0, max_contrast=3.0)
    monkeypatch.setattr(offline, "AUGMENTATION", wide)
    draws = [offline.augment_params(0, f"id{i}", 1) for i in range(40)]
    assert max(abs(p.brightness) for p in draws) > 20.0 and {p.contrast for p in draws} == {3.0}


def test_online_draws_follow_the_shared_ranges(monkeypatch):
    import tensorflow as tf

    from trainer import data

    image = tf.constant(np.full((8, 8, 3), 100, np.uint8))  # grey and flat: contrast and saturation keep it
    label = tf.zeros((8, 8), tf.uint8)

    def shifts() -> list[int]:
        return [int(data.augment(image, label, tf.constant([s, 1], tf.int64))[0][0, 0, 0]) - 100 for s in range(8)]

    assert max(abs(v) for v in shifts()) <= 20
    monkeypatch.setattr(data, "AUGMENTATION", dataclasses.replace(AUGMENTATION, max_brightness_delta=150.0))
    assert max(abs(v) for v in shifts()) > 20

"""Median-frequency class balancing (Eigen & Fergus, 2015): one rule for preprocess's statistics and the trainer.

``preprocess`` records the weights in ``metadata.json`` (``DatasetStats.class_weights``); ``trainer.task
--class_weights auto`` computes them from the transform graph's pixel counts. Both call ``class_balance``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class ClassBalance(NamedTuple):
    frequency: list[float]  # count_c / sum(counts); all 0 when nothing was counted
    weights: list[float]  # median-frequency weights (see ``class_balance``)


def class_balance(class_pixel_counts: Sequence[int]) -> ClassBalance:
    """Frequencies and median-frequency weights of per-class pixel counts.

    freq_c = count_c / sum(counts); weight_c = median(freq of the classes present) / freq_c; 0 for a class with
    no pixels (nothing to weight). When no class has a pixel there is no frequency to balance by: every weight is
    1.0, i.e. unweighted (all-zero weights would turn a weighted loss into 0/0).
    """
    counts = np.asarray(class_pixel_counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return ClassBalance([0.0] * len(counts), [1.0] * len(counts))
    freq = counts / counts.sum()
    median = float(np.median(freq[present]))
    weights = np.where(present, median / np.where(present, freq, 1.0), 0.0)
    return ClassBalance([float(f) for f in freq], [float(w) for w in weights])

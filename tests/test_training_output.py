"""What a training prints per epoch: Keras' one epoch line carries the best validation mIoU so far, not a log
line of its own in the middle of the progress bar."""

from __future__ import annotations

import logging
import re

import pytest

from tests.fixtures.model import train_tiny


@pytest.mark.slow
def test_the_epoch_line_carries_the_best_validation_miou(pet_records_dir, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    metrics = train_tiny(pet_records_dir, tmp_path / "job", epochs=2, verbose=2)
    out = capsys.readouterr().out
    epoch_lines = [line for line in out.splitlines() if " - val_miou: " in line]
    assert len(epoch_lines) == 2, out
    best = [float(re.search(r" - best_val_miou: ([0-9.e-]+)", line).group(1)) for line in epoch_lines]
    assert best[1] >= best[0] and best[1] == pytest.approx(metrics["miou"], abs=1e-4)
    assert not [r for r in caplog.records if "so far" in r.getMessage() and r.levelno >= logging.INFO]

"""docs/api.md's "Train" examples run as written, on the tiny generated records of the test session: the typed
config, ``run`` and its result, ``from_args``, and segflow's parts in a plain Keras training loop."""

import pathlib
import re

import pytest

from trainer import __all__ as TRAINER_API

API_DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api.md"


def section_examples(heading: str) -> list[str]:
    """The ```python blocks under ``## heading`` of docs/api.md, in order."""
    text = API_DOC.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], flags=re.S)


@pytest.mark.slow
def test_the_train_examples_run(pet_records_dir):
    examples = section_examples("Train")
    assert len(examples) >= 3
    namespace = {"data_dir": str(pet_records_dir)}
    for block in examples:
        exec(compile(block, f"{API_DOC}:Train", "exec"), namespace)
    assert namespace["result"].metrics["model"] == "unet"


@pytest.mark.parametrize("name", TRAINER_API)
def test_every_public_name_loads_and_is_documented(name):
    import trainer

    assert getattr(trainer, name) is not None
    modules = {"losses", "metrics", "export", "main"}  # modules, and the command's entry point
    assert name in modules or f"`{name}" in API_DOC.read_text().split("\n## Train\n")[1]

"""The rules preprocess writes by and the trainer reads by are one definition each (schemas.records): the shard
file name and the split names. A second copy anywhere (a regex in the trainer, a tuple in a job) fails here."""

import pytest

from schemas import records


def test_the_shard_name_rule_is_pinned():
    """Renaming shards breaks every DST already written and every reader outside segflow: change it knowingly."""
    assert records.shard_name("val", 3, 12) == "val-00003-of-00012.tfrecord.gz"
    assert records.parse_shard_name("train-00000-of-00001.tfrecord.gz") == ("train", 0, 1)
    for name in ("train-0-of-1.tfrecord.gz", "dev-00000-of-00001.tfrecord.gz", "train-00000-of-00001.tfrecord"):
        assert records.parse_shard_name(name) is None and not records.is_shard_name(name)


@pytest.mark.parametrize("split", records.SPLITS)
def test_preprocess_writes_what_the_trainer_lists(split, tmp_path):
    from pipelines.preprocess import shards
    from trainer import data_dir

    name = shards.shard_path(str(tmp_path), split, 1, 2).rsplit("/", 1)[-1]
    (tmp_path / name).write_bytes(b"x")
    (tmp_path / f"{split}-00001-of-00002.tfrecord").write_bytes(b"")  # not a shard
    assert data_dir.list_shards(str(tmp_path)) == {name: 1}
    assert shards.is_shard_name(name)


def test_one_definition_of_each_rule():
    import pathlib

    from pipelines.datasets import cityscapes
    from pipelines.preprocess import shards
    from schemas import features
    from trainer import config, data

    assert shards.SHARD_NAME is records.SHARD_NAME and shards.is_shard_name is records.is_shard_name
    for module in (cityscapes, features, config):
        assert module.SPLITS is records.SPLITS, module.__name__
    assert not hasattr(data, "_SHARD_NAME_RE")
    root = pathlib.Path(__file__).resolve().parent.parent
    copies = [
        str(path.relative_to(root))
        for package in ("pipelines", "trainer", "schemas")
        for path in sorted((root / package).rglob("*.py"))
        if path.name != "records.py"
        and ('("train", "val", "test")' in path.read_text() or "tfrecord\\.gz" in path.read_text())
    ]
    assert copies == [], "a second copy of the split list or the shard-name pattern"

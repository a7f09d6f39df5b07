"""``pipelines.preprocess``'s options: the typed config (``PreprocessConfig``, one field per flag) and the parser
that turns a command line into it, without Beam or TensorFlow (``--help`` and a bad flag answer in well under a
second).

There is no Beam ``PipelineOptions`` subclass for these flags: Beam's options parse only once Beam is imported
(~1.6 s), and the dataclass is the one place each flag is written. ``from_args`` keeps every flag that is not the
job's aside, unparsed, for Beam: ``run(config, pipeline_args)`` hands them to ``PipelineOptions``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Optional, Sequence

from pipelines import datasets
from pipelines.common.flags import job_parser
from pipelines.shared import flag_parser
from pipelines.shared.pixel_rules import RESIZE_MODES
from schemas import labels as schema_labels
from schemas.errors import DataError, UsageError

if TYPE_CHECKING:
    from pipelines.datasets.base import Dataset
    from pipelines.preprocess.records import RecordOptions

NAME = "pipelines.preprocess"
PROG = f"python -m {NAME}"


def _image_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image_size must be H or H,W in pixels, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8 or max(parts) > 4096:
        raise argparse.ArgumentTypeError(f"--image_size must be H or H,W with 8 <= each <= 4096, got {text!r}")
    return parts[0], parts[1]


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """The job's flags, validated: each field is the flag of the same name, its default, help and range written
    once, here. Built from a command line by ``from_args``, or directly in Python (``run`` checks it then)."""

    dataset: str = flag_parser.option(help="dataset layout to read", choices=datasets.names)
    input_dir: str = flag_parser.option(help="dataset root (local path or gs://)")
    output_dir: str = flag_parser.option(
        help="where shards, metadata.json, transform_fn/ and dead_letter/ go (local path "
        "or gs://); must lie outside --input_dir"
    )
    image_size: tuple[int, int] = flag_parser.option(
        help="record size H or H,W in pixels, each 8 to 4096", parse=_image_size
    )
    num_shards: Optional[int] = flag_parser.option(
        None, "shards per split (0: automatic)", minimum=0, maximum=10000, default_text="one per ~32 MiB of records"
    )
    augment_copies: int = flag_parser.option(
        0, "extra augmented records per train example (flip, scale-and-crop, shift, colour)", minimum=0, maximum=64
    )
    val_fraction: float = flag_parser.option(
        0.1,
        "Pet: fraction of trainval carved out as val, by a stable hash of the id",
        minimum=0.0,
        maximum=1.0,
        exclusive_max=True,
    )
    test_fraction: float = flag_parser.option(
        0.2,
        "Pet without trainval.txt/test.txt: fraction of ids hashed into test (with --val_fraction, under 1)",
        minimum=0.0,
        maximum=1.0,
        exclusive_max=True,
    )
    seed: int = flag_parser.option(0, "seed of the offline augmentation")
    resize_mode: str = flag_parser.option(
        "stretch",
        "stretch to the size, or pad (keep aspect, pad images with 0 and masks with 255)",
        choices=RESIZE_MODES,
        advanced=True,
    )
    label_mode: str = flag_parser.option(
        "trimap",
        "Pet: trimap (pet/background/border), binary (pet/background), "
        "species (background/cat/dog); Cityscapes always uses the 19 trainIds",
        choices=schema_labels.PET_LABEL_MODES,
    )
    image_format: str = flag_parser.option(
        "auto",
        "record image encoding; auto keeps the source's codec family: jpeg "
        "for Pet (JPEG photos), png for Cityscapes (PNG frames)",
        choices=("auto", "png", "jpeg"),
        advanced=True,
    )
    jpeg_quality: int = flag_parser.option(
        95, "JPEG quality, with --image_format jpeg", minimum=1, maximum=100, advanced=True
    )
    analyze_batch_size: int = flag_parser.option(
        64,
        "JPEG records decoded per graph call for the statistics (PNG records need no decode)",
        minimum=1,
        advanced=True,
    )

    def __post_init__(self) -> None:
        # The spellings of "the same thing", resolved once, whether the config comes from flags or from Python:
        # a folder with or without its trailing "/", num_shards 0 → None, image_format auto → a codec, and an
        # image size given as a list (JSON, a notebook) → the tuple the flag parses to.
        for name in ("input_dir", "output_dir"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, value.rstrip("/") or "/")
        if isinstance(self.image_size, list):
            object.__setattr__(self, "image_size", tuple(self.image_size))
        if self.num_shards == 0:
            object.__setattr__(self, "num_shards", None)
        if self.image_format == "auto" and self.dataset in datasets.names():
            object.__setattr__(self, "image_format", record_image_format(self.dataset, self.image_format))

    def source_dataset(self) -> "Dataset":
        """The dataset as ``input_dir`` defines it (``Dataset.with_source``: ``folder`` reads its classes.json),
        read once per config. Raises ``DataError`` (one line) when the source's label table is missing or bad."""
        bound = self.__dict__.get("_source_dataset")
        if bound is None:
            from pipelines.datasets.discovery import BeamFiles  # Beam: only once the job runs, never for --help

            try:
                bound = datasets.get(self.dataset).with_source(self.input_dir, BeamFiles())
            except ValueError as err:
                raise DataError(str(err)) from None
            object.__setattr__(self, "_source_dataset", bound)
        return bound

    @property
    def label_spec(self) -> schema_labels.LabelSpec:
        return self.source_dataset().label_spec(self.label_mode)

    def record_options(self) -> "RecordOptions":
        """What making one example's records needs (``transforms.MakeRecords``)."""
        # Function-level: records.py imports Beam and PIL; a config is built (and --help answered) without them.
        from pipelines.preprocess.records import RecordOptions

        return RecordOptions(
            dataset=self.source_dataset(),
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            label_mode=self.label_mode,
            image_format=self.image_format,
            jpeg_quality=self.jpeg_quality,
            augment_copies=self.augment_copies,
            seed=self.seed,
            ignore_label=schema_labels.IGNORE_LABEL,
        )


def record_image_format(dataset: str, requested: str) -> str:
    """The record image encoding for ``--image_format``: ``auto`` is the source's codec family, the dataset's
    ``record_image_format``."""
    return datasets.get(dataset).record_image_format if requested == "auto" else requested


def build_arg_parser() -> flag_parser.Parser:
    """The job's flags (one per ``PreprocessConfig`` field) and the logging flags; every other flag must be a
    Beam option (checked from the installed Beam's flag list, without importing Beam)."""
    return job_parser(NAME, PreprocessConfig)


def check_config(config: PreprocessConfig) -> None:
    """``UsageError`` for a value outside its flag's range or choices, or flags that do not go together. Reads
    no storage and imports no Beam."""
    if not isinstance(config.image_size, tuple) or len(config.image_size) != 2:
        raise UsageError(f"--image_size must be (H, W), got {config.image_size!r}")
    try:
        _image_size(",".join(str(int(n)) for n in config.image_size))
    except argparse.ArgumentTypeError as e:
        raise UsageError(str(e)) from None
    flag_parser.check_fields(config)
    if config.val_fraction + config.test_fraction >= 1.0:
        raise UsageError("--test_fraction must leave room for train with --val_fraction (their sum under 1)")
    dataset = datasets.get(config.dataset)
    if not dataset.label_modes and config.label_mode != flag_parser.default_of(PreprocessConfig, "label_mode"):
        with_modes = " and ".join(datasets.get(n).title for n in datasets.names() if datasets.get(n).label_modes)
        raise UsageError(f"--label_mode applies to {with_modes} only; {dataset.fixed_labels}")


def from_args(argv: Sequence[str]) -> tuple[PreprocessConfig, list[str]]:
    """A command line → (``PreprocessConfig``, the flags that are not the job's, for Beam), without touching
    storage or importing Beam (what ``--help`` and a bad flag need). Raises ``UsageError`` (``HelpShown`` for
    --help). ``run`` checks the rest (folders, the Beam flags' values, the input)."""
    args, pipeline_args = build_arg_parser().parse_known_args(list(argv))
    config = flag_parser.config_from(PreprocessConfig, args)
    check_config(config)
    return config, list(pipeline_args)

"""``JOB/model``: the contract between the trainer's export and inference, defined once.

A segflow model is a SavedModel with the four signatures below, and ``segflow_model.json`` next to it
(``ModelInfo``: the label facts inference needs without loading TensorFlow). ``trainer.export`` builds the
signatures from ``SIGNATURES`` and writes ``ModelInfo.to_json``; ``pipelines.infer`` reads ``ModelInfo.from_json``
and checks the loaded signatures against ``SIGNATURES``. Neither side spells a name, dtype or shape of its own.

Shapes are written with symbolic dimensions, resolved per model by ``SignatureContract.resolve``:
  ``MODEL_H``/``MODEL_W`` the records' (and model input's) size, ``metadata.json`` ``image_size``;
  ``CLASSES`` the number of classes; ``BATCH``, ``HEIGHT``, ``WIDTH`` vary per call (``None`` in a TensorSpec).

  ``preprocess(image_bytes: string [])`` → ``image`` uint8 [MODEL_H, MODEL_W, 3] (decoded and resized exactly as
      in training), ``height``/``width`` int32 [] (the original size);
  ``predict_resized(images: uint8 [BATCH, MODEL_H, MODEL_W, 3])`` → ``probabilities`` float32
      [BATCH, MODEL_H, MODEL_W, CLASSES];
  ``postprocess(probabilities [MODEL_H, MODEL_W, CLASSES], height, width)`` → ``class_ids`` int32 [HEIGHT, WIDTH]
      and ``probabilities`` float32 [HEIGHT, WIDTH, CLASSES] (scores upsampled first, then the argmax);
  ``serving_default(image_bytes: string [BATCH])`` = the three above composed → ``class_ids`` int32
      [BATCH, HEIGHT, WIDTH] (padding = ignore label), ``probabilities`` float32 [BATCH, HEIGHT, WIDTH, CLASSES]
      (padding 0), ``height``/``width`` int32 [BATCH]; each image's results at its own size, top-left aligned.

``MODEL_FORMAT_VERSION`` changes whenever any of this changes; a reader refuses another version in one line
rather than misreading a model. Version 1 is also what segflow wrote before ``format_version`` existed (an info
file without the field): the same fields and signatures.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence, Union

from schemas import strict_json

MODEL_INFO_FILE = "segflow_model.json"
SAVED_MODEL_FILE = "saved_model.pb"
MODEL_FORMAT_VERSION = 1

# Symbolic dimensions (see the module docstring).
BATCH, HEIGHT, WIDTH = "BATCH", "HEIGHT", "WIDTH"
MODEL_H, MODEL_W, CLASSES = "MODEL_H", "MODEL_W", "CLASSES"
Dim = Union[int, str]

SERVING_DEFAULT = "serving_default"
PREPROCESS = "preprocess"
PREDICT_RESIZED = "predict_resized"
POSTPROCESS = "postprocess"


class ModelContractError(ValueError):
    """A model that does not follow this contract (the message is one line that says what to do)."""


@dataclasses.dataclass(frozen=True)
class TensorContract:
    """One named input or output of a signature: its dtype (a numpy/TensorFlow dtype name) and shape."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def resolve(self, image_size: Sequence[int], num_classes: int) -> list[Optional[int]]:
        """The shape with this model's sizes; ``None`` for the dimensions that vary per call."""
        sizes = {MODEL_H: int(image_size[0]), MODEL_W: int(image_size[1]), CLASSES: int(num_classes)}
        return [d if isinstance(d, int) else sizes.get(d) for d in self.shape]


@dataclasses.dataclass(frozen=True)
class SignatureContract:
    name: str
    inputs: tuple[TensorContract, ...]
    outputs: tuple[TensorContract, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


def _t(name: str, dtype: str, *shape: Dim) -> TensorContract:
    return TensorContract(name, dtype, tuple(shape))


SIGNATURES: dict[str, SignatureContract] = {
    s.name: s
    for s in (
        SignatureContract(
            PREPROCESS,
            inputs=(_t("image_bytes", "string"),),
            outputs=(_t("image", "uint8", MODEL_H, MODEL_W, 3), _t("height", "int32"), _t("width", "int32")),
        ),
        SignatureContract(
            PREDICT_RESIZED,
            inputs=(_t("images", "uint8", BATCH, MODEL_H, MODEL_W, 3),),
            outputs=(_t("probabilities", "float32", BATCH, MODEL_H, MODEL_W, CLASSES),),
        ),
        SignatureContract(
            POSTPROCESS,
            inputs=(
                _t("probabilities", "float32", MODEL_H, MODEL_W, CLASSES),
                _t("height", "int32"),
                _t("width", "int32"),
            ),
            outputs=(_t("class_ids", "int32", HEIGHT, WIDTH), _t("probabilities", "float32", HEIGHT, WIDTH, CLASSES)),
        ),
        SignatureContract(
            SERVING_DEFAULT,
            inputs=(_t("image_bytes", "string", BATCH),),
            outputs=(
                _t("class_ids", "int32", BATCH, HEIGHT, WIDTH),
                _t("probabilities", "float32", BATCH, HEIGHT, WIDTH, CLASSES),
                _t("height", "int32", BATCH),
                _t("width", "int32", BATCH),
            ),
        ),
    )
}


# TensorFlow Lite files (``python -m trainer.task --tflite``), written in JOB beside ``model/`` (not inside it: the
# SavedModel folder stays a SavedModel): type -> file name. Each has one signature, ``TFLITE_SIGNATURE``: input
# ``images`` [1, MODEL_H, MODEL_W, 3] (RGB 0..255, the normalisation inside), outputs ``class_ids`` int32
# [1, MODEL_H, MODEL_W] and ``probabilities`` [1, MODEL_H, MODEL_W, CLASSES]; ``TfliteInfo`` gives dtypes and the
# int8 file's quantisation.
TFLITE_TYPES = ("float32", "float16", "int8")
TFLITE_FILES = {"float32": "model.tflite", "float16": "model_fp16.tflite", "int8": "model_int8.tflite"}
TFLITE_SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class TfliteTensor:
    """One input or output of a TFLite file. ``scale``/``zero_point``: a quantised tensor's parameters (real value
    = scale * (q - zero_point)); None for float and integer-id tensors."""

    name: str
    dtype: str  # numpy name: uint8, int32, float32
    shape: list[int]
    scale: Optional[float] = None
    zero_point: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class TfliteFile:
    type: str  # one of TFLITE_TYPES
    file: str  # relative to JOB (the folder that holds model/)
    bytes: int
    inputs: list[TfliteTensor]
    outputs: list[TfliteTensor]


@dataclasses.dataclass(frozen=True)
class TfliteInfo:
    """``segflow_model.json``'s ``tflite``: what a mobile developer needs to run the files. Feed RGB 0..255 resized
    to ``input_size`` (``resize_mode``, as preprocess resized the training images); the model applies
    ``normalization`` itself: (pixel - channel_mean) / channel_std per RGB channel (``tft``: the training split's
    statistics; ``mobilenetv2``: 127.5/127.5; ``vgg16``: ImageNet means in BGR order, std 1)."""

    input_size: list[int]  # [height, width]
    normalization: str
    channel_mean: list[float]
    channel_std: list[float]
    files: list[TfliteFile]
    signature: str = TFLITE_SIGNATURE

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The contents of ``JOB/model/segflow_model.json``: label facts copied from ``metadata.json``, plus the
    network's name and the contract's version."""

    dataset: str
    label_mode: str
    num_classes: int
    class_names: list[str]
    ignore_label: int
    image_size: list[int]  # [height, width] of the model input (the records' size)
    resize_mode: str
    model: str  # the network (``trainer.task --model``)
    format_version: int = MODEL_FORMAT_VERSION
    # metadata.json's ``label_table`` (palette, native values, instance classes: ``schemas.labels``), copied;
    # None in an info file written before it (the dataset's own table applies then).
    label_table: Optional[dict] = None
    # The TFLite files exported beside the SavedModel (``TfliteInfo.to_dict``); None when none were.
    tflite: Optional[dict] = None

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.num_classes, int) and self.num_classes >= 1):
            problems.append(f"num_classes {self.num_classes!r} is not a positive integer")
        elif len(self.class_names) != self.num_classes:
            problems.append(f"{len(self.class_names)} class_names for {self.num_classes} classes")
        if len(self.image_size) != 2 or not all(isinstance(s, int) and s >= 1 for s in self.image_size):
            problems.append(f"image_size {self.image_size!r} is not [height, width]")
        if problems:
            raise ModelContractError(f"{MODEL_INFO_FILE}: {'; '.join(problems)}")

    def to_json(self) -> str:
        return strict_json.dumps(dataclasses.asdict(self), what=MODEL_INFO_FILE) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MODEL_INFO_FILE) -> "ModelInfo":
        """Parses and checks ``segflow_model.json``; ``ModelContractError`` (one line, naming ``where``) for a
        file that is not JSON, of another format version, or lacks a field."""
        try:
            raw = json.loads(text)
        except ValueError as err:
            raise ModelContractError(f"{where} is not JSON ({err}): was it written by segflow's trainer?") from None
        if not isinstance(raw, dict):
            raise ModelContractError(f"{where} is not a JSON object: was it written by segflow's trainer?")
        # Version 1 is what segflow wrote before the field existed (the same fields and signatures): such exports
        # keep working. A later version is written with its number, and refused here.
        version = raw.setdefault("format_version", 1)
        if version != MODEL_FORMAT_VERSION:
            raise ModelContractError(
                f"{where} is model format version {version}, this segflow reads version {MODEL_FORMAT_VERSION}: "
                f"export the model again with this segflow's trainer (python -m trainer.task)"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted({f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING} - raw.keys())
        if missing:
            raise ModelContractError(f"{where} lacks {missing}: was it written by segflow's trainer?")
        unknown = sorted(raw.keys() - fields)
        if unknown:
            raise ModelContractError(f"{where} has unknown fields {unknown}: was it written by segflow's trainer?")
        try:
            return cls(**raw)
        except ModelContractError as err:
            raise ModelContractError(str(err).replace(MODEL_INFO_FILE, where, 1)) from None


def _facts(specs: object) -> dict[str, tuple[str, Optional[list[Optional[int]]]]]:
    """``{name: (dtype name, shape)}`` of a signature's ``{name: TensorSpec}`` (read by attribute: no TensorFlow
    import here, so the launcher can read this module without it)."""
    out = {}
    for name, spec in dict(specs).items():
        shape = spec.shape
        out[name] = (spec.dtype.name, None if shape.rank is None else shape.as_list())
    return out


def check_signatures(signatures: object, info: ModelInfo, where: str) -> None:
    """Raises ``ModelContractError`` (one line) unless the loaded SavedModel's ``signatures`` (a mapping of name →
    concrete function, as ``tf.saved_model.load(...).signatures``) are exactly ``SIGNATURES`` at ``info``'s sizes:
    the same names, the same input and output names, dtypes and shapes."""
    missing = [name for name in SIGNATURES if name not in signatures]
    if missing:
        raise ModelContractError(
            f"{where} has no signature {', '.join(map(repr, missing))}: export the model again "
            f"with this segflow's trainer"
        )
    for name, expected in SIGNATURES.items():
        function = signatures[name]
        found = {
            "inputs": _facts(function.structured_input_signature[1]),
            "outputs": _facts(function.structured_outputs),
        }
        for part in ("inputs", "outputs"):
            wanted = {t.name: (t.dtype, t.resolve(info.image_size, info.num_classes)) for t in getattr(expected, part)}
            differ = sorted(k for k in wanted.keys() | found[part].keys() if wanted.get(k) != found[part].get(k))
            if differ:
                shown = "; ".join(
                    f"{k!r} is {found[part].get(k, 'absent')}, the contract says {wanted.get(k, 'absent')}"
                    for k in differ
                )
                raise ModelContractError(
                    f"{where}: signature {name!r} {part}: {shown}: export the model again with this segflow's trainer"
                )

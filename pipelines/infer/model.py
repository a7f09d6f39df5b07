"""The trained model as inference sees it: located through Beam FileSystems, loaded once per process.

The trainer exports ``JOB/model``: a SavedModel with four signatures and ``segflow_model.json`` next to it, both
defined by ``schemas.model_contract`` (names, dtypes, shapes, the info file's fields and version). Inference
uses the model's own pre/postprocessing, so there is one source of truth and no train/serve skew.

This module does not import ``trainer``: the SavedModel and its JSON are the whole interface.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.utils import shared

from pipelines.common import storage
from pipelines.common.runner import leave_parallelism_to_beam
from pipelines.infer.options import MODEL_CALLS
from pipelines.shared.tf_paths import tf_readable_local_dir
from schemas import model_contract as contract
from schemas.errors import DataError
from schemas.model_contract import ModelInfo


class ModelNotFound(DataError, ValueError):
    """``--model_dir`` does not hold a segflow SavedModel, or it does not load (a one-line message says what is
    missing or broken). A ``DataError``: wherever it is raised (the launcher's up-front load, a worker's
    ``setup()``), ``main`` reports it as one line, exit status 1."""


def read_model_info(model_dir: str) -> ModelInfo:
    """Reads ``MODEL_DIR/segflow_model.json`` through FileSystems (local or gs://); checks the SavedModel is there.

    Raises ``ModelNotFound`` with a one-line reason (also for an info file of another format version).
    """
    model_dir = model_dir.rstrip("/")
    info_path = FileSystems.join(model_dir, contract.MODEL_INFO_FILE)
    for required in (info_path, FileSystems.join(model_dir, contract.SAVED_MODEL_FILE)):
        try:
            exists = FileSystems.exists(required)
        except Exception as err:  # noqa: BLE001 - storage errors become the one-line reason
            raise ModelNotFound(f"cannot read model at {model_dir}: {type(err).__name__}: {err}") from err
        if not exists:
            raise ModelNotFound(
                f"{required} not found: --model_dir must be the model/ folder a segflow "
                f"training job exported (JOB/model)"
            )
    try:
        text = storage.read_bytes(info_path).decode("utf-8")
    except Exception as err:  # noqa: BLE001
        raise ModelNotFound(f"cannot read {info_path}: {err}") from err
    try:
        return ModelInfo.from_json(text, where=info_path)
    except contract.ModelContractError as err:
        raise ModelNotFound(str(err)) from None


def tf_error_reason(message: str) -> str:
    """The human part of a TensorFlow op error ("Unknown image file format…"), without graph/node noise."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[{{node", "File ", "[Op:")
    useful = [line for line in lines if not line.startswith(noise)]
    return (useful[0] if useful else (lines[0] if lines else "unknown error"))[:300]


_LOCALISE_LOCK = threading.Lock()


def localize_model_dir(model_dir: str, cache_dir: Optional[str] = None) -> str:
    """A local directory holding ``model_dir``'s files; ``model_dir`` itself when it is already local.

    Remote models (gs:// …) are copied through Beam's FileSystems (which honour ``STORAGE_EMULATOR_HOST`` and the
    clients' retries) into ``cache_dir/<sha1 of the URL>``: TensorFlow's own GCS filesystem cannot be pointed at
    an emulator and would be a second credential path. The copy lands in a temporary folder and is renamed into
    place, so concurrent worker processes never load a half-copied model.
    """
    model_dir = model_dir.rstrip("/")
    if "://" not in model_dir or model_dir.startswith("file://"):
        # TensorFlow's variable reader globs: a folder named m[1] goes through a plain-named link.
        return tf_readable_local_dir(storage.local_path(model_dir), prefix="segflow-model-")
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "segflow-models")
    target = os.path.join(cache_dir, hashlib.sha1(model_dir.encode("utf-8")).hexdigest()[:16])
    with _LOCALISE_LOCK:
        if os.path.exists(os.path.join(target, "saved_model.pb")):
            return target
        os.makedirs(cache_dir, exist_ok=True)
        staging = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        prefix = model_dir + "/"
        # Listed literally: glob characters in --model_dir are part of its name (JOB[1] is not JOB1).
        matches = [f for f in storage.list_files(model_dir) if f.path.startswith(prefix)]
        if not matches:
            raise ModelNotFound(f"no files under {model_dir}")
        for listed in matches:
            local = os.path.join(staging, *listed.path[len(prefix) :].split("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with FileSystems.open(listed.path, mime_type="application/octet-stream") as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        try:
            os.rename(staging, target)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return target


class SegflowModel:
    """A loaded segflow SavedModel with numpy in/out wrappers around its signatures.

    Methods take and return numpy so they can be called through Beam's cross-process shared handles
    (``--model_copies``) as well as in-process.
    """

    def __init__(self, model_dir: str, cache_dir: Optional[str] = None):
        import tensorflow as tf  # imported here: the launcher process never needs TensorFlow

        self.model_dir = model_dir
        local = localize_model_dir(model_dir, cache_dir)
        self.info = read_model_info(model_dir)
        try:
            self._module = tf.saved_model.load(local)
        except Exception as err:  # noqa: BLE001 - a damaged copy fails in many ways; all are the model's
            # e.g. IndexError "Read less bytes than requested" (variables cut short), DataLossError, a bad proto
            reason = tf_error_reason(getattr(err, "message", None) or str(err) or type(err).__name__)
            raise ModelNotFound(
                f"the model in {model_dir} does not load ({type(err).__name__}: {reason}): its files are "
                f"incomplete or damaged (an interrupted copy?); copy JOB/model again whole, or export it again"
            ) from None
        try:
            contract.check_signatures(self._module.signatures, self.info, model_dir)
        except contract.ModelContractError as err:
            raise ModelNotFound(str(err)) from None
        self._pre = self._module.signatures[contract.PREPROCESS]
        self._predict = self._module.signatures[contract.PREDICT_RESIZED]
        self._post = self._module.signatures[contract.POSTPROCESS]
        self._tf = tf

    def preprocess(self, image_bytes: bytes) -> tuple[np.ndarray, int, int]:
        """Encoded bytes → (uint8 [Hm, Wm, 3] model input, original height, original width).

        Raises ``ValueError`` with a short reason when the bytes are not a decodable image.
        """
        tf = self._tf
        try:
            out = self._pre(image_bytes=tf.constant(image_bytes, dtype=tf.string))
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, tf.errors.OutOfRangeError) as err:
            raise ValueError(f"not a decodable image: {tf_error_reason(err.message or str(err))}") from None
        return out["image"].numpy(), int(out["height"].numpy()), int(out["width"].numpy())

    def predict_resized(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, Hm, Wm, 3] → float32 [B, Hm, Wm, C] class probabilities."""
        return self._predict(images=self._tf.constant(images, dtype=self._tf.uint8))["probabilities"].numpy()

    def postprocess(
        self, probabilities: np.ndarray, height: int, width: int, with_probabilities: bool = True
    ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """float32 [Hm, Wm, C] → (int32 [height, width] class ids, float32 [height, width, C] probabilities, or
        None without ``with_probabilities``: that copy is 12 bytes a pixel, and only instances need it)."""
        tf = self._tf
        out = self._post(
            probabilities=tf.constant(probabilities, dtype=tf.float32),
            height=tf.constant(height, dtype=tf.int32),
            width=tf.constant(width, dtype=tf.int32),
        )
        return out["class_ids"].numpy(), (out["probabilities"].numpy() if with_probabilities else None)

    def serve(self, image_bytes: Sequence[bytes]) -> dict[str, np.ndarray]:
        """The ``serving_default`` signature on a batch of encoded images (for baselines and checks)."""
        tf = self._tf
        out = self._module.signatures[contract.SERVING_DEFAULT](
            image_bytes=tf.constant(list(image_bytes), dtype=tf.string)
        )
        return {k: v.numpy() for k, v in out.items()}


def load_model_once(model_dir: str, cache_dir: Optional[str] = None) -> ModelInfo:
    """Loads ``model_dir`` as every worker will (``SegflowModel``) and returns its info, or raises
    ``ModelNotFound``: the launcher calls it before it reads any input or clears any output, so an unusable
    model (a variables file cut short, a plain SavedModel beside a copied ``segflow_model.json``) is one line
    and nothing is touched. The loaded model is not kept: workers load their own."""
    return SegflowModel(model_dir, cache_dir).info


def acquire_model(handle: shared.Shared, model_dir: str, cache_dir: Optional[str] = None) -> SegflowModel:
    """The process-wide ``SegflowModel`` for ``model_dir`` (loaded on first use, then shared by every DoFn).

    ``Shared`` keeps only a weak reference to what it hands out: the caller must hold the returned model (the
    DoFns keep it as an attribute) or the next ``acquire`` loads the weights again.
    """
    return handle.acquire(lambda: SegflowModel(model_dir, cache_dir), tag=model_dir)


def predict_resized_fn(
    model: SegflowModel,
    batch: Sequence[np.ndarray],
    inference_args: Optional[dict] = None,
    model_id: Optional[str] = None,
    pad_to: Optional[int] = None,
) -> list[PredictionResult]:
    """RunInference ``inference_fn``: ``predict_resized`` over a batch.

    Every element already has the model's fixed input size (the model's ``preprocess`` made it), so the batch
    always stacks, whatever the original sizes were.

    ``pad_to``: one model call for the whole batch, zero-padded to ``pad_to`` images. Beam forms batches of
    varying sizes, differently from run to run, and a convolution's result can differ in the last float bit
    with the batch size it ran in (its kernel choice depends on the shape). At one fixed shape an image's
    result does not depend on its neighbours, since each output element reduces over that image alone, but
    CPU kernels tile a batch by rows, so a score can still differ in its last bit with the image's slot (a
    test compares slots to float rounding): a pixel whose two best classes tie to that bit may differ between
    runs that batch differently. The pad costs compute only for the last batch of a bundle. ``None``: one call
    per image (byte-identical however the batches form; ~2x the CPU for the model step here).
    The example is not echoed back (not needed downstream).
    """
    if pad_to is not None:
        if len(batch) > pad_to:
            raise ValueError(f"batch of {len(batch)} images exceeds the padded batch size {pad_to}")
        first = np.asarray(batch[0])
        images = np.zeros((pad_to,) + first.shape, dtype=first.dtype)  # the padding is what is left at zero
        for i, image in enumerate(batch):
            images[i] = image
        probabilities = list(model.predict_resized(images)[: len(batch)])
    else:
        probabilities = [model.predict_resized(np.asarray(x)[np.newaxis])[0] for x in batch]
    return [PredictionResult(None, p, model_id) for p in probabilities]


class SegflowModelHandler(ModelHandler[np.ndarray, PredictionResult, SegflowModel]):
    """Beam RunInference model handler for a segflow TensorFlow SavedModel.

    Built on Beam's ``ModelHandler`` base rather than ``tensorflow_inference.TFModelHandlerNumpy``: that module
    imports ``tensorflow_hub`` at import time and loads models with ``tf.keras.models.load_model``, which Keras 3
    refuses for plain SavedModels; segflow models are SavedModels with named signatures, and remote ones are
    copied locally through Beam's FileSystems first (see ``localize_model_dir``). Batching bounds,
    ``model_copies`` and ``large_model`` (cross-process sharing) are the base handler's.
    """

    def __init__(
        self,
        model_dir: str,
        *,
        cache_dir: Optional[str] = None,
        shared_handle: Optional[shared.Shared] = None,
        min_batch_size: int = 1,
        max_batch_size: int = 8,
        model_copies: Optional[int] = None,
        large_model: bool = False,
        model_calls: str = "batch",
    ):
        if model_calls not in MODEL_CALLS:
            raise ValueError(f"model_calls must be one of {MODEL_CALLS}, got {model_calls!r}")
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            model_copies=model_copies,
            large_model=large_model,
        )
        self._model_uri = model_dir
        self._cache_dir = cache_dir
        self._shared_handle = shared_handle
        self._pad_to = max_batch_size if model_calls == "batch" else None

    def load_model(self) -> SegflowModel:
        leave_parallelism_to_beam()  # before the model's first op, whichever DoFn of the stage is set up first
        if self._shared_handle is not None and not self.share_model_across_processes():
            # Same object as the pre/postprocessing DoFns of this process: one copy of the weights.
            return acquire_model(self._shared_handle, self._model_uri, self._cache_dir)
        return SegflowModel(self._model_uri, self._cache_dir)

    def run_inference(
        self, batch: Sequence[np.ndarray], model: SegflowModel, inference_args: Optional[dict[str, Any]] = None
    ) -> Iterable[PredictionResult]:
        return predict_resized_fn(model, batch, inference_args, self._model_uri, self._pad_to)

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(int(np.asarray(x).nbytes) for x in batch)

    def get_metrics_namespace(self) -> str:
        return "segflow_infer"

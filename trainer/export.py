"""``JOB/model``: a SavedModel serving encoded image bytes, with the training graph's own preprocessing.

The signatures, their tensors and ``segflow_model.json`` are ``schemas.model_contract`` (the interface
``pipelines.infer`` codes against); this module builds them from it. Decoding/resizing is
``pipelines.shared.pixels_graph`` (the graph twin of preprocess's); ``predict_resized`` calls the very Keras model that
was trained, whose first layer is the tensorflow-transform graph from ``DST/transform_fn``
(``trainer.normalization``): no train/serve skew.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from pipelines.shared import pixels_graph
from pipelines.shared.tf_paths import join as join_path
from schemas import model_contract as contract
from trainer import data_dir

logger = logging.getLogger(__name__)

MODEL_INFO_FILE = contract.MODEL_INFO_FILE  # kept for callers of the old name


class _NotSaved:
    """Holds the Keras model out of the SavedModel's object graph (tf.Module tracks only trackable attributes).

    Tracked, the model would be saved as Keras objects too, with a traced call function for every layer: 237
    functions instead of the signatures' few, a 3x larger saved_model.pb, and 0.85 s instead of 0.21 s to load
    in every inference process, for objects nothing reads (the signatures are the whole interface). Its
    variables are tracked on their own. A transform that brought lookup tables would make ``save`` fail
    loudly on an untracked resource; they would then be tracked the same way.
    """

    def __init__(self, model: keras.Model):
        self.model = model


class SegmentationServer(tf.Module):
    """Holds the model (uint8 images → tft normalisation → logits); its tf.functions are the signatures."""

    def __init__(
        self, model: keras.Model, image_size: Sequence[int], resize_mode: str, num_classes: int, ignore_label: int = 255
    ):
        super().__init__(name="segflow_server")
        self._keras = _NotSaved(model)
        self.model_variables = list(model.variables)
        self._size = (int(image_size[0]), int(image_size[1]))
        self._mode = resize_mode
        self._num_classes = int(num_classes)
        self._ignore = int(ignore_label)
        # autograph=False: the signatures are graph ops already (tf.switch_case, tf.while_loop, tf.map_fn; the
        # Python ``if``s test static settings), so converting their source to graph code (and the Keras layers'
        # calls, which follow the caller's setting) only costs CPU: ~2/3 of the export's for a small U-Net.
        self.preprocess = self._function(self._preprocess, contract.PREPROCESS)
        self.predict_resized = self._function(self._predict_resized, contract.PREDICT_RESIZED)
        self.postprocess = self._function(self._postprocess, contract.POSTPROCESS)
        self.serve = self._function(self._serve, contract.SERVING_DEFAULT)

    def _function(self, python_function, signature: str):
        return tf.function(python_function, input_signature=self._specs(signature), autograph=False)

    def _specs(self, signature: str, part: str = "inputs") -> list[tf.TensorSpec]:
        """The contract's tensors of ``signature`` as TensorSpecs at this model's sizes (unnamed: the tf.function's
        argument names, which are the contract's, name the signature's inputs)."""
        return [
            tf.TensorSpec(t.resolve(self._size, self._num_classes), tf.as_dtype(t.dtype))
            for t in getattr(contract.SIGNATURES[signature], part)
        ]

    def _preprocess(self, image_bytes):
        # Decoded as preprocess decoded the training files (JPEGs downscaled while decoding, PIL's IDCT), then
        # resized with the records' geometry: the pixels the network was trained on.
        image, height, width = pixels_graph.decode_image_for_model(image_bytes, self._size)
        resized = pixels_graph.resize_image(image, self._size, self._mode, content_hw=(height, width))
        return {"image": resized, "height": height, "width": width}

    def _predict_resized(self, images):
        logits = self._keras.model(images, training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    def _postprocess(self, probabilities, height, width):
        restored = pixels_graph.restore_size(probabilities, height, width, self._size, self._mode)
        return {"class_ids": pixels_graph.argmax_channels(restored), "probabilities": restored}

    def _serve(self, image_bytes):
        c = self._num_classes
        pre = tf.map_fn(
            self.preprocess,
            image_bytes,
            fn_output_signature=dict(
                zip(contract.SIGNATURES[contract.PREPROCESS].output_names, self._specs(contract.PREPROCESS, "outputs"))
            ),
        )
        probs = self.predict_resized(pre["image"])["probabilities"]
        max_h = tf.reduce_max(pre["height"])
        max_w = tf.reduce_max(pre["width"])

        def post_one(args):
            p, height, width = args
            out = self.postprocess(p, height, width)
            pad = [[0, max_h - height], [0, max_w - width]]
            ids = tf.pad(out["class_ids"], pad, constant_values=self._ignore)
            prob = tf.pad(out["probabilities"], pad + [[0, 0]], constant_values=0.0)
            return ids, prob

        ids, prob = tf.map_fn(
            post_one,
            (probs, pre["height"], pre["width"]),
            fn_output_signature=(tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None, c], tf.float32)),
        )
        return {"class_ids": ids, "probabilities": prob, "height": pre["height"], "width": pre["width"]}


def model_info(info: data_dir.DatasetInfo, model_name: str, tflite: Optional[dict] = None) -> contract.ModelInfo:
    """What ``segflow_model.json`` holds: label facts copied from metadata.json, the network name, and the TFLite
    files exported beside the SavedModel (``contract.TfliteInfo.to_dict``), if any."""
    meta = info.metadata
    return contract.ModelInfo(
        dataset=meta.dataset,
        label_mode=meta.label_mode,
        num_classes=int(meta.num_classes),
        class_names=list(meta.class_names),
        ignore_label=int(meta.ignore_label),
        image_size=[int(s) for s in meta.image_size],
        resize_mode=meta.resize_mode,
        model=model_name,
        tflite=tflite,
        label_table=meta.label_table,
    )


def export_model(
    model: keras.Model,
    info: data_dir.DatasetInfo,
    export_dir: str,
    model_name: str,
    info_path: Optional[str] = None,
    tflite: Optional[dict] = None,
) -> str:
    """Writes the SavedModel and ``segflow_model.json`` to ``export_dir`` (local or gs://); returns it.

    ``model``: uint8 ``[B, H, W, 3]`` → logits, the tft layer included (``normalization.with_transform``).
    ``info_path``: where ``segflow_model.json`` goes (default: in ``export_dir``); the trainer writes it aside
    when it exports in place, and puts it into ``export_dir`` last, as the export's completion marker. Nothing
    already in ``export_dir`` is deleted here: the caller writes into a fresh folder, or replaces the previous
    export's files by its record of them (``pipelines.shared.ownership``).
    """
    meta = info.metadata
    server = SegmentationServer(model, meta.image_size, meta.resize_mode, meta.num_classes, meta.ignore_label)
    tf.saved_model.save(
        server,
        export_dir,
        signatures={
            contract.SERVING_DEFAULT: server.serve,
            contract.PREPROCESS: server.preprocess,
            contract.PREDICT_RESIZED: server.predict_resized,
            contract.POSTPROCESS: server.postprocess,
        },
    )
    path = info_path or join_path(export_dir, contract.MODEL_INFO_FILE)
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(model_info(info, model_name, tflite).to_json())
    logger.info("exported SavedModel to %s", export_dir)
    return export_dir

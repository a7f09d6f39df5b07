"""Where pretrained encoder weights come from, and one line that says what to do when they cannot be loaded.

Nothing here downloads: ``imagenet`` is Keras' own ``weights="imagenet"`` (download once, then the cache
``~/.keras/models/``); a path is a local copy of the same notop file for machines that cannot reach Keras'
weight store. This module only names the file Keras would fetch, for the error line.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence


class BackboneWeightsError(ValueError):
    """``--backbone_weights`` could not be loaded; the message says which file to fetch and how to pass it."""


_KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"
# The input sizes MobileNetV2 has ImageNet weights for (Keras loads the 224 ones for any other).
_MOBILENETV2_ROWS = (96, 128, 160, 192, 224)


def weights_file(encoder: str, input_shape: Sequence[int], alpha: float = 1.0) -> tuple[str, str]:
    """(file name, URL) of the notop ImageNet weights Keras loads for ``encoder`` at ``input_shape``."""
    if encoder == "vgg16":
        name = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return name, f"{_KERAS_APPLICATIONS}vgg16/{name}"
    rows = (
        int(input_shape[0])
        if int(input_shape[0]) == int(input_shape[1]) and int(input_shape[0]) in _MOBILENETV2_ROWS
        else 224
    )
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return name, f"{_KERAS_APPLICATIONS}mobilenet_v2/{name}"


@contextlib.contextmanager
def explained(encoder: str, source: Optional[str], input_shape: Sequence[int], alpha: float = 1.0) -> Iterator[None]:
    """Turns any failure to load ``source`` into the encoder (a missing or foreign file, a failed download)
    into one ``BackboneWeightsError`` line: what failed, which file to fetch, and to pass it as PATH."""
    if not source:
        yield
        return
    name, url = weights_file(encoder, input_shape, alpha)
    fetch = f"fetch {url} and pass --backbone_weights PATH_TO/{name}"
    try:
        yield
    except BackboneWeightsError:
        raise
    except Exception as e:  # Keras raises ValueError, OSError, urllib's URLError or a bare Exception here
        why = " ".join(str(e).split()) or type(e).__name__
        if len(why) > 200:
            why = why[:200] + "..."
        if source == "imagenet":
            raise BackboneWeightsError(
                f"could not get the ImageNet {encoder} weights through Keras ({why}): {fetch}"
            ) from None
        raise BackboneWeightsError(
            f"--backbone_weights {source} is not a loadable {encoder} notop weights file ({why}): {fetch}"
        ) from None

"""What a segflow record is: feature keys, label definitions, dataset metadata and the shared transform.

Everything else (``pipelines`` that make and use records, ``trainer`` that learns from them) imports from
here; this package imports from neither.
"""

import os as _os

# segflow's Keras is Keras 2 (``tf_keras``): the trainer builds its models with it, and tensorflow-transform's
# layers are tf_keras layers. Unless told so, ``import tensorflow`` also loads Keras 3 (and, through its plotting
# helpers, matplotlib) for a ``tf.keras`` that nothing here uses: ~0.3-0.6 s of every segflow process on 2 cores.
# Set before any segflow module imports TensorFlow (``pipelines`` and ``trainer`` import this package first); a
# process that set the variable itself, or imported TensorFlow earlier, keeps its own choice.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

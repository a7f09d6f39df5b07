"""How TensorFlow must be handed a folder that holds one of segflow's artefacts (a SavedModel, a transform graph).

TensorFlow's checkpoint reader, which loads the variables of every SavedModel and tensorflow-transform graph,
finds its files with ``GetMatchingPaths``: a folder named ``m[1]`` is read as the pattern ``m1`` (and loads
*that* folder's variables if it exists). Folder names users give are literal, so such a folder is handed to
TensorFlow through a plain-named symbolic link.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# The characters TensorFlow's file matching treats as pattern syntax (``\`` escapes the next one).
TF_GLOB_CHARS = frozenset("*?[\\")


def join(base: str, *names: str) -> str:
    """``base/name/...`` for a local path or a URL (``gs://b/x``) alike, as ``tf.io.gfile`` takes them: the
    trainer's one path join (Beam code joins with ``FileSystems.join``)."""
    return "/".join([base.rstrip("/")] + [name.strip("/") for name in names])


def has_tf_glob_chars(path: str) -> bool:
    return bool(TF_GLOB_CHARS & set(path))


def tf_readable_local_dir(path: str, prefix: str = "segflow-dir-") -> str:
    """The local folder ``path`` itself, or, when its path holds glob characters, a plain-named symbolic link to
    it that TensorFlow reads literally. The link lives in a fresh temporary folder removed at process exit."""
    if not has_tf_glob_chars(path):
        return path
    root = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, root, True)
    alias = os.path.join(root, "dir")
    os.symlink(os.path.abspath(path), alias)
    return alias

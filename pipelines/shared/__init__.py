"""The light modules the Beam jobs share with the trainer: no Beam, no job, nothing heavy at import.

- ``cli``: the command-line skeleton of every program (flags from config dataclasses, one-line failures).
- ``folders``: a local or ``gs://`` folder behind one interface (list, read, write whole, delete).
- ``ownership``: which output folder a command owns (owner records, claims), staged publication.
- ``lease``: one writer per output folder.
- ``processes``: whether the process that left something behind is gone.
- ``tf_paths``: handing TensorFlow a folder whose name it would read as a pattern.
- ``pixel_rules``: the pixel rules (resize, decode to 8-bit RGB) and their parameters; ``pixels_host`` applies
  them with PIL and numpy (no TensorFlow), ``pixels_graph`` with TensorFlow graph ops, side by side (only
  graph code, which has TensorFlow already, imports it).

``trainer`` imports these and ``schemas``, and nothing else of ``pipelines`` (``tests/test_layering.py``).
"""

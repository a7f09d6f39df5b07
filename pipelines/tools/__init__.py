"""Developer tools, not worker code: generated sample data (``synthetic``) and ``make demo`` (``demo``).

Nothing in the jobs' import graph imports this package, and it is left out of the distribution that
Dataflow workers install (``setup.py``, ``MANIFEST.in``, the Dockerfile).
"""

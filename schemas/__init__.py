"""What a segflow record is: feature keys, label definitions, dataset metadata and the shared transform.

Everything else (``pipelines`` that make and use records, ``trainer`` that learns from them) imports from
here; this package imports from neither.
"""

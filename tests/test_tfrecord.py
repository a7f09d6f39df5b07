"""segflow's TFRecord framing: byte-identical to Beam's writer, and read back by TensorFlow."""

from __future__ import annotations

import io
import os

from pipelines.common import tfrecord


def test_records_are_framed_as_beams_tfrecord_writer_frames_them():
    from apache_beam.io import tfrecordio

    records = [b"", b"segflow", os.urandom(70_000)]
    ours, beams = io.BytesIO(), io.BytesIO()
    for record in records:
        tfrecord.write_record(ours, record)
        tfrecordio._TFRecordUtil.write_record(beams, record)  # the reference: Beam's own (private) writer
    assert ours.getvalue() == beams.getvalue()


def test_tensorflow_reads_the_records_back(tmp_path):
    import tensorflow as tf

    records = [b"a", b"segflow" * 1000, b""]
    with open(tmp_path / "r.tfrecord", "wb") as f:
        for record in records:
            tfrecord.write_record(f, record)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "r.tfrecord"))] == records

"""``pipelines.common.storage`` against the loopback GCS server (the ``gcs`` fixture): what Beam's listing does
not show."""

from __future__ import annotations


def test_delete_tree_removes_folder_markers(gcs):
    """Zero-byte ``folder/`` objects (TensorFlow's GCS client writes one for every directory it makes) are not
    files to Beam's listing, yet they are objects under the prefix: deleting the tree deletes them too, by exact
    name (the root holds glob characters), and nothing beside the prefix."""
    from pipelines.common import storage

    root = gcs.prefix("markers[1]*")
    objects = {"a.txt": b"a", "sub/": b"", "sub/b.txt": b"b", "sub/deeper/": b"", "empty/": b""}
    for name, data in objects.items():
        gcs.upload_bytes(f"{root}/{name}", data)
    # Neighbours that share the prefix as a string, or that the glob characters would match, must stay.
    neighbours = [f"{root}x/keep/", f"{root}x/keep.txt", root.replace("[1]*", "1") + "/keep/"]
    for url in neighbours:
        gcs.upload_bytes(url, b"" if url.endswith("/") else b"k")
    assert gcs.list(root) == sorted(objects)

    assert storage.delete_tree(root) == 2  # files; the markers go too but are not counted
    assert gcs.list(root) == []
    bucket = gcs.url() + "/"
    assert {bucket + n for n in gcs.list(gcs.url())} >= set(neighbours)
    assert storage.delete_tree(root) == 0  # absent: a no-op

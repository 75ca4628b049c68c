"""Shared fixtures. Unit tests never start Ray; integration tests share one local Ray per session."""

from __future__ import annotations

import os

import pytest

from pipeline.corpus import corpus_dir, corpus_path


@pytest.fixture(scope="session")
def corpus():
    """The shared real-data corpus; fails (never skips) when it is missing."""
    corpus_path()  # raises with the missing path named
    return corpus_dir()


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for every integration test in the session (2 CPUs, small object store). It
    starts after the S3 server, so that its workers inherit the settings that point s3:// there."""
    import ray

    # A token left in ~/.ray can make a local cluster demand authentication: say what we want.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Shuffles (dedup, shards, tokens) run short tasks in more worker processes than Ray keeps idle
    # by default (one per CPU): on 2 CPUs it would kill and restart workers between steps, seconds
    # each (a 60-document dedup took minutes).
    os.environ.setdefault("RAY_num_workers_soft_limit", "8")
    ray.init(
        address="local",  # never attach to a cluster someone else started on this machine
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=1_000_000_000,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API on loopback (moto in server mode), for every test that reads or writes s3://.
    Yields the endpoint URL; the environment points boto3 and s3fs at it for the whole session."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    settings = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1"}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield url
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server, request):
    """An empty bucket of its own for one test: s3://<name>."""
    import re
    import uuid

    import fsspec

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"s3://{name}"

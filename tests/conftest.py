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
def ray_local():
    """One local Ray for every integration test in the session (2 CPUs, small object store)."""
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

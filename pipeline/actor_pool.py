"""The actor pool a Ray Data stage with a callable class runs on."""

from __future__ import annotations

import ray


def actor_pool(workers: int) -> ray.data.ActorPoolStrategy:
    """``workers`` actors at once when the cluster has that many CPUs free; else a pool that starts
    with one actor and grows to ``workers``, as a fixed pool asking for more CPUs than it can get
    would wait forever."""
    if ray.available_resources().get("CPU", 0) >= workers:
        return ray.data.ActorPoolStrategy(size=workers)
    return ray.data.ActorPoolStrategy(min_size=1, max_size=workers)

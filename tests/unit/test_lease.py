"""The rebuild lease: one holder at a time, taken over when its holder's time is up or its holder
is gone, and exactly one winner when several processes race for it."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.lease import LEASE_FILE, Lease, LeaseHeld, _store, acquire, held, lease_path, read, release


def test_a_held_lease_is_refused_and_released_at_the_end_of_the_block(tmp_path):
    root = str(tmp_path / "datasets" / "web")
    with held(root, seconds=600) as lease:
        on_disk = read(lease_path(root))
        assert on_disk == lease and on_disk.pid == os.getpid()
        with pytest.raises(LeaseHeld, match="held by .* until"):
            acquire(root, seconds=600)
    assert not (tmp_path / "datasets" / "web" / LEASE_FILE).exists()
    release(root, acquire(root, seconds=600))  # free again


def test_an_expired_lease_is_taken_over(tmp_path):
    root = str(tmp_path)
    (tmp_path / LEASE_FILE).write_text(json.dumps(
        {"owner": "another-pod:7:abc", "host": "another-pod", "pid": 7, "started": time.time() - 100,
         "expires": time.time() - 1}))
    lease = acquire(root, seconds=60)
    assert read(lease_path(root)).owner == lease.owner != "another-pod:7:abc"


def test_a_live_holder_on_another_host_is_waited_for_until_its_lease_expires(tmp_path):
    root = str(tmp_path)
    (tmp_path / LEASE_FILE).write_text(json.dumps(
        {"owner": "another-pod:7:abc", "host": "another-pod", "pid": 7, "started": time.time(),
         "expires": time.time() + 3600}))
    with pytest.raises(LeaseHeld, match="another-pod:7:abc"):
        acquire(root, seconds=60)


HOLD = """
import sys, time
from pipeline.lease import acquire
acquire(sys.argv[1], seconds=3600)
print("held", flush=True)
time.sleep(3600)
"""


def test_the_lease_of_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeld):
        acquire(str(tmp_path), seconds=60)
    holder.send_signal(signal.SIGKILL)  # no chance to release it
    holder.wait()
    assert read(lease_path(str(tmp_path))).pid == holder.pid  # still there, for an hour
    assert acquire(str(tmp_path), seconds=60).pid == os.getpid()


def _race(root: str, start: float, results, everyone_tried) -> None:
    time.sleep(max(0.0, start - time.time()))
    try:
        acquire(root, seconds=600)
        results.put("won")
        # Hold it, alive, until every racer has tried: a holder that has exited leaves a lease that
        # a late starter may rightly take over, which is not the race this test is about.
        everyone_tried.wait(120)
    except LeaseHeld:
        results.put("refused")


@pytest.mark.parametrize("lease_before", ["none", "expired"])
def test_of_processes_racing_for_the_lease_exactly_one_wins(tmp_path, lease_before):
    """Racing to create the lease, and racing to take over the same stale one. (A lease read while
    its creator was still writing it once looked unreadable, hence stale, and two processes won.)"""
    if lease_before == "expired":
        (tmp_path / LEASE_FILE).write_text(json.dumps(
            {"owner": "another-pod:7:abc", "host": "another-pod", "pid": 7, "started": time.time() - 100,
             "expires": time.time() - 1}))
    context = multiprocessing.get_context("spawn")
    results, everyone_tried = context.Queue(), context.Event()
    start = time.time() + 2
    processes = [context.Process(target=_race, args=(str(tmp_path), start, results, everyone_tried))
                 for _ in range(6)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=300) for _ in processes)  # spawned imports are slow on a busy machine
    everyone_tried.set()
    for process in processes:
        process.join()
    assert outcomes == ["refused"] * 5 + ["won"]


@pytest.fixture(params=["disk", "s3", "memory"])
def lease_root(request, tmp_path):
    """The lease's three kinds of store: a file system (flock), S3 (conditional writes on a moto
    server) and fsspec's in-memory store, standing for the stores with neither."""
    if request.param == "disk":
        return str(tmp_path / "datasets" / "web")
    if request.param == "s3":
        return f"{request.getfixturevalue('s3_bucket')}/datasets/web"
    return f"memory://{tmp_path.name}/datasets/web"


def test_on_every_store_a_lease_is_held_released_and_taken_over(lease_root):
    first = acquire(lease_root, seconds=600)
    assert read(lease_path(lease_root)) == first
    with pytest.raises(LeaseHeld, match=first.owner):  # this process is alive: only the lease refuses
        acquire(lease_root, seconds=600)
    release(lease_root, first)
    assert read(lease_path(lease_root)) is None
    expired = acquire(lease_root, seconds=-1)
    taker = acquire(lease_root, seconds=600)
    assert read(lease_path(lease_root)) == taker != expired
    release(lease_root, expired)  # no longer the holder: the taker's lease stays
    assert read(lease_path(lease_root)) == taker


@pytest.mark.parametrize("store_kind", ["disk", "s3"])
def test_a_write_based_on_a_lease_that_changed_since_it_was_read_is_refused(store_kind, tmp_path, request):
    """The compare-and-swap under every take-over: two takers read the same stale lease, the first
    to write wins, and the second's write, against what it read, fails."""
    root = str(tmp_path) if store_kind == "disk" else request.getfixturevalue("s3_bucket")
    stale = acquire(root, seconds=-1)
    first, second = _store(root), _store(root)
    (seen_by_first, first_tag), (seen_by_second, second_tag) = first.read(), second.read()
    assert seen_by_first == seen_by_second == stale
    winner = Lease("winner:1:a", "winner", 1, time.time(), time.time() + 600)
    assert first.swap(first_tag, winner)
    assert not second.swap(second_tag, Lease("loser:2:b", "loser", 2, time.time(), time.time() + 600))
    assert not second.swap(second_tag, None)  # nor may it remove the winner's
    assert read(lease_path(root)) == winner
    assert not first.swap(None, stale)  # creating over an existing lease is refused too

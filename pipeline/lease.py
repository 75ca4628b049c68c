"""One holder at a time: a lease object beside the data it guards, on any fsspec store.

    <root>/.rebuild.lease   {"owner": "<host>:<pid>:<random>", "host", "pid", "started", "expires"}

Taking the lease creates that object only if it does not exist: an exclusive create (``O_EXCL``) on a
local or mounted file system, a conditional PUT (``If-None-Match: *``) on S3 and the S3-compatible
stores that support it. Whoever creates it holds the lease until they release it or it expires.

A lease that exists is *stale*, and is taken over, when it has expired, or when its holder was a
process on this same host that no longer runs (a run killed by the OOM killer or ``kill -9`` leaves
its lease behind). Taking over removes the stale object and creates a new one exclusively, so of two
processes that both find it stale exactly one wins.

Fallback for stores without a conditional create: none is detected; such a store (some older
S3-compatible servers, and gcsfs before generation preconditions) silently overwrites, and two
rebuilds started within the same second could both proceed. Schedule those runs with a
non-overlapping trigger (a single RayCronJob, or ``flock`` in cron), as infra/README.md says.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import fsspec

LEASE_FILE = ".rebuild.lease"


@dataclass(frozen=True)
class Lease:
    owner: str
    host: str
    pid: int
    started: float
    expires: float

    def is_stale(self, now: float) -> bool:
        return now >= self.expires or (self.host == socket.gethostname() and not _process_exists(self.pid))

    def describe(self) -> str:
        return (f"held by {self.owner} since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.started))}, "
                f"until {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.expires))}")


class LeaseHeld(RuntimeError):
    """Another live process holds the lease; the message says who and until when."""

    def __init__(self, path: str, lease: Lease):
        super().__init__(f"{path}: {lease.describe()}")
        self.lease = lease


def lease_path(root: str) -> str:
    return f"{root.rstrip('/')}/{LEASE_FILE}"


def acquire(root: str, seconds: float) -> Lease:
    """Take the lease of ``root`` for ``seconds``, taking over a stale one; ``LeaseHeld`` if a live
    holder has it."""
    path = lease_path(root)
    fs, _ = fsspec.core.url_to_fs(path)
    fs.makedirs(root, exist_ok=True)
    for _ in range(3):  # a stale lease removed under us by another taker: look again
        now = time.time()
        mine = Lease(f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}", socket.gethostname(),
                     os.getpid(), now, now + seconds)
        try:
            with fs.open(path, "xb") as f:
                f.write(json.dumps(mine.__dict__).encode())
            return mine
        except FileExistsError:
            pass
        current = read(path)
        if current is None:
            continue
        if not current.is_stale(time.time()):
            raise LeaseHeld(path, current)
        _remove_if_owned(fs, path, current.owner)
    raise LeaseHeld(path, read(path))


def release(root: str, lease: Lease) -> None:
    """Give the lease back, if it is still ours (a lease that expired may have been taken over)."""
    path = lease_path(root)
    fs, _ = fsspec.core.url_to_fs(path)
    _remove_if_owned(fs, path, lease.owner)


@contextmanager
def held(root: str, seconds: float) -> Iterator[Lease]:
    """The lease for the duration of the block; released at its end, error or not."""
    lease = acquire(root, seconds)
    try:
        yield lease
    finally:
        release(root, lease)


def read(path: str) -> Lease | None:
    fs, _ = fsspec.core.url_to_fs(path)
    try:
        data = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        # Half-written by a holder that died mid-write: nobody can hold it, it is stale.
        return Lease("unreadable", "", 0, 0.0, 0.0)
    return Lease(**data)


def _remove_if_owned(fs, path: str, owner: str) -> None:
    current = read(path)
    if current is not None and current.owner == owner:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True

"""One holder at a time: a lease object beside the data it guards, on any fsspec store.

    <root>/.rebuild.lease   {"owner": "<host>:<pid>:<random>", "host", "pid", "started", "expires"}

Whoever writes it holds the lease until they release it or it expires. A lease that exists is
*stale*, and is taken over, when it has expired, or when its holder was a process on this same host
that no longer runs (a run killed by the OOM killer or ``kill -9`` leaves its lease behind).

Every write is a compare-and-swap against the lease as it was read, so of any number of processes
that race for a free or a stale lease exactly one wins:

- local or mounted file systems: the compare and the write happen under an exclusive ``flock`` of
  ``<root>/.rebuild.lease.lock`` (a file that stays; NFS v4 honours it as a POSIX lock), and the
  lease is written whole (a temporary file renamed over it), so nobody reads it half-written;
- S3 and the S3-compatible stores that support conditional writes: creating is a PUT with
  ``If-None-Match: *``, taking over a PUT with ``If-Match`` the stale lease's ETag, releasing a
  DELETE with ``If-Match`` ours;
- any other store (gcsfs, ...): an exclusive create (``xb``) where the store has one, and a
  takeover that deletes and creates, which two takers of the same stale lease could both pass.
  Schedule those runs with a non-overlapping trigger (a single RayCronJob, or ``flock`` in cron),
  as infra/README.md says.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Protocol

import fsspec

from pipeline.storage import is_local

LEASE_FILE = ".rebuild.lease"
LOCK_FILE = ".rebuild.lease.lock"
# What a dataset root holds for its lease, which garbage collection must leave alone.
LEASE_FILES = (LEASE_FILE, LOCK_FILE)
# A lost compare-and-swap means another process changed the lease meanwhile; after this many in a
# row it is busy enough to call held.
ATTEMPTS = 5


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

    def encode(self) -> bytes:
        return json.dumps(self.__dict__).encode()


class LeaseHeld(RuntimeError):
    """Another live process holds the lease; the message says who and until when."""

    def __init__(self, path: str, lease: Lease | None):
        super().__init__(f"{path}: {lease.describe()}" if lease else
                         f"{path}: other processes kept changing the lease ({ATTEMPTS} tries)")
        self.lease = lease


def lease_path(root: str) -> str:
    return f"{root.rstrip('/')}/{LEASE_FILE}"


def acquire(root: str, seconds: float) -> Lease:
    """Take the lease of ``root`` for ``seconds``, taking over a stale one; ``LeaseHeld`` if a live
    holder has it."""
    store = _store(root)
    current = None
    for _ in range(ATTEMPTS):
        current, tag = store.read()
        if current is not None and not current.is_stale(time.time()):
            raise LeaseHeld(store.path, current)
        now = time.time()
        mine = Lease(f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}", socket.gethostname(),
                     os.getpid(), now, now + seconds)
        if store.swap(tag, mine):
            return mine
    raise LeaseHeld(store.path, current)


def release(root: str, lease: Lease) -> None:
    """Give the lease back, if it is still ours (a lease that expired may have been taken over)."""
    store = _store(root)
    current, tag = store.read()
    if current is not None and current.owner == lease.owner:
        store.swap(tag, None)


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
        return _decode(fs.cat_file(path))
    except FileNotFoundError:
        return None


def _decode(data: bytes) -> Lease:
    try:
        return Lease(**json.loads(data))
    except (ValueError, TypeError):
        # Unreadable (a damaged file, a foreign writer): nobody can be shown to hold it, so it is stale.
        return Lease("unreadable", "", 0, 0.0, 0.0)


class _LeaseStore(Protocol):
    path: str

    def read(self) -> tuple[Lease | None, object]:
        """The lease (None if there is none) and a tag of exactly that state of it."""

    def swap(self, tag: object, new: Lease | None) -> bool:
        """Write ``new`` (None: remove the lease) if the lease is still in the state ``tag`` names;
        False if it changed meanwhile."""


def _store(root: str) -> _LeaseStore:
    fs, _ = fsspec.core.url_to_fs(root)
    fs.makedirs(root, exist_ok=True)
    if is_local(fs):
        return _LockedFile(fs._strip_protocol(root))
    if "s3" in fs.protocol:
        return _ConditionalObject(fs, lease_path(root))
    return _BestEffortObject(fs, lease_path(root))


class _LockedFile:
    def __init__(self, root: str):
        self.root = root
        self.path = lease_path(root)

    def read(self) -> tuple[Lease | None, object]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return _decode(data), data  # every lease names a fresh random owner, so its bytes tag it

    def swap(self, tag: object, new: Lease | None) -> bool:
        with open(os.path.join(self.root, LOCK_FILE), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if self.read()[1] != tag:
                return False
            if new is None:
                os.remove(self.path)
            else:
                temporary = f"{self.path}.{uuid.uuid4().hex}"
                with open(temporary, "wb") as f:
                    f.write(new.encode())
                os.replace(temporary, self.path)
            return True


class _ConditionalObject:
    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path
        self.bucket, self.key, _ = fs.split_path(path)

    def read(self) -> tuple[Lease | None, object]:
        # The ETag is read before the body: if the body read is a newer lease than the ETag, a swap
        # conditioned on that ETag fails, as it should.
        try:
            etag = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)["ETag"]
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        return _decode(data), etag

    def swap(self, tag: object, new: Lease | None) -> bool:
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        try:
            if new is None:
                self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, **condition)
            else:
                self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=new.encode(), **condition)
        except OSError as error:
            if _lost_condition(error):
                return False
            raise
        finally:
            self.fs.invalidate_cache(self.path)
        return True


def _lost_condition(error: Exception) -> bool:
    """Whether an s3fs error is S3 refusing a conditional write: 412 (the condition is false), or
    409 (a concurrent conditional write to the same key, which S3 asks the caller to retry), or
    404 (the object a condition named is gone)."""
    if isinstance(error, FileNotFoundError):
        return True
    response = getattr(error.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")


class _BestEffortObject:
    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    def read(self) -> tuple[Lease | None, object]:
        lease = read(self.fs.unstrip_protocol(self.path))
        return lease, lease

    def swap(self, tag: object, new: Lease | None) -> bool:
        if tag is not None:
            if read(self.fs.unstrip_protocol(self.path)) != tag:
                return False
            self.fs.rm_file(self.path)
        if new is None:
            return True
        try:
            with self.fs.open(self.path, "xb") as f:
                f.write(new.encode())
        except FileExistsError:
            return False
        return True


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True

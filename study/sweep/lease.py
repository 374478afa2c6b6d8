"""The driver lease: one driver runs a study at a time.

`STUDY/driver.json` (study.schema.LEASE_PATH) names the driver that holds the study: its
lease id, host, pid, when it started and its last heartbeat. `study run` and `study resume`
acquire it before they write anything, renew it every HEARTBEAT_S from a daemon thread, and
delete it when they end. A second driver refuses, naming the holder. A lease whose heartbeat
is older than its TTL (TTL_S) belongs to a driver that died and is taken over, with a line
on stderr; so is, at once, a lease whose holder is known dead (same host and pid namespace,
its pid gone: a SIGKILLed driver resumed on its machine). `--takeover` takes a live one
(its holder notices at its next heartbeat, stops scheduling units and exits).

Run markers (runs/<unit_id>.json) record the lease id of the driver that started the unit,
so `study status` can tell a unit a live driver runs ("running") from one whose driver is
gone ("interrupted"), and a worker that fails while its driver is stopping records an
interruption, not a failure.

How safe acquisition is depends on the store:

- Local store: atomic. Every change of driver.json (claim, takeover, heartbeat, release)
  is a read-check-write made while holding `.driver.json.lock`, a file created with
  create-if-absent (a hard link, which fails if the name exists): two drivers never both
  see the study free, and a heartbeat never overwrites a takeover. A lock left by a
  process that died inside that step (a read and a write) is broken after LOCK_STALE_S.
- S3 (pyarrow's S3FileSystem has no conditional put): write the claim, wait S3_SETTLE_S,
  read it back; the claim holds if it is still ours. S3 is read-after-write consistent, so
  of drivers that claim within S3_SETTLE_S of each other only the last writer reads itself
  back. The remaining race: a driver whose read of the lease and write of its claim are
  more than S3_SETTLE_S apart (a stalled request) can overwrite a claim that was already
  confirmed; both then run until the overwritten one's next heartbeat (at most
  HEARTBEAT_S), which finds the other's id and stops it. A heartbeat is also a read then a
  write: a `--takeover` landing between the two is overwritten, and the taker finds at its
  own next heartbeat that it lost. Either way one holder remains within a heartbeat.

Store outages: a heartbeat's reads and writes retry through an outage (`Store._call`), but
only until RENEW_MARGIN_S before the lease could expire, so a late heartbeat never lands on a
lease another driver has taken over since. An outage shorter than that (a 30 s S3 freeze)
costs a late heartbeat and nothing else: nobody can take the lease over meanwhile (its last
heartbeat is younger than the TTL, and the store answers no one). A longer one loses the
lease: the driver stops its units and exits, and `study resume` goes on.

Clocks: expiry compares the holder's heartbeat time (UTC) with the reader's clock; TTL_S is
six heartbeats, which absorbs clock skew of tens of seconds between hosts.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from study.errors import LeaseError, StorageError
from study.schema import LEASE_PATH
from study.store import Store

__all__ = [
    "HEARTBEAT_S",
    "TTL_S",
    "S3_SETTLE_S",
    "RENEW_MARGIN_S",
    "Lease",
    "LeaseError",
    "LeaseInfo",
    "read_lease",
    "driver_stopped",
]

# how often the holder renews its lease (STUDY_LEASE_HEARTBEAT_S overrides it: a shorter
# beat notices a takeover sooner, at one small store write per beat)
HEARTBEAT_S = float(os.environ.get("STUDY_LEASE_HEARTBEAT_S", "15"))
TTL_S = 90.0  # a lease not renewed for this long has expired (its driver is gone)
S3_SETTLE_S = 2.0  # S3: wait between writing a claim and reading it back
# A renewal stops retrying through a store outage this long before its lease could expire: a
# store request tried before then lands within ~16 s (3 tries of STUDY_STORE_TIMEOUT_S), so a
# heartbeat never overwrites the lease of a driver that took over an expired one.
RENEW_MARGIN_S = 20.0
LOCK_STALE_S = 30.0  # local: a lock this old was left by a process that died holding it
_LOCK = ".driver.json.lock"  # a dot-name: listings never show it


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _log(msg: str) -> None:
    print(f"[study] {msg}", file=sys.stderr, flush=True)


def _pid_namespace() -> int | None:
    """This process's pid namespace (Linux), so that a pid is only ever looked up where it
    means the same process: two containers may share a host name, never a pid namespace."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class LeaseInfo:
    """What driver.json says: who holds the study, since when, last heartbeat.

    `state` is "held", or "stopping" while an interrupted driver winds down (stops its
    units, marks them interrupted) before it deletes the lease.
    """

    lease_id: str
    host: str
    pid: int
    started_at: str
    heartbeat_at: str
    state: str = "held"
    ttl_s: float = TTL_S
    reason: str = ""  # why a stopping driver stops
    pid_ns: int | None = None  # the holder's pid namespace (see holder_dead)

    @classmethod
    def new(cls, ttl_s: float = TTL_S) -> LeaseInfo:
        now = _now()
        host, pid = socket.gethostname(), os.getpid()
        return cls(uuid.uuid4().hex[:16], host, pid, now, now, ttl_s=ttl_s, pid_ns=_pid_namespace())

    @classmethod
    def parse(cls, data: bytes) -> LeaseInfo:
        """The lease in `data`; an unreadable one reads as long expired (taken over)."""
        try:
            obj = json.loads(data)
            known = {k: obj[k] for k in cls.__dataclass_fields__ if k in obj}
            info = cls(**known)
            info.age_s()  # heartbeat_at must be a time
            return info
        except (ValueError, TypeError, KeyError):
            epoch = datetime.fromtimestamp(0, UTC).isoformat()
            return cls("unreadable", "unknown host", 0, epoch, epoch)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat."""
        now = time.time() if now is None else now
        return now - datetime.fromisoformat(self.heartbeat_at).timestamp()

    def expired(self, now: float | None = None) -> bool:
        return self.age_s(now) > self.ttl_s

    def holder_dead(self) -> bool:
        """Whether the holder is known to have died: a process of this host and pid
        namespace that no longer exists. False where that cannot be known (another host)."""
        if self.host != socket.gethostname() or self.pid_ns is None:
            return False
        if self.pid_ns != _pid_namespace() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except OSError:  # exists, owned by another user
            return False
        return False

    def gone(self, now: float | None = None) -> bool:
        """Its driver is gone: the heartbeat expired, or the holder is known dead."""
        return self.expired(now) or self.holder_dead()

    def live(self, now: float | None = None) -> bool:
        """Held by a driver that is running units (not stopping, not gone)."""
        return self.state == "held" and not self.gone(now)

    def describe(self, now: float | None = None) -> str:
        stopping = f", stopping: {self.reason}" if self.state == "stopping" else ""
        return (
            f"host {self.host}, pid {self.pid}, since {self.started_at} (last heartbeat "
            f"{self.age_s(now):.0f} s ago, lease {self.lease_id}{stopping})"
        )


def read_lease(store: Store) -> LeaseInfo | None:
    """The study's lease, or None when no driver holds it.

    Raises:
        StorageError: the store cannot be read.
    """
    data = store.read_if_exists(LEASE_PATH)
    return None if data is None else LeaseInfo.parse(data)


def driver_stopped(store: Store, lease_id: str | None) -> bool:
    """Whether the driver of lease `lease_id` has stopped (interrupted, lost its lease, or
    ended): its lease is stopping, gone, or another's. A unit whose run fails then was
    interrupted (its workers were torn down), not broken. False when unknown (no lease id:
    a plain process; or the store cannot be read)."""
    if not lease_id:
        return False
    try:
        info = read_lease(store)
    except StorageError:
        return False
    return info is None or info.lease_id != lease_id or info.state != "held"


class Lease:
    """This driver's hold on a study (see the module docstring); `acquire` makes one.

    Attributes:
        lost: set when another driver holds the study now, or the lease could not be
            renewed until RENEW_MARGIN_S before its TTL (another may take it over then).
        lost_reason: why, for the message.
    """

    def __init__(
        self,
        store: Store,
        info: LeaseInfo,
        heartbeat_s: float = HEARTBEAT_S,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.info = info
        self.heartbeat_s = heartbeat_s
        self.on_lost = on_lost
        self.lost = threading.Event()
        self.lost_reason = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._renewed = time.monotonic()
        self._released = False

    @property
    def lease_id(self) -> str:
        return self.info.lease_id

    def __repr__(self) -> str:
        return f"Lease({self.store.uri!r}, {self.info.describe()})"

    # --- acquiring ---------------------------------------------------------------------------
    @classmethod
    def acquire(
        cls,
        store: Store,
        takeover: bool = False,
        *,
        ttl_s: float = TTL_S,
        heartbeat_s: float = HEARTBEAT_S,
        settle_s: float = S3_SETTLE_S,
        on_lost: Callable[[], None] | None = None,
    ) -> Lease:
        """Take the study's lease and start renewing it.

        Args:
            takeover: take it even from a driver whose heartbeat is fresh (that driver
                stops at its next heartbeat).
            ttl_s: after how long without a heartbeat this lease expires (recorded in it).
            heartbeat_s: how often to renew it.
            settle_s: S3 only: the wait between writing the claim and reading it back.
            on_lost: called once (from the heartbeat thread) when the lease is lost.

        Raises:
            LeaseError: another driver holds a lease that has not expired (the message
                names it and says how to take over), or won the race for it.
            StorageError: the store cannot be read or written.
        """
        mine = LeaseInfo.new(ttl_s)
        with _locked(store):
            current = read_lease(store)
            if current is not None:
                if not current.gone() and not takeover:
                    raise LeaseError(_held_message(store, current))
                _log(_takeover_line(store, current))
            if store.is_local:
                store.write_bytes(LEASE_PATH, mine.to_bytes())
            elif not _claim_s3(store, mine, settle_s):
                holder = read_lease(store)
                raise LeaseError(
                    f"another driver claimed study {store.uri} at the same time and won "
                    f"({holder.describe() if holder else 'it has ended since'}); "
                    "run again once it has ended"
                )
        lease = cls(store, mine, heartbeat_s=heartbeat_s, on_lost=on_lost)
        lease._start_heartbeat()
        return lease

    # --- holding -------------------------------------------------------------------------------
    def renew(self, state: str = "held", reason: str = "") -> bool:
        """Write a fresh heartbeat if the lease is still ours; else mark it lost.

        Through a store outage the renewal keeps trying (the store's retries), but only
        until RENEW_MARGIN_S before the lease could expire (`_renewable_s`); a lease that
        cannot be renewed by then is lost (another driver may take it over once the store
        answers again). A shorter outage costs nothing: the beat lands late, the lease is
        held.

        Returns:
            Whether the lease is held after the call.
        """
        with self._lock:
            if self.lost.is_set() or self._released:
                return False
            # past that time (a heartbeat thread held up) one try is made, and no retry
            store = self.store.until(self._renewed + self._renewable_s)
            started = time.monotonic()  # the heartbeat written below is at least this fresh
            try:
                with _locked(store):
                    current = read_lease(store)
                    if current is None or current.lease_id != self.lease_id:
                        self._lose(
                            f"{current.describe()} holds it now"
                            if current is not None
                            else f"{self.store.uri}/{LEASE_PATH} was removed by someone else"
                        )
                        return False
                    info = replace(self.info, heartbeat_at=_now(), state=state, reason=reason)
                    store.write_bytes(LEASE_PATH, info.to_bytes())
            except StorageError as e:
                self._renew_failed(e)
                return False
            self.info = info
            self._renewed = started
            return True

    @property
    def _renewable_s(self) -> float:
        """How long after its last renewal the lease may still be written (RENEW_MARGIN_S
        before its TTL; a third of it for a short TTL)."""
        ttl = self.info.ttl_s
        return ttl - min(RENEW_MARGIN_S, ttl / 3)

    def _renew_failed(self, error: StorageError) -> None:
        """After a renewal failed with `error`: mark the lease lost when it has gone
        unrenewed for so long that a later write could land after it expired (and another
        driver took it over)."""
        silent = time.monotonic() - self._renewed
        if silent >= self._renewable_s:
            self._lose(
                f"it could not be renewed for {silent:.0f} s (close to its "
                f"{self.info.ttl_s:g} s TTL, after which another driver may take it over): "
                f"{error}"
            )

    def mark_stopping(self, reason: str) -> None:
        """Tell the store this driver is winding down: a unit whose run fails from now on
        records an interruption (`driver_stopped`), and no new driver starts meanwhile."""
        if not self.renew(state="stopping", reason=reason) and not self.lost.is_set():
            _log(f"could not record in {self.store.uri}/{LEASE_PATH} that this driver stops")

    @property
    def stopping(self) -> bool:
        return self.info.state == "stopping"

    def check(self) -> None:
        """Raise LeaseError if the lease was lost."""
        if self.lost.is_set():
            raise LeaseError(self.lost_message())

    def lost_message(self) -> str:
        uri = self.store.uri
        return (
            f"this driver ({self.info.host}, pid {self.info.pid}, lease {self.lease_id}) "
            f"lost its lease on study {uri}: {self.lost_reason}. It stopped scheduling units "
            "and exits; the units it leaves are run by the driver that holds the lease now, "
            f"or by `study resume {uri}`"
        )

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        self._stop.set()
        if self.on_lost is not None:
            self.on_lost()

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                self.renew(self.info.state, self.info.reason)

        self._thread = threading.Thread(target=beat, name="study-lease-heartbeat", daemon=True)
        self._thread.start()

    # --- releasing -------------------------------------------------------------------------------
    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours (never raises: a
        lease that cannot be deleted expires after its TTL)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._lock:
            if self._released:
                return
            self._released = True
            if self.lost.is_set():
                return
            # never delete after the lease could have expired: it may be another's by then
            store = self.store.until(self._renewed + self._renewable_s)
            try:
                with _locked(store):
                    current = read_lease(store)
                    if current is not None and current.lease_id == self.lease_id:
                        store.delete(LEASE_PATH)
            except StorageError as e:
                _log(
                    f"could not release the lease of study {self.store.uri} ({e}); it "
                    f"expires {self.info.ttl_s:g} s after its last heartbeat"
                )

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _held_message(store: Store, holder: LeaseInfo) -> str:
    return (
        f"study {store.uri} is being run by another driver: {holder.describe()}. One driver "
        "runs a study at a time. Wait for it to end or stop it; if that driver is gone, run "
        f"again with --takeover (a lease whose heartbeat is older than {holder.ttl_s:g} s has "
        "expired and is taken over without it)"
    )


def _takeover_line(store: Store, current: LeaseInfo) -> str:
    """What a driver says on stderr when it takes a lease over."""
    if current.holder_dead() and not current.expired():
        return (
            f"taking over the lease of study {store.uri}: its holder ({current.describe()}) "
            "is no longer running on this host"
        )
    if current.expired():
        return (
            f"taking over the lease of study {store.uri}: its holder ({current.describe()}) "
            f"has not renewed it for longer than its {current.ttl_s:g} s TTL, so that driver "
            "is gone"
        )
    return (
        f"--takeover: taking the lease of study {store.uri} from {current.describe()}; that "
        "driver stops scheduling units at its next heartbeat"
    )


@contextlib.contextmanager
def _locked(store: Store):
    """Hold `.driver.json.lock` of a local store (a no-op on S3: nothing to lock with)."""
    if not store.is_local:
        yield
        return
    lock = Path(store.path(_LOCK))
    token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}".encode()
    deadline = time.monotonic() + LOCK_STALE_S + 10
    while not store.create_new(_LOCK, token):
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            continue  # released meanwhile
        if age > LOCK_STALE_S:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # left by a process that died in the middle of a change
            continue
        if time.monotonic() > deadline:
            raise LeaseError(f"{lock} stays locked: delete it if no driver is starting")
        time.sleep(0.01)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if lock.read_bytes() == token:
                lock.unlink()


def _claim_s3(store: Store, mine: LeaseInfo, settle_s: float) -> bool:
    """Write the claim, wait, read it back (S3 has no conditional put; module docstring)."""
    store.write_bytes(LEASE_PATH, mine.to_bytes())
    time.sleep(settle_s)
    back = read_lease(store)
    return back is not None and back.lease_id == mine.lease_id

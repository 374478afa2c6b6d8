"""One study root on a local path or S3, through pyarrow filesystems.

The store is the source of truth of a study: a unit is done when its result file is here.
Every write is atomic: a local file is written under a dot-name and renamed into place; an S3
object appears only when its upload completes. Readers of Parquet datasets ignore names that
start with "." or "_", so a half-written temporary file is never read as a result.

An S3 store waits out an outage: every operation whose request times out or fails with an
error the server may not repeat (network, 5xx, throttling) is tried again, with exponential
backoff and jitter, for up to STUDY_STORE_RETRY_S seconds (default 120) in all; then it
raises StorageError naming the store, the operation and how long it tried. Each request gives
up after STUDY_STORE_TIMEOUT_S seconds without a byte (default 5): a frozen endpoint accepts
connections and never answers, and pyarrow's own retries alone last ~10 s (see `_call`).

This module depends on pyarrow only, so `analysis/` can read a store without Ray or torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.errors import ConfigError, StorageError

__all__ = ["Store", "PartScan", "filesystem_for", "RETRY_ENV", "TIMEOUT_ENV"]

_CHUNK = 16 << 20  # bytes per write when streaming a file into the store
_MAX_S3_COPY = 5 * 10**9  # S3's CopyObject limit (5 GB): larger objects are uploaded directly
# A result part up to this size is fetched whole in one request and parsed in memory (a
# trials row is ~15 KB): one GET per part on S3, and any error after the fetch is the file's.
_WHOLE_PART = 8 << 20
_SCAN_THREADS_S3 = 32  # parts read at once from S3 (each a small GET: latency-bound)
_SCAN_THREADS_LOCAL = 4
_T = TypeVar("_T")

# --- waiting out an S3 outage ------------------------------------------------------------
RETRY_ENV = "STUDY_STORE_RETRY_S"  # seconds an S3 operation keeps trying through an outage
TIMEOUT_ENV = "STUDY_STORE_TIMEOUT_S"  # seconds an S3 request may go without a byte
_RETRY_S = 120.0  # outlasts an outage of a minute or two, and a lease's 90 s TTL
# The AWS SDK's default is 3 s; 5 s spares a slow request on a busy link, and still ends a
# request to a frozen endpoint (connected, never answering) well within the retry budget.
_TIMEOUT_S = 5.0
_S3_ATTEMPTS = 3  # pyarrow's own tries per request (its default): for quick blips
_BACKOFF_FIRST_S = 0.5  # the first wait between our tries; doubled after each, up to
_BACKOFF_MAX_S = 10.0  # ... this, so the store is tried again within ~10 s of coming back
# pyarrow raises every S3 failure as a plain OSError; its message holds the AWS SDK's error
# name (and curl's code for a network failure). These are the ones a later try may not see.
_TRANSIENT = (
    "NETWORK_CONNECTION",  # any failure of curl's (timeout, refused, reset, ...)
    "INTERNAL_FAILURE",
    "SERVICE_UNAVAILABLE",
    "SLOW_DOWN",
    "THROTTLING",
    "REQUEST_TIMEOUT",
    "HTTP status 5",  # "UNKNOWN (HTTP status 503)"
    "HTTP status 429",
)
# ... but not these, which waiting never mends: a malformed URL or unsupported protocol, or a
# certificate that is refused (curl's codes 1, 3, 58, 60, 77).
_PERMANENT = ("curlCode: 1,", "curlCode: 3,", "curlCode: 58,", "curlCode: 60,", "curlCode: 77,")
# No such host, nothing listens there, or no TLS there (curl's 6, 7, 35): a mistyped endpoint
# when it has never answered this process (said at once); an outage once it has (waited out).
_UNREACHABLE = ("curlCode: 6,", "curlCode: 7,", "curlCode: 35,")


def _env_seconds(name: str, default: float, minimum: float = 0.0) -> float:
    """The seconds in environment variable `name`, or `default` when it is unset or empty.

    Raises:
        ConfigError: not a number, or below `minimum`.
    """
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # nan too
        raise ConfigError(f"{name} must be a number of seconds >= {minimum:g}, got {raw!r}")
    return value


def _transient(e: OSError) -> bool:
    """Whether a later try of the request that raised `e` may succeed."""
    if isinstance(e, StorageError | FileNotFoundError | PermissionError):
        return False
    if isinstance(e, ConnectionError | TimeoutError):
        return True
    text = str(e)
    return any(m in text for m in _TRANSIENT) and not any(m in text for m in _PERMANENT)


class _Outage:
    """One stderr line when this process finds an S3 endpoint not answering, and one when
    it answers again (not one per operation: a scan reads 32 parts at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}
        self.answered: set[str] = set()  # endpoints that answered this process at least once

    def failed(self, endpoint: str, doing: str, budget: float, e: OSError) -> None:
        with self._lock:
            if endpoint in self._since:
                return
            self._since[endpoint] = time.monotonic()
        _log(
            f"the S3 store at {endpoint} does not answer ({doing}: {_one_line(e)}); "
            f"retrying for up to {budget:g} s ({RETRY_ENV})"
        )

    def answered_now(self, endpoint: str) -> None:
        self.answered.add(endpoint)
        if endpoint not in self._since:  # unlocked fast path: the usual case
            return
        with self._lock:
            since = self._since.pop(endpoint, None)
        if since is not None:
            waited = time.monotonic() - since
            _log(f"the S3 store at {endpoint} answers again, {waited:.0f} s after a request failed")


_OUTAGE = _Outage()


def _log(msg: str) -> None:
    print(f"[study] {msg}", file=sys.stderr, flush=True)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


@dataclass(frozen=True)
class PartScan:
    """What a directory of one-part-per-unit Parquet files (`<id>.parquet`) holds.

    Attributes:
        tables: id -> the part's rows (the key column, or the schema's columns when asked).
        corrupt: file name -> why it is not a readable part (not Parquet, truncated, its key
            column missing or of another type, the wrong number of rows, or rows of
            another id than its name).
    """

    tables: dict[str, pa.Table] = field(default_factory=dict)
    corrupt: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> set[str]:
        return set(self.tables)


# Query keys that would put credentials into a store URI, which travels everywhere (Ray task
# arguments, logs, run markers, the report): refused, whatever their value.
_CREDENTIAL_KEYS = frozenset(
    {"access_key", "secret_key", "session_token", "aws_access_key_id", "aws_secret_access_key"}
)


def _s3_filesystem(query: dict[str, list[str]]) -> pafs.S3FileSystem:
    """An S3 filesystem honouring the standard AWS environment variables.

    AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) selects an S3-compatible endpoint such as MinIO
    or a moto server; credentials and region come from the usual AWS variables and files.

    Credentials are never passed to it: pyarrow then resolves them from the AWS credential
    chain of the process that uses it (environment, ~/.aws, instance profile), and pickles
    only the options (endpoint, scheme, region), never a key. An S3FileSystem built with
    explicit keys pickles them, and Ray pickles `storage_filesystem` into every trial and
    into Tune's state in the store.

    Each request gives up after STUDY_STORE_TIMEOUT_S without a byte (connecting, or
    waiting for an answer), and pyarrow tries it _S3_ATTEMPTS times: a store operation
    (`Store._call`) then waits out a longer outage. What else uses this filesystem (Ray Tune
    and Train keep their own state in the store through it) gets pyarrow's tries only.
    """
    # whole seconds on Linux (curl's low-speed time): 1 at least
    timeout = _env_seconds(TIMEOUT_ENV, _TIMEOUT_S, minimum=1.0)
    kwargs: dict = {
        "request_timeout": timeout,  # on Linux: curl's low-speed limit, 1 byte in this long
        "connect_timeout": timeout,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=_S3_ATTEMPTS),
    }
    endpoint = _s3_endpoint(query)
    if endpoint:
        kwargs["endpoint_override"], kwargs["scheme"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def _s3_endpoint(query: dict[str, list[str]]) -> tuple[str, str] | None:
    """(host[:port], scheme) of an S3-compatible endpoint, or None for AWS itself."""
    endpoint = (
        query.get("endpoint_override", [None])[0]
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if not endpoint:
        return None
    parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    return parsed.netloc or parsed.path, query.get("scheme", [parsed.scheme or "https"])[0]


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Resolve a store URI into (filesystem, path inside it).

    Args:
        uri: a local path, or `s3://bucket/prefix` (optionally with `?endpoint_override=HOST:PORT
            &scheme=http`).

    Raises:
        StorageError: the scheme is not supported, or the URI holds credentials.
    """
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        path = f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
        if not parsed.netloc:
            raise StorageError(f"an S3 store URI needs a bucket: s3://bucket/prefix, got {uri!r}")
        query = parse_qs(parsed.query)
        secret = sorted(_CREDENTIAL_KEYS.intersection(k.lower() for k in query))
        if parsed.username or parsed.password:  # s3://KEY:SECRET@bucket (pyarrow's form)
            secret.insert(0, "user info before the bucket")
        if secret:
            # the message names the keys, never the URI (it holds their values)
            raise StorageError(
                f"an S3 store URI must not hold credentials (found {', '.join(secret)}): "
                "they would be written wherever the URI goes (Ray's task arguments and logs, "
                "the store, the report); give them through the AWS credential chain instead "
                "(AWS_* environment variables, ~/.aws, an instance profile)"
            )
        return _s3_filesystem(query), path
    if "://" in uri:
        raise StorageError(f"store URI must be a local path or s3://bucket/prefix, got {uri!r}")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


class Store:
    """A study root: atomic file, JSON and Parquet writes, and listing, on any pyarrow filesystem.

    Every operation on an S3 store waits out an outage (module docstring, `_call`).

    Args:
        uri: a local path or `s3://bucket/prefix`.

    Raises:
        StorageError: the URI is not a store's (see `filesystem_for`).
        ConfigError: STUDY_STORE_RETRY_S or STUDY_STORE_TIMEOUT_S is not a number of seconds.
    """

    def __init__(self, uri: str) -> None:
        self.fs, self.root = filesystem_for(uri)
        # A local store is always named by its absolute path: Ray workers run in other
        # working directories (Tune moves each trial into its own), so "studies/x" would
        # name a different folder there.
        self.uri = uri.rstrip("/") if uri.startswith("s3://") else self.root
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        self._bucket_seen = self.is_local  # a missing bucket is reported once looked for
        # read here, so a Ray worker (which rebuilds the store from its URI) uses its own
        self.retry_s = _env_seconds(RETRY_ENV, _RETRY_S)
        endpoint = None if self.is_local else _s3_endpoint(parse_qs(urlparse(uri).query))
        self._endpoint = endpoint[0] if endpoint else "AWS S3"
        self._deadline: float | None = None  # see `until`

    def until(self, deadline: float) -> Store:
        """This store (the same filesystem) whose operations stop retrying at `deadline`
        (a `time.monotonic()` time), e.g. for a lease's heartbeat, which must never land a
        write after its lease could have expired."""
        other = object.__new__(Store)
        other.__dict__.update(self.__dict__, _deadline=deadline)
        return other

    def _call(self, doing: str, fn: Callable[[], _T], missing: bool = False) -> _T:
        """`fn()`, tried again while an S3 store does not answer, then StorageError.

        An error a later try may not see (`_transient`: the request timed out, the
        connection failed, 5xx, throttling) is retried with exponential backoff and jitter
        for up to `retry_s` seconds from the first try (or until the store's deadline, see
        `until`); any other error is raised at once.
        A local store is never retried (its errors do not go away by waiting). Nor is an
        endpoint that has never answered this process and refuses connections or does not
        resolve: that is a mistyped AWS_ENDPOINT_URL, said at once.

        Each try of `fn` must be safe to repeat, also after a try whose outcome is unknown
        (a request that timed out may have been carried out): reads, listings, a write to a
        name only this call uses, a server-side copy of it, a delete of a file that may be
        gone.

        Args:
            doing: the start of the error message, naming the operation and the store.
            missing: let FileNotFoundError through (the caller says what a missing file
                means); otherwise it is a StorageError like any other error.

        Raises:
            StorageError: `f"{doing}: {error}"`, saying how long it tried when it retried.
        """
        start = time.monotonic()
        budget = self.retry_s
        if self._deadline is not None:
            budget = max(0.0, min(budget, self._deadline - start))
        tries = 0
        while True:
            tries += 1
            try:
                result = fn()
            except StorageError:
                raise
            except OSError as e:
                if isinstance(e, FileNotFoundError):
                    if not self.is_local:
                        _OUTAGE.answered_now(self._endpoint)  # a 404 is an answer
                    if missing:
                        raise
                    raise StorageError(f"{doing}: {e}") from e
                if self.is_local or not _transient(e):
                    raise StorageError(f"{doing}: {e}") from e
                text = str(e)
                if self._endpoint not in _OUTAGE.answered and any(m in text for m in _UNREACHABLE):
                    raise StorageError(f"{doing}: {e}") from e
                elapsed = time.monotonic() - start
                if elapsed >= budget:
                    raise StorageError(
                        f"{doing}: the store did not answer for {elapsed:.0f} s ({tries} "
                        f"{'try' if tries == 1 else 'tries'}; "
                        f"{RETRY_ENV}={self.retry_s:g}): {e}"
                    ) from e
                _OUTAGE.failed(self._endpoint, doing, self.retry_s, e)
                backoff = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (tries - 1))
                # jitter: the 32 threads of a scan, and every worker, must not retry in step
                time.sleep(min(random.uniform(backoff / 2, backoff), budget - elapsed))
            else:
                if not self.is_local:
                    _OUTAGE.answered_now(self._endpoint)
                return result

    def _check_bucket(self) -> None:
        """Raise StorageError if the store's S3 bucket does not exist (asked once, the first
        time something is not found: a mistyped bucket must not read as an empty study)."""
        if self._bucket_seen:
            return
        bucket = self.root.split("/", 1)[0]
        found = self._call(
            f"cannot reach store {self.uri}",
            lambda: self.fs.get_file_info(bucket).type != pafs.FileType.NotFound,
        )
        if not found:
            raise StorageError(
                f"store {self.uri}: bucket {bucket!r} does not exist (or these credentials "
                "cannot see it)"
            )
        self._bucket_seen = True

    def check_bucket(self) -> None:
        """Raise StorageError now if the store's S3 bucket does not exist (a no-op for a
        local store). Every command that opens a study asks first, so that a mistyped
        bucket is named as such, never read as "not a study" or an empty one.
        """
        self._check_bucket()

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __reduce__(self):
        # pyarrow filesystems pickle, but rebuilding from the URI re-reads the environment
        # of the worker that unpickles it, which is what a remote Ray worker needs.
        return (Store, (self.uri,))

    def child(self, *parts: str) -> Store:
        """The store rooted at a sub-path (a study inside a storage root)."""
        if self.uri.startswith("s3://"):
            # the parts go into the path, before any `?endpoint_override=...` query
            base, sep, query = self.uri.partition("?")
            return Store("/".join([base.rstrip("/"), *parts]) + sep + query)
        return Store("/".join([str(Path(self.uri)), *parts]))

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # --- plain files -------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        path = self.path(*parts)
        found = self._call(
            f"cannot reach store {self.uri}",
            lambda: self.fs.get_file_info(path).type != pafs.FileType.NotFound,
        )
        if not found:
            self._check_bucket()
        return found

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write `data` at `rel` atomically (a reader sees the old file or the new, never half)."""
        self._write(rel, lambda f: f.write(data))

    def upload_file(self, src: Path, rel: str) -> None:
        """Copy the local file `src` to `rel` atomically, streaming (never all in memory)."""

        def copy(out) -> None:
            with open(src, "rb") as f:
                while chunk := f.read(_CHUNK):
                    out.write(chunk)

        # S3 copies an object of up to 5 GB in one request; a larger one is uploaded under
        # its final name (its upload completes, or fails, as a whole; see _write)
        direct = not self.is_local and src.is_file() and src.stat().st_size > _MAX_S3_COPY
        self._write(rel, copy, direct=direct)

    def _write(self, rel: str, fill: Callable[[Any], object], direct: bool = False) -> None:
        """Write `rel` through `fill(stream)`, atomically: under a dot-name first (which
        listings and Parquet readers ignore), then renamed (local) or copied server-side
        (S3: CopyObject makes the object appear whole) to its name. A failed or interrupted
        write leaves the old file as it was and no dot-file behind.

        On S3 each step is retried through an outage (`_call`), and repeating one is
        harmless: the upload goes to a dot-name only this call uses, and the copy, made
        again after a try whose outcome is unknown, writes the same bytes. `fill` runs once
        per try of the upload.

        `direct` (S3 only, for objects too large to copy in one request) uploads under the
        final name: leaving pyarrow's output stream completes the upload even after an
        error, so only a write whose source cannot fail half-way may use it.
        """
        final = self.path(rel)
        doing = f"cannot write {rel} in store {self.uri}"

        def upload(path: str) -> None:
            with self.fs.open_output_stream(path) as f:
                fill(f)

        if direct:
            self._call(doing, lambda: upload(final))
            return
        name = f".tmp-{uuid.uuid4().hex}-{final.rsplit('/', 1)[1]}"
        if self.is_local:
            parent = final.rsplit("/", 1)[0]
            tmp = f"{parent}/{name}"  # a rename stays on one filesystem
            try:
                self.fs.create_dir(parent, recursive=True)
                try:
                    upload(tmp)
                    os.replace(tmp, final)
                except BaseException:
                    with contextlib.suppress(OSError):
                        self.fs.delete_file(tmp)
                    raise
            except OSError as e:
                raise StorageError(f"{doing}: {e}") from e
            return
        # (S3 has no directories. pyarrow leaves an empty "dir/" marker object where it
        # deletes the last object of a prefix: one hidden prefix per store takes it.)
        tmp = f"{self.root}/.tmp/{name}"
        try:
            self._call(doing, lambda: upload(tmp))
            self._call(doing, lambda: self.fs.copy_file(tmp, final))
        except BaseException as e:
            # one try, and none when the store has stopped answering (it would only add a
            # timeout): a dot-file left behind is litter, never read
            cause = e.__cause__ if isinstance(e, StorageError) else None
            if not (isinstance(cause, OSError) and _transient(cause)):
                with contextlib.suppress(OSError):
                    self.fs.delete_file(tmp)
            raise
        # written: the dot-file is only litter now, and failing to remove it fails nothing
        with contextlib.suppress(OSError):
            self.delete(f".tmp/{name}")

    def read_bytes(self, rel: str) -> bytes:
        data = self.read_if_exists(rel)
        if data is None:
            raise StorageError(f"{rel} is not in store {self.uri}")
        return data

    def write_json(self, rel: str, obj) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def list_names(self, rel_dir: str, suffix: str = "") -> list[str]:
        """File names (not paths) directly under `rel_dir` ending in `suffix`; [] if absent."""
        return [i.base_name for i in self._list_files(rel_dir, suffix)]

    def _list_files(self, rel_dir: str, suffix: str = "") -> list[pafs.FileInfo]:
        """The files directly under `rel_dir` ending in `suffix`, by name (one listing)."""
        selector = pafs.FileSelector(self.path(rel_dir), allow_not_found=True, recursive=False)
        infos = self._call(
            f"cannot list {rel_dir} in store {self.uri}", lambda: self.fs.get_file_info(selector)
        )
        if not infos:
            self._check_bucket()
        return sorted(
            (
                i
                for i in infos
                if i.type == pafs.FileType.File
                and i.base_name.endswith(suffix)
                and not i.base_name.startswith((".", "_"))
            ),
            key=lambda i: i.base_name,
        )

    def read_if_exists(self, rel: str) -> bytes | None:
        """The bytes at `rel`, or None when there is no such file (one request)."""
        try:
            return self._call(
                f"cannot read {rel} from store {self.uri}",
                lambda: self._fetch(self.path(rel)),
                missing=True,
            )
        except FileNotFoundError:
            self._check_bucket()
            return None

    def _fetch(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def create_new(self, rel: str, data: bytes) -> bool:
        """Write `data` at `rel` only if nothing is there: True if this call created it.

        Local stores only: the file is written under a dot-name and hard-linked to its name,
        which fails if the name exists, so of two concurrent callers exactly one wins and a
        reader never sees half the content. Nothing is retried (a local call has no unknown
        outcome: the link was made, or it raised). S3 through pyarrow has no conditional
        put (see `study.sweep.lease` for what a lease does there instead).

        Raises:
            StorageError: an S3 store, or the file cannot be written.
        """
        if not self.is_local:
            raise StorageError(f"store {self.uri}: create-if-absent needs a local store")
        final = Path(self.path(rel))
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}-{final.name}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
            return True
        except OSError as e:
            raise StorageError(f"cannot create {rel} in store {self.uri}: {e}") from e
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def move(self, rel: str, dest: str) -> bool:
        """Rename `rel` to `dest`; False when `rel` is not there (someone moved it first).

        Local: one rename (atomic; of two concurrent moves of one file, one finds it gone).
        S3: a server-side copy, then the source is deleted, each retried through an outage
        (a copy made again writes the same bytes; a delete whose first try went through
        finds nothing to delete, and the move still counts as this call's).

        Raises:
            StorageError: the file cannot be moved.
        """
        src, dst = self.path(rel), self.path(dest)
        doing = f"cannot move {rel} to {dest} in store {self.uri}"
        if self.is_local:
            try:
                os.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
                os.rename(src, dst)
            except FileNotFoundError:
                return False
            except OSError as e:
                raise StorageError(f"{doing}: {e}") from e
            return True
        there = self._call(doing, lambda: self.fs.get_file_info(src).type != pafs.FileType.NotFound)
        if not there:
            return False
        self._call(doing, lambda: self.fs.copy_file(src, dst))
        with contextlib.suppress(FileNotFoundError):
            self._call(doing, lambda: self.fs.delete_file(src), missing=True)
        return True

    def delete(self, rel: str) -> None:
        """Delete the file `rel`; nothing happens if it is not there."""
        path = self.path(rel)
        with contextlib.suppress(FileNotFoundError):
            self._call(
                f"cannot delete {rel} in store {self.uri}",
                lambda: self.fs.delete_file(path),
                missing=True,
            )

    def delete_dir(self, rel_dir: str) -> None:
        """Delete the folder `rel_dir` and everything under it; nothing happens if absent."""
        if not self.exists(rel_dir):
            return
        path = self.path(rel_dir)
        with contextlib.suppress(FileNotFoundError):  # a try that went through, then retried
            self._call(
                f"cannot delete {rel_dir} in store {self.uri}",
                lambda: self.fs.delete_dir(path),
                missing=True,
            )

    def download_dir(self, rel_dir: str, dest: Path) -> None:
        """Copy a directory of the store to a local folder (for data read by memory-map).

        Raises:
            StorageError: `rel_dir` is not in the store, or cannot be copied.
        """
        dest.mkdir(parents=True, exist_ok=True)
        self._call(
            f"cannot download {rel_dir} from store {self.uri}",
            lambda: pafs.copy_files(
                self.path(rel_dir),
                str(dest),
                source_filesystem=self.fs,
                destination_filesystem=pafs.LocalFileSystem(),
            ),
        )

    def upload_dir(self, src: Path, rel_dir: str, last: str | None = None) -> None:
        """Copy a local folder into the store, each file written atomically; the file named
        `last` (e.g. a marker of completeness) is written after all the others."""
        files = sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: p.name == last)
        for p in files:
            self.upload_file(p, f"{rel_dir}/{p.relative_to(src).as_posix()}")

    # --- Parquet -----------------------------------------------------------------------
    def write_table(self, rel: str, table: pa.Table) -> None:
        """Write one Parquet file atomically (one part per unit, named by its id)."""
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(rel, buf.getvalue())

    def read_dataset(
        self, rel_dir: str, schema: pa.Schema | None = None, columns: Iterable[str] | None = None
    ) -> pa.Table | None:
        """Read every Parquet part under `rel_dir` as one table; None when there is none.

        Args:
            schema: the table's contract; pass it so that parts whose nullable columns happen
                to be all-null still read as one consistent table.
        """
        if not self.list_names(rel_dir, ".parquet"):
            return None
        doing = f"cannot read {rel_dir} from store {self.uri}"

        def read() -> pa.Table:
            ds = pads.dataset(
                self.path(rel_dir), filesystem=self.fs, format="parquet", schema=schema
            )
            return ds.to_table(columns=list(columns) if columns else None)

        try:
            return self._call(doing, read)
        except pa.ArrowException as e:  # ArrowInvalid: a part that is not Parquet
            raise StorageError(f"{doing}: {e}") from e

    def scan_parts(
        self,
        rel_dir: str,
        key: pa.Field,
        one_row: bool = True,
        schema: pa.Schema | None = None,
    ) -> PartScan:
        """Check every `<id>.parquet` part under `rel_dir`: one listing, then each part's
        footer and key column read in parallel (one small GET per part on S3).

        A part is readable when it is Parquet, has the column `key` of `key`'s type, holds
        exactly one row (`one_row`; else at least one) and every row's key equals its file
        name. Anything else is reported in `PartScan.corrupt`, never raised: a result that
        cannot be read is not a result.

        Args:
            key: the key column, e.g. `TRIALS_SCHEMA.field("unit_id")`.
            schema: also read these columns (those the part has) and conform the rows to it
                (missing columns as nulls); without it only the key column is read.

        Raises:
            StorageError: the store cannot be listed or a part cannot be fetched (an
                unreachable store is not a corrupt file).
        """
        infos = self._list_files(rel_dir, ".parquet")
        if not infos:
            return PartScan()
        threads = _SCAN_THREADS_LOCAL if self.is_local else _SCAN_THREADS_S3
        with ThreadPoolExecutor(min(threads, len(infos))) as pool:
            read = pool.map(lambda i: self._read_part(rel_dir, i, key, one_row, schema), infos)
            found = list(zip(infos, read, strict=True))
        scan = PartScan()
        for info, result in found:
            if isinstance(result, str):
                scan.corrupt[info.base_name] = result
            else:
                scan.tables[info.base_name.removesuffix(".parquet")] = result
        return scan

    def _read_part(
        self,
        rel_dir: str,
        info: pafs.FileInfo,
        key: pa.Field,
        one_row: bool,
        schema: pa.Schema | None,
    ) -> pa.Table | str:
        """One part's rows, or why it is not a readable part (a str)."""
        uid = info.base_name.removesuffix(".parquet")
        doing = f"cannot read {rel_dir}/{info.base_name} from store {self.uri}"
        try:
            table = self._call(
                doing,
                lambda: self._read_part_once(info, key, one_row, schema, doing),
                missing=True,
            )
        except FileNotFoundError:
            return "removed while it was being read"
        if isinstance(table, str):
            return table
        ids = set(table.column(key.name).to_pylist())
        if ids != {uid}:
            shown = ", ".join(repr(i) for i in sorted(ids, key=str)[:3])
            return f"its {key.name} ({shown}) is not its file name's ({uid!r})"
        if schema is None:
            return table
        try:
            return _conform(table, schema)
        except (pa.ArrowException, ValueError) as e:
            return f"does not fit the table's schema ({' '.join(str(e).split())[:200]})"

    def _read_part_once(
        self,
        info: pafs.FileInfo,
        key: pa.Field,
        one_row: bool,
        schema: pa.Schema | None,
        doing: str,
    ) -> pa.Table | str:
        """One try of `_read_part`'s reading: the rows, or why the file is not a part. An
        error of the store (OSError: retried by the caller) is raised, never taken for the
        file's."""
        whole = info.size is not None and info.size <= _WHOLE_PART
        if whole:  # fetched first: every error after this is the file's own
            source = pa.BufferReader(self._fetch(info.path))
        else:
            source = self.fs.open_input_file(info.path)
        try:
            with source:
                part = pq.ParquetFile(source)
                names = part.schema_arrow.names
                if key.name not in names:
                    return f"no {key.name} column"
                found = part.schema_arrow.field(key.name).type
                if found != key.type:
                    return f"{key.name} is of type {found}, not {key.type}"
                rows = part.metadata.num_rows
                if (one_row and rows != 1) or rows < 1:
                    return f"{rows} rows, not {'exactly one' if one_row else 'at least one'}"
                wanted = [key.name] if schema is None else [n for n in schema.names if n in names]
                return part.read(columns=wanted, use_threads=False)
        except (pa.ArrowException, OSError) as e:
            if not whole and not isinstance(e, pa.ArrowInvalid):
                if isinstance(e, OSError):
                    raise  # reading from the store failed half-way
                raise StorageError(f"{doing}: {e}") from e
            return f"not a readable Parquet file ({' '.join(str(e).split())[:200]})"


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in order: cast, or all-null where absent."""
    n = table.num_rows
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)

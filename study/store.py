"""One study root on a local path or S3, through pyarrow filesystems.

The store is the source of truth of a study: a unit is done when its result file is here.
Every write is atomic: a local file is written under a dot-name and renamed into place; an S3
object appears only when its upload completes. Readers of Parquet datasets ignore names that
start with "." or "_", so a half-written temporary file is never read as a result.

This module depends on pyarrow only, so `analysis/` can read a store without Ray or torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.errors import StorageError

__all__ = ["Store", "PartScan", "filesystem_for"]

_CHUNK = 16 << 20  # bytes per write when streaming a file into the store
_MAX_S3_COPY = 5 * 10**9  # S3's CopyObject limit (5 GB): larger objects are uploaded directly
# A result part up to this size is fetched whole in one request and parsed in memory (a
# trials row is ~15 KB): one GET per part on S3, and any error after the fetch is the file's.
_WHOLE_PART = 8 << 20
_SCAN_THREADS_S3 = 32  # parts read at once from S3 (each a small GET: latency-bound)
_SCAN_THREADS_LOCAL = 4


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
    """
    endpoint = (
        query.get("endpoint_override", [None])[0]
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    kwargs: dict = {}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = query.get("scheme", [parsed.scheme or "https"])[0]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


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

    Args:
        uri: a local path or `s3://bucket/prefix`.
    """

    def __init__(self, uri: str) -> None:
        self.fs, self.root = filesystem_for(uri)
        # A local store is always named by its absolute path: Ray workers run in other
        # working directories (Tune moves each trial into its own), so "studies/x" would
        # name a different folder there.
        self.uri = uri.rstrip("/") if uri.startswith("s3://") else self.root
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        self._bucket_seen = self.is_local  # a missing bucket is reported once looked for

    def _check_bucket(self) -> None:
        """Raise StorageError if the store's S3 bucket does not exist (asked once, the first
        time something is not found: a mistyped bucket must not read as an empty study)."""
        if self._bucket_seen:
            return
        bucket = self.root.split("/", 1)[0]
        try:
            found = self.fs.get_file_info(bucket).type != pafs.FileType.NotFound
        except OSError as e:
            raise StorageError(f"cannot reach store {self.uri}: {e}") from e
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
        try:
            found = self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound
        except OSError as e:
            raise StorageError(f"cannot reach store {self.uri}: {e}") from e
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

    def _write(self, rel: str, fill, direct: bool = False) -> None:
        """Write `rel` through `fill(stream)`, atomically: under a dot-name first (which
        listings and Parquet readers ignore), then renamed (local) or copied server-side
        (S3: CopyObject makes the object appear whole) to its name. A failed or interrupted
        write leaves the old file as it was and no dot-file behind.

        `direct` (S3 only, for objects too large to copy in one request) uploads under the
        final name: leaving pyarrow's output stream completes the upload even after an
        error, so only a write whose source cannot fail half-way may use it.
        """
        final = self.path(rel)
        parent = final.rsplit("/", 1)[0]
        try:
            if direct:
                with self.fs.open_output_stream(final) as f:
                    fill(f)
                return
            name = f".tmp-{uuid.uuid4().hex}-{final.rsplit('/', 1)[1]}"
            if self.is_local:
                # (S3 has no directories: creating one would only leave a marker object.)
                self.fs.create_dir(parent, recursive=True)
                tmp = f"{parent}/{name}"  # a rename stays on one filesystem
            else:
                # pyarrow leaves an empty "dir/" marker object where it deletes the last
                # object of a prefix: one hidden prefix per store takes it, not results/
                tmp = f"{self.root}/.tmp/{name}"
            try:
                with self.fs.open_output_stream(tmp) as f:
                    fill(f)
                if self.is_local:
                    os.replace(tmp, final)
                else:
                    self.fs.move(tmp, final)  # CopyObject, then the dot-name is deleted
            except BaseException:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(tmp)
                raise
        except OSError as e:
            raise StorageError(f"cannot write {rel} in store {self.uri}: {e}") from e

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError as e:
            self._check_bucket()
            raise StorageError(f"{rel} is not in store {self.uri}") from e
        except OSError as e:
            raise StorageError(f"cannot read {rel} from store {self.uri}: {e}") from e

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
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as e:
            raise StorageError(f"cannot list {rel_dir} in store {self.uri}: {e}") from e
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
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            self._check_bucket()
            return None
        except OSError as e:
            raise StorageError(f"cannot read {rel} from store {self.uri}: {e}") from e

    def create_new(self, rel: str, data: bytes) -> bool:
        """Write `data` at `rel` only if nothing is there: True if this call created it.

        Local stores only: the file is written under a dot-name and hard-linked to its name,
        which fails if the name exists, so of two concurrent callers exactly one wins and a
        reader never sees half the content. S3 through pyarrow has no conditional put (see
        `study.sweep.lease` for what a lease does there instead).

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
        S3: a server-side copy, then the source is deleted.

        Raises:
            StorageError: the file cannot be moved.
        """
        src, dst = self.path(rel), self.path(dest)
        try:
            if self.is_local:
                os.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
                os.rename(src, dst)
            else:
                if self.fs.get_file_info(src).type == pafs.FileType.NotFound:
                    return False
                self.fs.move(src, dst)
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StorageError(f"cannot move {rel} to {dest} in store {self.uri}: {e}") from e

    def delete(self, rel: str) -> None:
        """Delete the file `rel`; nothing happens if it is not there."""
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot delete {rel} in store {self.uri}: {e}") from e

    def delete_dir(self, rel_dir: str) -> None:
        try:
            if self.exists(rel_dir):
                self.fs.delete_dir(self.path(rel_dir))
        except OSError as e:
            raise StorageError(f"cannot delete {rel_dir} in store {self.uri}: {e}") from e

    def download_dir(self, rel_dir: str, dest: Path) -> None:
        """Copy a directory of the store to a local folder (for data read by memory-map).

        Raises:
            StorageError: `rel_dir` is not in the store, or cannot be copied.
        """
        dest.mkdir(parents=True, exist_ok=True)
        try:
            pafs.copy_files(
                self.path(rel_dir),
                str(dest),
                source_filesystem=self.fs,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        except OSError as e:
            raise StorageError(f"cannot download {rel_dir} from store {self.uri}: {e}") from e

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
        try:
            ds = pads.dataset(
                self.path(rel_dir), filesystem=self.fs, format="parquet", schema=schema
            )
            return ds.to_table(columns=list(columns) if columns else None)
        except (OSError, pa.ArrowException) as e:  # ArrowInvalid: a part that is not Parquet
            raise StorageError(f"cannot read {rel_dir} from store {self.uri}: {e}") from e

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
        whole = info.size is not None and info.size <= _WHOLE_PART
        try:
            if whole:  # fetched first: every error after this is the file's own
                with self.fs.open_input_stream(info.path) as f:
                    source = pa.BufferReader(f.read())
            else:
                source = self.fs.open_input_file(info.path)
        except FileNotFoundError:
            return "removed while it was being read"
        except OSError as e:
            raise StorageError(
                f"cannot read {rel_dir}/{info.base_name} from store {self.uri}: {e}"
            ) from e
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
                table = part.read(columns=wanted, use_threads=False)
        except (pa.ArrowException, OSError) as e:
            if not whole and not isinstance(e, pa.ArrowInvalid):
                raise StorageError(
                    f"cannot read {rel_dir}/{info.base_name} from store {self.uri}: {e}"
                ) from e
            return f"not a readable Parquet file ({' '.join(str(e).split())[:200]})"
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


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in order: cast, or all-null where absent."""
    n = table.num_rows
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)

"""Download the public ECG datasets: resumable, checksum-verified, idempotent.

Each dataset is a `DownloadSource`: where its files live, how its file list is obtained and
which part of that list belongs to it. PhysioNet publishes `SHA256SUMS.txt` at the root of
every version folder (`<sha256> <relative path>` per line); it is both the manifest and the
checksum source. A source without one (Zenodo) has a fixed file list and no checksums, and the
report says so.

Files land under `dest/<path relative to the version folder>`, the layout `wget -r -np` gives,
so `cpsc2018` ends up in `dest/training/cpsc_2018/g1/A0001.hea`. A file is written as
`<name>.part` and renamed only once complete and verified, so a file under its final name is
always whole; an interrupted `.part` is continued with an HTTP Range request on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import requests
from tqdm import tqdm

from study.errors import ConfigError, DataError, StorageError

__all__ = ["DownloadSource", "DownloadReport", "SOURCES", "download", "parse_manifest"]

log = logging.getLogger(__name__)

RETRIES = 4  # transient failures retried per request; 5 tries span ~7.5 s of backoff
BACKOFF_S = 0.5  # first wait; doubles each retry
TIMEOUT_S = (10.0, 60.0)  # (connect, read): a stalled read is a transient error, not a hang
CHUNK_BYTES = 1 << 16  # also how much of a cut-off transfer may be lost
VERIFIED_INDEX = ".download-verified.json"  # in dest: files already hashed, by size and mtime

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (
    requests.ConnectionError,  # includes connection reset and refused
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # body cut short (IncompleteRead)
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DownloadSource:
    """Where one dataset's files live and how to list them.

    Attributes:
        url: the version folder (ends with "/"); manifest and file paths are relative to it.
        licence: the licence the publisher states (SPDX-like id).
        approx_gb: approximate size of the selected files, uncompressed, in GB.
        manifest: name of a `<sha256> <path>` file at `url`, or None for a fixed list.
        files: the fixed file list when there is no manifest.
        select: globs over manifest paths that belong to this dataset (`*` spans folders).
        query: appended to every file URL (Zenodo serves `?download=1` as the raw file).
        note: what a user should know (layout, what is left out).
        extract: archives (paths in the file list) to unpack into the destination.
        prepare_args: extra `study data prepare` arguments the downloaded layout needs.
    """

    url: str
    licence: str
    approx_gb: float
    manifest: str | None = "SHA256SUMS.txt"
    files: tuple[str, ...] = ()
    select: tuple[str, ...] = ("*",)
    query: str = ""
    note: str = ""
    extract: tuple[str, ...] = ()  # zip archives unpacked into dest after download
    prepare_args: str = ""  # what `study data prepare` needs besides --source for this layout

    def __post_init__(self) -> None:
        if (self.manifest is None) == (not self.files):
            raise ConfigError(
                f"a source needs exactly one of manifest or files, got manifest="
                f"{self.manifest!r} and {len(self.files)} files for {self.url}"
            )


_CINC2021 = "https://physionet.org/files/challenge-2021/1.0.3/"

SOURCES: dict[str, DownloadSource] = {
    "ptbxl": DownloadSource(
        url="https://physionet.org/files/ptb-xl/1.0.3/",
        licence="CC-BY-4.0",
        approx_gb=3.0,
        note="records100/ (100 Hz) and records500/ (500 Hz); use include to fetch one",
    ),
    "cpsc2018": DownloadSource(
        url=_CINC2021,
        licence="CC-BY-4.0",
        approx_gb=1.4,
        select=("training/cpsc_2018/*",),
        note="CinC 2021 copy, labels as SNOMED-CT codes in the headers; files in "
        "training/cpsc_2018/g*/",
    ),
    "georgia": DownloadSource(
        url=_CINC2021,
        licence="CC-BY-4.0",
        approx_gb=1.3,
        select=("training/georgia/*",),
        note="CinC 2021 copy; files in training/georgia/g*/",
    ),
    "chapman": DownloadSource(
        url="https://physionet.org/files/ecg-arrhythmia/1.0.0/",
        licence="CC-BY-4.0",
        approx_gb=5.5,
        note="Chapman-Shaoxing-Ningbo 12-lead, 45k records under WFDBRecords/",
    ),
    "ptb": DownloadSource(
        url="https://physionet.org/files/ptbdb/1.0.0/",
        licence="ODC-By-1.0",
        approx_gb=1.7,
    ),
    "cinc2017": DownloadSource(
        url="https://physionet.org/files/challenge-2017/1.0.0/",
        licence="ODC-By-1.0",
        approx_gb=0.2,
        select=("training/*", "REFERENCE-v3.csv"),
        note="training/A00..A08/*.{hea,mat} and the final labels REFERENCE-v3.csv; the "
        "zip copies (training2017.zip, sample2017.zip) and validation/ are left out",
        prepare_args="--option reference=REFERENCE-v3.csv",
    ),
    "icentia11k": DownloadSource(
        url="https://physionet.org/files/icentia11k-continuous-ecg/1.0/",
        licence="CC-BY-NC-SA-4.0",
        approx_gb=1100.0,
        note="very large: ~11k patients in p00/../p10/; use include to fetch a subset",
    ),
    "code15_test": DownloadSource(
        url="https://zenodo.org/records/3765780/files/",
        licence="CC-BY-4.0",
        approx_gb=0.2,
        manifest=None,
        files=("data.zip",),
        query="?download=1",
        note="CODE test set (827 exams): data.zip holds ecg_tracings.hdf5, attributes.csv "
        "and annotations/*.csv; unpacked after download",
        extract=("data.zip",),
    ),
}


@dataclass(frozen=True)
class DownloadReport:
    """What one `download` call did.

    Attributes:
        name: the dataset name.
        dest: the folder the files are in.
        files: how many files the manifest (after `include`) selects.
        downloaded: files fetched this run.
        skipped: files already present (and, where checksums exist, verified).
        bytes_downloaded: file bytes received over the network, retries included.
        seconds: wall time of the call.
        verified: whether every file was checked against a published SHA-256.
    """

    name: str
    dest: Path
    files: int
    downloaded: int
    skipped: int
    bytes_downloaded: int
    seconds: float
    verified: bool

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """One line for a log or a CLI."""
        check = (
            "SHA-256 verified"
            if self.verified
            else "NOT verified: the source publishes no checksums"
        )
        return (
            f"{self.name}: {self.downloaded} downloaded, {self.skipped} already present, "
            f"{self.files} files, {self.bytes_downloaded / 1e6:.1f} MB in {self.seconds:.1f} s, "
            f"{check} -> {self.dest}"
        )


def download(
    name: str,
    dest: Path,
    *,
    base_url: str | None = None,
    include: str | None = None,
    workers: int = 4,
    progress: bool = True,
) -> DownloadReport:
    """Download one dataset into `dest`, resuming and verifying; cheap to run again.

    Args:
        name: a key of `SOURCES`.
        dest: the folder to fill (created if missing); files keep their remote relative paths.
        base_url: replaces the source's version-folder URL (a mirror, or a test server).
        include: a glob over relative paths (`*` spans folders) that limits the files,
            e.g. "records100/*".
        workers: files fetched in parallel.
        progress: show a tqdm bar of bytes received over all files.

    Returns:
        Counts of downloaded and skipped files, bytes received and seconds taken.

    Raises:
        ConfigError: an unknown dataset name or workers < 1.
        DataError: a malformed manifest, no file matching `include`, a file that fails its
            checksum twice (it is deleted), or a request that keeps failing.
        StorageError: `dest` cannot be created.
    """
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset {name!r} for download; known: {', '.join(SOURCES)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    source = SOURCES[name]
    url = base_url or source.url
    url = url if url.endswith("/") else url + "/"
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"download folder {dest} cannot be created: {err}") from err

    start = time.monotonic()
    fetcher = _Fetcher(url, source.query)
    try:
        expected = _file_list(source, fetcher, dest)
        paths = _select(expected, source, include, name)
        if source.manifest is None:
            log.warning("%s publishes no checksums: downloaded files are not verified", name)
        index = _VerifiedIndex(dest / VERIFIED_INDEX)
        with tqdm(
            desc=name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress
        ) as bar:
            fetcher.on_bytes = bar.update
            try:
                outcomes = _run_all(
                    paths,
                    workers,
                    lambda rel: _ensure(rel, expected[rel], dest, fetcher, index),
                    lambda done: bar.set_postfix_str(f"{done}/{len(paths)} files", refresh=False),
                )
            finally:
                index.save()  # what was verified stays verified, even when a file failed
    finally:
        fetcher.close()
    downloaded = sum(outcomes)
    for archive in source.extract:
        _extract(dest / archive, dest)
    return DownloadReport(
        name=name,
        dest=dest,
        files=len(paths),
        downloaded=downloaded,
        skipped=len(paths) - downloaded,
        bytes_downloaded=fetcher.bytes_received,
        seconds=time.monotonic() - start,
        verified=source.manifest is not None,
    )


def _extract(archive: Path, dest: Path) -> None:
    """Unpack a zip archive into `dest` once (a marker file records that it was done).

    The archive's single top-level folder, if it has one, is stripped, so the dataset's
    files land at `dest` itself. Members that would escape `dest` are refused.
    """
    marker = dest / f".extracted-{archive.name}"
    if marker.exists() and marker.stat().st_mtime >= archive.stat().st_mtime:
        return
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        tops = {n.split("/", 1)[0] for n in names}
        strip = len(tops) == 1 and all("/" in n for n in names)
        root = dest.resolve()
        for name in names:
            rel = name.split("/", 1)[1] if strip else name
            target = (dest / rel).resolve()
            if root not in target.parents:
                raise DataError(f"{archive.name}: member {name!r} would be written outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    marker.write_text(archive.name)


# --- manifest -----------------------------------------------------------------------------


def _file_list(source: DownloadSource, fetcher: _Fetcher, dest: Path) -> dict[str, str | None]:
    """Relative path -> expected SHA-256 (None where the source publishes none)."""
    if source.manifest is None:
        return {_safe_relpath(p, "the fixed file list"): None for p in source.files}
    text = fetcher.get_text(source.manifest)
    manifest = parse_manifest(text, source.manifest)
    _write_atomic(dest / source.manifest, text.encode())  # lets `sha256sum -c` check offline
    return dict(manifest)


def parse_manifest(text: str, origin: str = "SHA256SUMS.txt") -> dict[str, str]:
    """Parse `<sha256> <relative path>` lines (sha256sum's `*path` binary mark allowed).

    Raises:
        DataError: a line without a 64-hex-digit hash and a path, or a path that is absolute
            or climbs out of the dataset folder.
    """
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        digest = parts[0].lower()
        if len(parts) != 2 or not _SHA256.fullmatch(digest):
            raise DataError(
                f"{origin} line {lineno} must be '<64 hex digits> <path>', got {line[:120]!r}"
            )
        rel = _safe_relpath(parts[1].lstrip("*"), f"{origin} line {lineno}")
        out[rel] = digest
    if not out:
        raise DataError(f"{origin} must list at least one file, got an empty manifest")
    return out


def _safe_relpath(path: str, origin: str) -> str:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or "\\" in path or not p.parts:
        raise DataError(f"{origin}: a path must stay inside the dataset folder, got {path!r}")
    return p.as_posix()


def _select(
    expected: dict[str, str | None], source: DownloadSource, include: str | None, name: str
) -> list[str]:
    paths = [p for p in expected if any(fnmatchcase(p, s) for s in source.select)]
    if not paths:
        raise DataError(
            f"{name}: the manifest has {len(expected)} files but none matches the source's "
            f"selection {list(source.select)}; has the remote layout changed?"
        )
    if include is not None:
        chosen = [p for p in paths if fnmatchcase(p, include)]
        if not chosen:
            raise DataError(
                f"include must match at least one of the {len(paths)} files of {name}, got "
                f"{include!r} (e.g. {paths[0]!r})"
            )
        paths = chosen
    return sorted(paths)


# --- one file -----------------------------------------------------------------------------


def _ensure(
    rel: str, digest: str | None, dest: Path, fetcher: _Fetcher, index: _VerifiedIndex
) -> bool:
    """Make `dest/rel` present and verified; True if it had to be downloaded."""
    final = dest / rel
    if final.is_file():
        if digest is None or index.matches(rel, final, digest):
            return False
        if _sha256_file(final) == digest:
            index.add(rel, final, digest)
            return False
        log.info("%s differs from the manifest; downloading it again", rel)
    part = final.with_name(final.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    got = fetcher.to_part(rel, part)
    if digest is not None and got != digest:
        part.unlink()  # a bad copy may come from a cache or proxy: one clean retry
        got = fetcher.to_part(rel, part)
        if got != digest:
            part.unlink()
            raise DataError(
                f"{rel} must have SHA-256 {digest} (manifest), got {got} twice; "
                f"the file was deleted"
            )
    os.replace(part, final)
    if digest is not None:
        index.add(rel, final, digest)
    return True


class _Fetcher:
    """HTTP GETs relative to one base URL: a Session per thread, retries, Range resume."""

    def __init__(self, base_url: str, query: str) -> None:
        self.base_url = base_url
        self.query = query
        self.bytes_received = 0
        self.on_bytes: Callable[[int], None] = lambda n: None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def url(self, rel: str) -> str:
        return self.base_url + quote(rel) + self.query

    def get_text(self, rel: str) -> str:
        def fetch() -> str:
            with self._get(self.url(rel), {}) as r:
                self._check_status(r, self.url(rel), (200,))
                try:
                    return r.content.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{self.url(rel)} must be UTF-8 text: {err}") from err

        return self._retrying(self.url(rel), fetch)

    def to_part(self, rel: str, part: Path) -> str:
        """Complete `part` from the server (resuming what is there); return its SHA-256."""
        url = self.url(rel)
        return self._retrying(url, lambda: self._stream(url, part))

    def _stream(self, url: str, part: Path) -> str:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._get(url, headers) as r:
            if r.status_code == 416 and offset:
                # the part is as long as the file or longer: it cannot be continued
                part.unlink()
                raise _Restart(f"HTTP 416 for a {offset}-byte partial file")
            self._check_status(r, url, (200, 206))
            resume = r.status_code == 206 and offset > 0
            if resume and not r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                part.unlink()
                raise _Restart(f"Content-Range {r.headers.get('Content-Range')!r} != {offset}")
            # 200 to a Range request: the server ignored it; start over from byte 0
            hasher = hashlib.sha256()
            if resume:
                for block in _blocks(part):
                    hasher.update(block)
            with open(part, "ab" if resume else "wb") as f:
                for chunk in r.iter_content(CHUNK_BYTES):
                    f.write(chunk)
                    hasher.update(chunk)
                    self._count(len(chunk))
        return hasher.hexdigest()

    def _retrying(self, url: str, attempt: Callable[[], str]) -> str:
        last: Exception | None = None
        for i in range(RETRIES + 1):
            try:
                return attempt()
            except _Restart as err:
                last = err  # not the network's fault: go again at once
            except (*_TRANSIENT_ERRORS, _TransientStatus) as err:
                last = err
                if i < RETRIES:
                    time.sleep(BACKOFF_S * 2**i)
        raise DataError(f"GET {url} failed {RETRIES + 1} times, last: {last}") from last

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        # identity: a compressed transfer would make Range offsets refer to other bytes
        headers = {"Accept-Encoding": "identity", **headers}
        return self._session().get(url, headers=headers, stream=True, timeout=TIMEOUT_S)

    @staticmethod
    def _check_status(r: requests.Response, url: str, ok: tuple[int, ...]) -> None:
        if r.status_code in _TRANSIENT_STATUS:
            raise _TransientStatus(f"HTTP {r.status_code} {r.reason}")
        if r.status_code not in ok:
            raise DataError(f"GET {url} must return HTTP {ok}, got {r.status_code} {r.reason}")

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = "ecg-transfer-study-download"
            with self._lock:
                self._sessions.append(s)
        return s

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_received += n
            self.on_bytes(n)

    def close(self) -> None:
        for s in self._sessions:
            s.close()


class _TransientStatus(Exception):
    """A 429/5xx answer: worth retrying after a pause."""


class _Restart(Exception):
    """The partial file was unusable and removed: fetch from byte 0."""


# --- bookkeeping --------------------------------------------------------------------------


class _VerifiedIndex:
    """Files already hashed, keyed by (size, mtime): a re-run need not hash gigabytes again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, list] = {}
        self._dirty = False
        if path.is_file():
            try:
                self._entries = json.loads(path.read_text())["files"]
            except (ValueError, KeyError, TypeError):
                log.warning("%s is unreadable; every present file will be hashed again", path)

    def matches(self, rel: str, file: Path, digest: str) -> bool:
        st = file.stat()
        return self._entries.get(rel) == [st.st_size, st.st_mtime_ns, digest]

    def add(self, rel: str, file: Path, digest: str) -> None:
        st = file.stat()
        with self._lock:
            self._entries[rel] = [st.st_size, st.st_mtime_ns, digest]
            self._dirty = True

    def save(self) -> None:
        with self._lock:
            if self._dirty:
                data = json.dumps({"version": 1, "files": self._entries}, sort_keys=True)
                _write_atomic(self.path, data.encode())
                self._dirty = False


def _run_all(
    paths: list[str],
    workers: int,
    job: Callable[[str], bool],
    on_done: Callable[[int], object],
) -> list[bool]:
    """Run `job` on every path; on the first error cancel what has not started, re-raise."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
    futures: list[Future[bool]] = [pool.submit(job, p) for p in paths]
    results: list[bool] = []
    try:
        for f in as_completed(futures):
            results.append(f.result())
            on_done(len(results))
        return results
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        pool.shutdown(wait=True)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    for block in _blocks(path):
        h.update(block)
    return h.hexdigest()


def _blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            yield block


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)

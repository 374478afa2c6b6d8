"""Dataset download against a real HTTP server on 127.0.0.1 that mimics PhysioNet's layout."""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from study.data import download as dl
from study.data.download import SOURCES, download, parse_manifest
from study.errors import ConfigError, DataError

pytestmark = pytest.mark.timeout(60)

VERSION = "ptb-xl/1.0.3"
BIG = "records100/00000/00001_lr.dat"  # big enough to resume in the middle of
SMALL = "records100/00000/00002_lr.dat"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Remote

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        entry = {"path": rel, "query": urlsplit(self.path).query, "range": None, "status": 0}
        entry["range"] = self.headers.get("Range")
        entry["sent"] = 0
        with srv.lock:
            srv.requests.append(entry)
            failing = srv.fail.get(rel, 0)
            if failing:
                srv.fail[rel] = failing - 1
            cut = rel in srv.cut
            srv.cut.discard(rel)
        if failing:
            return self._reply(entry, 503, b"busy")
        file = srv.root / rel
        if not file.is_file():
            return self._reply(entry, 404, b"not found")
        data = file.read_bytes()
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", entry["range"] or "")
        if m and not srv.ignore_range:
            start, status = int(m[1]), 206
            if start >= len(data):
                return self._reply(entry, 416, b"")
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        entry["status"] = status
        if cut:  # half the body, then drop the connection (a reset mid-transfer)
            body = body[: len(body) // 2]
            self.close_connection = True
        # recorded before writing: the client may finish reading (and the test assert)
        # before this thread runs on after the write
        entry["sent"] = len(body)
        self.wfile.write(body)
        self.wfile.flush()

    def _reply(self, entry: dict, status: int, body: bytes) -> None:
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Remote(ThreadingHTTPServer):
    """Serves `root`; records every GET; can fail, cut, or ignore Range on demand."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.fail: dict[str, int] = {}  # path -> how many 503s to answer first
        self.cut: set[str] = set()  # paths whose next body is cut short
        self.ignore_range = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{VERSION}/"

    def gets(self, rel: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == f"{VERSION}/{rel}"]

    def file_gets(self) -> list[dict]:
        return [r for r in self.requests if not r["path"].endswith("SHA256SUMS.txt")]


def _physionet_like(folder: Path) -> dict[str, bytes]:
    """A version folder in PhysioNet's layout: RECORDS, SHA256SUMS.txt, WFDB files."""
    files = {
        "RECORDS": b"records100/00000/00001_lr\nrecords100/00000/00002_lr\n",
        "ptbxl_database.csv": b"ecg_id,patient_id,filename_lr\n1,15709,records100/00000/00001_lr\n",
        "records100/00000/00001_lr.hea": b"00001_lr 12 100 1000\n",
        BIG: bytes(range(256)) * 1200 + b"tail",  # 307 204 bytes
        "records100/00000/00002_lr.hea": b"00002_lr 12 100 1000\n",
        SMALL: b"\x01\x02" * 4000,
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(d).hexdigest()} {rel}\n" for rel, d in files.items())
    (folder / "SHA256SUMS.txt").write_text(sums)
    return files


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """No proxy for 127.0.0.1 and no real backoff waits."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)


@pytest.fixture()
def remote(tmp_path):
    root = tmp_path / "remote"
    files = _physionet_like(root / VERSION)
    server = _Remote(root)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    server.files = files
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _fetch(remote: _Remote, dest: Path, **kw) -> dl.DownloadReport:
    return download("ptbxl", dest, base_url=remote.url, progress=False, **kw)


def _assert_complete(dest: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data, rel
    assert not list(dest.rglob("*.part"))


def test_full_download_verifies_every_file(remote, tmp_path):
    dest = tmp_path / "ptbxl"
    report = _fetch(remote, dest)

    _assert_complete(dest, remote.files)
    assert (report.files, report.downloaded, report.skipped) == (6, 6, 0)
    assert report.bytes_downloaded == sum(map(len, remote.files.values()))
    assert report.verified and "SHA-256 verified" in report.summary()
    assert (dest / "SHA256SUMS.txt").read_text().count("\n") == 6


def test_rerun_skips_every_verified_file(remote, tmp_path):
    dest = tmp_path / "ptbxl"
    _fetch(remote, dest)
    remote.requests.clear()

    again = _fetch(remote, dest)
    assert (again.downloaded, again.skipped, again.bytes_downloaded) == (0, 6, 0)
    assert remote.file_gets() == []  # only the manifest was asked for

    # without the index of verified files the files are hashed, still not fetched
    (dest / dl.VERIFIED_INDEX).unlink()
    assert _fetch(remote, dest).skipped == 6
    assert remote.file_gets() == []

    # a local file that no longer matches its checksum is fetched again, alone
    (dest / SMALL).write_bytes(b"edited")
    third = _fetch(remote, dest)
    assert (third.downloaded, third.skipped) == (1, 5)
    assert [r["path"] for r in remote.file_gets()] == [f"{VERSION}/{SMALL}"]
    _assert_complete(dest, remote.files)


def test_partial_file_resumes_with_a_range_request(remote, tmp_path):
    dest = tmp_path / "ptbxl"
    data = remote.files[BIG]
    (dest / BIG).parent.mkdir(parents=True)
    (dest / f"{BIG}.part").write_bytes(data[:100_000])

    report = _fetch(remote, dest, include=BIG)

    (get,) = remote.gets(BIG)
    assert (get["range"], get["status"]) == ("bytes=100000-", 206)
    assert get["sent"] == len(data) - 100_000
    assert report.bytes_downloaded == len(data) - 100_000
    assert (dest / BIG).read_bytes() == data
    assert not (dest / f"{BIG}.part").exists()


def test_server_that_ignores_range_restarts_the_file_cleanly(remote, tmp_path):
    dest = tmp_path / "ptbxl"
    remote.ignore_range = True
    (dest / BIG).parent.mkdir(parents=True)
    (dest / f"{BIG}.part").write_bytes(b"\xff" * 100_000)  # would corrupt the file if appended to

    _fetch(remote, dest, include=BIG)

    (get,) = remote.gets(BIG)
    assert (get["range"], get["status"], get["sent"]) == (
        "bytes=100000-",
        200,
        len(remote.files[BIG]),
    )
    assert (dest / BIG).read_bytes() == remote.files[BIG]


def test_checksum_mismatch_deletes_the_file_and_names_both_hashes(remote, tmp_path):
    dest = tmp_path / "ptbxl"
    served = b"bit rot"
    (remote.root / VERSION / SMALL).write_bytes(served)

    with pytest.raises(DataError) as err:
        _fetch(remote, dest, workers=1)

    message = str(err.value)
    assert SMALL in message
    assert hashlib.sha256(remote.files[SMALL]).hexdigest() in message
    assert hashlib.sha256(served).hexdigest() in message
    assert len(remote.gets(SMALL)) == 2  # one retry, then give up
    assert not (dest / SMALL).exists() and not (dest / f"{SMALL}.part").exists()


def test_include_glob_limits_the_files(remote, tmp_path):
    dest = tmp_path / "ptbxl"
    report = _fetch(remote, dest, include="records100/*/00001_lr.*")

    assert report.files == report.downloaded == 2
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*_lr.*")) == [
        "records100/00000/00001_lr.dat",
        "records100/00000/00001_lr.hea",
    ]
    with pytest.raises(DataError, match=r"include must match .* got 'records500/\*'"):
        _fetch(remote, dest, include="records500/*")


def test_503_once_is_retried(remote, tmp_path):
    dest = tmp_path / "ptbxl"
    remote.fail[f"{VERSION}/{SMALL}"] = 1

    report = _fetch(remote, dest)

    assert [r["status"] for r in remote.gets(SMALL)] == [503, 200]
    assert report.downloaded == 6
    _assert_complete(dest, remote.files)


def test_connection_cut_mid_file_resumes_where_it_stopped(remote, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "CHUNK_BYTES", 8192)  # what arrived is on disk to within a chunk
    dest = tmp_path / "ptbxl"
    remote.cut.add(f"{VERSION}/{BIG}")
    size = len(remote.files[BIG])

    _fetch(remote, dest, include=BIG)

    first, second = remote.gets(BIG)
    assert (first["status"], first["sent"]) == (200, size // 2)
    kept = int(re.fullmatch(r"bytes=(\d+)-", second["range"])[1])
    assert size // 2 - 8192 < kept <= size // 2
    assert (second["status"], second["sent"]) == (206, size - kept)
    assert (dest / BIG).read_bytes() == remote.files[BIG]


def test_persistent_failure_gives_up_after_the_retries(remote, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 2)
    remote.fail[f"{VERSION}/{SMALL}"] = 10

    with pytest.raises(DataError, match=r"GET .*00002_lr\.dat failed 3 times, last: HTTP 503"):
        _fetch(remote, tmp_path / "ptbxl", include=SMALL)
    assert len(remote.gets(SMALL)) == 3


def test_missing_remote_file_is_not_retried(remote, tmp_path):
    (remote.root / VERSION / SMALL).unlink()

    with pytest.raises(DataError, match=r"00002_lr\.dat must return HTTP .*got 404"):
        _fetch(remote, tmp_path / "ptbxl", include=SMALL)
    assert len(remote.gets(SMALL)) == 1


def _code_zip() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # the real archive has one top-level folder
        zf.writestr("data/ecg_tracings.hdf5", b"hdf5 bytes")
        zf.writestr("data/annotations/gold_standard.csv", "1dAVb,RBBB\n0,1\n")
    return buf.getvalue()


def test_source_without_checksums_says_so_and_its_archive_is_unpacked(remote, tmp_path):
    # code15_test is a fixed file list from Zenodo, fetched as data.zip?download=1
    payload = _code_zip()
    (remote.root / VERSION / "data.zip").write_bytes(payload)

    report = download("code15_test", tmp_path / "code", base_url=remote.url, progress=False)

    assert not report.verified and "NOT verified" in str(report)
    assert (tmp_path / "code" / "data.zip").read_bytes() == payload
    assert [r["query"] for r in remote.gets("data.zip")] == ["download=1"]
    assert remote.gets("SHA256SUMS.txt") == []
    # unpacked where the code15_test reader looks (top-level folder stripped)
    assert (tmp_path / "code" / "ecg_tracings.hdf5").read_bytes() == b"hdf5 bytes"
    assert (tmp_path / "code" / "annotations" / "gold_standard.csv").exists()


def test_an_archive_member_may_not_escape_the_destination(tmp_path):
    import zipfile

    from study.data.download import _extract

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "x")
        zf.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside"):
        _extract(archive, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "ptb_xl"}, ConfigError, r"unknown dataset 'ptb_xl' .*known: ptbxl, cpsc2018"),
        ({"name": "ptbxl", "workers": 0}, ConfigError, r"workers must be >= 1, got 0"),
    ],
)
def test_bad_arguments_fail_before_any_request(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        download(dest=tmp_path, base_url="http://127.0.0.1:9/", progress=False, **kwargs)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("abc records/1.dat\n", r"line 1 must be '<64 hex digits> <path>'"),
        (f"{'0' * 64}\n", r"line 1 must be '<64 hex digits> <path>'"),
        (f"{'0' * 64} ../../etc/passwd\n", r"inside the dataset folder, got '../../etc/passwd'"),
        (f"{'0' * 64} /etc/passwd\n", r"inside the dataset folder, got '/etc/passwd'"),
        ("\n", r"at least one file"),
    ],
)
def test_malformed_manifests_are_refused(text, match):
    with pytest.raises(DataError, match=match):
        parse_manifest(text)


def test_manifest_accepts_sha256sum_binary_marks():
    digest = "a" * 64
    assert parse_manifest(f"{digest}  a/b.dat\n{digest} *c.hea\n") == {
        "a/b.dat": digest,
        "c.hea": digest,
    }


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_is_complete(name):
    src = SOURCES[name]
    assert src.url.startswith("https://") and src.url.endswith("/")
    assert src.licence and src.approx_gb > 0
    assert (src.manifest is None) == bool(src.files)


def test_partial_file_as_long_as_the_remote_one_starts_over(remote, tmp_path):
    dest = tmp_path / "ptbxl"
    data = remote.files[SMALL]
    (dest / SMALL).parent.mkdir(parents=True)
    (dest / f"{SMALL}.part").write_bytes(data + b"extra")  # the server answers 416

    _fetch(remote, dest, include=SMALL)

    assert [r["status"] for r in remote.gets(SMALL)] == [416, 200]
    assert (dest / SMALL).read_bytes() == data

"""Store on a local folder and on S3 (a real moto server on 127.0.0.1), with real pyarrow.

Every test that takes `store` runs once per backend; the S3 store gets a fresh prefix in the
module's one bucket, so tests never see each other's files.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

import study.store
from study.errors import ConfigError, StorageError
from study.store import RETRY_ENV, TIMEOUT_ENV, Store, filesystem_for
from tests import _s3_process
from tests.conftest import free_port

SCHEMA = pa.schema(
    [
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("auroc", pa.float64()),
        pa.field("note", pa.string()),
    ]
)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    _, bucket, _ = request.getfixturevalue("s3_server")
    return Store(f"s3://{bucket}/{uuid.uuid4().hex}")


def _backend(*params):
    """Run a test on some backends only; each param is "local", "s3" or a pytest.param."""
    return pytest.mark.parametrize("store", list(params), indirect=True)


def _fail_half_way(store: Store, rel: str, new: bytes, exc: BaseException):
    """A fill that writes half of `new`, checks that no reader sees it yet, then raises."""

    def fill(out) -> None:
        out.write(new[: len(new) // 2])
        out.flush()
        # while the write is in progress, the final name still holds the old content
        assert store.read_bytes(rel) == b"old content"
        assert store.list_names("") == [rel]
        raise exc

    return fill


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- plain files -----------------------------------------------------------------------
def test_bytes_round_trip_and_exists(store):
    assert not store.exists("a/b.bin")
    store.write_bytes("a/b.bin", b"\x00first\xff")
    assert store.exists("a/b.bin")
    assert store.exists("a")
    assert store.read_bytes("a/b.bin") == b"\x00first\xff"


def test_overwrite_replaces_whole_file(store):
    store.write_bytes("f.bin", b"a long first version")
    store.write_bytes("f.bin", b"short")
    assert store.read_bytes("f.bin") == b"short"


def test_read_missing_file_raises_storage_error(store):
    with pytest.raises(StorageError, match=r"^nope/x\.bin is not in store ") as info:
        store.read_bytes("nope/x.bin")
    assert type(info.value) is StorageError
    assert store.uri in str(info.value)


def test_json_round_trip(store):
    obj = {"b": [1, 2.5, None], "a": {"nested": True}, "when": Path("x/y")}
    store.write_json("meta/config.json", obj)
    # default=str writes what JSON lacks (a Path) as its string
    assert store.read_json("meta/config.json") == {
        "a": {"nested": True},
        "b": [1, 2.5, None],
        "when": "x/y",
    }


def test_list_names_sorted_filtered_and_hides_dot_underscore_and_dirs(store):
    for name in ["b.parquet", "a.parquet", "c.json", ".tmp-1-d.parquet", "_SUCCESS", "x.parquet"]:
        store.write_bytes(f"r/{name}", b"1")
    store.write_bytes("r/sub/inner.parquet", b"1")
    assert store.list_names("r") == ["a.parquet", "b.parquet", "c.json", "x.parquet"]
    assert store.list_names("r", ".parquet") == ["a.parquet", "b.parquet", "x.parquet"]
    assert store.list_names("r", ".csv") == []
    assert store.list_names("missing") == []


def test_delete_dir_removes_everything_under_it_and_missing_is_a_no_op(store):
    store.write_bytes("d/a.bin", b"1")
    store.write_bytes("d/sub/b.bin", b"2")
    store.write_bytes("keep/c.bin", b"3")
    store.delete_dir("d")
    assert not store.exists("d")
    assert not store.exists("d/sub/b.bin")
    assert store.list_names("d") == []
    assert store.read_bytes("keep/c.bin") == b"3"
    store.delete_dir("d")  # again: nothing there, nothing raised
    store.delete_dir("never/was")


# --- atomic writes ---------------------------------------------------------------------
@_backend("local", "s3")
@pytest.mark.parametrize(
    "exc, expected, match",
    [
        (OSError("disk gone"), StorageError, r"^cannot write f\.bin in store .*: disk gone$"),
        (KeyboardInterrupt(), KeyboardInterrupt, None),
    ],
    ids=["OSError", "KeyboardInterrupt"],
)
def test_failed_write_keeps_old_content_and_leaves_no_temp_file(store, exc, expected, match):
    store.write_bytes("f.bin", b"old content")
    with pytest.raises(expected, match=match):
        # write_bytes and upload_file both write through _write's fill
        store._write("f.bin", _fail_half_way(store, "f.bin", b"new content!" * 100, exc))
    assert store.read_bytes("f.bin") == b"old content"
    assert store.list_names("") == ["f.bin"]
    if store.is_local:
        assert os.listdir(store.root) == ["f.bin"]  # no dot-file left on disk either


@_backend("local", "s3")
def test_failed_first_write_leaves_nothing(store, tmp_path):
    # a source that cannot be read: it fails inside the write, after the temp file is open
    with pytest.raises(StorageError, match=r"^cannot write new\.bin in store .*Is a directory"):
        store.upload_file(tmp_path, "new.bin")
    assert not store.exists("new.bin")
    assert store.list_names("") == []
    if store.is_local:
        assert os.listdir(store.root) == []


def test_upload_file_streams_a_file_bigger_than_one_chunk(store, tmp_path):
    data = random.Random(0).randbytes(20 << 20)
    assert len(data) > study.store._CHUNK  # more than one read and write
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    store.upload_file(src, "blobs/big.bin")
    assert store.read_bytes("blobs/big.bin") == data


# --- folders ---------------------------------------------------------------------------
class RecordingStore(Store):
    """A real store that records the order in which upload_dir's files finish."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.finished: list[str] = []

    def upload_file(self, src: Path, rel: str) -> None:
        super().upload_file(src, rel)
        self.finished.append(rel)


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.bin": b"a",
        "meta.json": b'{"done": true}',
        "z.bin": b"z" * 1000,
        "sub/b.npy": b"b",
        "sub/deeper/c.npy": bytes(range(256)),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_upload_dir_writes_last_after_every_other_file(store, tmp_path):
    files = _tree(tmp_path / "src")
    recording = RecordingStore(store.uri)
    recording.upload_dir(tmp_path / "src", "prepared/k", last="meta.json")
    assert recording.finished[-1] == "prepared/k/meta.json"
    assert sorted(recording.finished) == sorted(f"prepared/k/{rel}" for rel in files)
    assert store.list_names("prepared/k") == ["a.bin", "meta.json", "z.bin"]
    if store.is_local:
        mtimes = {rel: os.stat(store.path("prepared/k", rel)).st_mtime_ns for rel in files}
        assert mtimes.pop("meta.json") >= max(mtimes.values())


def test_download_dir_round_trips_nested_folders(store, tmp_path):
    files = _tree(tmp_path / "src")
    store.upload_dir(tmp_path / "src", "prepared/k")
    store.download_dir("prepared/k", tmp_path / "dest")
    assert _files(tmp_path / "dest") == files


def test_download_missing_dir_raises_storage_error(store, tmp_path):
    with pytest.raises(StorageError, match=r"^cannot download prepared/none from store ") as info:
        store.download_dir("prepared/none", tmp_path / "dest")
    assert type(info.value) is StorageError


# --- Parquet ---------------------------------------------------------------------------
def test_parts_with_all_null_columns_read_as_one_table(store):
    # each part inferred its own types: an all-null column is of type null in that file
    store.write_table(
        "results/a.parquet", pa.table({"unit_id": ["a"], "auroc": [0.9], "note": [None]})
    )
    store.write_table(
        "results/b.parquet", pa.table({"unit_id": ["b"], "auroc": [None], "note": ["x"]})
    )
    store.write_bytes("results/.tmp-0-c.parquet", b"half a file")  # never read as a part
    table = store.read_dataset("results", schema=SCHEMA)
    assert table.schema == SCHEMA
    assert table.sort_by("unit_id").to_pylist() == [
        {"unit_id": "a", "auroc": 0.9, "note": None},
        {"unit_id": "b", "auroc": None, "note": "x"},
    ]
    assert store.read_dataset("results", schema=SCHEMA, columns=["note"]).column_names == ["note"]


def test_read_dataset_of_missing_or_empty_dir_is_none(store):
    assert store.read_dataset("results", schema=SCHEMA) is None
    store.write_bytes("results/readme.txt", b"no parts here")
    assert store.read_dataset("results", schema=SCHEMA) is None


def test_read_dataset_with_a_part_that_is_not_parquet_raises_storage_error(store):
    store.write_table("results/a.parquet", SCHEMA.empty_table())
    store.write_bytes("results/b.parquet", b"not parquet")
    with pytest.raises(StorageError, match=r"^cannot read results from store .*b\.parquet"):
        store.read_dataset("results", schema=SCHEMA)


# --- naming and pickling ---------------------------------------------------------------
def test_child_and_path(store):
    child = store.child("studies", "s1")
    assert child.uri == f"{store.uri}/studies/s1"
    assert child.root == store.path("studies", "s1")
    assert store.path() == store.root
    child.write_bytes("x.bin", b"from child")
    assert store.read_bytes("studies/s1/x.bin") == b"from child"


def test_pickled_store_reads_what_the_original_wrote(store):
    store.write_bytes("p.bin", b"pickled")
    clone = pickle.loads(pickle.dumps(store))
    assert type(clone) is Store
    assert clone.uri == store.uri
    assert clone.root == store.root
    assert clone.read_bytes("p.bin") == b"pickled"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("gs://x", r"must be a local path or s3://bucket/prefix, got 'gs://x'"),
        ("https://host/p", r"must be a local path or s3://bucket/prefix, got 'https://host/p'"),
        ("s3://", r"needs a bucket: s3://bucket/prefix, got 's3://'"),
        ("s3:///prefix", r"needs a bucket: s3://bucket/prefix, got 's3:///prefix'"),
    ],
    ids=["gs", "https", "s3-empty", "s3-no-bucket"],
)
def test_unsupported_uri_raises_storage_error(uri, message):
    with pytest.raises(StorageError, match=message):
        filesystem_for(uri)
    with pytest.raises(StorageError, match=message):
        Store(uri)


def test_local_relative_and_home_paths_resolve_to_absolute_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Store("studies/x/").uri == str(tmp_path.resolve() / "studies" / "x")
    assert Store("~/s").uri == str(tmp_path.resolve() / "home" / "s")
    assert Store("studies").child("x").uri == str(tmp_path.resolve() / "studies" / "x")


def test_s3_uri_keeps_its_prefix_and_drops_a_trailing_slash(s3_server):
    store = Store("s3://lab-bucket/a/b/")
    assert store.uri == "s3://lab-bucket/a/b"
    assert store.root == "lab-bucket/a/b"
    assert not store.is_local


def test_endpoint_in_the_uri_query_survives_child(s3_server, monkeypatch):
    endpoint, bucket, _ = s3_server
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host = endpoint.removeprefix("http://")
    prefix = uuid.uuid4().hex
    store = Store(f"s3://{bucket}/{prefix}?endpoint_override={host}&scheme=http")
    child = store.child("s1")
    assert child.uri == f"s3://{bucket}/{prefix}/s1?endpoint_override={host}&scheme=http"
    assert child.root == f"{bucket}/{prefix}/s1"
    child.write_bytes("x.bin", b"via query")
    assert store.read_bytes("s1/x.bin") == b"via query"


# --- S3 failures -----------------------------------------------------------------------
def test_write_to_missing_bucket_names_the_bucket(s3_server):
    store = Store("s3://no-such-bucket/p")
    with pytest.raises(
        StorageError,
        match=r"^cannot write a\.bin in store s3://no-such-bucket/p: "
        r".*bucket 'no-such-bucket'.*NO_SUCH_BUCKET",
    ):
        store.write_bytes("a.bin", b"x")


def test_reading_a_missing_bucket_names_the_bucket(s3_server):
    """A mistyped bucket must not read as an empty study (exists False, no rows)."""
    for call in (
        lambda s: s.exists("a.bin"),
        lambda s: s.list_names("results/trials"),
        lambda s: s.read_bytes("spec.yaml"),
    ):
        with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
            call(Store("s3://no-such-bucket/p"))
    ok = Store("s3://lab-bucket/nothing-here")
    assert not ok.exists("a.bin") and ok.list_names("x") == []  # an empty prefix is fine


def test_unreachable_endpoint_raises_storage_error_quickly(monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = Store("s3://lab-bucket/p")
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"^cannot reach store s3://lab-bucket/p: .*:{port}"):
        store.exists("a.bin")
    with pytest.raises(
        StorageError, match=rf"^cannot write a\.bin in store s3://lab-bucket/p: .*:{port}"
    ):
        store.write_bytes("a.bin", b"x")
    assert time.monotonic() - start < 30


# --- S3 outages: a moto server in its own process, frozen with SIGSTOP ------------------
@pytest.fixture(scope="module")
def moto_process():
    """moto in a process of its own (`tests/_s3_process.py`), one bucket; module-wide."""
    with _s3_process.moto_process() as server:
        server.create_bucket("outage-bucket")
        yield server


@pytest.fixture()
def outage_store(moto_process, monkeypatch) -> Store:
    """A fresh prefix on the freezable server; requests time out after 1 s (the least)."""
    for key, value in moto_process.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv(RETRY_ENV, "30")
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    store = Store(f"s3://outage-bucket/{uuid.uuid4().hex}")
    store.write_bytes("before.bin", b"written before the freeze")  # the endpoint answers
    return store


def _in_thread(fn) -> dict:
    """Run `fn` in a thread; the dict gets "value" or "error", and "seconds"."""
    out: dict = {}

    def run() -> None:
        start = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as e:  # the test reads it
            out["error"] = e
        out["seconds"] = time.monotonic() - start

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def test_s3_operations_during_a_freeze_complete_after_it(outage_store, moto_process, capfd):
    store = outage_store
    store.write_table("results/a.parquet", pa.table({"unit_id": ["a"], "auroc": [0.5]}))
    store.write_bytes("aside/old.bin", b"to move")
    store.write_bytes("gone.bin", b"to delete")
    key = SCHEMA.field("unit_id")
    freeze_s = 4.0
    moto_process.freeze_for(freeze_s)
    calls = {
        "write": lambda: store.write_bytes("new/x.bin", b"written during the freeze"),
        "read": lambda: store.read_bytes("before.bin"),
        "exists": lambda: store.exists("before.bin"),
        "list": lambda: store.list_names("results"),
        "scan": lambda: sorted(store.scan_parts("results", key).ids),
        "dataset": lambda: store.read_dataset("results", schema=SCHEMA).num_rows,
        "move": lambda: store.move("aside/old.bin", "aside/new.bin"),
        "delete": lambda: store.delete("gone.bin"),
    }
    running = {name: _in_thread(call) for name, call in calls.items()}
    for out in running.values():
        out["thread"].join(timeout=60)
    results = {name: out.get("error", out.get("value")) for name, out in running.items()}
    assert results == {
        "write": None,
        "read": b"written before the freeze",
        "exists": True,
        "list": ["a.parquet"],
        "scan": ["a"],
        "dataset": 1,
        "move": True,
        "delete": None,
    }
    # each was issued during the freeze and waited it out (no request answers while frozen)
    assert min(out["seconds"] for out in running.values()) > freeze_s - 1
    assert store.read_bytes("new/x.bin") == b"written during the freeze"
    assert store.read_bytes("aside/new.bin") == b"to move"
    assert not store.exists("aside/old.bin") and not store.exists("gone.bin")
    # the atomic write left no hidden copy behind, and nothing else was written twice
    keys = [
        o["Key"]
        for o in moto_process.client().list_objects_v2(
            Bucket="outage-bucket", Prefix=store.root.split("/", 1)[1] + "/"
        )["Contents"]
    ]
    assert not [k for k in keys if "/.tmp/" in k and not k.endswith("/")], keys
    err = capfd.readouterr().err
    assert f"the S3 store at 127.0.0.1:{moto_process.port} does not answer" in err
    assert f"the S3 store at 127.0.0.1:{moto_process.port} answers again, " in err


@pytest.mark.parametrize(
    "call, doing",
    [
        (lambda s: s.write_bytes("a.bin", b"x"), r"cannot write a\.bin in store"),
        (lambda s: s.read_bytes("before.bin"), r"cannot read before\.bin from store"),
        (lambda s: s.list_names("results"), r"cannot list results in store"),
    ],
    ids=["write", "read", "list"],
)
def test_s3_freeze_longer_than_the_retry_budget_raises_naming_the_operation(
    outage_store, moto_process, monkeypatch, call, doing
):
    monkeypatch.setenv(RETRY_ENV, "2")
    store = Store(outage_store.uri)  # reads the budget when made
    moto_process.freeze()
    try:
        start = time.monotonic()
        with pytest.raises(StorageError) as info:
            call(store)
        took = time.monotonic() - start
    finally:
        moto_process.thaw()
    message = str(info.value)
    assert re.match(
        rf"^{doing} {re.escape(store.uri)}: the store did not answer for \d+ s "
        rf"\(\d+ (try|tries); {RETRY_ENV}=2\): .*(Timeout|timed out)",
        message,
    ), message
    # a try takes ~3 s (pyarrow's 3 requests of 1 s); the budget ends the retrying after it
    assert 2 <= took < 20
    assert store.read_bytes("before.bin") == b"written before the freeze"  # and it is back


def test_s3_endpoint_refusing_connections_is_waited_for_once_it_answered(moto_process, monkeypatch):
    """A crashed endpoint refuses connections until it is back: one that answered before is
    waited for (only one that never answered is taken for a mistyped one, and said at once:
    test_unreachable_endpoint_raises_storage_error_quickly)."""
    gate = _s3_process.Gate(moto_process.port).open()
    try:
        for key, value in moto_process.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", gate.endpoint)
        monkeypatch.setenv(RETRY_ENV, "30")
        monkeypatch.setenv(TIMEOUT_ENV, "1")
        store = Store(f"s3://outage-bucket/{uuid.uuid4().hex}")
        store.write_bytes("before.bin", b"answered once")
        gate.close()
        out = _in_thread(lambda: store.write_bytes("after.bin", b"after the restart"))
        time.sleep(3)
        assert out["thread"].is_alive()  # refused, and retrying
        gate.open()
        out["thread"].join(timeout=60)
        assert "error" not in out, out.get("error")
        assert store.read_bytes("after.bin") == b"after the restart"
    finally:
        gate.close()


@pytest.mark.parametrize(
    "name, value, message",
    [
        (RETRY_ENV, "two minutes", r"STUDY_STORE_RETRY_S must be a number of seconds >= 0, got "),
        (RETRY_ENV, "-1", r"STUDY_STORE_RETRY_S must be a number of seconds >= 0, got '-1'"),
        (TIMEOUT_ENV, "0.5", r"STUDY_STORE_TIMEOUT_S must be a number of seconds >= 1, got"),
        (TIMEOUT_ENV, "nan", r"STUDY_STORE_TIMEOUT_S must be a number of seconds >= 1, got"),
    ],
    ids=["retry-words", "retry-negative", "timeout-below-1", "timeout-nan"],
)
def test_retry_settings_must_be_seconds(s3_server, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        Store("s3://lab-bucket/p")


def test_retry_budget_zero_tries_once(outage_store, moto_process, monkeypatch):
    monkeypatch.setenv(RETRY_ENV, "0")
    store = Store(outage_store.uri)
    moto_process.freeze()
    try:
        with pytest.raises(StorageError, match=r"\(1 try; STUDY_STORE_RETRY_S=0\)"):
            store.exists("before.bin")
    finally:
        moto_process.thaw()

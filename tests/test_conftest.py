"""The test suite's own rules: real data is never skipped silently under CI."""

from __future__ import annotations

import pytest

from tests.conftest import realdata_dir


def test_missing_realdata_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
    missing = tmp_path / "realdata"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real ECG samples not found"):
        realdata_dir(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI they must be there"):
        realdata_dir(missing)
    missing.mkdir()
    assert realdata_dir(missing) == missing

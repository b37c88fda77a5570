"""The review database: a damaged file gives a clear NegScopeError from every read, never a raw sqlite error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from analysis.errors import NegScopeError
from analysis.review.store import ReviewStore


def test_count_and_integrity_check_on_a_damaged_database(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "reviews.sqlite")
    assert store.count() == 0 and store.integrity_check() == "ok"
    with sqlite3.connect(store.path) as conn:
        conn.execute("DROP TABLE decisions")
    with pytest.raises(NegScopeError, match="cannot read the review database"):
        store.count()
    for suffix in ("-wal", "-shm"):
        Path(str(store.path) + suffix).unlink(missing_ok=True)
    store.path.write_bytes(b"this is not a database file at all" * 200)
    with pytest.raises(NegScopeError, match="cannot check the review database"):
        store.integrity_check()
    with pytest.raises(NegScopeError, match="cannot read the review database"):
        store.count()

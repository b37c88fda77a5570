"""The review database: an append-only SQLite log of annotators' decisions (WAL mode).

Each row is one decision. The earlier rows are the audit trail and make undo possible; which row counts
is decided by :mod:`analysis.review.decisions` (the adjudication rules; :meth:`ReviewStore.latest` is the
"latest" rule). Keys are item content hashes (``items.key``) and ``dataset_hash`` is the dataset's
content-only hash (``Run.content_hash``), so decisions survive re-embedding with another checkpoint or
batch size. Every read accepts several dataset hashes, so rows written under a run's older
``dataset_hash`` (databases from before the content hash) are read too.

Kinds and their decisions:

- ``negative`` (anchor, candidate negative): ``false_negative`` | ``negative`` | ``unsure`` | ``cleared``
- ``pair`` (anchor, positive): ``mismatched`` | ``ok`` | ``unsure`` | ``cleared``
- ``label`` (item, ``''``): ``relabel`` (with ``label`` = the corrected class) | ``ok`` | ``cleared``
- ``duplicate`` (item, the item it duplicates; the item itself for its repeated pairs):
  ``duplicate`` | ``not_duplicate`` | ``unsure`` | ``cleared``

``cleared`` is what undo writes when there was no earlier decision: the pair of items counts as undecided.

Safety with several annotators (several processes or browser tabs on one server):

- every write is one short ``BEGIN IMMEDIATE`` transaction (a batch from :meth:`ReviewStore.record_many` is
  all or nothing), waiting up to ``timeout`` seconds for the write lock, so concurrent writers queue up and
  no decision is lost;
- ``journal_mode=WAL`` lets readers run while a writer writes; ``synchronous=FULL`` makes a committed
  decision durable even when the machine loses power right after the commit; a writer killed mid-transaction
  leaves nothing behind (SQLite rolls the unfinished transaction back on the next open);
- rows are only ever inserted, never updated or deleted.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.errors import NegScopeError

DECISIONS: dict[str, tuple[str, ...]] = {
    "negative": ("false_negative", "negative", "unsure", "cleared"),
    "pair": ("mismatched", "ok", "unsure", "cleared"),
    "label": ("relabel", "ok", "cleared"),
    "duplicate": ("duplicate", "not_duplicate", "unsure", "cleared"),
}

DatasetHashes = str | tuple[str, ...] | list[str]
"""One dataset hash, or several (the content hash first, then legacy hashes) to read together."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    anchor_key TEXT NOT NULL,
    candidate_key TEXT NOT NULL,
    decision TEXT NOT NULL,
    label TEXT,
    annotator TEXT NOT NULL,
    time REAL NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_lookup
    ON decisions (dataset_hash, kind, anchor_key, candidate_key, id);
"""

COLUMNS = (
    "id", "dataset_hash", "kind", "anchor_key", "candidate_key", "decision", "label", "annotator", "time", "note"
)  # fmt: skip

UNDO_PREFIX = "undo of #"


@dataclass(frozen=True)
class Decision:
    """One decision to record (see the module docstring for kinds and values)."""

    dataset_hash: str
    kind: str
    anchor_key: str
    candidate_key: str
    decision: str
    annotator: str
    label: str | None = None
    note: str = ""


class ReviewStore:
    """Append-only decision log in one SQLite file.

    Parameters
    ----------
    path : Path
        The database file; created with its schema when missing.
    timeout : float
        Seconds a writer waits for the lock before giving up.
    synchronous : {"FULL", "NORMAL"}
        SQLite's ``synchronous`` setting. ``FULL`` (default) syncs the log to disk at every commit, so a
        committed decision survives even a power cut; ``NORMAL`` skips that sync (a committed decision still
        survives any crash of the process, and the file is never corrupted) for bulk tools that write many
        small transactions.
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        if synchronous not in ("FULL", "NORMAL"):
            raise NegScopeError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.synchronous = synchronous
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connection() as conn:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
                if mode is None or str(mode[0]).lower() != "wal":
                    raise NegScopeError(f"review database {self.path}: this file system does not support WAL mode")
                conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise NegScopeError(f"cannot open the review database {self.path}: {exc}") from exc

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection (autocommit mode: transactions are explicit), always closed afterwards."""
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _validate(d: Decision) -> None:
        allowed = DECISIONS.get(d.kind)
        if allowed is None:
            raise NegScopeError(f"unknown decision kind {d.kind!r}; expected one of {sorted(DECISIONS)}")
        if d.decision not in allowed:
            raise NegScopeError(f"decision {d.decision!r} is not allowed for kind {d.kind!r}: {allowed}")
        if not isinstance(d.annotator, str) or not d.annotator.strip():
            raise NegScopeError("an annotator name is required")
        if not isinstance(d.dataset_hash, str) or not d.dataset_hash:
            raise NegScopeError("a decision needs the dataset hash of the run (the run's manifest has none)")
        if not isinstance(d.anchor_key, str) or not d.anchor_key:
            raise NegScopeError("a decision needs the anchor's item key")
        if not isinstance(d.candidate_key, str):
            raise NegScopeError("the candidate key must be a string ('' for item decisions)")
        if d.decision == "relabel" and not d.label:
            raise NegScopeError("a relabel decision needs the corrected label")

    def record_many(self, decisions: Iterable[Decision]) -> int:
        """Append decisions in one transaction (all or none). Returns how many were written.

        Raises
        ------
        NegScopeError
            When a decision is invalid (nothing is written), or the database stays locked for ``timeout``.
        """
        rows = list(decisions)
        for d in rows:
            self._validate(d)
        if not rows:
            return 0
        now = time.time()
        values = [
            (d.dataset_hash, d.kind, d.anchor_key, d.candidate_key, d.decision, d.label, d.annotator.strip(), now,
             d.note or "")
            for d in rows
        ]  # fmt: skip
        try:
            with self._connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT INTO decisions (dataset_hash, kind, anchor_key, candidate_key, decision, label,"
                        " annotator, time, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        values,
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise NegScopeError(f"the decision could not be saved to {self.path}: {exc}") from exc
        return len(rows)

    def record(self, decision: Decision) -> None:
        """Append one decision."""
        self.record_many([decision])

    def _select(self, where: str, args: list, *, latest: bool) -> pd.DataFrame:
        cols = ", ".join(COLUMNS)
        if latest:
            query = (
                f"SELECT {cols} FROM decisions WHERE id IN (SELECT MAX(id) FROM decisions {where}"
                " GROUP BY kind, anchor_key, candidate_key) ORDER BY id"
            )
        else:
            query = f"SELECT {cols} FROM decisions {where} ORDER BY id"
        try:
            with self._connection() as conn:
                rows = conn.execute(query, args).fetchall()
        except sqlite3.Error as exc:
            raise NegScopeError(f"cannot read the review database {self.path}: {exc}") from exc
        return pd.DataFrame(rows, columns=list(COLUMNS))

    @staticmethod
    def _where(dataset_hash: DatasetHashes | None, kind: str | None) -> tuple[str, list]:
        clauses, args = [], []
        if dataset_hash is not None:
            hashes = [dataset_hash] if isinstance(dataset_hash, str) else list(dict.fromkeys(dataset_hash))
            clauses.append("dataset_hash IN (" + ", ".join("?" * len(hashes)) + ")")
            args.extend(hashes)
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def history(self, dataset_hash: DatasetHashes | None = None, *, kind: str | None = None) -> pd.DataFrame:
        """Every row (the audit trail), oldest first, optionally for one dataset and kind.

        Returns
        -------
        pandas.DataFrame
            The columns of ``COLUMNS``; ``time`` is seconds since the epoch (UTC).
        """
        where, args = self._where(dataset_hash, kind)
        return self._select(where, args, latest=False)

    def latest(self, dataset_hash: DatasetHashes, *, kind: str | None = None) -> pd.DataFrame:
        """The current decision per (kind, anchor_key, candidate_key); ``cleared`` ones are dropped.

        Returns
        -------
        pandas.DataFrame
            The columns of ``COLUMNS``, one row per decided (kind, anchor_key, candidate_key), oldest first.
        """
        where, args = self._where(dataset_hash, kind)
        last = self._select(where, args, latest=True)
        return last[last["decision"] != "cleared"].reset_index(drop=True)

    def count(self, dataset_hash: DatasetHashes | None = None) -> int:
        """Number of rows in the log (optionally for one dataset); it grows with every decision and undo."""
        where, args = self._where(dataset_hash, None)
        try:
            with self._connection() as conn:
                return int(conn.execute(f"SELECT COUNT(*) FROM decisions {where}", args).fetchone()[0])
        except sqlite3.Error as exc:
            raise NegScopeError(f"cannot read the review database {self.path}: {exc}") from exc

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result: ``'ok'`` for a sound database file."""
        try:
            with self._connection() as conn:
                return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
        except sqlite3.Error as exc:
            raise NegScopeError(f"cannot check the review database {self.path}: {exc}") from exc

    def undo(self, dataset_hash: DatasetHashes, *, annotator: str, kind: str | None = None) -> Decision | None:
        """Undo the annotator's most recent decision by appending the state that preceded it.

        With several dataset hashes, rows under all of them are considered and the undo row is written under
        the first.

        Repeated calls walk further back through the annotator's decisions. When another annotator has
        decided the same (anchor, candidate) since, their newer decision is kept (the undo row repeats it),
        so an undo never erases someone else's work.

        Returns
        -------
        Decision or None
            The row appended (its decision is the previous one, or ``cleared``), None when nothing to undo.
        """
        who = annotator.strip()
        if not who:
            raise NegScopeError("an annotator name is required")
        hist = self.history(dataset_hash, kind=kind)
        if hist.empty:
            return None
        mine = hist[hist["annotator"] == who]
        is_undo = mine["note"].str.startswith(UNDO_PREFIX)
        undone = {int(n[len(UNDO_PREFIX) :].split()[0]) for n in mine.loc[is_undo, "note"]}
        candidates = mine[~is_undo & ~mine["id"].isin(undone)]
        if candidates.empty:
            return None
        target = candidates.iloc[-1]
        same = hist[
            (hist["kind"] == target["kind"])
            & (hist["anchor_key"] == target["anchor_key"])
            & (hist["candidate_key"] == target["candidate_key"])
        ]
        # the annotator's own newer rows on this key are undone decisions and undo rows; anyone else's
        # newer row is a decision that must survive this undo
        newer = same[same["id"] > target["id"]]
        foreign = newer[newer["annotator"] != who]
        note = f"{UNDO_PREFIX}{int(target['id'])}"
        if not foreign.empty:
            state = same.iloc[-1]  # the current state stays as it is
            note += f" (kept the newer decision by {foreign['annotator'].iloc[-1]})"
        else:
            older = same[same["id"] < target["id"]]
            state = older.iloc[-1] if not older.empty else None
        label = state["label"] if state is not None else None
        restored = Decision(
            dataset_hash=dataset_hash if isinstance(dataset_hash, str) else next(iter(dataset_hash)),
            kind=str(target["kind"]),
            anchor_key=str(target["anchor_key"]),
            candidate_key=str(target["candidate_key"]),
            decision=str(state["decision"]) if state is not None else "cleared",
            label=None if label is None or pd.isna(label) else str(label),
            annotator=who,
            note=note,
        )
        self.record(restored)
        return restored

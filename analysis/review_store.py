"""The review database: an append-only SQLite log of annotators' decisions (WAL mode).

Each row is one decision. The latest row for a (dataset_hash, kind, anchor_key, candidate_key) wins; the
earlier rows are the audit trail and make undo possible. Keys are item content hashes (``items.key``), so
decisions survive re-embedding with another checkpoint.

Kinds and their decisions:

- ``negative`` (anchor, candidate negative): ``false_negative`` | ``negative`` | ``unsure`` | ``cleared``
- ``pair`` (anchor, positive): ``mismatched`` | ``ok`` | ``unsure`` | ``cleared``
- ``label`` (item, ``''``): ``relabel`` (with ``label`` = the corrected class) | ``ok`` | ``cleared``

``cleared`` is what undo writes when there was no earlier decision: the pair of items counts as undecided.
Several processes may write at once; every write is one short transaction with a busy timeout, so no
decision is lost.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.errors import NegScopeError

DECISIONS: dict[str, tuple[str, ...]] = {
    "negative": ("false_negative", "negative", "unsure", "cleared"),
    "pair": ("mismatched", "ok", "unsure", "cleared"),
    "label": ("relabel", "ok", "cleared"),
}

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
    "id",
    "dataset_hash",
    "kind",
    "anchor_key",
    "candidate_key",
    "decision",
    "label",
    "annotator",
    "time",
    "note",
)


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
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return conn

    @staticmethod
    def _validate(d: Decision) -> None:
        allowed = DECISIONS.get(d.kind)
        if allowed is None:
            raise NegScopeError(f"unknown decision kind {d.kind!r}; expected one of {sorted(DECISIONS)}")
        if d.decision not in allowed:
            raise NegScopeError(f"decision {d.decision!r} is not allowed for kind {d.kind!r}: {allowed}")
        if not d.annotator.strip():
            raise NegScopeError("an annotator name is required")
        if d.decision == "relabel" and not d.label:
            raise NegScopeError("a relabel decision needs the corrected label")

    def record_many(self, decisions: Iterable[Decision]) -> int:
        """Append decisions in one transaction (all or none). Returns how many were written."""
        rows = list(decisions)
        for d in rows:
            self._validate(d)
        now = time.time()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO decisions (dataset_hash, kind, anchor_key, candidate_key, decision, label,"
                    " annotator, time, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            d.dataset_hash,
                            d.kind,
                            d.anchor_key,
                            d.candidate_key,
                            d.decision,
                            d.label,
                            d.annotator.strip(),
                            now,
                            d.note,
                        )
                        for d in rows
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(rows)

    def record(self, decision: Decision) -> None:
        """Append one decision."""
        self.record_many([decision])

    def history(self, dataset_hash: str | None = None, *, kind: str | None = None) -> pd.DataFrame:
        """Every row (the audit trail), oldest first, optionally for one dataset and kind."""
        query = f"SELECT {', '.join(COLUMNS)} FROM decisions"
        clauses, args = [], []
        if dataset_hash is not None:
            clauses.append("dataset_hash = ?")
            args.append(dataset_hash)
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        return pd.DataFrame(rows, columns=list(COLUMNS))

    def latest(self, dataset_hash: str, *, kind: str | None = None) -> pd.DataFrame:
        """The current decision per (kind, anchor_key, candidate_key); ``cleared`` ones are dropped."""
        hist = self.history(dataset_hash, kind=kind)
        if hist.empty:
            return hist
        last = hist.groupby(["kind", "anchor_key", "candidate_key"], sort=False).tail(1)
        return last[last["decision"] != "cleared"].reset_index(drop=True)

    def undo(self, dataset_hash: str, *, annotator: str, kind: str | None = None) -> Decision | None:
        """Undo the annotator's most recent decision by appending the state that preceded it.

        Returns
        -------
        Decision or None
            The row appended (its decision is the previous one, or ``cleared``), None when nothing to undo.
        """
        hist = self.history(dataset_hash, kind=kind)
        if hist.empty:
            return None
        # An undo row is marked in its note so that repeated undos walk further back.
        mine = hist[hist["annotator"] == annotator.strip()]
        undone = set(mine.loc[mine["note"].str.startswith("undo of #"), "note"].str[9:].astype(int))
        candidates = mine[~mine["note"].str.startswith("undo of #") & ~mine["id"].isin(undone)]
        if candidates.empty:
            return None
        target = candidates.iloc[-1]
        same = hist[
            (hist["kind"] == target["kind"])
            & (hist["anchor_key"] == target["anchor_key"])
            & (hist["candidate_key"] == target["candidate_key"])
            & (hist["id"] < target["id"])
        ]
        previous = same.iloc[-1] if not same.empty else None
        restored = Decision(
            dataset_hash=dataset_hash,
            kind=str(target["kind"]),
            anchor_key=str(target["anchor_key"]),
            candidate_key=str(target["candidate_key"]),
            decision=str(previous["decision"]) if previous is not None else "cleared",
            label=(previous["label"] if previous is not None else None),
            annotator=annotator,
            note=f"undo of #{int(target['id'])}",
        )
        self.record(restored)
        return restored

"""The review store: append-only log, latest wins, undo, and safety with concurrent and killed writers."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import NegScopeError
from analysis.review.store import DECISIONS, Decision, ReviewStore

REPO = Path(__file__).resolve().parent.parent
H = "dataset-hash"


def _d(anchor: str, cand: str, decision: str, who: str = "ann", **kw) -> Decision:
    return Decision(H, "negative", anchor, cand, decision, who, **kw)


def test_record_history_latest(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite")
    store.record(_d("a1", "c1", "negative"))
    store.record(_d("a1", "c1", "false_negative", "bob"))
    store.record(_d("a1", "c2", "unsure"))
    store.record(Decision("other", "negative", "a1", "c1", "negative", "ann"))
    hist = store.history(H)
    assert list(hist["decision"]) == ["negative", "false_negative", "unsure"]
    assert hist["id"].is_monotonic_increasing
    latest = store.latest(H, kind="negative").set_index("candidate_key")
    assert latest.loc["c1", "decision"] == "false_negative"
    assert latest.loc["c1", "annotator"] == "bob"
    assert latest.loc["c2", "decision"] == "unsure"
    assert len(store.latest("other")) == 1
    assert store.count() == 4
    assert store.count(H) == 3
    assert store.integrity_check() == "ok"


def test_latest_matches_a_pandas_reference_on_random_logs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = ReviewStore(tmp_path / "r.sqlite")
    rows = []
    for _ in range(400):
        kind = str(rng.choice(list(DECISIONS)))
        decision = str(rng.choice(DECISIONS[kind]))
        label = "7" if decision == "relabel" else None
        rows.append(Decision(H, kind, f"a{rng.integers(6)}", f"c{rng.integers(4)}", decision, "x", label=label))
    for start in range(0, len(rows), 37):
        store.record_many(rows[start : start + 37])
    ref = pd.DataFrame([r.__dict__ for r in rows])
    ref = ref.groupby(["kind", "anchor_key", "candidate_key"], sort=False).tail(1)
    ref = ref[ref["decision"] != "cleared"]
    got = store.latest(H)
    key = ["kind", "anchor_key", "candidate_key"]
    a = got.set_index(key)["decision"].sort_index()
    b = ref.set_index(key)["decision"].sort_index()
    pd.testing.assert_series_equal(a, b)


@pytest.mark.parametrize(
    "bad",
    [
        Decision(H, "negative", "a", "c", "mismatched", "ann"),
        Decision(H, "nope", "a", "c", "negative", "ann"),
        Decision(H, "negative", "a", "c", "negative", "   "),
        Decision("", "negative", "a", "c", "negative", "ann"),
        Decision(H, "label", "a", "", "relabel", "ann"),
    ],
)
def test_invalid_decisions_are_refused_and_nothing_is_written(tmp_path: Path, bad: Decision) -> None:
    store = ReviewStore(tmp_path / "r.sqlite")
    with pytest.raises(NegScopeError):
        store.record_many([_d("a", "ok", "negative"), bad])
    assert store.count() == 0


def test_undo_walks_back_and_clears(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite")
    assert store.undo(H, annotator="ann") is None
    store.record(_d("a", "c", "negative"))
    store.record(_d("a", "c", "false_negative"))
    store.record(_d("a", "d", "unsure"))
    u1 = store.undo(H, annotator="ann")
    assert (u1.candidate_key, u1.decision) == ("d", "cleared")
    assert set(store.latest(H)["candidate_key"]) == {"c"}
    u2 = store.undo(H, annotator="ann")
    assert (u2.candidate_key, u2.decision) == ("c", "negative")
    assert store.latest(H).set_index("candidate_key").loc["c", "decision"] == "negative"
    u3 = store.undo(H, annotator="ann")
    assert (u3.candidate_key, u3.decision) == ("c", "cleared")
    assert store.latest(H).empty
    assert store.undo(H, annotator="ann") is None
    # the audit trail keeps everything
    assert store.count(H) == 6


def test_undo_never_erases_another_annotators_newer_decision(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite")
    store.record(_d("a", "c", "false_negative", "ann"))
    store.record(_d("a", "c", "negative", "bob"))
    store.record(_d("a", "e", "unsure", "bob"))
    undo = store.undo(H, annotator="ann")
    assert undo.decision == "negative" and "bob" in undo.note
    latest = store.latest(H).set_index("candidate_key")
    assert latest.loc["c", "decision"] == "negative"
    # bob's own undo still works on his latest decision only
    assert store.undo(H, annotator="bob").candidate_key == "e"
    assert store.undo(H, annotator="ann") is None


def _writer(path: str, worker: int, n: int, barrier, synchronous: str) -> None:
    store = ReviewStore(path, synchronous=synchronous)
    barrier.wait()
    for i in range(n):
        store.record(_d(f"w{worker}", f"c{i}", "false_negative" if i % 2 else "negative", f"annotator-{worker}"))


# 8 x 500 single-decision transactions. With synchronous=FULL each commit waits for an fsync (about 10 ms
# on a shared disk: 40 s serialised), which changes nothing about locking, so the full-size run uses NORMAL
# and a smaller run checks the default FULL setting under the same contention.
@pytest.mark.slow
@pytest.mark.parametrize(("per_writer", "synchronous"), [(500, "NORMAL"), (60, "FULL")])
def test_eight_concurrent_writers_lose_nothing(tmp_path: Path, per_writer: int, synchronous: str) -> None:
    path = tmp_path / "shared.sqlite"
    ReviewStore(path)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_writer, args=(str(path), w, per_writer, barrier, synchronous)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    store = ReviewStore(path)
    hist = store.history(H)
    assert len(hist) == 8 * per_writer
    assert hist["id"].is_unique
    counts = hist.groupby("annotator").size()
    assert counts.to_dict() == {f"annotator-{w}": per_writer for w in range(8)}
    for w in range(8):
        mine = hist[hist["annotator"] == f"annotator-{w}"]
        assert sorted(mine["candidate_key"]) == sorted(f"c{i}" for i in range(per_writer))
    # the writers really interleaved (otherwise this test would not test concurrency)
    order = hist["annotator"].to_numpy()
    assert int((order[1:] != order[:-1]).sum()) > 8
    assert len(store.latest(H)) == 8 * per_writer
    assert store.integrity_check() == "ok"


_KILLED_WRITER = """
import sys
from analysis.review.store import Decision, ReviewStore
store = ReviewStore(sys.argv[1])
batch = 0
while True:
    rows = [Decision("dataset-hash", "negative", f"b{batch}", f"c{j}", "negative", "victim", note=f"batch {batch}")
            for j in range(5)]
    store.record_many(rows)
    print(batch, flush=True)
    batch += 1
"""


@pytest.mark.slow
def test_sigkill_mid_stream_leaves_a_readable_database(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    store = ReviewStore(path)
    store.record_many([_d("before", f"c{i}", "false_negative", "earlier") for i in range(20)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    reported = -1
    deadline = time.monotonic() + 60
    while reported < 60 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        reported = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert reported >= 60, "the writer did not get going"

    # a plain sqlite3 reader opens the file (recovering the WAL) and finds it sound
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    store = ReviewStore(path)
    hist = store.history(H)
    earlier = hist[hist["annotator"] == "earlier"]
    assert len(earlier) == 20 and set(earlier["decision"]) == {"false_negative"}
    victim = hist[hist["annotator"] == "victim"]
    assert victim.notna()[["anchor_key", "candidate_key", "decision", "time"]].all().all()
    per_batch = victim.groupby("note").size()
    assert (per_batch == 5).all(), "a batch was partly written"
    batches = sorted(int(n.split()[1]) for n in per_batch.index)
    # every batch the writer saw committed is there, and the batches form an unbroken run
    assert batches == list(range(len(batches)))
    assert batches[-1] >= reported
    # the database still takes writes afterwards
    store.record(_d("after", "c", "negative"))
    assert store.count(H) == len(hist) + 1

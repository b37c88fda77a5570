"""The one reader of the review log: the current decision per (kind, anchor_key, candidate_key).

The store (:mod:`analysis.review.store`) keeps every row ever written; this module says which of them count.
Every page and the CLI read decisions through :func:`current_decisions` (or :func:`run_decisions`), so one
log always means one set of decisions.

Per annotator
    :func:`annotator_decisions` replays each annotator's own rows on a key in order: a decision row sets the
    annotator's decision; an undo row (note ``undo of #ID``) puts back what *that annotator* had decided
    before row ``ID`` (or nothing). A ``cleared`` state is no decision. This gives one row per
    (kind, anchor_key, candidate_key, annotator) with that annotator's current decision.

Adjudication rules (``RULES``), over the annotators' current decisions on one key:

``latest``
    The newest row of the log wins, whoever wrote it (an undo row counts as the state it restores, which
    keeps another annotator's newer decision; see :meth:`ReviewStore.undo`). The default.
``majority``
    The decision held by most annotators; a tie goes to the tied decision written most recently.
``adjudicator``
    The named adjudicator's current decision wins where they have one; elsewhere the ``latest`` rule.
``unanimous``
    Only keys where every annotator with a decision agrees count; disputed keys have no decision.

A decision is (``decision``, ``label``): two relabels to different classes disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError
from analysis.review.store import DECISIONS, UNDO_PREFIX, DatasetHashes, ReviewStore
from analysis.runs.folder import Run

RULES = ("latest", "majority", "adjudicator", "unanimous")
KEY = ["kind", "anchor_key", "candidate_key"]
ANNOTATOR_COLUMNS = ("kind", "anchor_key", "candidate_key", "annotator", "decision", "label", "time", "id")
DECISION_COLUMNS = (
    "kind", "anchor_key", "candidate_key", "decision", "label", "annotator", "time", "id", "votes", "n_annotators"
)  # fmt: skip


def dataset_keys(run: Run) -> tuple[str, ...]:
    """The dataset hashes a run's decisions are stored under: its content hash first (written), then its
    legacy ``dataset_hash`` (read only, for databases written before the content hash)."""
    keys = [h for h in (run.content_hash, run.dataset_hash) if h]
    if not keys:
        raise NegScopeError(f"run {run.run_id} has no dataset hash to key review decisions by")
    return tuple(dict.fromkeys(keys))


def _label_text(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), "").astype(str)


def _replay(rows: pd.DataFrame) -> pd.Series | None:
    """One annotator's current state on one key from their own rows (id order); None when undecided."""
    state_after: dict[int, pd.Series | None] = {}
    own_ids: list[int] = []
    state: pd.Series | None = None
    for _, row in rows.iterrows():
        rid = int(row["id"])
        note = str(row["note"])
        if note.startswith(UNDO_PREFIX):
            try:
                target = int(note[len(UNDO_PREFIX) :].split()[0])
            except (ValueError, IndexError):
                target = None
            if target is None:
                state = row
            else:
                before = [i for i in own_ids if i < target]
                state = state_after[before[-1]] if before else None
        else:
            state = row
        state_after[rid] = state
        own_ids.append(rid)
    if state is None or state["decision"] == "cleared":
        return None
    return state


def _annotator_states(history: pd.DataFrame) -> pd.DataFrame:
    cols = list(ANNOTATOR_COLUMNS)
    if history.empty:
        return pd.DataFrame(columns=cols)
    group = [*KEY, "annotator"]
    is_undo = history["note"].astype(str).str.startswith(UNDO_PREFIX)
    has_undo = is_undo.groupby([history[c] for c in group]).transform("any")
    simple = history[~has_undo].groupby(group, sort=False).tail(1)
    replayed = []
    for _, rows in history[has_undo].groupby(group, sort=False):
        state = _replay(rows)
        if state is not None:
            replayed.append(state.to_frame().T)
    out = pd.concat([simple, *replayed], ignore_index=True) if replayed else simple
    out = out[out["decision"] != "cleared"]
    out = out.assign(label=_label_text(out["label"]), id=out["id"].astype(np.int64), time=out["time"].astype(float))
    return out.sort_values("id", kind="stable")[cols].reset_index(drop=True)


def annotator_decisions(
    store: ReviewStore, dataset_hash: DatasetHashes, *, kind: str | None = None
) -> pd.DataFrame:
    """Each annotator's current decision on each key (see the module docstring).

    Parameters
    ----------
    store : ReviewStore
    dataset_hash : str or sequence of str
        The dataset's hash(es) (:func:`dataset_keys`).
    kind : str, optional
        One decision kind (``negative``, ``pair``, ``label``, ``duplicate``); default all.

    Returns
    -------
    pandas.DataFrame
        ``ANNOTATOR_COLUMNS``: one row per (kind, anchor_key, candidate_key, annotator) with a decision;
        ``label`` is ``''`` except for relabels; ``time``/``id`` of the row that set the decision; oldest first.
    """
    _check_kind(kind)
    return _annotator_states(store.history(dataset_hash, kind=kind))


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in DECISIONS:
        raise NegScopeError(f"unknown decision kind {kind!r}; expected one of {sorted(DECISIONS)}")


def current_decisions(
    store: ReviewStore,
    dataset_hash: DatasetHashes,
    *,
    kind: str | None = None,
    rule: str = "latest",
    adjudicator: str | None = None,
) -> pd.DataFrame:
    """The current decision per (kind, anchor_key, candidate_key) under an adjudication rule.

    Parameters
    ----------
    store : ReviewStore
    dataset_hash : str or sequence of str
        The dataset's hash(es) (:func:`dataset_keys`).
    kind : str, optional
        One decision kind; default all.
    rule : {"latest", "majority", "adjudicator", "unanimous"}
        See the module docstring.
    adjudicator : str, optional
        The annotator whose decisions win under ``rule="adjudicator"`` (required there, ignored otherwise).

    Returns
    -------
    pandas.DataFrame
        ``DECISION_COLUMNS``, one row per decided key (``cleared`` and, under ``unanimous``, disputed keys
        left out), oldest first: ``decision``, ``label`` (``''`` unless a relabel), ``annotator``/``time``/``id``
        of the row that counts, ``votes`` (annotators currently holding this decision) and ``n_annotators``
        (annotators with any current decision on the key).
    """
    _check_kind(kind)
    if rule not in RULES:
        raise NegScopeError(f"unknown adjudication rule {rule!r}; expected one of {RULES}")
    if rule == "adjudicator" and not (adjudicator and adjudicator.strip()):
        raise NegScopeError("the adjudicator rule needs the adjudicator's annotator name")
    cols = list(DECISION_COLUMNS)
    history = store.history(dataset_hash, kind=kind)
    if history.empty:
        return pd.DataFrame(columns=cols)
    states = _annotator_states(history)
    states["option"] = states["decision"] + "\x1f" + states["label"]
    votes = states.groupby([*KEY, "option"], sort=False).agg(votes=("annotator", "size"), last_id=("id", "max"))
    votes = votes.reset_index()
    n_ann = states.groupby(KEY, sort=False).size().rename("n_annotators").reset_index()

    if rule in ("latest", "adjudicator"):
        last = history.groupby(KEY, sort=False).tail(1)
        last = last[last["decision"] != "cleared"]
        chosen = last.assign(label=_label_text(last["label"]), id=last["id"].astype(np.int64))
        chosen = chosen[[*KEY, "decision", "label", "annotator", "time", "id"]]
        if rule == "adjudicator":
            own = states[states["annotator"] == adjudicator.strip()][[*KEY, "decision", "label", "annotator", "time",
                                                                      "id"]]  # fmt: skip
            rest = chosen.merge(own[KEY], on=KEY, how="left", indicator=True)
            rest = rest[rest["_merge"] == "left_only"].drop(columns="_merge")
            chosen = pd.concat([own, rest], ignore_index=True)
    else:
        ranked = votes.sort_values([*KEY, "votes", "last_id"], ascending=[True, True, True, False, False], kind="stable")
        best = ranked.groupby(KEY, sort=False).head(1)
        if rule == "unanimous":
            n_options = votes.groupby(KEY, sort=False).size().rename("n_options").reset_index()
            best = best.merge(n_options, on=KEY)
            best = best[best["n_options"] == 1]
        rows = states.set_index("id").loc[best["last_id"].to_numpy()].reset_index()
        chosen = rows[[*KEY, "decision", "label", "annotator", "time", "id"]]
    chosen = chosen.assign(option=chosen["decision"].astype(str) + "\x1f" + chosen["label"].astype(str))
    out = chosen.merge(votes[[*KEY, "option", "votes"]], on=[*KEY, "option"], how="left")
    out = out.merge(n_ann, on=KEY, how="left")
    out["votes"] = out["votes"].fillna(0).astype(np.int64)
    out["n_annotators"] = out["n_annotators"].fillna(0).astype(np.int64)
    out["id"] = out["id"].astype(np.int64)
    out["time"] = out["time"].astype(float)
    return out.sort_values("id", kind="stable")[cols].reset_index(drop=True)


def run_decisions(
    run: Run,
    store: ReviewStore,
    *,
    kind: str | None = None,
    rule: str = "latest",
    adjudicator: str | None = None,
) -> pd.DataFrame:
    """:func:`current_decisions` for ``run``'s dataset (all of :func:`dataset_keys`)."""
    return current_decisions(store, dataset_keys(run), kind=kind, rule=rule, adjudicator=adjudicator)


def workspace_decisions(
    run: Run,
    *,
    db: str | Path | None = None,
    kind: str | None = None,
    rule: str = "latest",
    adjudicator: str | None = None,
) -> pd.DataFrame:
    """:func:`run_decisions` from the workspace's review database (or ``db``); an empty table (the columns of
    ``DECISION_COLUMNS``) when that file does not exist, which is then not created."""
    from analysis.runs import workspace

    path = Path(db) if db is not None else workspace.review_db_path()
    if not path.is_file():
        return pd.DataFrame(columns=list(DECISION_COLUMNS))
    return run_decisions(run, ReviewStore(path), kind=kind, rule=rule, adjudicator=adjudicator)


def with_item_ids(run: Run, decisions: pd.DataFrame) -> pd.DataFrame:
    """``decisions`` with ``anchor_id`` and ``candidate_id``: the run's item holding each key (the lowest id
    when several items share a key), -1 where the run has no such item (or the key is ``''``)."""
    return decisions.assign(
        anchor_id=run.item_ids_for_keys(decisions["anchor_key"].astype(str)),
        candidate_id=run.item_ids_for_keys(decisions["candidate_key"].astype(str)),
    )


def negative_decisions(run: Run, decisions: pd.DataFrame) -> pd.DataFrame:
    """The ``negative``-kind decisions of :func:`current_decisions`, mapped to the run's item ids.

    Returns
    -------
    pandas.DataFrame
        ``anchor_id``, ``candidate_id``, ``anchor_key``, ``candidate_key``, ``decision``, ``annotator``,
        ``time``, ``id``; decisions whose items are not in this run are left out.
    """
    cols = ["anchor_id", "candidate_id", "anchor_key", "candidate_key", "decision", "annotator", "time", "id"]
    neg = decisions[decisions["kind"] == "negative"]
    if neg.empty:
        return pd.DataFrame(columns=cols)
    mapped = with_item_ids(run, neg)
    mapped = mapped[(mapped["anchor_id"] >= 0) & (mapped["candidate_id"] >= 0)]
    return mapped[cols].reset_index(drop=True)


def decided_pairs(decisions: pd.DataFrame, *, kind: str, decision: str) -> set[tuple[str, str]]:
    """The (anchor_key, candidate_key) of every current ``decision`` of ``kind``."""
    chosen = decisions[(decisions["kind"] == kind) & (decisions["decision"] == decision)]
    return set(zip(chosen["anchor_key"].astype(str), chosen["candidate_key"].astype(str), strict=True))


__all__: Sequence[str] = [
    "ANNOTATOR_COLUMNS",
    "DECISION_COLUMNS",
    "RULES",
    "annotator_decisions",
    "current_decisions",
    "dataset_keys",
    "decided_pairs",
    "negative_decisions",
    "run_decisions",
    "with_item_ids",
    "workspace_decisions",
]

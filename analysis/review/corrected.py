"""The one corrected-dataset builder: what each review decision does to the training data.

Every export (the False Negatives page, the Label Noise page, ``python -m analysis export``) goes through
:func:`build_corrected`, and every writer (:mod:`analysis.review.export`) takes its result, so the same
decisions always give the same files and the counts shown are the counts the files hold.

Effects (decisions as read by :mod:`analysis.review.decisions`; matched by item content keys):

================================  ===========================================================================
decision                          effect
================================  ===========================================================================
listed negative (``given`` or     removed from that anchor's pairs' negatives (given negatives are the file's
``in_batch``) -> false_negative   negative columns; in-batch ones appear only in training batches, so the
                                  exclusion list masks them); with ``extra_positive_pairs`` also written as
                                  an extra (anchor, candidate) positive pair
mined candidate -> false_negative written as an extra (anchor, candidate) positive pair
any false_negative                listed in the anchor's exclusion list (JSONL: anchor -> excluded items),
                                  which a training loop uses to mask them from in-batch negatives
                                  (GISTEmbed-style); relevant in the BEIR qrels
negative / unsure                 kept (``drop_unsure`` removes given negatives decided ``unsure`` too)
pair -> mismatched                the pair is dropped (``drop_mismatched``)
label -> relabel                  the item's label column holds the corrected class (``apply_relabels``)
duplicate -> duplicate            all but one copy dropped (``drop_duplicates``): for two anchors, the
                                  pairs of the anchor listed later are dropped (the group of all anchors
                                  linked by duplicate decisions keeps the one whose first remaining pair
                                  comes first); for an item decided a duplicate of itself, its repeated
                                  (anchor, positive) pairs keep their first copy
================================  ===========================================================================

A candidate counts as *listed* when it is a given or in-batch negative of any pair of that anchor in this
run, otherwise as *mined*. Extra positive pairs get the id ``<pair_id>+fn<j>`` (the anchor's first kept
pair), carry that pair's kept given negatives (minus the candidate) and the anchor's label; they are not
added when the (anchor, candidate) pair is already in the dataset or the anchor has no kept pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.review.store import ReviewStore
from analysis.runs.folder import Run

PAIR_COLUMNS = ("id", "anchor_id", "positive_id", "negative_ids", "anchor_label", "positive_label", "origin")
EXCLUSION_COLUMNS = ("anchor_id", "excluded_ids")
COUNT_NAMES = (
    "pairs_in",
    "pairs_out",
    "pairs_dropped_mismatched",
    "pairs_dropped_duplicate",
    "false_negatives",
    "false_negatives_given",
    "false_negatives_in_batch",
    "false_negatives_mined",
    "false_negatives_not_in_run",
    "given_negatives_removed",
    "positive_pairs_added",
    "exclusion_anchors",
    "exclusions",
    "labels_corrected",
    "label_rows_changed",
)


@dataclass(frozen=True, eq=False)
class CorrectedDataset:
    """The corrected training data, before it is written.

    Attributes
    ----------
    run : Run
        The run whose items the ids refer to.
    pairs : pandas.DataFrame
        ``PAIR_COLUMNS``: one row per output pair, dataset pairs first (dataset order), then extra positive
        pairs (decision order); ``negative_ids`` is the list of kept given negatives (dataset column order);
        ``origin`` is ``'dataset'`` or ``'false_negative'``.
    exclusions : pandas.DataFrame
        ``EXCLUSION_COLUMNS``: per anchor of an output pair, the sorted item ids decided false negatives.
    labels : numpy.ndarray
        (N,) object, every item's label after corrections (None where missing).
    label_layout : {"label", "roles", "none"}
        How the labels are written: one ``label`` column, ``anchor_label`` / ``positive_label``, or none.
    decisions : pandas.DataFrame
        The current decisions the corrections came from (:func:`analysis.review.decisions.current_decisions`).
    history : pandas.DataFrame or None
        Every log row of the dataset (the audit log), when given to the builder.
    counts : dict of str to int
        ``COUNT_NAMES``: what the corrections did; every writer's output holds exactly these.
    options : dict
        The builder's options.
    """

    run: Run
    pairs: pd.DataFrame
    exclusions: pd.DataFrame
    labels: np.ndarray
    label_layout: str
    decisions: pd.DataFrame
    history: pd.DataFrame | None
    counts: dict[str, int]
    options: dict[str, Any] = field(default_factory=dict)


def _key_set(decisions: pd.DataFrame, kind: str, values: tuple[str, ...]) -> pd.DataFrame:
    chosen = decisions[(decisions["kind"] == kind) & decisions["decision"].isin(values)]
    return chosen.sort_values("id", kind="stable")


def _duplicate_drops(keys: np.ndarray, pairs: pd.DataFrame, decided: pd.DataFrame) -> np.ndarray:
    """(P,) bool: pairs (rows of ``pairs``, already without the dropped ones) left out as duplicate copies."""
    drop = np.zeros(len(pairs), dtype=bool)
    if decided.empty or pairs.empty:
        return drop
    anchor_key = keys[pairs["anchor_id"].to_numpy(np.int64)]
    positive_key = keys[pairs["positive_id"].to_numpy(np.int64)]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    repeated: set[str] = set()
    for a, c in zip(decided["anchor_key"].astype(str), decided["candidate_key"].astype(str), strict=True):
        if not c or c == a:
            repeated.add(a)
            continue
        ra, rc = find(a), find(c)
        if ra != rc:
            parent[max(ra, rc)] = min(ra, rc)
    # repeated (anchor, positive) pairs of an item decided a duplicate of itself: keep the first copy
    if repeated:
        seen: set[tuple[str, str]] = set()
        for row, (a, p) in enumerate(zip(anchor_key, positive_key, strict=True)):
            if a in repeated:
                drop[row] = (a, p) in seen
                seen.add((a, p))
    # groups of anchors linked by duplicate decisions: keep the anchor whose first remaining pair comes first
    if parent:
        root_of = np.array([find(a) if a in parent else "" for a in anchor_key], dtype=object)
        keeper: dict[str, str] = {}
        for row in range(len(pairs)):
            root = root_of[row]
            if root and root not in keeper:
                keeper[root] = anchor_key[row]
        for row in range(len(pairs)):
            root = root_of[row]
            if root and anchor_key[row] != keeper[root]:
                drop[row] = True
    return drop


def build_corrected(
    run: Run,
    decisions: pd.DataFrame,
    *,
    extra_positive_pairs: bool = True,
    drop_duplicates: bool = True,
    drop_mismatched: bool = True,
    apply_relabels: bool = True,
    drop_unsure: bool = False,
    history: pd.DataFrame | None = None,
) -> CorrectedDataset:
    """Apply the current review decisions to the run's dataset (see the module docstring for each effect).

    Parameters
    ----------
    run : Run
        The run (its items, pairs and negatives; ids refer to it).
    decisions : pandas.DataFrame
        Current decisions of the run's dataset: :func:`analysis.review.decisions.run_decisions` output (any
        adjudication rule), columns ``kind``, ``anchor_key``, ``candidate_key``, ``decision``, ``label``,
        ``id``.
    extra_positive_pairs : bool
        Also write listed (given / in-batch) false negatives as extra positive pairs (mined ones always are).
    drop_duplicates, drop_mismatched, apply_relabels : bool
        Apply duplicate, mismatched-pair and relabel decisions.
    drop_unsure : bool
        Remove given negatives decided ``unsure`` as well.
    history : pandas.DataFrame, optional
        Every log row of the dataset (``ReviewStore.history``), kept for the audit log.

    Returns
    -------
    CorrectedDataset
    """
    keys = run.item_keys
    n_pairs = len(run.pairs)
    pairs = run.pairs[["pair_id", "anchor_id", "positive_id"]].reset_index(drop=True)
    a_ids = pairs["anchor_id"].to_numpy(np.int64)
    p_ids = pairs["positive_id"].to_numpy(np.int64)
    a_keys, p_keys = keys[a_ids], keys[p_ids]

    # --- pairs dropped: mismatched, then duplicates among the rest
    keep = np.ones(n_pairs, dtype=bool)
    if drop_mismatched:
        mismatched = _key_set(decisions, "pair", ("mismatched",))
        bad = set(zip(mismatched["anchor_key"].astype(str), mismatched["candidate_key"].astype(str), strict=True))
        keep &= ~np.array([(a, p) in bad for a, p in zip(a_keys, p_keys, strict=True)], dtype=bool)
    n_mismatched = int(n_pairs - keep.sum())
    if drop_duplicates:
        rows = np.flatnonzero(keep)
        dup = _duplicate_drops(keys, pairs.iloc[rows], _key_set(decisions, "duplicate", ("duplicate",)))
        keep[rows[dup]] = False
    n_duplicate = int(n_pairs - keep.sum()) - n_mismatched

    # --- labels
    labels = run.labels.copy()
    original = run.labels
    n_relabelled = 0
    if apply_relabels:
        relabel = _key_set(decisions, "label", ("relabel",))
        new_label = dict(zip(relabel["anchor_key"].astype(str), relabel["label"].astype(str), strict=True))
        if new_label:
            hit = np.array([k in new_label for k in keys], dtype=bool)
            labels[hit] = [new_label[k] for k in keys[hit]]
            n_relabelled = int(hit.sum())
    relabelled = np.array([x != y for x, y in zip(labels, original, strict=True)], dtype=bool)

    # --- false negatives, classified against this run's negatives
    fn = _key_set(decisions, "negative", ("false_negative",))
    fn_keys = list(dict.fromkeys(zip(fn["anchor_key"].astype(str), fn["candidate_key"].astype(str), strict=True)))
    neg = run.negatives.merge(pairs[["pair_id", "anchor_id"]], on="pair_id", how="inner")
    neg_pair_key = list(zip(keys[neg["anchor_id"].to_numpy(np.int64)], keys[neg["negative_id"].to_numpy(np.int64)],
                            strict=True))  # fmt: skip
    source = neg["source"].astype(str).to_numpy()
    given_keys = {k for k, s in zip(neg_pair_key, source, strict=True) if s == "given"}
    in_batch_keys = {k for k, s in zip(neg_pair_key, source, strict=True) if s == "in_batch"}
    remove = set(fn_keys)
    if drop_unsure:
        unsure = _key_set(decisions, "negative", ("unsure",))
        remove |= set(zip(unsure["anchor_key"].astype(str), unsure["candidate_key"].astype(str), strict=True))

    given = run.negatives[run.negatives["source"] == "given"].copy()
    if "column" in given.columns and len(given):
        names = given["column"].astype(str)
        order_of = {n: float(m.group(1)) if (m := re.search(r"(\d+)$", n)) else 0.0 for n in names.unique()}
        given["_order"] = names.map(order_of)
        given = given.sort_values(["pair_id", "_order"], kind="stable")
    neg_lists = given.groupby("pair_id", sort=False)["negative_id"].agg(list)

    records: list[tuple] = []
    pair_ids = pairs["pair_id"].to_numpy(dtype=object)
    first_kept_of_anchor: dict[str, tuple[object, int, list[int]]] = {}
    n_removed = 0
    for row in np.flatnonzero(keep):
        pid, a, p = pair_ids[row], int(a_ids[row]), int(p_ids[row])
        negatives = [int(x) for x in neg_lists.get(pid, [])]
        kept = [x for x in negatives if (keys[a], keys[x]) not in remove]
        n_removed += len(negatives) - len(kept)
        first_kept_of_anchor.setdefault(keys[a], (pid, a, kept))
        records.append((pid, a, p, kept, labels[a], labels[p], "dataset"))

    existing = set(zip(a_keys, p_keys, strict=True))
    counts_by_source = {"given": 0, "in_batch": 0, "mined": 0}
    n_missing = 0
    n_added = 0
    extra_of_base: dict[object, int] = {}
    excluded: dict[int, set[int]] = {}
    anchor_item = run.item_ids_for_keys([a for a, _ in fn_keys])
    cand_item = run.item_ids_for_keys([c for _, c in fn_keys])
    for (ak, ck), a, c in zip(fn_keys, anchor_item, cand_item, strict=True):
        if a < 0 or c < 0:
            n_missing += 1
            continue
        src = "given" if (ak, ck) in given_keys else "in_batch" if (ak, ck) in in_batch_keys else "mined"
        counts_by_source[src] += 1
        base = first_kept_of_anchor.get(ak)
        if base is None:  # every pair of the anchor was dropped
            continue
        anchor_id = base[1]  # the anchor item as its kept pairs hold it
        excluded.setdefault(anchor_id, set()).add(int(c))
        if (src == "mined" or extra_positive_pairs) and (ak, ck) not in existing:
            j = extra_of_base.get(base[0], 0) + 1
            extra_of_base[base[0]] = j
            label = labels[anchor_id] if labels[anchor_id] is not None else labels[c]
            negatives = [x for x in base[2] if keys[x] != ck]
            records.append((f"{base[0]}+fn{j}", anchor_id, int(c), negatives, label, label, "false_negative"))
            existing.add((ak, ck))
            n_added += 1

    table = pd.DataFrame(records, columns=list(PAIR_COLUMNS))
    exclusions = pd.DataFrame(
        [(a, sorted(ids)) for a, ids in sorted(excluded.items())], columns=list(EXCLUSION_COLUMNS)
    )

    # --- the label layout: one `label` column when the dataset had one label per pair
    if "label" not in run.items.columns or all(v is None for v in labels):
        layout = "none"
    else:
        single = all(x is None or y is None or x == y for x, y in zip(original[a_ids], original[p_ids], strict=True))
        layout = "label" if single else "roles"
    label_rows = 0
    if len(table) and layout != "none":
        out_a = table["anchor_id"].to_numpy(np.int64)
        out_p = table["positive_id"].to_numpy(np.int64)
        changed = relabelled[out_a] | relabelled[out_p]
        label_rows = int((changed & (table["origin"] == "dataset").to_numpy()).sum())

    counts = {
        "pairs_in": int(n_pairs),
        "pairs_out": int(len(table)),
        "pairs_dropped_mismatched": n_mismatched,
        "pairs_dropped_duplicate": n_duplicate,
        "false_negatives": len(fn_keys),
        "false_negatives_given": counts_by_source["given"],
        "false_negatives_in_batch": counts_by_source["in_batch"],
        "false_negatives_mined": counts_by_source["mined"],
        "false_negatives_not_in_run": n_missing,
        "given_negatives_removed": int(n_removed),
        "positive_pairs_added": int(n_added),
        "exclusion_anchors": int(len(exclusions)),
        "exclusions": int(sum(len(v) for v in excluded.values())),
        "labels_corrected": n_relabelled,
        "label_rows_changed": label_rows,
    }
    options = {
        "extra_positive_pairs": bool(extra_positive_pairs),
        "drop_duplicates": bool(drop_duplicates),
        "drop_mismatched": bool(drop_mismatched),
        "apply_relabels": bool(apply_relabels),
        "drop_unsure": bool(drop_unsure),
    }
    return CorrectedDataset(
        run=run,
        pairs=table,
        exclusions=exclusions,
        labels=labels,
        label_layout=layout,
        decisions=decisions,
        history=history,
        counts=counts,
        options=options,
    )


def pair_label(corrected: CorrectedDataset) -> np.ndarray:
    """(rows,) object: the one ``label`` of each output pair (the anchor's, unless only the positive was
    relabelled or the anchor has none)."""
    table = corrected.pairs
    if table.empty:
        return np.zeros(0, dtype=object)
    run = corrected.run
    keys_relabelled = np.array([x != y for x, y in zip(corrected.labels, run.labels, strict=True)], dtype=bool)
    a = table["anchor_id"].to_numpy(np.int64)
    p = table["positive_id"].to_numpy(np.int64)
    use_positive = (keys_relabelled[p] & ~keys_relabelled[a]) | table["anchor_label"].isna().to_numpy()
    return np.where(use_positive, table["positive_label"].to_numpy(dtype=object), table["anchor_label"].to_numpy(dtype=object))


EFFECTS = (
    ("pairs_dropped_mismatched", "pairs decided mismatched are dropped"),
    ("pairs_dropped_duplicate", "duplicate copies are dropped (one copy kept)"),
    ("given_negatives_removed", "given negatives decided false negatives are removed from their pairs"),
    ("positive_pairs_added", "false negatives are written as extra positive pairs"),
    ("exclusions", "false negatives are listed per anchor in exclusions.jsonl (and relevant in BEIR qrels)"),
    ("label_rows_changed", "rows carry a corrected label"),
)
"""(count name, what it means): the effects a page states next to its export button."""


def describe_effects(counts: dict[str, int]) -> list[str]:
    """One plain sentence per effect, with its count (what the export files hold)."""
    lines = [f"{counts['pairs_out']:,} pairs written (of {counts['pairs_in']:,} in the dataset)."]
    for name, text in EFFECTS:
        lines.append(f"{counts[name]:,} {text}.")
    fn = counts["false_negatives"]
    lines.append(
        f"{fn:,} decided false negatives: {counts['false_negatives_given']:,} given, "
        f"{counts['false_negatives_in_batch']:,} in-batch, {counts['false_negatives_mined']:,} mined"
        + (f", {counts['false_negatives_not_in_run']:,} not in this run." if counts["false_negatives_not_in_run"] else ".")
    )
    return lines


__all__ = [
    "COUNT_NAMES",
    "EFFECTS",
    "EXCLUSION_COLUMNS",
    "PAIR_COLUMNS",
    "CorrectedDataset",
    "build_corrected",
    "corrected_from_store",
    "describe_effects",
    "pair_label",
]


def corrected_from_store(
    run: Run,
    store: ReviewStore,
    *,
    rule: str = "latest",
    adjudicator: str | None = None,
    **options: bool,
) -> CorrectedDataset:
    """:func:`build_corrected` from the review log: the run's current decisions under ``rule`` (see
    :func:`analysis.review.decisions.current_decisions`), with the full log kept for the audit log.

    ``options`` are :func:`build_corrected`'s keyword options.
    """
    from analysis.review.decisions import dataset_keys, run_decisions

    decisions = run_decisions(run, store, rule=rule, adjudicator=adjudicator)
    history = store.history(dataset_keys(run))
    return build_corrected(run, decisions, history=history, **options)

"""Label-noise review decisions and what they export: corrected labels, and the pairs minus mismatched ones.

Decisions live in the shared review store (:mod:`analysis.review.store`), keyed by item content hashes:

- a pair: kind ``pair``, ``anchor_key`` = the anchor item's key, ``candidate_key`` = the positive's key,
  decision ``mismatched`` | ``ok`` | ``unsure`` | ``cleared``;
- a label: kind ``label``, ``anchor_key`` = the item's key, ``candidate_key`` = ``''``, decision ``relabel``
  (with the corrected ``label``) | ``ok`` | ``cleared``.

The exported pairs use the sentence-transformers columns (``id``, ``anchor``, ``positive``,
``negative_1..k`` from the given negatives, ``label``) with the items' content as the dataset wrote it, so
image paths stay relative to the dataset's folder: save the file there to read it back as a dataset.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from analysis.detectors.duplicates import DEFAULT_THRESHOLD
from analysis.detectors.labels import clean_labels
from analysis.errors import NegScopeError
from analysis.review.store import Decision, ReviewStore
from analysis.runs.folder import Run


def pair_decision(run: Run, pair_id: object, decision: str, annotator: str, *, note: str = "") -> Decision:
    """The review-store row for a decision on pair ``pair_id`` (``mismatched`` | ``ok`` | ``unsure``)."""
    match = run.pairs[run.pairs["pair_id"].astype(str) == str(pair_id)]
    if match.empty:
        raise NegScopeError(f"pair {pair_id!r} is not in run {run.run_id}")
    row = match.iloc[0]
    keys = run.items["key"]
    return Decision(
        dataset_hash=run.dataset_hash,
        kind="pair",
        anchor_key=str(keys.iloc[int(row["anchor_id"])]),
        candidate_key=str(keys.iloc[int(row["positive_id"])]),
        decision=decision,
        annotator=annotator,
        note=note,
    )


def label_decision(
    run: Run, item_id: int, decision: str, annotator: str, *, label: str | None = None, note: str = ""
) -> Decision:
    """The review-store row for a decision on item ``item_id``'s label (``relabel`` with ``label``, or ``ok``)."""
    if not 0 <= int(item_id) < len(run.items):
        raise NegScopeError(f"item {item_id} is not in run {run.run_id}")
    return Decision(
        dataset_hash=run.dataset_hash,
        kind="label",
        anchor_key=str(run.items["key"].iloc[int(item_id)]),
        candidate_key="",
        decision=decision,
        annotator=annotator,
        label=label,
        note=note,
    )


def pair_decisions(run: Run, store: ReviewStore) -> pd.DataFrame:
    """The current pair decision of each pair of the run that has one.

    Returns
    -------
    pandas.DataFrame
        ``pair_id``, ``anchor_id``, ``positive_id``, ``decision``, ``annotator``, ``time``.
    """
    latest = store.latest(run.dataset_hash, kind="pair")
    cols = ["pair_id", "anchor_id", "positive_id", "decision", "annotator", "time"]
    if latest.empty:
        return pd.DataFrame(columns=cols)
    keys = run.items["key"].astype(str).to_numpy()
    pairs = run.pairs.assign(
        anchor_key=keys[run.pairs["anchor_id"].to_numpy(np.int64)],
        candidate_key=keys[run.pairs["positive_id"].to_numpy(np.int64)],
    )
    merged = pairs.merge(latest, on=["anchor_key", "candidate_key"], how="inner")
    return merged[cols].reset_index(drop=True)


def label_decisions(run: Run, store: ReviewStore) -> pd.DataFrame:
    """The current label decision of each item of the run that has one.

    Returns
    -------
    pandas.DataFrame
        ``item_id``, ``decision``, ``label`` (the corrected class for ``relabel``), ``annotator``, ``time``.
    """
    latest = store.latest(run.dataset_hash, kind="label")
    cols = ["item_id", "decision", "label", "annotator", "time"]
    if latest.empty:
        return pd.DataFrame(columns=cols)
    items = pd.DataFrame({"item_id": run.items["item_id"].to_numpy(), "anchor_key": run.items["key"].astype(str)})
    merged = items.merge(latest, on="anchor_key", how="inner")
    return merged[cols].reset_index(drop=True)


def corrected_labels(run: Run, decisions: pd.DataFrame) -> pd.DataFrame:
    """The relabelled items, for export.

    Parameters
    ----------
    run : Run
        The run folder.
    decisions : pandas.DataFrame
        :func:`label_decisions` output.

    Returns
    -------
    pandas.DataFrame
        ``item_id``, ``key``, ``modality``, ``content``, ``given_label``, ``corrected_label``, ``annotator``,
        ``time`` (ISO 8601, UTC): one row per item whose current decision is ``relabel``.
    """
    relabel = decisions[decisions["decision"] == "relabel"]
    ids = relabel["item_id"].to_numpy(np.int64)
    items = run.items.iloc[ids]
    given = clean_labels(run.items["label"]).to_numpy()[ids] if "label" in run.items.columns else [None] * len(ids)
    return pd.DataFrame(
        {
            "item_id": ids,
            "key": items["key"].astype(str).to_numpy(),
            "modality": items["modality"].to_numpy(),
            "content": items["content"].astype(str).to_numpy(),
            "given_label": given,
            "corrected_label": relabel["label"].astype(str).to_numpy(),
            "annotator": relabel["annotator"].to_numpy(),
            "time": pd.to_datetime(relabel["time"].astype(float), unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ).reset_index(drop=True)


def clean_pairs(
    run: Run,
    *,
    pair_decisions: pd.DataFrame,
    label_decisions: pd.DataFrame,
    drop_pair_ids: Iterable[object] = (),
) -> pd.DataFrame:
    """The dataset's pairs minus those decided mismatched, with corrected labels applied.

    Parameters
    ----------
    run : Run
        The run folder.
    pair_decisions, label_decisions : pandas.DataFrame
        :func:`pair_decisions` and :func:`label_decisions` output.
    drop_pair_ids : iterable
        More pairs to leave out (e.g. the later pair of each flagged near duplicate).

    Returns
    -------
    pandas.DataFrame
        ``id``, ``anchor``, ``positive``, ``negative_1..k`` (the given negatives, in their dataset order),
        ``label`` (the anchor's label, corrected where relabelled; the positive's when the anchor has none);
        the label column is left out when no item has a label.
    """
    pairs = run.pairs
    drop = set(pair_decisions.loc[pair_decisions["decision"] == "mismatched", "pair_id"].astype(str))
    drop |= {str(p) for p in drop_pair_ids}
    keep = ~pairs["pair_id"].astype(str).isin(drop)
    kept = pairs[keep].reset_index(drop=True)
    content = run.items["content"].astype(str).to_numpy()
    out = pd.DataFrame(
        {
            "id": kept["pair_id"].to_numpy(),
            "anchor": content[kept["anchor_id"].to_numpy(np.int64)],
            "positive": content[kept["positive_id"].to_numpy(np.int64)],
        }
    )
    given = run.negatives[run.negatives["source"] == "given"]
    if len(given):
        given = given.copy()
        if "column" in given.columns:
            given["_order"] = given["column"].astype(str).str.extract(r"(\d+)$")[0].astype(float)
            given = given.sort_values(["pair_id", "_order"], kind="stable", na_position="last")
        given["_slot"] = given.groupby("pair_id").cumcount() + 1
        wide = given.pivot(index="pair_id", columns="_slot", values="negative_id")
        wide.index = wide.index.astype(str)
        for slot in wide.columns:
            ids = wide[slot].reindex(kept["pair_id"].astype(str)).to_numpy()
            out[f"negative_{int(slot)}"] = [content[int(i)] if pd.notna(i) else None for i in ids]
    if "label" in run.items.columns:
        labels = clean_labels(run.items["label"]).copy()
        relabel = label_decisions[label_decisions["decision"] == "relabel"]
        labels.iloc[relabel["item_id"].to_numpy(np.int64)] = relabel["label"].astype(str).to_numpy()
        anchor_label = labels.to_numpy()[kept["anchor_id"].to_numpy(np.int64)]
        positive_label = labels.to_numpy()[kept["positive_id"].to_numpy(np.int64)]
        pair_label = np.where(pd.isna(anchor_label), positive_label, anchor_label)
        if pd.notna(pair_label).any():
            out["label"] = pair_label
    return out


def duplicate_pairs_to_drop(
    duplicates: pd.DataFrame, pairs: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD
) -> list[object]:
    """Pairs to leave out so that each flagged duplicate keeps one copy.

    Parameters
    ----------
    duplicates : pandas.DataFrame
        :func:`analysis.detectors.duplicates.near_duplicate_anchors` output.
    pairs : pandas.DataFrame
        ``run.pairs``.
    threshold : float
        Cosine at or above which two anchors are near duplicates (the detector's threshold).

    Returns
    -------
    list
        ``pair_id`` values: every pair repeating an earlier (anchor, positive), and every pair whose anchor is
        the later item of a flagged near-duplicate couple (the earlier item's pairs are kept).
    """
    drop = pairs.loc[pairs.duplicated(["anchor_id", "positive_id"]), "pair_id"].tolist()
    near = duplicates[(duplicates["sim"] >= threshold) & duplicates["other_item_id"].notna()]
    later = near.loc[near["item_id"] > near["other_item_id"].astype("int64"), "item_id"]
    drop += pairs.loc[pairs["anchor_id"].isin(later), "pair_id"].tolist()
    return drop

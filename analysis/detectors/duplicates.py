"""Near-duplicate anchors, and duplicates across splits when the run has a split column.

Items are deduplicated by content when a dataset is read, so two pairs with byte-identical anchors share one
anchor item. What is left to find:

- **near duplicates**: two different anchor items whose embeddings are almost the same
  (``sim >= threshold``, cosine); each anchor's nearest other anchor (faiss, exact) is its evidence;
- **repeated pairs**: the same (anchor, positive) listed by more than one pair (``score = 1``);
- **across splits**: when ``items`` or ``pairs`` has a ``split`` column (e.g. train / test), an anchor whose
  nearest anchor *in another split* is a near duplicate, or one anchor item used by pairs of two splits, is a
  leak between the splits. Runs written by the embedding engine carry no split column; a run folder written
  by hand (or a dataset loader that keeps one) may, and it is then used.

``score`` is the similarity to the nearest other anchor (1 for repeated pairs and shared cross-split anchors),
``flagged`` when ``score >= threshold``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from analysis.choices import DUPLICATE_THRESHOLD as DEFAULT_THRESHOLD
from analysis.runs.folder import Run
from analysis.search.graph import run_graph, run_index

SPLIT_COLUMN = "split"

DUPLICATE_COLUMNS = (
    "item_id",
    "pair_id",
    "other_item_id",
    "other_pair_id",
    "sim",
    "split",
    "other_split",
    "cross_split",
    "n_pairs",
    "repeated_pairs",
    "score",
    "flagged",
    "reason",
)


def anchor_splits(run: Run, *, split_column: str = SPLIT_COLUMN) -> pd.Series | None:
    """The split of each anchor item (index: item id), or None when the run has no split column.

    ``pairs[split_column]`` wins over ``items[split_column]``; an anchor used by pairs of several splits gets
    them joined with ``'+'`` (sorted), which marks it as shared across splits.
    """
    if split_column in run.pairs.columns:
        table = run.pairs[["anchor_id", split_column]].dropna()
        joined = table.groupby("anchor_id")[split_column].agg(lambda s: "+".join(sorted({str(v) for v in s})))
        return joined
    if split_column in run.items.columns:
        ids = np.unique(run.pairs["anchor_id"].to_numpy(np.int64))
        values = run.items[split_column].to_numpy()[ids]
        series = pd.Series(values, index=ids).dropna().astype(str)
        return series
    return None


def near_duplicate_anchors(
    run: Run,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    split_column: str = SPLIT_COLUMN,
    search: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Find near-duplicate anchors (and cross-split duplicates).

    Parameters
    ----------
    run : Run
        The run folder.
    threshold : float
        Cosine similarity at or above which two anchors count as near duplicates.
    split_column : str
        Column of ``pairs`` or ``items`` naming the split, used when present.
    search : {"auto", "exact", "ivf", "hnsw"}
        The search of the run's shared anchor graph ('auto': the rule picks from the work).
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    pandas.DataFrame
        One row per distinct anchor item (``DUPLICATE_COLUMNS``), in item order: its first pair, its nearest
        other anchor (in another split when splits exist and that one is closer than ``threshold``, else
        anywhere) with that anchor's first pair, ``sim``, the splits, ``n_pairs`` (pairs using this anchor),
        ``repeated_pairs`` (pairs repeating an earlier (anchor, positive)), ``score``, ``flagged``, ``reason``.
    """
    report = progress or (lambda _f: None)
    pairs = run.pairs
    anchors = np.unique(pairs["anchor_id"].to_numpy(np.int64))
    if len(anchors) == 0:
        return pd.DataFrame(columns=list(DUPLICATE_COLUMNS))
    first_pair = pairs.drop_duplicates("anchor_id").set_index("anchor_id")["pair_id"]
    n_pairs = pairs.groupby("anchor_id").size()
    repeated = pairs.duplicated(["anchor_id", "positive_id"]).groupby(pairs["anchor_id"]).sum()
    emb = run.embeddings[anchors]

    other = np.full(len(anchors), -1, dtype=np.int64)
    sim = np.full(len(anchors), np.nan, dtype=np.float32)
    if len(anchors) > 1:
        # the run's shared anchor graph (exact or measured-recall approximate, as the rule picks)
        rows, sims = run_graph(run, anchors, kind=search, progress=lambda f: report(0.5 * f)).first(1)
        found = rows[:, 0] >= 0
        other[found] = anchors[rows[found, 0]]
        sim[found] = sims[found, 0]

    splits = anchor_splits(run, split_column=split_column)
    split = np.full(len(anchors), None, dtype=object)
    other_split = np.full(len(anchors), None, dtype=object)
    cross = np.zeros(len(anchors), dtype=bool)
    shared = np.zeros(len(anchors), dtype=bool)
    if splits is not None:
        split = splits.reindex(anchors).to_numpy(dtype=object)
        shared = np.array([isinstance(s, str) and "+" in s for s in split])
        known = pd.notna(split)
        for name in sorted({s for s in split[known] if "+" not in s}):
            mine = np.flatnonzero(split == name)
            theirs = np.flatnonzero(known & (split != name))
            if len(theirs) == 0:
                continue
            # the other splits' anchors, searched exactly or through a measured-recall index as the rule picks
            index = run_index(run, anchors[theirs], kind=search, n_queries=len(mine))
            s_x, r_x = index.search(emb[mine], 1)
            better = s_x[:, 0] >= np.minimum(threshold, sim[mine])
            idx = mine[better]
            other[idx] = anchors[theirs[r_x[better, 0]]]
            sim[idx] = s_x[better, 0]
            cross[idx] = True
        pos_of = pd.Series(np.arange(len(anchors)), index=anchors)
        has_other = other >= 0
        other_split[has_other] = split[pos_of.reindex(other[has_other]).to_numpy()]
    report(0.8)

    n_p = n_pairs.reindex(anchors).to_numpy()
    rep = repeated.reindex(anchors).fillna(0).to_numpy(np.int64)
    score = np.where((rep > 0) | shared, 1.0, np.nan_to_num(sim, nan=0.0)).astype(np.float64)
    out = pd.DataFrame(
        {
            "item_id": anchors,
            "pair_id": first_pair.reindex(anchors).to_numpy(),
            "other_item_id": pd.array(np.where(other >= 0, other, 0), dtype="Int64"),
            "other_pair_id": _nullable(first_pair.reindex(np.where(other >= 0, other, anchors[0])), other >= 0),
            "sim": sim,
            "split": split,
            "other_split": other_split,
            "cross_split": cross | shared,
            "n_pairs": n_p,
            "repeated_pairs": rep,
            "score": score,
            "flagged": score >= threshold,
        }
    )
    out.loc[other < 0, "other_item_id"] = pd.NA
    out["reason"] = [_reason(row, threshold) for row in out.itertuples(index=False)]
    out.attrs.update({"threshold": threshold, "has_splits": splits is not None})
    report(1.0)
    return out


def _nullable(values: pd.Series, present: np.ndarray) -> pd.Series:
    """``values`` with NA where ``present`` is False, integer ids kept as integers (nullable Int64)."""
    values = values.reset_index(drop=True)
    values = values.astype("Int64") if pd.api.types.is_integer_dtype(values.dtype) else values.astype(object)
    return values.where(pd.Series(present), pd.NA)


def _reason(row, threshold: float) -> str:
    parts = []
    if row.repeated_pairs > 0:
        parts.append(f"the same (anchor, positive) is listed by {row.repeated_pairs + 1} pairs")
    if isinstance(row.split, str) and "+" in row.split:
        parts.append(f"anchor used in several splits ({row.split.replace('+', ', ')})")
    if pd.notna(row.other_item_id):
        where = f" in split {row.other_split}" if row.cross_split and row.other_split is not None else ""
        near = f"nearest anchor item {int(row.other_item_id)}{where} at cosine {row.sim:.3f}"
        if row.sim >= threshold:
            parts.append(("cross-split near duplicate: " if where else "near duplicate: ") + near)
        elif not parts:
            parts.append(near)
    if row.n_pairs > 1 and row.repeated_pairs == 0:
        parts.append(f"anchor shared by {row.n_pairs} pairs with different positives")
    return "; ".join(parts) if parts else "only anchor"

"""Pair-level comparison: what changed for each pair, each listed negative and each false negative.

All tables use the **reference** (first) run's ids and pair order; columns of run ``L`` end in ``_L``.

- :func:`pair_comparison`: per pair, each run's ``pos_sim``, hardest listed negative (its similarity and
  id), ``margin = pos_sim - hardest_neg`` and retrieval ranks, and for every later run the deltas
  ``pos_sim_delta_L``, ``margin_delta_L``, ``rank_delta_L`` against the first run.
- :func:`worse_pairs`: the pairs whose margin (or ``pos_sim``) fell most from run A to run B.
- :func:`negative_changes`: per listed negative, its similarity and rank within its pair in runs A and B, and
  ``rise = (neg_sim_B - pos_sim_B) - (neg_sim_A - pos_sim_A)``, how much closer to its positive it came;
  ``became_hardest`` marks the negatives that are their pair's hardest in B but were not in A.
- :func:`false_negatives_across`: the known or decided false negatives (sample truth, review decisions) and,
  when the detectors ran, every candidate flagged in some run, with the similarity ``anchor · candidate`` in
  every run; ``sim_delta < 0`` means the later checkpoint pushed a probable positive further away.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.compare.deltas import Comparison
from analysis.errors import NegScopeError
from analysis.metrics.temperature import false_negative_table
from analysis.review.decisions import workspace_decisions

PER_RUN_COLUMNS = ("pos_sim", "hardest_neg", "hardest_neg_id", "margin", "rank", "reverse_rank")
DELTA_COLUMNS = ("pos_sim", "margin", "rank")


def _index_of(comp: Comparison, label: str) -> int:
    try:
        return comp.labels.index(label)
    except ValueError:
        raise NegScopeError(f"no run labelled {label!r}; the runs are {list(comp.labels)}") from None


def _inverse_pairs(comp: Comparison, r: int) -> np.ndarray:
    """(P,) reference pair row of each of run ``r``'s pair rows."""
    idx = comp.alignment.pair_index[r]
    inverse = np.empty(len(idx), dtype=np.int64)
    inverse[idx] = np.arange(len(idx))
    return inverse


def pair_comparison(comp: Comparison) -> pd.DataFrame:
    """One row per pair (reference order) with every run's scores and the deltas against the first run.

    Returns
    -------
    pandas.DataFrame
        ``pair_id, anchor_id, positive_id`` (reference ids), then per run label L ``pos_sim_L, hardest_neg_L,
        hardest_neg_id_L, margin_L, rank_L, reverse_rank_L``, then per later run L ``pos_sim_delta_L,
        margin_delta_L, rank_delta_L`` (L minus the first run; a rank delta > 0 is a worse rank).
    """
    al = comp.alignment
    ref_pairs = al.reference.pairs
    out = pd.DataFrame(
        {
            "pair_id": ref_pairs["pair_id"].to_numpy(),
            "anchor_id": ref_pairs["anchor_id"].to_numpy(np.int64),
            "positive_id": ref_pairs["positive_id"].to_numpy(np.int64),
        }
    )
    for r, label in enumerate(al.labels):
        table = comp.reports[r].pairs.iloc[al.pair_index[r]].reset_index(drop=True)
        hardest_id = table["hardest_neg_id"].astype("Int64")
        present = hardest_id.notna().to_numpy()
        mapped = np.full(len(table), -1, dtype=np.int64)
        mapped[present] = al.to_reference_items(r, hardest_id[present].to_numpy(np.int64))
        ids = pd.array(mapped, dtype="Int64")
        ids[~present] = pd.NA
        out[f"pos_sim_{label}"] = table["pos_sim"].to_numpy(np.float64)
        out[f"hardest_neg_{label}"] = table["hardest_neg"].to_numpy(np.float64)
        out[f"hardest_neg_id_{label}"] = ids
        out[f"margin_{label}"] = table["margin"].to_numpy(np.float64)
        out[f"rank_{label}"] = table["rank"].astype("Int64").to_numpy()
        out[f"reverse_rank_{label}"] = table["reverse_rank"].astype("Int64").to_numpy()
    base = al.labels[0]
    for label in al.labels[1:]:
        for col in DELTA_COLUMNS:
            out[f"{col}_delta_{label}"] = out[f"{col}_{label}"] - out[f"{col}_{base}"]
    return out


def worse_pairs(table: pd.DataFrame, a: str, b: str, *, by: str = "margin", n: int = 50) -> pd.DataFrame:
    """The ``n`` pairs whose ``by`` (``margin`` or ``pos_sim``) fell most from run ``a`` to run ``b``.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`pair_comparison`.
    a, b : str
        Run labels (before, after).
    by : str
        ``margin`` or ``pos_sim``.
    n : int
        How many rows.

    Returns
    -------
    pandas.DataFrame
        ``pair_id, anchor_id, positive_id, {by}_a, {by}_b, change`` (b - a), most negative change first
        (ties: reference pair order); pairs where either value is missing are left out.
    """
    if by not in ("margin", "pos_sim"):
        raise NegScopeError(f"by must be 'margin' or 'pos_sim', got {by!r}")
    for label in (a, b):
        if f"{by}_{label}" not in table.columns:
            raise NegScopeError(f"no run labelled {label!r} in the pair table")
    before = table[f"{by}_{a}"].to_numpy(np.float64)
    after = table[f"{by}_{b}"].to_numpy(np.float64)
    out = pd.DataFrame(
        {
            "pair_id": table["pair_id"].to_numpy(),
            "anchor_id": table["anchor_id"].to_numpy(),
            "positive_id": table["positive_id"].to_numpy(),
            f"{by}_{a}": before,
            f"{by}_{b}": after,
            "change": after - before,
        }
    )
    out = out[np.isfinite(out["change"].to_numpy())]
    return out.sort_values("change", kind="stable").head(int(n)).reset_index(drop=True)


def _negatives_in_reference(comp: Comparison, r: int) -> pd.DataFrame:
    """Run ``r``'s listed negatives keyed by reference pair row, reference negative id, source, occurrence."""
    long = comp.reports[r].negatives
    al = comp.alignment
    row_of_pair = pd.Series(np.arange(len(al.runs[r].pairs)), index=al.runs[r].pairs["pair_id"].to_numpy())
    own_rows = row_of_pair.reindex(long["pair_id"].to_numpy()).to_numpy(np.int64)
    frame = pd.DataFrame(
        {
            "row": _inverse_pairs(comp, r)[own_rows],
            "negative_id": al.to_reference_items(r, long["negative_id"].to_numpy(np.int64)),
            "source": long["source"].astype(str).to_numpy(),
            "neg_sim": long["neg_sim"].to_numpy(np.float64),
            "pos_sim": long["pos_sim"].to_numpy(np.float64),
            "neg_rank": long["neg_rank"].to_numpy(np.int64),
        }
    )
    frame["n"] = frame.groupby(["row", "negative_id", "source"], sort=False).cumcount()
    return frame.set_index(["row", "negative_id", "source", "n"])


def negative_changes(comp: Comparison, a: str, b: str) -> pd.DataFrame:
    """Every listed negative with its similarity and rank within its pair in runs ``a`` and ``b``.

    Returns
    -------
    pandas.DataFrame
        ``pair_id, anchor_id, negative_id, source, neg_sim_a, neg_sim_b, pos_sim_a, pos_sim_b, neg_rank_a,
        neg_rank_b`` (0 = the pair's hardest), ``rise`` and ``became_hardest``; the suffixes are the labels.
        Sorted by ``rise`` descending (ties: reference pair order, then the listed order).
    """
    ia, ib = _index_of(comp, a), _index_of(comp, b)
    left = _negatives_in_reference(comp, ia)
    right = _negatives_in_reference(comp, ib).reindex(left.index)
    ref_pairs = comp.alignment.reference.pairs
    rows = left.index.get_level_values("row").to_numpy(np.int64)
    out = pd.DataFrame(
        {
            "pair_id": ref_pairs["pair_id"].to_numpy()[rows],
            "anchor_id": ref_pairs["anchor_id"].to_numpy(np.int64)[rows],
            "negative_id": left.index.get_level_values("negative_id").to_numpy(np.int64),
            "source": left.index.get_level_values("source").to_numpy(),
            f"neg_sim_{a}": left["neg_sim"].to_numpy(),
            f"neg_sim_{b}": right["neg_sim"].to_numpy(),
            f"pos_sim_{a}": left["pos_sim"].to_numpy(),
            f"pos_sim_{b}": right["pos_sim"].to_numpy(),
            f"neg_rank_{a}": left["neg_rank"].to_numpy(),
            f"neg_rank_{b}": right["neg_rank"].to_numpy(),
        }
    )
    out["rise"] = (out[f"neg_sim_{b}"] - out[f"pos_sim_{b}"]) - (out[f"neg_sim_{a}"] - out[f"pos_sim_{a}"])
    out["became_hardest"] = (out[f"neg_rank_{b}"] == 0) & (out[f"neg_rank_{a}"] != 0)
    out["_order"] = np.arange(len(out))
    out = out.sort_values(["rise", "_order"], ascending=[False, True], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def _row_dots(x: np.ndarray, i: np.ndarray, y: np.ndarray, j: np.ndarray) -> np.ndarray:
    if not len(i):
        return np.empty(0, dtype=np.float64)
    return np.einsum("ij,ij->i", x[i].astype(np.float64), y[j].astype(np.float64))


def false_negatives_across(
    comp: Comparison, *, a: str | None = None, b: str | None = None, use_review: bool = True
) -> pd.DataFrame:
    """Known, decided and flagged false negatives with their similarity in every run.

    Rows are (anchor, candidate) item pairs in reference ids: the sample's recorded false negatives and the
    review database's ``false_negative`` decisions (``known``), plus, when the comparison carries detector
    results, every candidate the false-negative detector flagged in at least one run.

    Parameters
    ----------
    comp : Comparison
        The comparison.
    a, b : str, optional
        Labels of the runs to contrast (default: the first and the last).
    use_review : bool
        Include the review database's decisions.

    Returns
    -------
    pandas.DataFrame
        ``anchor_id, candidate_id, known`` (``truth``, ``review``, ``truth+review`` or empty), per run L
        ``sim_L`` (anchor · candidate), ``below_positive_L`` (the mean ``pos_sim`` of the anchor's pairs minus
        ``sim_L``: how far below its own positives the model keeps the candidate; NaN for an anchor of no pair)
        and, with detector results, ``flagged_L`` and ``score_L``; then
        ``sim_delta`` (``sim_b - sim_a``) and, with detector results, ``status`` (``appeared``,
        ``disappeared``, ``kept`` or ``never`` from run ``a`` to run ``b``). Sorted by ``sim_delta``
        ascending: what the later checkpoint pushed furthest away first (ties: anchor, candidate).
    """
    al = comp.alignment
    first = al.labels[_index_of(comp, a)] if a is not None else al.labels[0]
    last = al.labels[_index_of(comp, b)] if b is not None else al.labels[-1]
    frames = []
    for r, run in enumerate(al.runs):
        known = false_negative_table(run, decisions=workspace_decisions(run) if use_review else None)
        if len(known):
            frames.append(
                pd.DataFrame(
                    {
                        "anchor_id": al.to_reference_items(r, known["anchor_id"].to_numpy(np.int64)),
                        "candidate_id": al.to_reference_items(r, known["candidate_id"].to_numpy(np.int64)),
                        "source": known["source"].astype(str).to_numpy(),
                    }
                )
            )
    known_all = (
        pd.concat(frames, ignore_index=True).drop_duplicates()
        if frames
        else pd.DataFrame({"anchor_id": [], "candidate_id": [], "source": []})
    )
    known_text = (
        known_all.groupby(["anchor_id", "candidate_id"])["source"].agg(lambda s: "+".join(sorted(set(s))))
        if len(known_all)
        else pd.Series(dtype=object)
    )
    keys = set(known_text.index.tolist())
    flagged: list[pd.DataFrame] = []
    if comp.flags is not None:
        for r, flags in enumerate(comp.flags):
            fn = flags.false_negatives
            best = fn.sort_values("score", ascending=False, kind="stable").drop_duplicates(["anchor_id", "candidate_id"])
            frame = pd.DataFrame(
                {
                    "anchor_id": al.to_reference_items(r, best["anchor_id"].to_numpy(np.int64)),
                    "candidate_id": al.to_reference_items(r, best["candidate_id"].to_numpy(np.int64)),
                    "flagged": best["flagged"].astype(bool).to_numpy(),
                    "score": best["score"].to_numpy(np.float64),
                }
            ).set_index(["anchor_id", "candidate_id"])
            flagged.append(frame)
            keys |= set(frame.index[frame["flagged"].to_numpy()].tolist())
    ordered = sorted((int(a), int(c)) for a, c in keys)
    anchors = np.array([a for a, _ in ordered], dtype=np.int64)
    cands = np.array([c for _, c in ordered], dtype=np.int64)
    index = pd.MultiIndex.from_arrays([anchors, cands], names=["anchor_id", "candidate_id"])
    out = pd.DataFrame({"anchor_id": anchors, "candidate_id": cands})
    out["known"] = known_text.reindex(index).fillna("").to_numpy() if len(known_text) else ""
    ref_pairs = al.reference.pairs
    for r, label in enumerate(al.labels):
        emb = al.runs[r].embeddings
        out[f"sim_{label}"] = _row_dots(emb, al.item_index[r][anchors], emb, al.item_index[r][cands])
        pos = comp.reports[r].pairs["pos_sim"].to_numpy(np.float64)[al.pair_index[r]]
        mean_pos = pd.Series(pos).groupby(ref_pairs["anchor_id"].to_numpy(np.int64)).mean()
        out[f"below_positive_{label}"] = mean_pos.reindex(anchors).to_numpy(np.float64) - out[f"sim_{label}"]
    for r, label in enumerate(al.labels):
        if flagged:
            part = flagged[r].reindex(index)
            out[f"flagged_{label}"] = part["flagged"].fillna(False).astype(bool).to_numpy()
            out[f"score_{label}"] = part["score"].to_numpy(np.float64)
    out["sim_delta"] = out[f"sim_{last}"] - out[f"sim_{first}"]
    if flagged:
        was, now = out[f"flagged_{first}"].to_numpy(), out[f"flagged_{last}"].to_numpy()
        out["status"] = np.select(
            [was & now, ~was & now, was & ~now], ["kept", "appeared", "disappeared"], default="never"
        )
    return out.sort_values(["sim_delta", "anchor_id", "candidate_id"], kind="stable").reset_index(drop=True)

"""Per-pair candidate matrices: each pair's positive and its listed negatives, padded to a rectangle.

Shared by the score, temperature, modality-gap and false-negative analyses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError
from analysis.runs.folder import NEGATIVE_SOURCES, Run


def check_sources(sources: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``sources`` as a tuple, after checking that each is one of ``NEGATIVE_SOURCES`` (else ``NegScopeError``)."""
    if isinstance(sources, str):
        sources = (sources,)
    bad = [s for s in sources if s not in NEGATIVE_SOURCES]
    if bad:
        raise NegScopeError(f"unknown negative sources {bad}; expected some of {', '.join(NEGATIVE_SOURCES)}")
    return tuple(sources)


@dataclass(frozen=True)
class Candidates:
    """The positive and listed negatives of every pair.

    Attributes
    ----------
    pair_ids : numpy.ndarray
        (P,) the ``pair_id`` of each row, in ``run.pairs`` order.
    anchor_ids, positive_ids : numpy.ndarray
        (P,) int64 item ids.
    pos_sim : numpy.ndarray
        (P,) float32 anchor · positive.
    neg_ids : numpy.ndarray
        (P, K) int64 item ids of the negatives, -1 where a pair has fewer than K.
    neg_sim : numpy.ndarray
        (P, K) float32 anchor · negative, NaN where padded.
    neg_source : numpy.ndarray
        (P, K) int8 index into ``NEGATIVE_SOURCES``, -1 where padded.
    """

    pair_ids: np.ndarray
    anchor_ids: np.ndarray
    positive_ids: np.ndarray
    pos_sim: np.ndarray
    neg_ids: np.ndarray
    neg_sim: np.ndarray
    neg_source: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(P, K) bool, True where a real negative sits."""
        return self.neg_ids >= 0

    def source_names(self) -> np.ndarray:
        """(P, K) object array of source names ('' where padded)."""
        names = np.array(list(NEGATIVE_SOURCES) + [""], dtype=object)
        return names[np.where(self.neg_source >= 0, self.neg_source, len(NEGATIVE_SOURCES))]


def row_dots(a: np.ndarray, i: np.ndarray, b: np.ndarray, j: np.ndarray, *, block: int = 65536) -> np.ndarray:
    """(M,) float64 ``a[i[m]] · b[j[m]]``, gathered in blocks so that memory stays bounded for millions of rows."""
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    out = np.empty(len(i), dtype=np.float64)
    for start in range(0, len(i), block):
        stop = min(start + block, len(i))
        out[start:stop] = np.einsum("ij,ij->i", a[i[start:stop]], b[j[start:stop]])
    return out


def build_candidates(
    run: Run,
    *,
    sources: tuple[str, ...] = NEGATIVE_SOURCES,
    embeddings: np.ndarray | None = None,
) -> Candidates:
    """Gather every pair's positive and listed negatives with their cosine similarities.

    Parameters
    ----------
    run : Run
        The run folder.
    sources : tuple of str
        Which negative sources to keep.
    embeddings : numpy.ndarray, optional
        (N, D) replacement embeddings (for example shifted ones); defaults to ``run.embeddings``.

    Returns
    -------
    Candidates
        Padded (P, K) matrices, K = the largest number of negatives of any pair.

    Raises
    ------
    NegScopeError
        When ``sources`` names a source other than ``NEGATIVE_SOURCES``.
    """
    check_sources(sources)
    emb = run.embeddings if embeddings is None else embeddings
    pairs = run.pairs
    anchor_ids = pairs["anchor_id"].to_numpy(np.int64)
    positive_ids = pairs["positive_id"].to_numpy(np.int64)
    pos_sim = row_dots(emb, anchor_ids, emb, positive_ids).astype(np.float32)

    negs = run.negatives[run.negatives["source"].isin(sources)]
    row_of_pair = pd.Series(np.arange(len(pairs)), index=pairs["pair_id"].to_numpy())
    rows = row_of_pair.reindex(negs["pair_id"].to_numpy()).to_numpy()
    keep = ~pd.isna(rows)
    rows = rows[keep].astype(np.int64)
    neg_item = negs["negative_id"].to_numpy(np.int64)[keep]
    src_code = pd.Categorical(negs["source"].to_numpy()[keep], categories=list(NEGATIVE_SOURCES)).codes
    order = np.argsort(rows, kind="stable")
    rows, neg_item, src_code = rows[order], neg_item[order], src_code[order]
    counts = np.bincount(rows, minlength=len(pairs))
    k = int(counts.max()) if len(counts) else 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cols = np.arange(len(rows)) - starts[rows]

    neg_ids = np.full((len(pairs), k), -1, dtype=np.int64)
    neg_source = np.full((len(pairs), k), -1, dtype=np.int8)
    neg_ids[rows, cols] = neg_item
    neg_source[rows, cols] = src_code
    neg_sim = np.full((len(pairs), k), np.nan, dtype=np.float32)
    if len(rows):
        neg_sim[rows, cols] = row_dots(emb, anchor_ids[rows], emb, neg_item)
    return Candidates(
        pair_ids=pairs["pair_id"].to_numpy(),
        anchor_ids=anchor_ids,
        positive_ids=positive_ids,
        pos_sim=pos_sim,
        neg_ids=neg_ids,
        neg_sim=neg_sim,
        neg_source=neg_source,
    )

"""False-negative candidates: listed and mined "negatives" that are probably positives, with evidence and a score.

Candidates
    Every listed negative of every pair (sources ``given`` and ``in_batch``, and ``mined`` ones stored in
    the run), plus the ``mine_k`` corpus-wide nearest neighbours of each anchor among the items of the
    positive's modality (source ``mined``; the anchor itself and its known positives excluded). The search
    is exact through faiss, or IVF with its recall measured, as the one rule decides from the work (anchors x
    items x dims; :mod:`analysis.search.rule`).

Evidence for a candidate ``c`` of a pair (anchor ``a``, positive ``p``)
    ``sim_diff`` = neg_sim - pos_sim = a·c - a·p, and ``sim_ratio`` = a·c / |a·p| (shown, not scored);
    ``rank``: c's 1-based rank among a's neighbours of c's modality, a's own positives left out (ranks beyond
    ``rank_depth`` are reported as ``rank_depth + 1``);
    ``sim_to_positive`` = c·p, when c and p share a modality (two captions of the same thing look alike);
    ``anchor_side_sim`` = a·mean(anchors paired with c), when c is itself some pair's positive (the images
    c was written for look like a);
    ``mutual``: c is among a's ``mutual_k`` nearest items of c's modality and a among c's ``mutual_k``
    nearest anchors;
    ``same_cluster``: c and p fall in the same spherical k-means cell (faiss) of their modality;
    ``label_agree``: 1 / 0 when both the pair and c carry a class label (equal / different), else missing;
    ``guide_diff``: neg_sim - pos_sim under a second "guide" run of the same data (GISTEmbed-style).
    For one-to-many data (valid matches that need not look like the positive; docs/false_negatives.md):
    ``neg_z`` = (a·c - mean_a) / std_a over a's listed negatives; ``reverse_rank``: a's rank among c's nearest
    anchors; ``csls`` = 2 a·c - r_a - r_c (mean similarity to the 10 nearest of the other side);
    ``anchor_vote``: share of a's ``mutual_k`` nearest anchors that list c as their positive or nearest
    neighbour; ``claimed``: c is another anchor's positive; ``other_mode`` = max(0, sep) (c·μ_O - c·μ_P), the
    anchor's neighbourhood split into the positive's mode and another (:func:`neighbourhood_modes`);
    multi-label ``label_agree`` is the Jaccard index of
    the label sets (labels joined by ``|``); ``judge_*``: an optional cross-encoder's scores
    (:mod:`analysis.detectors.cross_encoder`).

Score
    Each continuous evidence x becomes a robust z-score against the listed negatives (most of which are
    true negatives), clipped to [-4, 4]: :math:`z = (x - \\mathrm{median}) / (1.4826\\,\\mathrm{MAD})`. With
    ``rank`` entering as :math:`-\\log(\\text{rank})`, the evidence adds up as log-odds:

    .. math::

        \\ell = b + w_d z_{\\text{diff}} + w_p z_{\\text{pos}} + w_a z_{\\text{anchor}} + w_r z_{\\text{rank}}
              + w_m [\\text{mutual}] + w_c [\\text{cluster}] + w_\\ell (2\\,\\text{agree} - 1) + w_g z_{\\text{guide}},
        \\qquad \\text{score} = \\sigma(\\ell) = 1 / (1 + e^{-\\ell})

    plus the one-to-many terms (:func:`evidence_terms`; weight 0 in the default weights, non-zero in
    ``ONE_TO_MANY``). Missing evidence adds 0. The queue is ordered by ℓ (:func:`queue_order`, exact ties by
    evidence) and displays ℓ (:func:`score_labels`), since σ(ℓ) prints 1.000 at the top.
    ``flagged`` is ``score >= threshold`` (default 0.5, i.e. the evidence
    outweighs the prior ``b``). The sentence-transformers margins are available instead
    (:func:`flag_by`): absolute ``neg_sim > pos_sim - m`` and the sign-safe relative
    ``neg_sim > pos_sim - |pos_sim| * m``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from analysis.errors import NegScopeError
from analysis.runs.candidates import build_candidates, row_dots
from analysis.runs.folder import NEGATIVE_SOURCES, Run
from analysis.search.exact import row_blocks, take_rows
from analysis.search.graph import run_index
from analysis.search.index import INDEX_KINDS, SearchIndex, build_index

DETECTOR_COLUMNS = ("pair_id", "anchor_id", "candidate_id", "source", "score", "flagged", "reason")
EVIDENCE_COLUMNS = (
    "positive_id",
    "pos_sim",
    "neg_sim",
    "sim_diff",
    "sim_ratio",
    "rank",
    "sim_to_positive",
    "anchor_side_sim",
    "mutual",
    "same_cluster",
    "label_agree",
    "guide_diff",
    "neg_z",
    "reverse_rank",
    "anchor_vote",
    "csls",
    "claimed",
    "other_mode",
    "judge_candidate",
    "judge_positive",
    "judge_diff",
    "logit",
)
LISTED_SOURCES = ("given", "in_batch")
FLAG_METHODS = ("score", "absolute", "relative")
Z_CLIP = 4.0
KMEANS_ROWS_PER_CELL = 64  # training sample of the same_cluster cells, per cell
SEARCH_BLOCK = 16384  # queries searched, and their lists sorted out, at a time
LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class Weights:
    """Log-odds weights of the evidence (see the module docstring); ``bias`` is the prior log-odds."""

    bias: float = -3.0
    sim_diff: float = 1.0
    sim_to_positive: float = 1.0
    anchor_side: float = 1.0
    rank: float = 0.5
    mutual: float = 0.5
    same_cluster: float = 0.5
    label: float = 1.5
    guide: float = 1.0
    neg_z: float = 0.0
    reverse_rank: float = 0.0
    anchor_vote: float = 0.0
    csls: float = 0.0
    claimed: float = 0.0
    other_mode: float = 0.0
    judge: float = 1.0


ONE_TO_MANY = Weights(
    bias=-3.0,
    sim_diff=2.0,
    sim_to_positive=2.0,
    anchor_side=-1.0,
    rank=0.5,
    mutual=0.5,
    same_cluster=0.0,
    label=1.5,
    guide=1.0,
    neg_z=2.0,
    reverse_rank=2.0,
    anchor_vote=-1.0,
    csls=0.5,
    claimed=-2.0,
    other_mode=0.0,
    judge=1.0,
)
"""Weights for one-to-many data, where valid matches need not look like the given positive (several senses of
a word, several relevant passages): the candidate unusually close to this anchor (``neg_z``, ``reverse_rank``,
``csls``) and matched by no other anchor (``claimed``, ``anchor_side`` and ``anchor_vote`` against)."""
WEIGHT_PRESETS = {"paraphrase": Weights(), "one_to_many": ONE_TO_MANY}


def weight_preset(name: str) -> Weights:
    """The :data:`WEIGHT_PRESETS` entry ``name`` (``FN_WEIGHT_PRESETS``).

    Raises
    ------
    NegScopeError
        For an unknown name.
    """
    if name not in WEIGHT_PRESETS:
        raise NegScopeError(f"unknown weight preset {name!r}; expected one of {', '.join(WEIGHT_PRESETS)}")
    return WEIGHT_PRESETS[name]


@dataclass(frozen=True)
class Settings:
    """What to mine and how to score.

    Attributes
    ----------
    sources : tuple of str
        Candidate sources to include ('given', 'in_batch', 'mined').
    mine_k : int
        Corpus-wide neighbours mined per anchor (0: none).
    rank_depth : int
        Neighbours searched per anchor for the ``rank`` evidence.
    mutual_k : int
        Neighbourhood size of the mutual-nearest-neighbour test.
    n_clusters : int, optional
        k-means cells per modality (default ``sqrt(n / 2)``, between 2 and 1024).
    use_labels : bool
        Use class labels as evidence when the run has them.
    threshold : float
        ``flagged`` is ``score >= threshold``.
    index_kind : str
        'auto' (exact or IVF from the work, :func:`analysis.search.rule.choose_kind`; IVF-PQ
        re-ranked from the shards when the corpus would not fit in memory), 'exact', 'ivf', 'hnsw' or 'ivfpq'.
    weights : Weights
        Evidence weights.
    seed : int
        Seeds k-means and the index.
    judge_top : int
        Candidates a cross-encoder judge scores (the highest-ranked without it).
    mode_evidence : bool
        Compute ``other_mode`` (:func:`_mode_evidence`, a few seconds per million rows). When False and its weight
        is 0, the column is left NaN (it would add 0 to the score); a nonzero ``weights.other_mode`` computes it
        anyway. The CLI computes it only for ``--learn`` or a weight that uses it.

    Raises
    ------
    NegScopeError
        When built with an unknown or empty source list, ``mine_k < 0``, ``rank_depth`` or ``mutual_k < 1``,
        ``n_clusters < 1``, a threshold that is not a number, or an unknown ``index_kind``.
    """

    sources: tuple[str, ...] = NEGATIVE_SOURCES
    mine_k: int = 10
    rank_depth: int = 100
    mutual_k: int = 10
    n_clusters: int | None = None
    use_labels: bool = True
    threshold: float = 0.5
    index_kind: str = "auto"
    weights: Weights = field(default_factory=Weights)
    seed: int = 0
    judge_top: int = 1000
    mode_evidence: bool = True

    def __post_init__(self) -> None:
        sources = (self.sources,) if isinstance(self.sources, str) else tuple(self.sources)
        bad = [src for src in sources if src not in NEGATIVE_SOURCES]
        if bad or not sources:
            raise NegScopeError(
                f"candidate sources must be some of {', '.join(NEGATIVE_SOURCES)}; got {', '.join(sources) or 'none'}"
            )
        object.__setattr__(self, "sources", sources)
        if int(self.mine_k) < 0:
            raise NegScopeError(f"mine_k (neighbours mined per anchor) must be >= 0, got {self.mine_k}")
        if int(self.rank_depth) < 1 or int(self.mutual_k) < 1:
            raise NegScopeError(f"rank_depth and mutual_k must be >= 1, got {self.rank_depth} and {self.mutual_k}")
        if self.n_clusters is not None and int(self.n_clusters) < 1:
            raise NegScopeError(f"n_clusters must be >= 1, got {self.n_clusters}")
        if math.isnan(float(self.threshold)):
            raise NegScopeError("the score threshold must be a number")
        if int(self.judge_top) < 0:
            raise NegScopeError(f"judge_top (candidates the cross-encoder scores) must be >= 0, got {self.judge_top}")
        if self.index_kind not in INDEX_KINDS:
            raise NegScopeError(f"unknown neighbour search {self.index_kind!r}; expected one of {INDEX_KINDS}")


@dataclass
class _Search:
    """Per-anchor neighbour lists of one candidate modality, own positives removed."""

    anchors: np.ndarray  # (A,) anchor item ids
    neighbours: np.ndarray  # (A, R) item ids, -1 = none
    ranks: np.ndarray  # (A, R) 1-based rank after exclusions, 0 = excluded
    description: str
    info: dict = field(default_factory=dict)  # search_info() of the index searched


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(a, dtype=np.int64) * np.int64(n) + np.asarray(b, dtype=np.int64)


def _unique_ids(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(ids, return_inverse=True)`` for item ids in [0, n), by a presence table (O(M + n), no sort):
    the (U,) sorted distinct ids and the (M,) int64 position of each id among them."""
    present = np.zeros(n, dtype=bool)
    present[ids] = True
    distinct = np.flatnonzero(present)
    return distinct, (np.cumsum(present) - 1)[ids]


def _in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(keys, sorted_keys)`` for ``sorted_keys`` sorted and unique (``np.unique``'s output): a binary
    search per key instead of sorting both arrays together, several times faster on millions of keys."""
    keys = np.asarray(keys)
    if not len(sorted_keys):
        return np.zeros(keys.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _lookup(keys: np.ndarray, table_keys: np.ndarray, table_values: np.ndarray, missing) -> np.ndarray:
    """Values of ``keys`` in a (keys, values) table (keys unique), ``missing`` where absent."""
    order = np.argsort(table_keys, kind="stable")
    sorted_keys = table_keys[order]
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.clip(pos, 0, max(len(sorted_keys) - 1, 0))
    found = (sorted_keys[pos] == keys) if len(sorted_keys) else np.zeros(len(keys), dtype=bool)
    out = np.full(len(keys), missing, dtype=np.result_type(table_values.dtype, np.asarray(missing).dtype))
    out[found] = table_values[order][pos[found]]
    return out


def _neighbour_search(
    run: Run,
    anchors: np.ndarray,
    corpus_ids: np.ndarray,
    exclude_keys: np.ndarray,
    depth: int,
    max_excluded: int,
    *,
    index_kind: str,
    seed: int,
    progress: Callable[[float], None] | None,
) -> _Search:
    emb = run.embeddings
    n = len(run.items)
    sample = emb[anchors[np.random.default_rng(seed).permutation(len(anchors))[:500]]]
    index = run_index(run, corpus_ids, kind=index_kind, n_queries=len(anchors), sample_queries=sample, seed=seed)
    k = min(depth + max_excluded, len(corpus_ids))
    neighbours = np.full((len(anchors), k), -1, dtype=np.int64)
    ranks = np.zeros((len(anchors), k), dtype=np.int64)
    # (block, k) temporaries, not (A, k) ones: fresh memory is slow (page faults), on a VM most of all
    for start, stop in row_blocks(len(anchors), SEARCH_BLOCK, progress):
        _, rows = index.search(emb[anchors[start:stop]], k)
        found = np.where(rows >= 0, corpus_ids[np.maximum(rows, 0)], -1)
        keys = _pair_keys(np.repeat(anchors[start:stop], k), found.ravel(), n)
        excluded = (_in_sorted(keys, exclude_keys) | (found.ravel() < 0)).reshape(found.shape)
        rank = np.where(excluded, 0, np.cumsum(~excluded, axis=1))
        rank[rank > depth] = 0
        neighbours[start:stop], ranks[start:stop] = found, rank
    return _Search(
        anchors=anchors, neighbours=neighbours, ranks=ranks, description=index.describe(), info=search_info(index)
    )


def search_info(index: SearchIndex) -> dict[str, Any]:
    """What a search was, for JSON output: ``kind`` (exact | ivf | hnsw | ivfpq), ``params``, the measured
    ``recall`` at ``recall_k`` (1.0 for exact search; None when not measured) and the one-line ``description``."""
    recall = None if index.recall is None else round(float(index.recall), 4)
    params = {k: (v.item() if hasattr(v, "item") else v) for k, v in index.params.items()}
    return {
        "kind": index.kind,
        "params": params,
        "recall": recall,
        "recall_k": int(index.recall_k),
        "description": index.describe(),
    }


def anchor_side_similarity(
    embeddings: np.ndarray,
    anchor_of: np.ndarray,
    positive_of: np.ndarray,
    a: np.ndarray,
    p: np.ndarray,
    c: np.ndarray,
    *,
    block: int = 65536,
) -> np.ndarray:
    """``a · normalise(sum of the anchors whose positive is c)``, the pair (a, p) itself left out when p == c.

    Parameters
    ----------
    embeddings : numpy.ndarray
        (N, D) float32.
    anchor_of, positive_of : numpy.ndarray
        (P,) item ids of every pair.
    a, p, c : numpy.ndarray
        (M,) anchor, positive and candidate of each candidate row.

    Returns
    -------
    numpy.ndarray
        (M,) float64, NaN where c is no other pair's positive.
    """
    from scipy import sparse

    m = len(c)
    out = np.full(m, np.nan)
    if not m or not len(positive_of):
        return out
    targets, inverse = np.unique(positive_of, return_inverse=True)
    row_of_item = np.full(embeddings.shape[0], -1, dtype=np.int64)
    row_of_item[targets] = np.arange(len(targets))
    # (T, P) indicator times (P, D) anchor embeddings: the per-positive sums, one row per positive item
    indicator = sparse.csr_matrix(
        (np.ones(len(positive_of), dtype=np.float32), (inverse, np.arange(len(positive_of)))),
        shape=(len(targets), len(positive_of)),
    )
    sums = np.asarray(indicator @ embeddings[anchor_of], dtype=np.float32)
    counts = np.bincount(inverse, minlength=len(targets))
    rows = row_of_item[c]
    for start in range(0, m, block):
        stop = min(start + block, m)
        r = rows[start:stop]
        has = r >= 0
        if not has.any():
            continue
        idx = np.flatnonzero(has) + start
        own = (p[idx] == c[idx]).astype(np.float32)
        ea = embeddings[a[idx]]
        vec = sums[r[has]] - own[:, None] * ea
        cnt = counts[r[has]] - own
        norm = np.linalg.norm(vec, axis=1)
        ok = (cnt > 0) & (norm > 1e-6)
        out[idx[ok]] = np.einsum("ij,ij->i", ea[ok], vec[ok]) / norm[ok]
    return out


def robust_z(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD) of ``reference`` (std, then 1, when the MAD is 0), clipped to ±4; NaN stays.

    Parameters
    ----------
    x : numpy.ndarray
        (M,) values to standardise.
    reference : numpy.ndarray
        Values defining the centre and spread (NaN ignored).
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.full(len(x), np.nan)
    med = float(np.median(ref))
    scale = 1.4826 * float(np.median(np.abs(ref - med)))
    if not scale > 1e-12:
        scale = float(np.std(ref))
    if not scale > 1e-12:
        scale = 1.0
    return np.clip((np.asarray(x, dtype=np.float64) - med) / scale, -Z_CLIP, Z_CLIP)


def default_n_clusters(n: int) -> int:
    """k-means cells for ``n`` items: ``sqrt(n / 2)`` clipped to [2, 1024] (and to n)."""
    return int(max(1, min(n, int(np.clip(round(math.sqrt(n / 2)), 2, 1024)))))


def cluster_items(vectors: np.ndarray, *, n_clusters: int | None = None, seed: int = 0) -> np.ndarray:
    """Spherical k-means cell of each row (faiss), (M,) int64."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    k = default_n_clusters(n) if n_clusters is None else int(max(1, min(n_clusters, n)))
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    km = faiss.Kmeans(vectors.shape[1], k, niter=20, seed=int(seed), spherical=True, verbose=False)
    km.cp.min_points_per_centroid = 1  # small corpora are fine; do not warn
    # trained on at most 64 rows per cell (faiss's default is 256): a quarter of the work at 200k items, where
    # 64 per cell already place the cells; corpora under 64 rows a cell are trained on every row, as before
    km.cp.max_points_per_centroid = KMEANS_ROWS_PER_CELL
    km.train(vectors)
    _, cells = km.index.search(vectors, 1)
    return cells[:, 0].astype(np.int64)


def margin_flags(
    pos_sim: np.ndarray, neg_sim: np.ndarray, *, absolute: float | None = None, relative: float | None = None
) -> np.ndarray:
    """Negatives that break a sentence-transformers margin (so a margin filter would drop them).

    Absolute margin m: ``neg_sim > pos_sim - m``. Relative margin m (sign-safe): ``neg_sim > pos_sim -
    |pos_sim| * m``; unlike ``pos_sim * (1 - m)`` the threshold stays below the positive for negative pos_sim.
    Both given: either one. Neither: all False.

    Returns
    -------
    numpy.ndarray
        (M,) bool.
    """
    pos = np.asarray(pos_sim, dtype=np.float64)
    neg = np.asarray(neg_sim, dtype=np.float64)
    out = np.zeros(np.broadcast(pos, neg).shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        if absolute is not None:
            out |= neg > pos - float(absolute)
        if relative is not None:
            out |= neg > pos - np.abs(pos) * float(relative)
    return out


def flag_by(table: pd.DataFrame, *, method: str = "score", value: float = 0.5) -> np.ndarray:
    """``flagged`` under another threshold: ``score >= value``, or an absolute / relative margin ``value``.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`find_false_negatives` output (needs ``score``, ``pos_sim``, ``neg_sim``).
    method : {"score", "absolute", "relative"}
    value : float

    Returns
    -------
    numpy.ndarray
        (M,) bool, in ``table`` order.
    """
    if method == "score":
        return table["score"].to_numpy(np.float64) >= float(value)
    if method == "absolute":
        return margin_flags(table["pos_sim"].to_numpy(), table["neg_sim"].to_numpy(), absolute=value)
    if method == "relative":
        return margin_flags(table["pos_sim"].to_numpy(), table["neg_sim"].to_numpy(), relative=value)
    raise NegScopeError(f"unknown flag method {method!r}; expected one of {FLAG_METHODS}")


REASON_TEXT = {
    "sim_diff": "scores close to / above the positive",
    "sim_to_positive": "looks like the positive",
    "anchor_side": "its own anchor looks like this anchor",
    "rank": "near the top of the anchor's neighbours",
    "mutual": "mutual nearest neighbours",
    "same_cluster": "same cluster as the positive",
    "label": "same label",
    "guide": "the guide model agrees",
    "neg_z": "unusually close for this anchor",
    "reverse_rank": "this anchor is among the candidate's nearest anchors",
    "anchor_vote": "nearby anchors list it as their match",
    "csls": "close to this anchor beyond both items' usual closeness (CSLS)",
    "claimed": "no other anchor has it as its match",
    "other_mode": "in another mode of the anchor's neighbourhood than the positive",
    "judge": "the cross-encoder judges it a match",
}


def _two_decimals(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``format(v, ".2f")`` of every value as (M,) int64 codes into a list of distinct strings.

    The value rounded to hundredths picks the string; a value within rounding error of a half-hundredth, one
    too large for exact integer hundredths, and anything not finite is formatted by Python itself, so every
    string is exactly ``format(v, ".2f")``."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = v * 100.0
        odd = (
            ~np.isfinite(scaled)
            | (np.abs(scaled) > 2.0**52)
            | (np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < 1e-6)
        )
    regular = np.flatnonzero(~odd)
    hundredths = np.rint(scaled[regular]).astype(np.int64)
    codes = np.empty(len(v), dtype=np.int64)
    # one key per string: the hundredths, and a zero's sign ("-0.00")
    codes[regular], first = _factorize(2 * hundredths + ((hundredths == 0) & np.signbit(v[regular])))
    strings = [format(x, ".2f") for x in v[regular[first]].tolist()]
    rest = np.flatnonzero(odd)  # each its own string
    codes[rest] = len(strings) + np.arange(len(rest))
    strings += [format(x, ".2f") for x in v[rest].tolist()]
    return codes, strings


def _factorize(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M,) int64 code of each key among the distinct ones (first seen first) and (U,) each one's first row."""
    codes, _ = pd.factorize(np.asarray(key, dtype=np.int64), sort=False)
    codes = codes.astype(np.int64)
    _, first = np.unique(codes, return_index=True)  # codes are 0..U-1: first[c] is code c's first row
    return codes, first.astype(np.int64)


def _combine(*codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct combinations of several (M,) int64 code columns (each >= -1): (M,) code, (U,) first row."""
    out, first = _factorize(codes[0])
    for more in codes[1:]:
        out, first = _factorize(out * (int(more.max()) + 2) + (more + 1))
    return out, first


def _reasons(ev: Mapping[str, Any], contrib: dict[str, np.ndarray], labels: np.ndarray) -> pd.Categorical:
    """Short text per row: the similarities, then up to three pieces of evidence that pushed the score up
    (contribution >= 0.5 log-odds), strongest first (ties: the order of ``contrib``).

    Each row is described by integer codes (its numbers to two decimals, its pieces); the text is written once
    per distinct combination and shared by the rows that have it, so that millions of rows stay fast and small.

    Parameters
    ----------
    ev : mapping
        The evidence columns (arrays or a table) of the (M,) rows: ``neg_sim``, ``pos_sim``,
        ``sim_to_positive``, ``rank``.
    contrib : dict
        (M,) log-odds contribution of each evidence (:func:`_contributions`).
    labels : numpy.ndarray
        (M,) the label named by the ``label`` piece, None where there is none.

    Returns
    -------
    pandas.Categorical
        (M,) the texts, each distinct one stored once (a table column of them is built, and written to CSV by
        pyarrow, without converting millions of Python strings).
    """
    m = len(ev["neg_sim"])
    if m == 0:
        return pd.Categorical([], categories=pd.Index([], dtype=object))
    # evidence that fires nowhere (a weight of 0) cannot be shown: leaving it out keeps the order of the rest
    keys = [k for k in contrib if np.any(contrib[k] >= 0.5)]
    neg = np.asarray(ev["neg_sim"], dtype=np.float64)
    pos = np.asarray(ev["pos_sim"], dtype=np.float64)
    neg_code, neg_text = _two_decimals(neg)
    pos_code, pos_text = _two_decimals(pos)
    above = (neg >= pos).astype(np.int64)
    columns = [neg_code, above, pos_code]
    n_slots = min(3, len(keys))
    params: list[tuple[np.ndarray, np.ndarray]] = []  # per slot: (M,) evidence index, (M,) its parameter code
    stp_text: list[str] = []
    label_text: np.ndarray = np.zeros(0, dtype=object)
    if keys:
        mat = np.stack([contrib[k] for k in keys], axis=1)
        rows_all = np.arange(m)
        code = np.full((m, n_slots), -1, dtype=np.int64)  # the strongest three, ties by key order
        for slot in range(n_slots):
            best = np.argmax(mat, axis=1)  # the first of equal maxima, as a stable sort
            hit = mat[rows_all, best] >= 0.5
            code[hit, slot] = best[hit]
            mat[rows_all, best] = -np.inf
        del mat
        stp = np.asarray(ev["sim_to_positive"], dtype=np.float64)
        stp_code, stp_text = _two_decimals(stp)
        stp_code = np.where(np.isfinite(stp), stp_code, -1)  # not finite: the piece has no number
        rank = np.asarray(ev["rank"], dtype=np.int64)
        label_code, label_text = pd.factorize(pd.Series(labels, dtype=object), use_na_sentinel=True)
        label_code = np.asarray(label_code, dtype=np.int64)  # -1: None
        by_key = {"sim_to_positive": stp_code, "rank": rank, "label": label_code}
        for slot in range(n_slots):
            j = code[:, slot]
            param = np.full(m, -1, dtype=np.int64)
            for name, values in by_key.items():
                if name in keys:
                    at = j == keys.index(name)
                    param[at] = values[at]
            params.append((j, param))
            columns += [j, param]
    combo, first = _combine(*columns)

    def piece(key: str, param: int) -> str:
        text = REASON_TEXT[key]
        if key == "sim_to_positive":
            return text if param < 0 else f"{text} ({stp_text[param]})"
        if key == "rank":
            return f"{text} (rank {param})"
        if key == "label":
            return text if param < 0 else f"{text} {label_text[param]}"
        return text

    texts = []
    for row in first.tolist():
        sims = f"neg_sim {neg_text[neg_code[row]]}{' >= ' if above[row] else ' < '}pos_sim {pos_text[pos_code[row]]}; "
        shown = [piece(keys[j[row]], int(param[row])) for j, param in params if j[row] >= 0]
        texts.append(sims + ("; ".join(shown) if shown else "little evidence"))
    distinct, code_of = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    return pd.Categorical.from_codes(code_of.reshape(-1)[combo], categories=distinct)


@dataclass(frozen=True)
class _RunArrays:
    """The arrays of a run every evidence step reads."""

    emb: np.ndarray  # (N, D) float32
    modality: np.ndarray  # (N,) str
    pair_ids: np.ndarray  # (P,)
    anchor_of: np.ndarray  # (P,) int64 item ids
    positive_of: np.ndarray  # (P,) int64 item ids
    run: Run | None = None  # the run itself: its search indexes are shared (analysis.search.graph.run_index)
    searched: dict = field(default_factory=dict, compare=False, repr=False)  # neighbour lists already searched

    @property
    def n_items(self) -> int:
        """N."""
        return len(self.modality)

    @classmethod
    def of(cls, run: Run) -> _RunArrays:
        """The arrays of ``run``."""
        pairs = run.pairs
        return cls(
            emb=run.embeddings,
            modality=run.items["modality"].astype(str).to_numpy(),
            pair_ids=pairs["pair_id"].to_numpy(),
            anchor_of=pairs["anchor_id"].to_numpy(np.int64),
            positive_of=pairs["positive_id"].to_numpy(np.int64),
            run=run,
        )

    def anchor_index(self, s: Settings, n_queries: int) -> tuple[np.ndarray, SearchIndex]:
        """(A,) every anchor item id and the index over their embeddings, built once per run and search kind."""
        anchors_all = np.unique(self.anchor_of)
        if self.run is None:
            index = build_index(self.emb[anchors_all], kind=s.index_kind, n_queries=n_queries, seed=s.seed)
        else:
            index = run_index(self.run, anchors_all, kind=s.index_kind, n_queries=n_queries, seed=s.seed)
        self.searched["anchor_index"] = search_info(index)  # reported beside the result (attrs["searches"])
        return anchors_all, index


@dataclass(frozen=True)
class _CandidateRows:
    """One row per (pair, candidate): the pair's row in ``run.pairs``, the candidate item, its source."""

    pair: np.ndarray  # (M,) int64
    item: np.ndarray  # (M,) int64
    source: np.ndarray  # (M,) object


def _listed_candidates(run: Run, sources: tuple[str, ...]) -> _CandidateRows:
    """The listed negatives of every pair; a candidate listed twice for one pair keeps its first source."""
    cands = build_candidates(run, sources=sources)
    rows, cols = np.nonzero(cands.mask)
    pair = rows.astype(np.int64)
    item = cands.neg_ids[rows, cols]
    source = cands.source_names()[rows, cols].astype(object)
    if len(pair):
        first = ~pd.DataFrame({"p": pair, "c": item}).duplicated().to_numpy()
        pair, item, source = pair[first], item[first], source[first]
    return _CandidateRows(pair=pair, item=item, source=source)


def _neighbour_searches(
    run: Run, r: _RunArrays, s: Settings, report: Callable[[float], None]
) -> dict[str, _Search]:
    """Each anchor's nearest items of each positive modality, its own positives and itself left out."""
    n_pairs = len(r.anchor_of)
    exclude_keys = np.unique(
        np.concatenate(
            [_pair_keys(r.anchor_of, r.positive_of, r.n_items), _pair_keys(r.anchor_of, r.anchor_of, r.n_items)]
        )
    )
    max_excluded = int(pd.Series(r.positive_of).groupby(r.anchor_of).nunique().max()) + 1 if n_pairs else 1
    searches: dict[str, _Search] = {}
    target_mods = sorted(set(r.modality[r.positive_of].tolist()))
    for m_i, mod in enumerate(target_mods):
        corpus_ids = np.flatnonzero(r.modality == mod)
        anchors = np.unique(r.anchor_of[r.modality[r.positive_of] == mod])
        depth = max(s.rank_depth, s.mine_k, s.mutual_k)
        searches[mod] = _neighbour_search(
            run,
            anchors,
            corpus_ids,
            exclude_keys,
            depth,
            max_excluded,
            index_kind=s.index_kind,
            seed=s.seed,
            progress=lambda f, m_i=m_i: report(0.05 + 0.35 * (m_i + f) / len(target_mods)),
        )
    return searches


def _mined_candidates(
    r: _RunArrays, searches: dict[str, _Search], listed: _CandidateRows, mine_k: int
) -> _CandidateRows:
    """Each anchor's ``mine_k`` nearest non-positive items, for every pair of that anchor whose positive has
    the item's modality, minus the pairs' listed candidates (source ``mined``)."""
    n_pairs = len(r.anchor_of)
    have = np.unique(_pair_keys(listed.pair, listed.item, r.n_items))
    extra_pair, extra_item = [], []
    for search in searches.values():
        sel = (search.ranks >= 1) & (search.ranks <= mine_k)
        a_row, col = np.nonzero(sel)
        mined_anchor = search.anchors[a_row]
        mined_item = search.neighbours[a_row, col]
        # expand to every pair of that anchor
        by_anchor = pd.DataFrame({"anchor": r.anchor_of, "pair_row": np.arange(n_pairs)})
        expanded = pd.DataFrame({"anchor": mined_anchor, "item": mined_item}).merge(by_anchor, on="anchor")
        p = expanded["pair_row"].to_numpy(np.int64)
        c = expanded["item"].to_numpy(np.int64)
        same_mod = r.modality[c] == r.modality[r.positive_of[p]]
        keys = _pair_keys(p, c, r.n_items)
        new = same_mod & ~_in_sorted(keys, have)
        extra_pair.append(p[new])
        extra_item.append(c[new])
    pair = np.concatenate(extra_pair) if extra_pair else np.zeros(0, dtype=np.int64)
    item = np.concatenate(extra_item) if extra_item else np.zeros(0, dtype=np.int64)
    return _CandidateRows(pair=pair, item=item, source=np.full(len(pair), "mined", dtype=object))


def _similarity_evidence(
    r: _RunArrays, a: np.ndarray, p: np.ndarray, c: np.ndarray, pair: np.ndarray
) -> dict[str, np.ndarray]:
    """``pos_sim``, ``neg_sim``, ``sim_diff``, ``sim_ratio`` and ``sim_to_positive`` (NaN across modalities);
    ``pair`` (M,) is each row's pair (a = anchor_of[pair], p = positive_of[pair]): pos_sim is computed per pair."""
    emb = r.emb
    pos_sim = row_dots(emb, r.anchor_of, emb, r.positive_of)[pair]
    neg_sim = row_dots(emb, a, emb, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim_ratio = neg_sim / np.abs(pos_sim)
    same_mod = r.modality[c] == r.modality[p]
    return {
        "pos_sim": pos_sim,
        "neg_sim": neg_sim,
        "sim_diff": neg_sim - pos_sim,
        "sim_ratio": sim_ratio,
        "sim_to_positive": np.where(same_mod, row_dots(emb, c, emb, p), np.nan),
    }


def _rank_evidence(
    r: _RunArrays, searches: dict[str, _Search], a: np.ndarray, c: np.ndarray, depth: int
) -> np.ndarray:
    """(M,) int64 rank of c among a's neighbours of c's modality, ``depth + 1`` beyond the searched depth.

    Each row looks c up in its anchor's own searched list, a block of rows at a time ((block, R) temporaries,
    no table of every (anchor, neighbour) couple)."""
    rank = np.full(len(c), depth + 1, dtype=np.int64)
    for mod, search in searches.items():
        rows_mod = np.flatnonzero(r.modality[c] == mod)
        if not len(rows_mod) or not len(search.anchors):
            continue
        at = np.minimum(np.searchsorted(search.anchors, a[rows_mod]), len(search.anchors) - 1)
        known = search.anchors[at] == a[rows_mod]
        for start, stop in row_blocks(len(rows_mod), SEARCH_BLOCK, None):
            rows, lists = rows_mod[start:stop], at[start:stop]
            hit = (search.neighbours[lists] == c[rows, None]) & (search.ranks[lists] > 0)
            first = hit.argmax(axis=1)  # an item is listed once per anchor
            found = hit[np.arange(len(rows)), first] & known[start:stop]
            rank[rows[found]] = search.ranks[lists[found], first[found]]
    return rank


def _mutual_evidence(r: _RunArrays, s: Settings, a: np.ndarray, c: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """(M,) float 1/0: c is among a's ``mutual_k`` nearest items and a among c's ``mutual_k`` nearest anchors.

    c's nearest anchors come from the one search of every candidate's anchors (:func:`_anchor_neighbours`, as
    deep as the reverse rank needs: that evidence and CSLS then read the same lists)."""
    mutual = np.zeros(len(c))
    rows_close = np.flatnonzero(rank <= s.mutual_k)
    if not len(rows_close):
        return mutual
    uc, inv = _unique_ids(c, r.n_items)
    nb, _ = _anchor_neighbours(r, s, uc, max(int(s.rank_depth), int(s.mutual_k)))
    inv = inv.reshape(-1)
    for start, stop in row_blocks(len(rows_close), SEARCH_BLOCK, None):
        rows = rows_close[start:stop]
        mutual[rows] = (nb[inv[rows], : s.mutual_k] == a[rows, None]).any(axis=1)
    return mutual


def _cluster_evidence(r: _RunArrays, s: Settings, p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(M,) float 1/0: c and p share a spherical k-means cell of their modality; NaN across modalities."""
    same_cluster = np.full(len(c), np.nan)
    same_mod = r.modality[c] == r.modality[p]
    for mod in sorted(set(r.modality[c].tolist())) if len(c) else []:
        ids = np.flatnonzero(r.modality == mod)
        cells = np.full(r.n_items, -1, dtype=np.int64)
        cells[ids] = _cached_cells(r, s, mod, ids)
        rows_mod = np.flatnonzero((r.modality[c] == mod) & same_mod)
        same_cluster[rows_mod] = (cells[c[rows_mod]] == cells[p[rows_mod]]).astype(np.float64)
    return same_cluster


def _cached_cells(r: _RunArrays, s: Settings, modality: str, ids: np.ndarray) -> np.ndarray:
    """(len(ids),) int64 :func:`cluster_items` cells of the items ``ids``, cached in the run folder (``RUN/cache/``,
    keyed by the item set, a sample of its embeddings, the cell count, the training rows per cell and the seed)
    beside the neighbour graphs."""
    if r.run is None:
        return cluster_items(take_rows(r.emb, ids), n_clusters=s.n_clusters, seed=s.seed)
    from analysis.search.graph import CACHE_DIR, _digest, _write_array

    k = default_n_clusters(len(ids)) if s.n_clusters is None else int(max(1, min(s.n_clusters, len(ids))))
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(modality))[:40] or "items"
    path = Path(r.run.path) / CACHE_DIR / f"cells-{safe}-k{k}-r{KMEANS_ROWS_PER_CELL}-seed{int(s.seed)}-{_digest(r.run, ids)}.npy"
    try:
        cells = np.load(path, allow_pickle=False)
        if cells.shape == (len(ids),) and cells.dtype == np.int64:
            return cells
    except (OSError, ValueError):
        pass
    cells = cluster_items(take_rows(r.emb, ids), n_clusters=s.n_clusters, seed=s.seed)
    _write_array(path, cells)
    return cells


def _label_evidence(
    run: Run, a: np.ndarray, p: np.ndarray, c: np.ndarray, *, use_labels: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(M,) float label agreement of the pair (the anchor's label, else the positive's) and c, NaN where
    either is unlabelled; and (M,) the pair's label where known.

    Single labels give 1 / 0 (equal / different). Multi-label data (a label holding several labels joined by
    ``LABEL_SEPARATOR``, e.g. ``"dog|ball"``) gives the label-set overlap, the Jaccard index
    ``|A ∩ B| / |A ∪ B|`` of the two sets, so ``2 agree - 1`` runs from -1 (disjoint) to 1 (same set)."""
    m = len(c)
    label_agree = np.full(m, np.nan)
    pair_label = np.full(m, None, dtype=object)
    if use_labels and "label" in run.items.columns and m:
        labels = run.labels
        # per item once (N), then gathered per row (M): millions of rows, no Python loop over them
        missing = np.array([x is None for x in labels], dtype=bool)
        has_sep = np.array([LABEL_SEPARATOR in str(x) for x in labels], dtype=bool)
        pi = np.where(missing[a], p, a)  # the item whose label is the pair's
        pl = labels[pi]
        cl = labels[c]
        known = ~missing[pi] & ~missing[c]
        label_agree[known] = (pl[known] == cl[known]).astype(np.float64)
        multi = known & (has_sep[c] | has_sep[pi])
        for i in np.flatnonzero(multi).tolist():
            sa = {t.strip() for t in str(pl[i]).split(LABEL_SEPARATOR)} - {""}
            sc = {t.strip() for t in str(cl[i]).split(LABEL_SEPARATOR)} - {""}
            label_agree[i] = len(sa & sc) / len(sa | sc) if sa | sc else np.nan
        pair_label = np.where(known, pl, None)
    return label_agree, pair_label


def _guide_evidence(run: Run, guide: Run | None, a: np.ndarray, p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(M,) neg_sim - pos_sim under ``guide`` (items matched by content key), NaN where an item is missing."""
    guide_diff = np.full(len(c), np.nan)
    if guide is None or not len(c):
        return guide_diff
    keys = run.item_keys
    ga, gp, gc = (guide.item_ids_for_keys(keys[x]) for x in (a, p, c))
    ok = (ga >= 0) & (gp >= 0) & (gc >= 0)
    if ok.any():
        ge = guide.embeddings
        ia, ip, ic = (x[ok] for x in (ga, gp, gc))
        guide_diff[ok] = row_dots(ge, ia, ge, ic) - row_dots(ge, ia, ge, ip)
    return guide_diff


def _anchor_z_evidence(a: np.ndarray, neg_sim: np.ndarray, source: np.ndarray, *, min_negatives: int = 3) -> np.ndarray:
    """(M,) ``neg_z``: how unusually close c is to a compared with a's own listed negatives,
    ``(neg_sim - mean_a) / std_a`` over the anchor's listed (given / in-batch) candidates; NaN where the anchor
    has fewer than ``min_negatives`` of them or they all score alike."""
    out = np.full(len(a), np.nan)
    listed = np.isin(source, LISTED_SOURCES)
    if not listed.any():
        return out
    stats = pd.DataFrame({"a": a[listed], "x": neg_sim[listed]}).groupby("a")["x"].agg(["mean", "std", "count"])
    stats = stats[(stats["count"] >= min_negatives) & (stats["std"] > 1e-9)]
    mean = _lookup(a, stats.index.to_numpy(np.int64), stats["mean"].to_numpy(np.float64), np.nan)
    # population standard deviation (ddof 0), as the docs state
    count = stats["count"].to_numpy(np.float64)
    std_pop = stats["std"].to_numpy(np.float64) * np.sqrt((count - 1) / count)
    std = _lookup(a, stats.index.to_numpy(np.int64), std_pop, np.nan)
    with np.errstate(invalid="ignore"):
        out = (neg_sim - mean) / std
    return out


def _anchor_neighbours(r: _RunArrays, s: Settings, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query item's ``k`` nearest anchors, the query itself left out: (Q, k) anchor item ids (-1 = none)
    and (Q, k) similarities, nearest first. A deeper search of the same queries (the reverse rank's, then CSLS's
    shallower one) is sliced instead of searched again."""
    key = (s.index_kind, s.seed, hashlib.blake2b(np.ascontiguousarray(queries).tobytes(), digest_size=16).digest())
    found = r.searched.get(key)
    if found is not None and found[0].shape[1] >= k:
        return found[0][:, :k], found[1][:, :k]
    anchors_all, index = r.anchor_index(s, len(queries))
    depth = min(k + 1, len(anchors_all))
    out_items = np.full((len(queries), k), -1, dtype=np.int64)
    out_sims = np.full((len(queries), k), np.nan)
    for start, stop in row_blocks(len(queries), SEARCH_BLOCK, None):  # (block, depth) temporaries at a time
        q = queries[start:stop]
        sims, nb = index.search(r.emb[q], depth)
        items = np.where(nb >= 0, anchors_all[np.maximum(nb, 0)], -1)
        valid = (items >= 0) & (items != q[:, None])
        position = np.cumsum(valid, axis=1)  # 1-based position among the valid entries
        keep = valid & (position <= k)
        # shift the kept entries left so that column j is the (j+1)-th nearest other anchor
        row, col = np.nonzero(keep)
        out_items[start + row, position[row, col] - 1] = items[row, col]
        out_sims[start + row, position[row, col] - 1] = sims[row, col]
    r.searched[key] = (out_items, out_sims)
    return out_items, out_sims


def _reverse_rank_evidence(
    r: _RunArrays, s: Settings, a: np.ndarray, c: np.ndarray, *, block: int = 65536
) -> np.ndarray:
    """(M,) int64 ``reverse_rank``: a's 1-based rank among c's nearest anchors (c itself left out), and
    ``rank_depth + 1`` beyond ``rank_depth``: 1 means no other anchor fits c better than a does."""
    depth = int(s.rank_depth)
    out = np.full(len(c), depth + 1, dtype=np.int64)
    if not len(c):
        return out
    uc, inv = _unique_ids(c, r.n_items)
    nb, _ = _anchor_neighbours(r, s, uc, depth)
    inv = inv.reshape(-1)
    for start in range(0, len(c), block):  # blocks: (block, depth) at a time, not (M, depth)
        stop = min(start + block, len(c))
        hit = nb[inv[start:stop]] == a[start:stop, None]
        first = hit.argmax(axis=1)  # the first hit is a's rank
        found = hit[np.arange(stop - start), first]
        out[start:stop][found] = first[found] + 1
    return out


def _csls_evidence(
    r: _RunArrays,
    s: Settings,
    searches: dict[str, _Search],
    a: np.ndarray,
    c: np.ndarray,
    neg_sim: np.ndarray | None = None,
) -> np.ndarray:
    """(M,) ``csls`` = 2 a·c - r_a - r_c (cross-domain similarity local scaling, Conneau et al. 2018): r_a is
    the mean similarity of a to its ``mutual_k`` nearest items of c's modality (its own positives left out),
    r_c that of c to its ``mutual_k`` nearest anchors (c left out). High when a and c are close for the two
    of them, not because either sits in a dense region (a "hub") close to everything."""
    k = int(s.mutual_k)
    m = len(c)
    out = np.full(m, np.nan)
    if not m:
        return out
    uc, inv_c = _unique_ids(c, r.n_items)
    _, sims_c = _anchor_neighbours(r, s, uc, k)
    with np.errstate(invalid="ignore"):
        r_c = np.nanmean(np.where(np.isfinite(sims_c), sims_c, np.nan), axis=1) if sims_c.shape[1] else np.full(len(uc), np.nan)
    r_a = np.full(m, np.nan)
    for mod, search in searches.items():
        rows_mod = np.flatnonzero(r.modality[c] == mod)
        if not len(rows_mod):
            continue
        sel = (search.ranks >= 1) & (search.ranks <= k)
        a_row, col = np.nonzero(sel)
        sims = row_dots(r.emb, search.anchors[a_row], r.emb, search.neighbours[a_row, col])
        mean_a = np.bincount(a_row, weights=sims, minlength=len(search.anchors)) / np.maximum(
            np.bincount(a_row, minlength=len(search.anchors)), 1
        )
        has = np.bincount(a_row, minlength=len(search.anchors)) > 0
        at = np.searchsorted(search.anchors, a[rows_mod])
        at = np.clip(at, 0, max(len(search.anchors) - 1, 0))
        ok = (search.anchors[at] == a[rows_mod]) & has[at]
        r_a[rows_mod[ok]] = mean_a[at[ok]]
    if neg_sim is None:  # (M,) a·c, when the caller has not computed it already
        neg_sim = row_dots(r.emb, a, r.emb, c)
    return 2.0 * neg_sim - r_a - r_c[inv_c.reshape(-1)]


def _claimed_evidence(r: _RunArrays, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(M,) float 1/0 ``claimed``: c is the positive of a pair whose anchor is not a (some other anchor already
    has c as its match)."""
    keys = np.unique(_pair_keys(r.positive_of, r.anchor_of, r.n_items))
    pos_counts = np.bincount(r.positive_of, minlength=r.n_items)
    own = _in_sorted(_pair_keys(c, a, r.n_items), keys)
    # claimed by someone else: c is a positive in more pairs than those of anchor a
    own_count = np.zeros(len(c))
    if own.any():
        pa = pd.DataFrame({"p": r.positive_of, "a": r.anchor_of}).value_counts()
        own_count[own] = pa.reindex(list(zip(c[own].tolist(), a[own].tolist(), strict=True))).to_numpy(np.float64)
    return (pos_counts[c] - own_count > 0).astype(np.float64)


def neighbourhood_modes(
    embeddings: np.ndarray,
    positives: np.ndarray,
    neighbours: np.ndarray,
    *,
    iterations: int = 10,
    min_members: int = 2,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two modes of each anchor's neighbourhood: the positive's mode and the other one.

    The neighbourhood ``S`` is the positive ``p`` and the anchor's nearest items. Spherical 2-means on ``S``,
    seeded with ``p`` and the neighbour least similar to ``p``, ``p`` held in its mode ``P`` (``iterations``
    Lloyd steps; a member joins the other mode ``O`` when strictly closer to its centre). The separation is
    the mean similarity of two different members of one mode minus that of two members of different modes,
    :math:`\\bar s_\\text{within} - \\bar s_\\text{between}`: near 0 for one blob, large for two separated
    groups.

    Parameters
    ----------
    embeddings : numpy.ndarray
        (N, D) L2-normalised.
    positives : numpy.ndarray
        (B,) item id of each anchor's positive.
    neighbours : numpy.ndarray
        (B, K) item ids of each anchor's nearest items, -1 where none.
    iterations : int
        Lloyd steps.
    min_members : int
        Members each mode needs (``p`` counts in ``P``) for the neighbourhood to have two modes.
    block : int
        Anchors per vectorised step.

    Returns
    -------
    centre_positive, centre_other : numpy.ndarray
        (B, D) float64 unit centres of the modes ``P`` and ``O``; NaN rows where there are no two modes.
    separation : numpy.ndarray
        (B,) float64, NaN where there are no two modes.
    """
    positives = np.asarray(positives, dtype=np.int64)
    neighbours = np.asarray(neighbours, dtype=np.int64).reshape(len(positives), -1)
    b_all, dim = len(positives), embeddings.shape[1]
    centre_p = np.full((b_all, dim), np.nan)
    centre_o = np.full((b_all, dim), np.nan)
    separation = np.full(b_all, np.nan)

    def unit(v: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        return np.where(norm > 1e-12, v / np.maximum(norm, 1e-12), 0.0)

    for start in range(0, b_all, block):
        stop = min(start + block, b_all)
        members = np.concatenate([positives[start:stop, None], neighbours[start:stop]], axis=1)  # (B, K + 1)
        valid = members >= 0
        x = np.asarray(embeddings[np.maximum(members, 0)], dtype=np.float64) * valid[:, :, None]  # (B, K + 1, D)
        rows = np.arange(stop - start)
        # the Lloyd steps run on the (B, K + 1, K + 1) Gram matrix: a centre is a member-weight vector w over
        # the members (its vector x^T w / ||x^T w||), so x_j . centre = (G w)_j / sqrt(w^T G w); D drops out
        gram = x @ x.transpose(0, 2, 1)
        to_p = gram[:, :, 0]
        far = np.argmin(np.where(valid & (np.arange(members.shape[1]) > 0), to_p, np.inf), axis=1)
        w_p = np.zeros(valid.shape)
        w_o = np.zeros(valid.shape)
        w_p[:, 0] = 1.0  # the seeds are the members themselves, not normalised
        w_o[rows, far] = 1.0
        s_p = np.ones(len(rows))
        s_o = np.ones(len(rows))
        other = np.zeros(valid.shape, dtype=bool)
        for step in range(max(int(iterations), 1)):
            previous = other
            to_o = np.einsum("bjk,bk->bj", gram, w_o) * s_o[:, None]
            to_c = np.einsum("bjk,bk->bj", gram, w_p) * s_p[:, None]
            other = valid & (to_o > to_c)
            other[:, 0] = False
            if step and np.array_equal(other, previous):
                break  # a fixed point: the centres would not change any more
            w_p = (valid & ~other).astype(np.float64)
            w_o = other.astype(np.float64)
            for w, scale in ((w_p, s_p), (w_o, s_o)):
                norm = np.sqrt(np.maximum(np.einsum("bj,bjk,bk->b", w, gram, w), 0.0))
                scale[:] = np.where(norm > 1e-12, 1.0 / np.maximum(norm, 1e-12), 0.0)
        in_p = valid & ~other
        c_p = unit(np.einsum("bk,bkd->bd", in_p.astype(np.float64), x))
        c_o = unit(np.einsum("bk,bkd->bd", other.astype(np.float64), x))
        both = valid[:, :, None] & valid[:, None, :] & ~np.eye(members.shape[1], dtype=bool)[None]
        same = both & (other[:, :, None] == other[:, None, :])
        diff = both & (other[:, :, None] != other[:, None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            sep = (gram * same).sum(axis=(1, 2)) / same.sum(axis=(1, 2)) - (gram * diff).sum(axis=(1, 2)) / diff.sum(
                axis=(1, 2)
            )
        ok = (in_p.sum(axis=1) >= min_members) & (other.sum(axis=1) >= min_members) & np.isfinite(sep)
        idx = np.flatnonzero(ok) + start
        centre_p[idx], centre_o[idx], separation[idx] = c_p[ok], c_o[ok], sep[ok]
    return centre_p, centre_o, separation


def _mode_evidence(
    r: _RunArrays,
    s: Settings,
    searches: dict[str, _Search],
    a: np.ndarray,
    p: np.ndarray,
    c: np.ndarray,
    *,
    block: int = 65536,
) -> np.ndarray:
    """(M,) ``other_mode`` = max(0, separation) · (c·μ_O - c·μ_P): the anchor's neighbourhood (its positive and
    its ``mutual_k`` nearest items of the positive's modality, own positives left out) split into the positive's
    mode P and another mode O (:func:`neighbourhood_modes`); positive when the neighbourhood has two separated
    modes and c sits nearer the other one. NaN where c and p differ in modality or there are no two modes."""
    k = int(s.mutual_k)
    out = np.full(len(c), np.nan)
    for mod, search in searches.items():
        rows_mod = np.flatnonzero((r.modality[c] == mod) & (r.modality[p] == mod))
        if not len(rows_mod):
            continue
        ap_keys = np.unique(_pair_keys(a[rows_mod], p[rows_mod], r.n_items))
        ap = np.stack([ap_keys // r.n_items, ap_keys % r.n_items], axis=1)  # unique (anchor, positive), by key
        nb_ap = np.full((len(ap), k), -1, dtype=np.int64)
        if len(search.anchors):
            row_of = np.clip(np.searchsorted(search.anchors, ap[:, 0]), 0, len(search.anchors) - 1)
            found = np.flatnonzero(search.anchors[row_of] == ap[:, 0])
            ranks = search.ranks[row_of[found]]
            # column j of nb_ap is the anchor's (j+1)-th nearest item (ranks count the items kept)
            i, col = np.nonzero((ranks >= 1) & (ranks <= k))
            nb_ap[found[i], ranks[i, col] - 1] = search.neighbours[row_of[found[i]], col]
        c_p, c_o, sep = neighbourhood_modes(r.emb, ap[:, 1], nb_ap)
        which = np.searchsorted(ap_keys, _pair_keys(a[rows_mod], p[rows_mod], r.n_items))
        for start in range(0, len(rows_mod), block):
            rows, w = rows_mod[start : start + block], which[start : start + block]
            ec = np.asarray(r.emb[c[rows]], dtype=np.float64)
            gap = np.einsum("md,md->m", ec, c_o[w] - c_p[w])
            out[rows] = np.maximum(sep[w], 0.0) * gap
    return out


def _anchor_vote_evidence(
    r: _RunArrays, s: Settings, searches: dict[str, _Search], a: np.ndarray, c: np.ndarray, *, block: int = 65536
) -> np.ndarray:
    """(M,) ``anchor_vote``: the share of a's ``mutual_k`` nearest other anchors that list c as their positive
    or have c as their nearest neighbour (rank 1 of their own search); 0 when none does."""
    k = int(s.mutual_k)
    out = np.zeros(len(c))
    if not len(c):
        return out
    listed = [_pair_keys(r.anchor_of, r.positive_of, r.n_items)]
    for search in searches.values():
        a_row, col = np.nonzero(search.ranks == 1)
        listed.append(_pair_keys(search.anchors[a_row], search.neighbours[a_row, col], r.n_items))
    listed_keys = np.unique(np.concatenate(listed))
    ua, inv = _unique_ids(a, r.n_items)
    nb, _ = _anchor_neighbours(r, s, ua, k)
    inv = inv.reshape(-1)
    for start in range(0, len(c), block):
        stop = min(start + block, len(c))
        b = nb[inv[start:stop]]
        keys = _pair_keys(np.maximum(b, 0), np.repeat(c[start:stop, None], b.shape[1], axis=1), r.n_items)
        hit = _in_sorted(keys, listed_keys) & (b >= 0)
        out[start:stop] = hit.sum(axis=1) / max(k, 1)
    return out


def _judge_evidence(
    run: Run,
    judge: Callable[[list[str], list[str]], np.ndarray],
    a: np.ndarray,
    p: np.ndarray,
    c: np.ndarray,
    logit: np.ndarray,
    *,
    top: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(M,) judge scores of (a, c) and (a, p) for the ``top`` rows of highest ``logit`` (ties by position); NaN
    elsewhere. Texts are the items' ``content``."""
    m = len(c)
    cand, posi = np.full(m, np.nan), np.full(m, np.nan)
    rows = np.lexsort((np.arange(m), -logit))[: max(int(top), 0)]
    if not len(rows):
        return cand, posi
    content = run.items["content"].astype(str).to_numpy()
    cand[rows] = np.asarray(judge(content[a[rows]].tolist(), content[c[rows]].tolist()), dtype=np.float64)
    pairs = np.unique(np.stack([a[rows], p[rows]], axis=1), axis=0)
    pos_scores = np.asarray(judge(content[pairs[:, 0]].tolist(), content[pairs[:, 1]].tolist()), dtype=np.float64)
    keys = _pair_keys(pairs[:, 0], pairs[:, 1], len(content))
    posi[rows] = _lookup(_pair_keys(a[rows], p[rows], len(content)), keys, pos_scores, np.nan)
    return cand, posi


def evidence_terms(ev: Mapping[str, Any], source: np.ndarray) -> dict[str, np.ndarray]:
    """Each evidence's unweighted log-odds term (module docstring), keyed by its :class:`Weights` field.

    Continuous evidence becomes a robust z-score against the listed negatives; flags enter as 1/0; missing
    evidence adds 0. Evidence absent from ``ev`` (a table written before it existed) gives a term of 0.

    Parameters
    ----------
    ev : mapping
        The evidence columns (``EVIDENCE_COLUMNS``), arrays or a :func:`find_false_negatives` table.
    source : numpy.ndarray
        (M,) candidate sources; the listed ones are the reference of the z-scores.

    Returns
    -------
    dict
        (M,) float64 arrays.
    """
    source = np.asarray(source, dtype=object)
    m = len(source)
    ref = np.isin(source, LISTED_SOURCES)
    if not ref.any():
        ref = np.ones(m, dtype=bool)

    def col(name: str) -> np.ndarray:
        return np.asarray(ev[name], dtype=np.float64) if name in ev else np.full(m, np.nan)

    def z(x: np.ndarray) -> np.ndarray:
        return np.nan_to_num(robust_z(x, x[ref]), nan=0.0)

    def centred(x: np.ndarray) -> np.ndarray:
        known = x[ref][np.isfinite(x[ref])]
        return np.nan_to_num(x - (float(known.mean()) if known.size else 0.0), nan=0.0)

    return {
        "sim_diff": z(col("sim_diff")),
        "sim_to_positive": z(col("sim_to_positive")),
        "anchor_side": z(col("anchor_side_sim")),
        "rank": z(-np.log(col("rank"))),
        "mutual": np.nan_to_num(col("mutual"), nan=0.0),
        "same_cluster": np.nan_to_num(col("same_cluster"), nan=0.0),
        "label": np.nan_to_num(2.0 * col("label_agree") - 1.0, nan=0.0),
        "guide": z(col("guide_diff")),
        "neg_z": np.nan_to_num(np.clip(col("neg_z"), -Z_CLIP, Z_CLIP), nan=0.0),
        "reverse_rank": z(-np.log(col("reverse_rank"))),
        "anchor_vote": np.nan_to_num(col("anchor_vote"), nan=0.0),
        "csls": z(col("csls")),
        "claimed": centred(col("claimed")),
        "other_mode": z(col("other_mode")),
        "judge": z(col("judge_diff")),
    }


def _contributions(ev: dict[str, np.ndarray], source: np.ndarray, w: Weights) -> dict[str, np.ndarray]:
    """Each evidence's log-odds contribution: its weight times its :func:`evidence_terms` term."""
    return {name: getattr(w, name) * term for name, term in evidence_terms(ev, source).items()}


def find_false_negatives(
    run: Run,
    *,
    settings: Settings | None = None,
    guide: Run | None = None,
    judge: Callable[[list[str], list[str]], np.ndarray] | None = None,
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Every false-negative candidate of ``run`` with its evidence and score, most suspicious first.

    Gathers the candidates (listed, then mined), computes each piece of evidence (one function each:
    :func:`_similarity_evidence`, :func:`_rank_evidence`, :func:`anchor_side_similarity`,
    :func:`_mutual_evidence`, :func:`_cluster_evidence`, :func:`_label_evidence`, :func:`_guide_evidence`, and
    the one-to-many ones, :func:`_anchor_z_evidence` ... :func:`_mode_evidence`),
    adds their log-odds (:func:`_contributions`) and sorts.

    Parameters
    ----------
    run : Run
        The run folder.
    settings : Settings, optional
        What to mine and how to score (defaults: :class:`Settings`; checked when built).
    guide : Run, optional
        A run of the same dataset with a second ("guide") checkpoint; items are matched by content key.
    judge : callable, optional
        Scores (anchor text, candidate text) pairs, e.g. :class:`analysis.detectors.cross_encoder.CrossEncoderJudge`;
        applied to the ``settings.judge_top`` candidates ranked highest without it, and to their pairs'
        (anchor, positive); its ``judge_diff`` then enters the score.
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    pandas.DataFrame
        One row per (pair, candidate): ``DETECTOR_COLUMNS`` then ``EVIDENCE_COLUMNS`` (``mutual``,
        ``same_cluster`` and ``label_agree`` are float 1/0 with NaN where unknown), sorted by ``score``
        descending. ``attrs["index"]`` describes the neighbour search.
    """
    s = settings or Settings()

    def report(frac: float) -> None:
        if progress is not None:
            progress(min(1.0, max(0.0, frac)))

    report(0.0)
    r = _RunArrays.of(run)
    cands = _listed_candidates(run, s.sources)
    report(0.05)
    searches = _neighbour_searches(run, r, s, report)
    if "mined" in s.sources and s.mine_k > 0 and len(r.anchor_of):
        mined = _mined_candidates(r, searches, cands, s.mine_k)
        if len(mined.pair):
            cands = _CandidateRows(
                pair=np.concatenate([cands.pair, mined.pair]),
                item=np.concatenate([cands.item, mined.item]),
                source=np.concatenate([cands.source, mined.source]),
            )
    report(0.45)

    a, p, c = r.anchor_of[cands.pair], r.positive_of[cands.pair], cands.item
    m = len(c)
    ev = _similarity_evidence(r, a, p, c, cands.pair)
    ev["rank"] = _rank_evidence(r, searches, a, c, max(s.rank_depth, s.mine_k, s.mutual_k))
    report(0.5)
    ev["anchor_side_sim"] = anchor_side_similarity(r.emb, r.anchor_of, r.positive_of, a, p, c)
    report(0.55)
    ev["mutual"] = _mutual_evidence(r, s, a, c, ev["rank"])
    report(0.65)
    ev["same_cluster"] = _cluster_evidence(r, s, p, c)
    report(0.8)
    ev["label_agree"], pair_label = _label_evidence(run, a, p, c, use_labels=s.use_labels)
    ev["guide_diff"] = _guide_evidence(run, guide, a, p, c)
    ev["neg_z"] = _anchor_z_evidence(a, ev["neg_sim"], cands.source)
    ev["reverse_rank"] = _reverse_rank_evidence(r, s, a, c)
    ev["anchor_vote"] = _anchor_vote_evidence(r, s, searches, a, c)
    ev["csls"] = _csls_evidence(r, s, searches, a, c, ev["neg_sim"])
    ev["claimed"] = _claimed_evidence(r, a, c)
    if s.mode_evidence or s.weights.other_mode != 0.0:
        ev["other_mode"] = _mode_evidence(r, s, searches, a, p, c)
    else:  # not asked for and weighted 0: NaN, a term of 0, as computing it would give
        ev["other_mode"] = np.full(m, np.nan)
    for name in ("judge_candidate", "judge_positive", "judge_diff"):
        ev[name] = np.full(m, np.nan)
    report(0.85)

    def total(contrib: dict[str, np.ndarray]) -> np.ndarray:
        # the terms added in order, as a sum over their stacked rows would, without the (T, M) stack
        terms = list(contrib.values())
        acc = terms[0].copy() if terms else np.zeros(m)
        for term in terms[1:]:
            acc += term
        return s.weights.bias + acc

    contrib = _contributions(ev, cands.source, s.weights)
    if judge is not None and m:
        logit = total(contrib)
        ev["judge_candidate"], ev["judge_positive"] = _judge_evidence(run, judge, a, p, c, logit, top=s.judge_top)
        ev["judge_diff"] = ev["judge_candidate"] - ev["judge_positive"]
        contrib = _contributions(ev, cands.source, s.weights)
    report(0.9)
    logit = total(contrib)
    # what the table reports of the searches, before their lists are let go
    searched = [
        {"search": "candidates", "modality": mod, "anchors": len(sr.anchors), **sr.info} for mod, sr in searches.items()
    ]
    if "anchor_index" in r.searched:
        searched.append({"search": "anchor_neighbours", **r.searched["anchor_index"]})
    described = "; ".join(f"{mod}: {sr.description}" for mod, sr in searches.items())
    del searches
    r.searched.clear()  # the neighbour lists: their memory goes to the table
    # every column put in queue order one at a time, before the table is built (no second copy of the table)
    order = queue_order(logit, ev["sim_diff"], ev["neg_sim"])
    for table in (ev, contrib):
        for name in list(table):
            table[name] = np.asarray(table[name])[order]
    logit = logit[order]
    score = 1.0 / (1.0 + np.exp(-logit))
    shown_label = np.where(ev["label_agree"] == 1.0, pair_label[order], None)
    df = pd.DataFrame(
        {
            "pair_id": r.pair_ids[cands.pair[order]],
            "anchor_id": a[order],
            "candidate_id": c[order],
            "source": pd.Series(cands.source[order], dtype=object).astype(str),
            "score": score,
            "flagged": score >= s.threshold,
            "reason": _reasons(ev, contrib, shown_label),
            "positive_id": p[order],
            **{col: ev[col] for col in EVIDENCE_COLUMNS[1:-1]},
            "logit": logit,
        },
        copy=False,  # the columns are this function's own arrays: no consolidated copy of them
    )
    df.attrs["index"] = described
    # each search that ran, with its kind, parameters and measured recall (search_info)
    df.attrs["searches"] = searched
    df.attrs["settings"] = asdict(s)
    report(1.0)
    return df


def queue_order(logit: np.ndarray, sim_diff: np.ndarray, neg_sim: np.ndarray) -> np.ndarray:
    """Review order: log-odds descending (not the score, which rounds to 1.000 at the top), exact ties broken by
    ``sim_diff`` descending, then ``neg_sim`` descending, then input position; (M,) int64 row order."""
    keys = [np.nan_to_num(np.asarray(x, dtype=np.float64), nan=-np.inf) for x in (logit, sim_diff, neg_sim)]
    return np.lexsort((np.arange(len(keys[0])), -keys[2], -keys[1], -keys[0]))


def score_labels(logit: np.ndarray, *, min_decimals: int = 2, max_decimals: int = 6) -> np.ndarray:
    """Displayed scores that keep resolution at the top of the queue: the log-odds ``ℓ`` with the fewest decimals
    (``min_decimals`` .. ``max_decimals``) at which every two different values differ, with the score beside it
    while it is below 0.995 (``"ℓ 1.23 · p 0.774"``; above that only ℓ, as σ(ℓ) prints 1.000 / 0.99x alike).
    Rows whose log-odds are exactly equal show ``(tie)``: :func:`queue_order` orders them by evidence.

    Parameters
    ----------
    logit : numpy.ndarray
        (M,) log-odds, e.g. the ``logit`` column of the rows shown.

    Returns
    -------
    numpy.ndarray
        (M,) str.
    """
    x = np.asarray(logit, dtype=np.float64)
    if not len(x):
        return np.zeros(0, dtype=object)
    distinct = np.unique(x[np.isfinite(x)])
    decimals = max_decimals
    for d in range(min_decimals, max_decimals + 1):
        if len({format(v, f".{d}f") for v in distinct.tolist()}) == len(distinct):
            decimals = d
            break
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    tie = counts[inverse.reshape(-1)] > 1
    score = 1.0 / (1.0 + np.exp(-x))
    out = []
    for v, p, t in zip(x.tolist(), score.tolist(), tie.tolist(), strict=True):
        text = f"ℓ {v:.{decimals}f}" + (f" · p {p:.3f}" if p < 0.995 else "") + (" (tie)" if t else "")
        out.append(text)
    return np.array(out, dtype=object)


# --- quality on planted truth ------------------------------------------------------------------------


def precision_at_k(y_true: np.ndarray, score: np.ndarray, k: int = 100) -> float:
    """Share of true positives among the ``k`` highest scores (ties broken by position)."""
    y = np.asarray(y_true, dtype=bool)
    if not len(y):
        return float("nan")
    top = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")[: min(k, len(y))]
    return float(y[top].mean())


def quality_on_truth(result: pd.DataFrame, truth: pd.DataFrame, *, k: int = 100) -> dict[str, float]:
    """AUPRC and precision@k of our score and of the baseline ``neg_sim - pos_sim`` over the listed negatives.

    Parameters
    ----------
    result : pandas.DataFrame
        :func:`find_false_negatives` output.
    truth : pandas.DataFrame
        ``pair_id``, ``negative_id``, ``is_false_negative`` for the listed negatives (e.g.
        ``analysis.data.truth.negative_truth(run)``).

    Returns
    -------
    dict
        ``n``, ``false_negatives``, ``auprc``, ``auprc_baseline``, ``precision_at_k``,
        ``precision_at_k_baseline``, ``k``, ``prevalence`` (AUPRC of a random ranking).
    """
    from sklearn.metrics import average_precision_score  # here: importing scikit-learn takes ~1 s

    t = truth[["pair_id", "negative_id", "is_false_negative"]].rename(columns={"negative_id": "candidate_id"})
    t = t.drop_duplicates(["pair_id", "candidate_id"])
    r = result[["pair_id", "candidate_id", "score", "sim_diff"]]
    merged = t.merge(r, on=["pair_id", "candidate_id"], how="inner")
    if merged.empty:
        raise NegScopeError("none of the truth's negatives is among the candidates")
    y = merged["is_false_negative"].to_numpy(bool)
    ours = merged["score"].to_numpy(np.float64)
    base = merged["sim_diff"].to_numpy(np.float64)
    return {
        "n": int(len(y)),
        "false_negatives": int(y.sum()),
        "prevalence": float(y.mean()),
        "auprc": float(average_precision_score(y, ours)) if y.any() else float("nan"),
        "auprc_baseline": float(average_precision_score(y, base)) if y.any() else float("nan"),
        "k": int(k),
        "precision_at_k": precision_at_k(y, ours, k),
        "precision_at_k_baseline": precision_at_k(y, base, k),
    }


# --- review decisions and what they change -------------------------------------------------------------


def with_decisions(result: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """``result`` with a ``decision`` column ('' where undecided) joined on (anchor_id, candidate_id)."""
    if decisions.empty:
        return result.assign(decision="")
    d = decisions[["anchor_id", "candidate_id", "decision"]].drop_duplicates(["anchor_id", "candidate_id"], keep="last")
    out = result.merge(d, on=["anchor_id", "candidate_id"], how="left")
    out["decision"] = out["decision"].fillna("").astype(str)
    out.attrs = dict(result.attrs)
    return out


def retrieval_before_after(
    run: Run,
    extra_positives: pd.DataFrame,
    *,
    ks: tuple[int, ...] = (1, 5, 10),
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Anchor -> positive retrieval metrics, before and after counting decided false negatives as positives.

    For each distinct anchor, the items of the positive modality (the anchor itself excluded) are ranked by
    similarity; ``recall_at_k`` is the share of anchors with at least one relevant item in the top k (the
    hit rate) and ``mrr_at_10`` the mean of 1 / (rank of the first relevant item), 0 beyond 10. Relevant
    before: the anchor's positives; after: those plus ``extra_positives``.

    Parameters
    ----------
    run : Run
    extra_positives : pandas.DataFrame
        ``anchor_id``, ``candidate_id`` of the decided false negatives.
    ks : tuple of int
        Cut-offs of recall.

    Returns
    -------
    pandas.DataFrame
        ``metric``, ``before``, ``after``, ``change`` (one row per metric).
    """
    emb = run.embeddings
    modality = run.items["modality"].astype(str).to_numpy()
    anchor_of = run.pairs["anchor_id"].to_numpy(np.int64)
    positive_of = run.pairs["positive_id"].to_numpy(np.int64)
    n_items = len(run.items)
    depth = max(max(ks), 10)
    anchors = np.unique(anchor_of)
    before = set(_pair_keys(anchor_of, positive_of, n_items).tolist())
    extra = extra_positives[["anchor_id", "candidate_id"]].to_numpy(np.int64) if len(extra_positives) else None
    after = before | (set(_pair_keys(extra[:, 0], extra[:, 1], n_items).tolist()) if extra is not None else set())
    first_rank = {"before": np.full(len(anchors), np.inf), "after": np.full(len(anchors), np.inf)}
    mods = sorted(set(modality[positive_of].tolist()))
    for m_i, mod in enumerate(mods):
        corpus = np.flatnonzero(modality == mod)
        rows = np.flatnonzero(np.isin(anchors, anchor_of[modality[positive_of] == mod]))
        if not len(rows):
            continue
        index = build_index(emb[corpus], kind="exact")
        _, nb = index.search(
            emb[anchors[rows]],
            depth + 1,
            progress=None if progress is None else (lambda f, m_i=m_i: progress((m_i + f) / len(mods))),
        )
        nb = np.where(nb >= 0, corpus[np.maximum(nb, 0)], -1)
        nb = np.where(nb == anchors[rows][:, None], -1, nb)  # the anchor itself does not compete
        valid = nb >= 0
        position = np.cumsum(valid, axis=1)
        keys = _pair_keys(np.repeat(anchors[rows], nb.shape[1]), nb.ravel(), n_items).reshape(nb.shape)
        for name, relevant in (("before", before), ("after", after)):
            rel = (
                np.isin(keys, np.fromiter(relevant, dtype=np.int64, count=len(relevant))) & valid & (position <= depth)
            )
            hit_pos = np.where(rel, position, np.iinfo(np.int64).max).min(axis=1)
            first_rank[name][rows] = np.where(hit_pos < np.iinfo(np.int64).max, hit_pos, np.inf)
    records = []
    for k in ks:
        b = float(np.mean(first_rank["before"] <= k)) if len(anchors) else float("nan")
        f = float(np.mean(first_rank["after"] <= k)) if len(anchors) else float("nan")
        records.append((f"recall_at_{k}", b, f))

    def mrr(r: np.ndarray) -> float:
        return float(np.mean(np.where(r <= 10, 1.0 / np.minimum(r, 1e18), 0.0))) if len(r) else float("nan")

    records.append(("mrr_at_10", mrr(first_rank["before"]), mrr(first_rank["after"])))
    out = pd.DataFrame(records, columns=["metric", "before", "after"])
    out["change"] = out["after"] - out["before"]
    return out

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

Score
    Each continuous evidence x becomes a robust z-score against the listed negatives (most of which are
    true negatives), clipped to [-4, 4]: :math:`z = (x - \\mathrm{median}) / (1.4826\\,\\mathrm{MAD})`. With
    ``rank`` entering as :math:`-\\log(\\text{rank})`, the evidence adds up as log-odds:

    .. math::

        \\ell = b + w_d z_{\\text{diff}} + w_p z_{\\text{pos}} + w_a z_{\\text{anchor}} + w_r z_{\\text{rank}}
              + w_m [\\text{mutual}] + w_c [\\text{cluster}] + w_\\ell (2\\,\\text{agree} - 1) + w_g z_{\\text{guide}},
        \\qquad \\text{score} = \\sigma(\\ell) = 1 / (1 + e^{-\\ell})

    Missing evidence adds 0. ``flagged`` is ``score >= threshold`` (default 0.5, i.e. the evidence
    outweighs the prior ``b``). The sentence-transformers margins are available instead
    (:func:`flag_by`): absolute ``neg_sim > pos_sim - m`` and the sign-safe relative
    ``neg_sim > pos_sim - |pos_sim| * m``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from analysis.errors import NegScopeError
from analysis.runs.candidates import build_candidates
from analysis.runs.folder import NEGATIVE_SOURCES, Run
from analysis.search.index import INDEX_KINDS, build_index

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
    "logit",
)
LISTED_SOURCES = ("given", "in_batch")
FLAG_METHODS = ("score", "absolute", "relative")
Z_CLIP = 4.0


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
        'auto' (exact or IVF from the work, :func:`analysis.search.rule.choose_kind`), 'exact', 'ivf' or 'hnsw'.
    weights : Weights
        Evidence weights.
    seed : int
        Seeds k-means and the index.

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
        if self.index_kind not in INDEX_KINDS:
            raise NegScopeError(f"unknown neighbour search {self.index_kind!r}; expected one of {INDEX_KINDS}")


@dataclass
class _Search:
    """Per-anchor neighbour lists of one candidate modality, own positives removed."""

    anchors: np.ndarray  # (A,) anchor item ids
    neighbours: np.ndarray  # (A, R) item ids, -1 = none
    ranks: np.ndarray  # (A, R) 1-based rank after exclusions, 0 = excluded
    description: str


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(a, dtype=np.int64) * np.int64(n) + np.asarray(b, dtype=np.int64)


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
    index = build_index(emb[corpus_ids], kind=index_kind, n_queries=len(anchors), sample_queries=sample, seed=seed)
    k = min(depth + max_excluded, len(corpus_ids))
    _, rows = index.search(emb[anchors], k, progress=progress)
    neighbours = np.where(rows >= 0, corpus_ids[np.maximum(rows, 0)], -1)
    keys = _pair_keys(np.repeat(anchors, neighbours.shape[1]), neighbours.ravel(), n)
    excluded = (np.isin(keys, exclude_keys) | (neighbours.ravel() < 0)).reshape(neighbours.shape)
    ranks = np.where(excluded, 0, np.cumsum(~excluded, axis=1))
    ranks[ranks > depth] = 0
    return _Search(anchors=anchors, neighbours=neighbours, ranks=ranks, description=index.describe())


def row_dots(a: np.ndarray, i: np.ndarray, b: np.ndarray, j: np.ndarray, *, block: int = 65536) -> np.ndarray:
    """(M,) float64 ``a[i[m]] · b[j[m]]``, gathered in blocks so that memory stays bounded for millions of rows."""
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    out = np.empty(len(i), dtype=np.float64)
    for start in range(0, len(i), block):
        stop = min(start + block, len(i))
        out[start:stop] = np.einsum("ij,ij->i", a[i[start:stop]], b[j[start:stop]])
    return out


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
}


def _fmt(values: np.ndarray, spec: str) -> np.ndarray:
    return np.array([format(v, spec) for v in values.tolist()], dtype=object)


def _reasons(df: pd.DataFrame, contrib: dict[str, np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Short text per row: the similarities, then up to three pieces of evidence that pushed the score up
    (contribution >= 0.5 log-odds), strongest first; built column-wise so that millions of rows stay fast."""
    m = len(df)
    if m == 0:
        return np.zeros(0, dtype=object)
    keys = list(contrib)
    mat = np.stack([contrib[k] for k in keys], axis=1)
    neg = df["neg_sim"].to_numpy(np.float64)
    pos = df["pos_sim"].to_numpy(np.float64)
    stp = df["sim_to_positive"].to_numpy(np.float64)
    # the text of every piece of evidence for every row, (M, E) object
    texts = np.empty((m, len(keys)), dtype=object)
    for j, key in enumerate(keys):
        texts[:, j] = REASON_TEXT[key]
        if key == "sim_to_positive":
            texts[:, j] = np.where(np.isfinite(stp), REASON_TEXT[key] + " (" + _fmt(stp, ".2f") + ")", REASON_TEXT[key])
        elif key == "rank":
            texts[:, j] = REASON_TEXT[key] + " (rank " + _fmt(df["rank"].to_numpy(), "d") + ")"
        elif key == "label":
            lab = np.array(["" if v is None else f" {v}" for v in labels], dtype=object)
            texts[:, j] = REASON_TEXT[key] + lab
    order = np.argsort(-mat, axis=1, kind="stable")[:, :3]
    rows = np.arange(m)[:, None]
    fired = np.where(mat[rows, order] >= 0.5, texts[rows, order], "")
    evidence = np.array(["; ".join(p for p in r if p) or "little evidence" for r in fired.tolist()], dtype=object)
    sims = "neg_sim " + _fmt(neg, ".2f") + np.where(neg >= pos, " >= ", " < ") + "pos_sim " + _fmt(pos, ".2f")
    return sims + "; " + evidence


@dataclass(frozen=True)
class _RunArrays:
    """The arrays of a run every evidence step reads."""

    emb: np.ndarray  # (N, D) float32
    modality: np.ndarray  # (N,) str
    pair_ids: np.ndarray  # (P,)
    anchor_of: np.ndarray  # (P,) int64 item ids
    positive_of: np.ndarray  # (P,) int64 item ids

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
        )


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
    have = _pair_keys(listed.pair, listed.item, r.n_items)
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
        new = same_mod & ~np.isin(keys, have)
        extra_pair.append(p[new])
        extra_item.append(c[new])
    pair = np.concatenate(extra_pair) if extra_pair else np.zeros(0, dtype=np.int64)
    item = np.concatenate(extra_item) if extra_item else np.zeros(0, dtype=np.int64)
    return _CandidateRows(pair=pair, item=item, source=np.full(len(pair), "mined", dtype=object))


def _similarity_evidence(r: _RunArrays, a: np.ndarray, p: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """``pos_sim``, ``neg_sim``, ``sim_diff``, ``sim_ratio`` and ``sim_to_positive`` (NaN across modalities)."""
    emb = r.emb
    pos_sim = row_dots(emb, a, emb, p)
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
    """(M,) int64 rank of c among a's neighbours of c's modality, ``depth + 1`` beyond the searched depth."""
    rank = np.full(len(c), depth + 1, dtype=np.int64)
    for mod, search in searches.items():
        sel = search.ranks > 0
        a_row, col = np.nonzero(sel)
        table_keys = _pair_keys(search.anchors[a_row], search.neighbours[a_row, col], r.n_items)
        rows_mod = np.flatnonzero(r.modality[c] == mod)
        found = _lookup(_pair_keys(a[rows_mod], c[rows_mod], r.n_items), table_keys, search.ranks[a_row, col], 0)
        rank[rows_mod] = np.where(found > 0, found, depth + 1)
    return rank


def _mutual_evidence(r: _RunArrays, s: Settings, a: np.ndarray, c: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """(M,) float 1/0: c is among a's ``mutual_k`` nearest items and a among c's ``mutual_k`` nearest anchors."""
    emb = r.emb
    mutual = np.zeros(len(c))
    cand_mods = sorted(set(r.modality[c].tolist())) if len(c) else []
    rows_close = np.flatnonzero(rank <= s.mutual_k)
    if not len(rows_close):
        return mutual
    anchors_all = np.unique(r.anchor_of)
    anchor_index = build_index(
        emb[anchors_all], kind=s.index_kind, n_queries=len(np.unique(c[rows_close])), seed=s.seed
    )
    for mod in cand_mods:
        rows_mod = rows_close[r.modality[c[rows_close]] == mod]
        if not len(rows_mod):
            continue
        uc, inv = np.unique(c[rows_mod], return_inverse=True)
        k = min(s.mutual_k + 1, len(anchors_all))
        _, nb = anchor_index.search(emb[uc], k)
        nb_items = np.where(nb >= 0, anchors_all[np.maximum(nb, 0)], -1)
        nb_items = np.where(nb_items == uc[:, None], -1, nb_items)[:, : s.mutual_k + 1]
        # keep the first mutual_k neighbours that are not c itself
        is_valid = nb_items >= 0
        order = np.cumsum(is_valid, axis=1)
        nb_items = np.where(is_valid & (order <= s.mutual_k), nb_items, -1)
        hit = (nb_items[inv] == a[rows_mod][:, None]).any(axis=1)
        mutual[rows_mod] = hit.astype(np.float64)
    return mutual


def _cluster_evidence(r: _RunArrays, s: Settings, p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(M,) float 1/0: c and p share a spherical k-means cell of their modality; NaN across modalities."""
    same_cluster = np.full(len(c), np.nan)
    same_mod = r.modality[c] == r.modality[p]
    for mod in sorted(set(r.modality[c].tolist())) if len(c) else []:
        ids = np.flatnonzero(r.modality == mod)
        cells = np.full(r.n_items, -1, dtype=np.int64)
        cells[ids] = cluster_items(r.emb[ids], n_clusters=s.n_clusters, seed=s.seed)
        rows_mod = np.flatnonzero((r.modality[c] == mod) & same_mod)
        same_cluster[rows_mod] = (cells[c[rows_mod]] == cells[p[rows_mod]]).astype(np.float64)
    return same_cluster


def _label_evidence(
    run: Run, a: np.ndarray, p: np.ndarray, c: np.ndarray, *, use_labels: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(M,) float 1/0 label agreement of the pair (the anchor's label, else the positive's) and c, NaN where
    either is unlabelled; and (M,) the pair's label where known."""
    m = len(c)
    label_agree = np.full(m, np.nan)
    pair_label = np.full(m, None, dtype=object)
    if use_labels and "label" in run.items.columns and m:
        labels = run.labels
        anchor_missing = np.array([x is None for x in labels[a]], dtype=bool)
        pl = np.where(anchor_missing, labels[p], labels[a])
        cl = labels[c]
        known = np.array([x is not None and y is not None for x, y in zip(pl, cl, strict=True)], dtype=bool)
        label_agree[known] = (pl[known] == cl[known]).astype(np.float64)
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


def _contributions(ev: dict[str, np.ndarray], source: np.ndarray, w: Weights) -> dict[str, np.ndarray]:
    """Each evidence's log-odds contribution (module docstring); z-scores against the listed negatives."""
    ref = np.isin(source, LISTED_SOURCES)
    if not ref.any():
        ref = np.ones(len(source), dtype=bool)
    neg_log_rank = -np.log(ev["rank"].astype(np.float64))

    def z(x: np.ndarray) -> np.ndarray:
        return np.nan_to_num(robust_z(x, x[ref]), nan=0.0)

    return {
        "sim_diff": w.sim_diff * z(ev["sim_diff"]),
        "sim_to_positive": w.sim_to_positive * z(ev["sim_to_positive"]),
        "anchor_side": w.anchor_side * z(ev["anchor_side_sim"]),
        "rank": w.rank * z(neg_log_rank),
        "mutual": w.mutual * ev["mutual"],
        "same_cluster": w.same_cluster * np.nan_to_num(ev["same_cluster"], nan=0.0),
        "label": w.label * np.nan_to_num(2.0 * ev["label_agree"] - 1.0, nan=0.0),
        "guide": w.guide * z(ev["guide_diff"]),
    }


def find_false_negatives(
    run: Run,
    *,
    settings: Settings | None = None,
    guide: Run | None = None,
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Every false-negative candidate of ``run`` with its evidence and score, most suspicious first.

    Gathers the candidates (listed, then mined), computes each piece of evidence (one function each:
    :func:`_similarity_evidence`, :func:`_rank_evidence`, :func:`anchor_side_similarity`,
    :func:`_mutual_evidence`, :func:`_cluster_evidence`, :func:`_label_evidence`, :func:`_guide_evidence`),
    adds their log-odds (:func:`_contributions`) and sorts.

    Parameters
    ----------
    run : Run
        The run folder.
    settings : Settings, optional
        What to mine and how to score (defaults: :class:`Settings`; checked when built).
    guide : Run, optional
        A run of the same dataset with a second ("guide") checkpoint; items are matched by content key.
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
    ev = _similarity_evidence(r, a, p, c)
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
    report(0.85)

    contrib = _contributions(ev, cands.source, s.weights)
    logit = s.weights.bias + np.sum(np.stack(list(contrib.values()), axis=0), axis=0) if m else np.zeros(0)
    score = 1.0 / (1.0 + np.exp(-logit))
    df = pd.DataFrame(
        {
            "pair_id": r.pair_ids[cands.pair],
            "anchor_id": a,
            "candidate_id": c,
            "source": pd.Series(cands.source, dtype=object).astype(str),
            "score": score,
            "flagged": score >= s.threshold,
            "reason": "",
            "positive_id": p,
            **{col: ev[col] for col in EVIDENCE_COLUMNS[1:-1]},
            "logit": logit,
        }
    )
    df["reason"] = _reasons(df, contrib, np.where(ev["label_agree"] == 1.0, pair_label, None))
    order = np.lexsort((np.arange(m), -score))
    df = df.iloc[order].reset_index(drop=True)
    df.attrs["index"] = "; ".join(f"{mod}: {sr.description}" for mod, sr in searches.items())
    df.attrs["settings"] = asdict(s)
    report(1.0)
    return df


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

"""Mismatched pairs (noisy correspondence): pairs whose "positive" does not belong to the anchor.

Two tests, each a **mutual rank** (the geometric mean of a rank in each direction), both exact:

- **direct**: ``rank_a2p`` is the positive's 1-based rank among every candidate on the positive side (all
  items that are a positive or a listed negative of some pair) when the anchor searches them, the anchor's
  other positives left out; ``rank_p2a`` is the anchor's rank among every anchor when the positive searches
  them, the positive's other anchors left out. ``mutual_rank`` = :math:`\\sqrt{r_{a\\to p}\\, r_{p\\to a}}`.
- **neighbours**: the ``k`` pairs whose anchors are nearest to this anchor vote with their positives: the
  normalised mean of those positives is a prototype of what this anchor's positive should look like, and
  ``nbr_rank_a`` is the positive's rank among the candidates when that prototype searches them;
  symmetrically ``nbr_rank_p`` is the anchor's rank among the anchors for the prototype of the anchors of the
  ``k`` pairs whose positives are nearest to this positive. ``nbr_mutual_rank`` is their geometric mean.
  Within-modality neighbourhoods stay informative when a model has memorised its noisy training pairs (then
  the direct ranks of a mismatched pair look fine: the model learnt to match the wrong caption).

Each mutual rank is normalised as :math:`s = \\log \\mathrm{MR} / \\log \\sqrt{n_p n_a}` in [0, 1] (``n_p``,
``n_a`` the numbers of candidates and anchors), and ``score = max(s_direct, s_neighbours)``: a pair is as
suspicious as its worse test. A pair is ``flagged`` when either mutual rank exceeds ``flag_rank`` (the same
thing as a threshold on ``score``). The anchor's best other candidate and the gap ``best_sim - pos_sim`` are
kept as evidence for the reviewer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from analysis.runs.candidates import build_candidates, row_dots
from analysis.runs.folder import Run
from analysis.search.exact import count_above, flat_index, knn, row_blocks, take_rows
from analysis.search.graph import run_graph, run_index, vector_graph
from analysis.search.index import SearchIndex
from analysis.search.rule import resolve_kind

# Added to every threshold so that float32 round-off between two ways of computing one dot product never
# counts the positive above itself.
_EPS = 1e-6

MISMATCH_COLUMNS = (
    "pair_id",
    "anchor_id",
    "positive_id",
    "pos_sim",
    "rank_a2p",
    "rank_p2a",
    "mutual_rank",
    "nbr_rank_a",
    "nbr_rank_p",
    "nbr_mutual_rank",
    "best_id",
    "best_sim",
    "gap",
    "best_anchor_id",
    "best_anchor_sim",
    "score",
    "flagged",
    "reason",
)


def default_flag_rank(n_gallery: int) -> float:
    """Default mutual-rank cut: 5% of the gallery, at least 10 and at most the gallery.

    A random candidate lands in the top 5% in both directions with probability about 0.25%, so a positive
    beyond the cut is one the model (or its neighbourhood) cannot tell from a random candidate. In data made
    of classes, a correct positive may sit anywhere among the other members of its class: raise the cut to
    about the size of a class when classes are larger than 5% of the data and tight.
    """
    return float(min(max(10.0, 0.05 * n_gallery), max(n_gallery, 1)))


def _exclusions(queries: np.ndarray, targets: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair row, gallery item) couples left out of each pair's rank: the query's other targets, and the query
    itself when it sits in the gallery. The pair's own target is never listed (it is not counted anyway)."""
    links = pd.DataFrame({"q": queries, "t": targets})
    merged = links.reset_index().merge(links.drop_duplicates(), on="q", suffixes=("", "_o"))
    rows = [merged["index"].to_numpy(np.int64)]
    items = [merged["t_o"].to_numpy(np.int64)]
    self_in = np.flatnonzero(np.isin(queries, gallery))
    rows.append(self_in)
    items.append(queries[self_in])
    rows_all, items_all = np.concatenate(rows), np.concatenate(items)
    keep = items_all != targets[rows_all]
    couples = np.unique(np.stack([rows_all[keep], items_all[keep]], axis=1), axis=0)
    return couples[:, 0], couples[:, 1]


#: Gallery rows sampled to estimate a rank beyond the top ``RANK_TOP_K`` when the search is approximate.
RANK_SAMPLE = 4096
#: Neighbours fetched per query (through the approximate index) within which a rank is counted, not sampled.
RANK_TOP_K = 32


def _estimated_above(
    query_vecs: np.ndarray,
    thresholds: np.ndarray,
    emb: np.ndarray,
    gallery: np.ndarray,
    index: SearchIndex,
    *,
    seed: int = 0,
    top: dict | None = None,
) -> np.ndarray:
    """(P,) gallery rows above each threshold, estimated: counted among the query's top ``RANK_TOP_K`` (from
    the approximate index, exact similarities) when the threshold lies within them, else scaled up from a
    uniform sample of ``RANK_SAMPLE`` gallery rows (relative standard error ``sqrt((1 - f) / (S f))`` for a
    rank at fraction ``f`` of the gallery: 7% at the default flag cut of 5%). The searched top, (P, RANK_TOP_K)
    similarities and gallery rows, is left in ``top`` (keys ``sims``, ``rows``) when given.

    Parameters
    ----------
    query_vecs : numpy.ndarray
        (P, D) float32 queries.
    thresholds : numpy.ndarray
        (P,) float32 similarity each query's count is taken above.
    emb : numpy.ndarray
        (N, D) float32 run embeddings; only the sampled gallery rows are gathered.
    gallery : numpy.ndarray
        (M,) int64 item ids of the gallery (the rows of ``index``).
    index : SearchIndex
        Index over the gallery.
    """
    m = len(gallery)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(m, size=min(RANK_SAMPLE, m), replace=False))
    sample_vecs = emb[gallery[sample]]

    def scaled(rows: np.ndarray) -> np.ndarray:
        # count_above's own 4096-query blocks, gathered one block at a time (never a (P, D) copy)
        sampled = np.empty(len(rows), dtype=np.int64)
        for start, stop in row_blocks(len(rows), 4096, None):
            part = rows[start:stop]
            sampled[start:stop] = count_above(query_vecs[part], sample_vecs, thresholds[part], block_size=4096)
        return np.rint(sampled * (m / len(sample))).astype(np.int64)

    if index.kind == "exact":
        # the approximate index was no faster than exact search on this data (see build_index): searching
        # every query's top would cost the whole exact work, so every rank comes from the sample
        return scaled(np.arange(len(query_vecs)))
    sims, rows = index.search(query_vecs, min(RANK_TOP_K, m))
    if top is not None:
        top.update(sims=sims, rows=rows)
    above = np.count_nonzero(sims > thresholds[:, None], axis=1)
    # only the queries whose threshold lies beyond their searched top need the sample
    beyond = np.flatnonzero(above >= sims.shape[1])
    if len(beyond):
        above[beyond] = np.maximum(scaled(beyond), above[beyond])
    return above


def _ranks(
    query_vecs: np.ndarray,
    targets: np.ndarray,
    gallery: np.ndarray,
    excluded: tuple[np.ndarray, np.ndarray],
    emb: np.ndarray,
    *,
    block_size: int,
    progress: Callable[[float], None],
    index: SearchIndex | None = None,
    estimate: bool = False,
    top: dict | None = None,
) -> np.ndarray:
    """(P,) 1-based rank of each pair's target item among ``gallery`` for its query vector, leaving out the
    pair's ``excluded`` couples (see :func:`_exclusions`): exact, or estimated (:func:`_estimated_above`)
    when ``index`` is an approximate index over the gallery (its searched top then left in ``top``).

    Parameters
    ----------
    query_vecs : numpy.ndarray
        (P, D) float32 query of each pair.
    targets : numpy.ndarray
        (P,) int64 item id ranked for each pair.
    gallery : numpy.ndarray
        (M,) int64 item ids ranked among.
    excluded : tuple of numpy.ndarray
        (E,) pair rows and (E,) item ids left out of those pairs' ranks.
    emb : numpy.ndarray
        (N, D) float32 run embeddings (read only).
    """
    # blocked row dots (no (P, D) gather), float32 as one einsum over whole arrays would give
    thresholds = row_dots(query_vecs, np.arange(len(targets)), emb, targets).astype(np.float32) + _EPS
    if index is not None and (estimate or index.kind != "exact"):
        above = _estimated_above(query_vecs, thresholds, emb, gallery, index, top=top)
        progress(1.0)
    else:
        above = count_above(query_vecs, take_rows(emb, gallery), thresholds, block_size=block_size, progress=progress)
    rows, items = excluded
    if len(rows):
        sims = row_dots(query_vecs, rows, emb, items).astype(np.float32)
        above -= np.bincount(rows, weights=sims > thresholds[rows], minlength=len(targets)).astype(np.int64)
    return 1 + np.maximum(above, 0)


def _prototypes(
    side: np.ndarray,
    other: np.ndarray,
    k: int,
    *,
    graph_rows: np.ndarray | None = None,
    kind: str = "auto",
    block_size: int = 8192,
) -> np.ndarray:
    """(P, D) for each pair: the normalised mean of ``other`` over the ``k`` pairs nearest on ``side``.

    Parameters
    ----------
    side, other : numpy.ndarray
        (P, D) the embeddings of each pair's item on the searched side and on the voting side (read only).
    k : int
        Neighbouring pairs (the pair itself left out).
    graph_rows : numpy.ndarray, optional
        (P, >= k) the neighbouring pairs already known (from the run's shared graph when every pair has its
        own item on ``side``); default: searched here, exactly or approximately as ``kind`` says ('auto': the
        rule picks from the work).
    kind : str
        The search when ``graph_rows`` is not given.
    block_size : int
        Pairs summed at once: one (P, D) float32 result and (block, D) temporaries, never a (P, k, D) gather
        (1.5 GB at 100k pairs x 384 dims) nor a second (P, D) array.

    Returns
    -------
    numpy.ndarray
        (P, D) float32 unit rows (zero where no neighbour was found); the neighbours are added in their
        order, in float32, so every block gives the same numbers as one pass over all pairs.
    """
    n = side.shape[0]
    k = max(1, min(int(k), n - 1))
    if graph_rows is not None:
        rows = graph_rows[:, :k]
    elif resolve_kind(kind, n, n, side.shape[1]) == "exact":
        _, rows = knn(side, flat_index(side), k + 1)
        keep = rows != np.arange(n)[:, None]
        keep[keep.all(axis=1), -1] = False  # the pair itself hidden by ties: drop the farthest instead
        rows = rows[keep].reshape(n, k)
    else:
        rows, _, _, _, _ = vector_graph(side, k, kind=kind)
    proto = np.zeros((n, other.shape[1]), dtype=np.float32)
    for start, stop in row_blocks(n, block_size, None):
        acc = proto[start:stop]
        for j in range(rows.shape[1]):
            col = rows[start:stop, j]
            found = col >= 0
            if found.all():
                acc += other[col]
            else:
                acc[found] += other[col[found]]
        acc /= np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-12)
    return proto


def _pair_graph(run: Run, side_items: np.ndarray, k: int, *, kind: str = "auto") -> np.ndarray | None:
    """(P, k) each pair's neighbouring pairs through the run's shared graph of its ``side_items`` (searched as
    ``kind`` says), when every pair has its own item on that side (then nearest pairs = pairs of the nearest
    items); else None."""
    uniq, inv = np.unique(side_items, return_inverse=True)
    if len(uniq) != len(side_items):
        return None
    graph = run_graph(run, uniq, k=max(k, 16), kind=kind)
    rows = graph.rows[:, :k]
    pair_of = np.empty(len(uniq), dtype=np.int64)
    pair_of[inv] = np.arange(len(side_items))
    return np.where(rows >= 0, pair_of[np.maximum(rows, 0)], -1)[inv]


def _best_other(
    emb: np.ndarray,
    query_items: np.ndarray,
    gallery: np.ndarray,
    excluded: tuple[np.ndarray, np.ndarray],
    *,
    k: int,
    index: SearchIndex | None = None,
    searched: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best gallery item of each query that is not the query itself nor one of its excluded items (among its
    ``k`` nearest: ``searched`` (similarities, gallery rows) when already known, else searched here).

    Parameters
    ----------
    emb : numpy.ndarray
        (N, D) float32 run embeddings.
    query_items : numpy.ndarray
        (Q,) int64 item ids of the queries.
    gallery : numpy.ndarray
        (M,) int64 item ids searched among (the rows of ``index``).
    excluded : tuple of numpy.ndarray
        (E,) query item ids and (E,) gallery item ids: couples never taken as that query's best.
    k : int
        Neighbours looked through.
    index : SearchIndex, optional
        Index over the gallery (default: exact search).
    searched : tuple of numpy.ndarray, optional
        (Q, >= k) float32 similarities and int64 gallery rows (-1: none) already searched.

    Returns
    -------
    best_id : numpy.ndarray
        (Q,) int64 item id of the first eligible neighbour, -1 when none among the ``k``.
    best_sim : numpy.ndarray
        (Q,) float32 its similarity, NaN when none.
    """
    if searched is not None and searched[1].shape[1] >= k:
        sims, rows = searched[0][:, :k], searched[1][:, :k]
    else:
        sims, rows = (
            index.search(emb[query_items], k)
            if index is not None
            else knn(emb[query_items], flat_index(emb[gallery]), k)
        )
    queries = np.asarray(query_items, dtype=np.int64)
    found = rows >= 0
    items = np.where(found, np.asarray(gallery, dtype=np.int64)[np.where(found, rows, 0)], -1)
    eligible = found & (items != queries[:, None])
    ex_q, ex_t = (np.asarray(a, dtype=np.int64) for a in excluded)
    if len(ex_q) and items.size:
        # (query, item) couples as one int64 key each; ids are below 2**31, so keys never overflow
        base = int(max(items.max(), ex_t.max(), 0)) + 1
        keys = np.unique(ex_q * base + ex_t)
        couples = queries[:, None] * base + items
        at = np.minimum(np.searchsorted(keys, couples), len(keys) - 1)
        eligible &= keys[at] != couples
    n = len(queries)
    first = eligible.argmax(axis=1) if eligible.shape[1] else np.zeros(n, dtype=np.int64)
    has = eligible[np.arange(n), first] if eligible.shape[1] else np.zeros(n, dtype=bool)
    best_id = np.full(n, -1, dtype=np.int64)
    best_sim = np.full(n, np.nan, dtype=np.float32)
    best_id[has] = items[has, first[has]]
    best_sim[has] = sims[has, first[has]]
    return best_id, best_sim


def _reason(row, *, flag_rank: float, n_p: int, n_a: int, gap_cut: float) -> str:
    parts = []
    if row.mutual_rank > flag_rank:
        parts.append(
            f"direct: positive ranks {int(row.rank_a2p)} of {n_p} for the anchor, anchor ranks {int(row.rank_p2a)}"
            f" of {n_a} for the positive (mutual {row.mutual_rank:.0f} > {flag_rank:.0f})"
        )
    if row.nbr_mutual_rank > flag_rank:
        parts.append(
            f"neighbours: the anchor's nearest pairs put this positive at rank {int(row.nbr_rank_a)}, the"
            f" positive's nearest pairs put this anchor at rank {int(row.nbr_rank_p)}"
            f" (mutual {row.nbr_mutual_rank:.0f} > {flag_rank:.0f})"
        )
    if parts and row.gap > gap_cut and row.best_id >= 0:
        parts.append(f"the anchor prefers item {int(row.best_id)} by {row.gap:.2f}")
    if not parts:
        if row.mutual_rank <= 1 and row.nbr_mutual_rank <= 1:
            return "mutual nearest neighbours, confirmed by the neighbouring pairs"
        return (
            f"within the top {flag_rank:.0f}: direct mutual rank {row.mutual_rank:.1f},"
            f" neighbours' {row.nbr_mutual_rank:.1f}"
        )
    return "; ".join(parts)


def mismatched_pairs(
    run: Run,
    *,
    flag_rank: float | None = None,
    k_neighbors: int = 10,
    gap_cut: float = 0.05,
    k_best: int = 16,
    block_size: int = 1024,
    search: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Score every pair for a mismatched positive.

    Parameters
    ----------
    run : Run
        The run folder.
    flag_rank : float, optional
        Mutual rank above which a pair is flagged; default :func:`default_flag_rank` of the gallery size.
    k_neighbors : int
        Neighbouring pairs whose other sides vote in the neighbour test.
    gap_cut : float
        ``best_sim - pos_sim`` above which the reason of a flagged pair names the anchor's preferred item.
    k_best : int
        Neighbours fetched to find each anchor's best other candidate (raised for multi-positive anchors).
    block_size : int
        Queries scored at once in the exact rank count.
    search : {"auto", "exact", "ivf", "hnsw"}
        The gallery search: 'auto' is exact while :func:`analysis.search.rule.choose_kind` says the work is
        small, else approximate with estimated ranks (``attrs["ranks"]``, ``attrs["search"]`` and the
        measured ``attrs["recall"]`` say which ran; ``attrs["search_kinds"]`` and ``attrs["search_recalls"]`` per
        gallery).
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    pandas.DataFrame
        (P rows, ``run.pairs`` order) with the columns of ``MISMATCH_COLUMNS``: ids, ``pos_sim``, the direct
        ranks and their ``mutual_rank``, the neighbour ranks and their ``nbr_mutual_rank`` (ranks int64, 1 =
        best), the anchor's best other candidate (``best_id``, ``best_sim``, ``gap``), the positive's best
        other anchor, ``score`` (higher = more suspicious, in [0, 1]), ``flagged``, ``reason``.
    """
    report = progress or (lambda _f: None)
    emb = run.embeddings
    cand = build_candidates(run)
    anchors, positives, pos_sim = cand.anchor_ids, cand.positive_ids, cand.pos_sim.astype(np.float32)
    n_pairs = len(anchors)
    if n_pairs == 0:
        return pd.DataFrame(columns=list(MISMATCH_COLUMNS))
    gallery_p = np.unique(np.concatenate([positives, cand.neg_ids[cand.mask]]))
    gallery_a = np.unique(anchors)
    n_p, n_a = len(gallery_p), len(gallery_a)
    ex_a2p = _exclusions(anchors, positives, gallery_p)
    ex_p2a = _exclusions(positives, anchors, gallery_a)

    def step(lo: float, hi: float) -> Callable[[float], None]:
        return lambda f: report(lo + (hi - lo) * f)

    # views of the memory-mapped run where the ids are consecutive rows (else gathered copies); read only
    a_vecs, p_vecs = take_rows(emb, anchors), take_rows(emb, positives)
    # Exact ranks while the rule says the work (pairs x gallery x dims) is small; above it, an approximate
    # index over each gallery (recall measured on a sample) serves the top of each ranking and a gallery
    # sample estimates the rest.
    # one index per gallery and run, shared with the run's neighbour graph of the same items (run_index)
    idx_p = run_index(run, gallery_p, kind=search, n_queries=n_pairs)
    idx_a = run_index(run, gallery_a, kind=search, n_queries=n_pairs)
    # above the rule's budget the ranks are estimated even where IVF fell back to an exact index
    estimate = resolve_kind(search, n_pairs, max(n_p, n_a), emb.shape[1]) != "exact"
    opts = {"block_size": block_size, "estimate": estimate}
    top_a: dict = {}  # each anchor's searched top on the positive side, reused for its best other candidate
    top_p: dict = {}
    rank_a2p = _ranks(
        a_vecs, positives, gallery_p, ex_a2p, emb, progress=step(0.0, 0.2), index=idx_p, top=top_a, **opts
    )
    rank_p2a = _ranks(
        p_vecs, anchors, gallery_a, ex_p2a, emb, progress=step(0.2, 0.4), index=idx_a, top=top_p, **opts
    )
    if n_pairs > 1:
        k_nb = max(1, min(int(k_neighbors), n_pairs - 1))
        nb_a = _pair_graph(run, anchors, k_nb, kind=search)
        proto = _prototypes(a_vecs, p_vecs, k_neighbors, graph_rows=nb_a, kind=search)
        nbr_rank_a = _ranks(proto, positives, gallery_p, ex_a2p, emb, progress=step(0.4, 0.6), index=idx_p, **opts)
        del proto  # (P, D): its memory serves the other side's prototypes
        nb_p = _pair_graph(run, positives, k_nb, kind=search)
        proto = _prototypes(p_vecs, a_vecs, k_neighbors, graph_rows=nb_p, kind=search)
        nbr_rank_p = _ranks(proto, anchors, gallery_a, ex_p2a, emb, progress=step(0.6, 0.8), index=idx_a, **opts)
        del proto
    else:  # a single pair has no neighbours to vote: no evidence either way
        nbr_rank_a = nbr_rank_p = np.ones(n_pairs, dtype=np.int64)

    # Best other candidate of each anchor, best other anchor of each positive (never one of its own pairs').
    couples = np.unique(np.stack([anchors, positives], axis=1), axis=0)  # distinct (anchor, positive)
    uniq_a, first_a, inv_a = np.unique(anchors, return_index=True, return_inverse=True)
    k_a = k_best + int(np.unique(couples[:, 0], return_counts=True)[1].max())
    found_a = (top_a["sims"][first_a], top_a["rows"][first_a]) if top_a else None
    best_id_u, best_sim_u = _best_other(
        emb, uniq_a, gallery_p, (couples[:, 0], couples[:, 1]), k=k_a, index=idx_p, searched=found_a
    )
    report(0.9)
    uniq_p, first_p, inv_p = np.unique(positives, return_index=True, return_inverse=True)
    k_p = k_best + int(np.unique(couples[:, 1], return_counts=True)[1].max())
    found_p = (top_p["sims"][first_p], top_p["rows"][first_p]) if top_p else None
    best_anchor_u, best_anchor_sim_u = _best_other(
        emb, uniq_p, gallery_a, (couples[:, 1], couples[:, 0]), k=k_p, index=idx_a, searched=found_p
    )

    mutual = np.sqrt(rank_a2p.astype(np.float64) * rank_p2a)
    nbr_mutual = np.sqrt(nbr_rank_a.astype(np.float64) * nbr_rank_p)
    denom = np.log(np.sqrt(float(n_p) * float(n_a)))
    worst = np.maximum(mutual, nbr_mutual)
    score = np.log(worst) / denom if denom > 0 else np.zeros(n_pairs)
    cut = default_flag_rank(int(round(np.sqrt(n_p * n_a)))) if flag_rank is None else float(flag_rank)
    best_sim = best_sim_u[inv_a]
    out = pd.DataFrame(
        {
            "pair_id": cand.pair_ids,
            "anchor_id": anchors,
            "positive_id": positives,
            "pos_sim": pos_sim,
            "rank_a2p": rank_a2p,
            "rank_p2a": rank_p2a,
            "mutual_rank": mutual,
            "nbr_rank_a": nbr_rank_a,
            "nbr_rank_p": nbr_rank_p,
            "nbr_mutual_rank": nbr_mutual,
            "best_id": best_id_u[inv_a],
            "best_sim": best_sim,
            "gap": (best_sim - pos_sim).astype(np.float32),
            "best_anchor_id": best_anchor_u[inv_p],
            "best_anchor_sim": best_anchor_sim_u[inv_p],
            "score": score,
            "flagged": worst > cut,
        }
    )
    out["reason"] = [
        _reason(row, flag_rank=cut, n_p=n_p, n_a=n_a, gap_cut=gap_cut) for row in out.itertuples(index=False)
    ]
    exact = not estimate and idx_p.kind == "exact" and idx_a.kind == "exact"
    out.attrs.update(
        {
            "flag_rank": cut,
            "n_gallery_positive": n_p,
            "n_gallery_anchor": n_a,
            "k": k_neighbors,
            "ranks": "exact"
            if exact
            else (
                f"estimated from a {RANK_SAMPLE}-row gallery sample (IVF no faster than exact on this data)"
                if idx_p.kind == "exact" and idx_a.kind == "exact"
                else f"estimated (top {RANK_TOP_K} searched, beyond it a {RANK_SAMPLE}-row gallery sample)"
            ),
            "search": {"positive gallery": idx_p.describe(), "anchor gallery": idx_a.describe()},
            "search_kinds": {"positive gallery": idx_p.kind, "anchor gallery": idx_a.kind},
            "search_recalls": {"positive gallery": idx_p.recall, "anchor gallery": idx_a.recall},
            "recall": min(float(idx_p.recall or 0.0), float(idx_a.recall or 0.0)),
        }
    )
    report(1.0)
    return out

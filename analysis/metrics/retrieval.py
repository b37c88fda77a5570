"""Retrieval ranks of each pair's positive (and, across modalities, of its anchor) and the metrics over them.

Forward direction: the anchor is the query; the positive's rank is its 1-based place among *all* items of
the positive's modality, ordered by cosine similarity to the anchor. The anchor itself and the anchor's
other known positives (every other pair with the same ``anchor_id``) do not compete; ties count in the
positive's favour (``rank = 1 + #{items scoring strictly higher}``).

Reverse direction (only meaningful when anchors and positives are different modalities, e.g. image -> text
and text -> image): the positive is the query and the anchor's rank is taken among all items of the
anchor's modality, the positive's other known anchors not competing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from analysis.runs.folder import Run
from analysis.search.exact import SharedExclusions, take_rows, target_ranks
from analysis.search.rule import resolve_kind

RECALL_KS = (1, 5, 10)
MRR_K = 10


def has_reverse(run: Run) -> bool:
    """True when the anchors and the positives are of different modalities (then both directions are reported)."""
    modality = run.items["modality"].to_numpy()
    anchor_mods = set(modality[run.pairs["anchor_id"].to_numpy(np.int64)])
    positive_mods = set(modality[run.pairs["positive_id"].to_numpy(np.int64)])
    return anchor_mods.isdisjoint(positive_mods)


def directional_ranks(
    embeddings: np.ndarray,
    modality: np.ndarray,
    query_ids: np.ndarray,
    target_ids: np.ndarray,
    *,
    max_block_bytes: int = 512 * 2**20,
    search: str = "auto",
    info: dict | None = None,
    run: Run | None = None,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Rank of each target among all items of its modality, by similarity to its query.

    Parameters
    ----------
    embeddings : numpy.ndarray
        (N, D) float32, rows L2-normalised.
    modality : numpy.ndarray
        (N,) modality name of every item.
    query_ids, target_ids : numpy.ndarray
        (P,) item ids: the query and the target of each pair. The query itself and every other target of the
        same query (pairs with the same query id) do not compete with the target.
    max_block_bytes : int
        Working memory of one block of the exhaustive search (see :func:`analysis.search.exact.target_ranks`).
    search : {"auto", "exact", "ivf", "hnsw"}
        'auto': exact while :func:`analysis.search.rule.choose_kind` says the work (queries x items x dims)
        is small, else counted in an approximate top with exact re-scoring and estimated beyond it
        (:func:`analysis.search.ranks.estimated_target_ranks`).
    info : dict, optional
        Filled with ``rank_kind`` ('exact' or 'estimated'), ``search`` (description), ``recall`` (the
        lowest measured recall@10 of an approximate search; 1.0 when exact), ``pair_kinds`` ((P,) str per
        pair: 'exact', 'counted' in the approximate top with exact re-scoring, or 'estimated' beyond it from a
        sample) and, when estimated, ``check``: :func:`analysis.search.ranks.check_ranks` on a seeded sample of
        the queries (``checked``, ``differ``, ``max_error``: a 95% bound on every recall@k, k <= 10, and
        MRR@10's difference from exact; the largest over the modalities).
    run : Run, optional
        The run whose embeddings these are: an approximate index is then the run's own
        (:func:`analysis.search.graph.run_index`: its trained cells cached in the run folder and shared with
        the detectors searching the same items), not one built for this call alone.
    progress : callable, optional
        Called with the overall fraction done.

    Returns
    -------
    numpy.ndarray
        (P,) int64 ranks, 1 = the target is the best-scoring item of its modality.
    """
    query_ids = np.asarray(query_ids, dtype=np.int64)
    target_ids = np.asarray(target_ids, dtype=np.int64)
    modality = np.asarray(modality, dtype=object)
    ranks = np.ones(len(query_ids), dtype=np.int64)
    target_mods = modality[target_ids]
    groups = [(m, np.flatnonzero(target_mods == m)) for m in sorted(set(target_mods.tolist()))]
    total = max(sum(len(rows) for _, rows in groups), 1)
    done = 0
    estimated, recall, notes = False, 1.0, []
    pair_kinds = np.full(len(query_ids), "exact", dtype=object)
    check: dict = {}
    for mod, rows in groups:
        corpus_ids = np.flatnonzero(modality == mod)
        row_of_item = np.full(len(modality), -1, dtype=np.int64)
        row_of_item[corpus_ids] = np.arange(len(corpus_ids))
        q_ids, t_ids = query_ids[rows], target_ids[rows]
        # one exclusion list per distinct query: the query itself and all of its known targets
        uniq, group = np.unique(q_ids, return_inverse=True)
        member_group = np.concatenate([np.arange(len(uniq)), group])
        member_row = np.concatenate([row_of_item[uniq], row_of_item[t_ids]])
        exclude = SharedExclusions.from_members(group, member_group, member_row)

        def report(frac: float, _done: int = done, _n: int = len(rows)) -> None:
            if progress is not None:
                progress((_done + frac * _n) / total)

        kind = resolve_kind(search, len(rows), len(corpus_ids), embeddings.shape[1])
        if kind == "exact":
            ranks[rows] = target_ranks(
                embeddings[q_ids],
                take_rows(embeddings, corpus_ids),
                row_of_item[t_ids],
                exclude=exclude,
                max_block_bytes=max_block_bytes,
                progress=report,
            )
            notes.append(f"{mod}: exact ranks")
        else:
            from analysis.search.graph import run_index
            from analysis.search.index import build_index
            from analysis.search.ranks import check_ranks, estimated_target_ranks

            corpus = np.ascontiguousarray(take_rows(embeddings, corpus_ids), dtype=np.float32)
            sample = embeddings[uniq[:: max(1, len(uniq) // 500)]]
            if run is not None:
                index = run_index(run, corpus_ids, kind=kind, n_queries=len(rows), sample_queries=sample)
            else:
                index = build_index(corpus, kind=kind, n_queries=len(rows), sample_queries=sample, start_depth=1)
            queries = np.ascontiguousarray(embeddings[q_ids], dtype=np.float32)
            found: dict = {}
            got = estimated_target_ranks(
                queries, corpus, row_of_item[t_ids], index, exclude=exclude, info=found, progress=report
            )
            ranks[rows] = got
            pair_kinds[rows] = np.where(found["beyond"], "estimated", "counted")
            checked = check_ranks(queries, corpus, row_of_item[t_ids], got, exclude=exclude)
            if not check or checked["max_error"] > check["max_error"]:
                check = checked
            estimated = True
            recall = min(recall, float(index.recall if index.recall is not None else 0.0))
            notes.append(
                f"{mod}: {index.describe()}; exact ranks of a random {checked['checked']:,} queries: "
                f"{checked['differ']} differ within the top {checked['within']}"
            )
        done += len(rows)
    if info is not None:
        info.update(
            {
                "rank_kind": "estimated" if estimated else "exact",
                "search": "; ".join(notes),
                "recall": recall,
                "pair_kinds": pair_kinds,
            }
        )
        if check:
            info["check"] = check
    if progress is not None:
        progress(1.0)
    return ranks


def rank_info(run: Run, *, reverse: bool = False) -> dict:
    """How the last :func:`retrieval_ranks` of ``run`` in this process was computed (empty when none was):
    ``rank_kind`` ('exact', or 'estimated': counted in an approximate top-32 with exact re-scoring, estimated
    beyond it), ``search``, the measured ``recall`` and, when estimated, ``check`` (the comparison with exact
    ranks on a random sample of queries; ``max_error`` bounds the metrics' difference from exact, 95%).
    JSON-serialisable; the per-pair kinds are :func:`rank_kinds`."""
    info = run._cache.get(f"retrieval_rank_info_{'reverse' if reverse else 'forward'}", {})
    return {k: v for k, v in info.items() if k != "pair_kinds"}


def rank_kinds(run: Run, *, reverse: bool = False) -> np.ndarray | None:
    """(P,) per pair, how its rank of the last :func:`retrieval_ranks` was found: 'exact', 'counted' (in the
    approximate top, exactly re-scored) or 'estimated' (beyond it, from a sample); None before any."""
    info = run._cache.get(f"retrieval_rank_info_{'reverse' if reverse else 'forward'}", {})
    return info.get("pair_kinds")


def retrieval_ranks(
    run: Run,
    *,
    reverse: bool = False,
    max_block_bytes: int = 512 * 2**20,
    search: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Retrieval rank of every pair of ``run``, in ``run.pairs`` order (:func:`rank_info` says how).

    Parameters
    ----------
    run : Run
        The run folder.
    reverse : bool
        False: rank of the positive given the anchor. True: rank of the anchor given the positive.
    max_block_bytes : int
        Working memory of one block of the exhaustive search.
    search : {"auto", "exact", "ivf", "hnsw"}
        Exact ranks, or (above the rule's budget) estimated ones (see :func:`directional_ranks`).
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    numpy.ndarray
        (P,) int64 ranks in ``[1, n items of the target's modality]``.
    """
    anchors = run.pairs["anchor_id"].to_numpy(np.int64)
    positives = run.pairs["positive_id"].to_numpy(np.int64)
    queries, targets = (positives, anchors) if reverse else (anchors, positives)
    info: dict = {}
    ranks = directional_ranks(
        run.embeddings,
        run.items["modality"].to_numpy(),
        queries,
        targets,
        max_block_bytes=max_block_bytes,
        search=search,
        info=info,
        run=run,
        progress=progress,
    )
    run._cache[f"retrieval_rank_info_{'reverse' if reverse else 'forward'}"] = info
    return ranks


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of pairs whose target ranks within the top ``k`` (NaN when there are no pairs)."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks <= k)) if len(ranks) else float("nan")


def mrr_at_k(ranks: np.ndarray, k: int = MRR_K) -> float:
    """Mean reciprocal rank, a rank beyond ``k`` counting 0 (NaN when there are no pairs)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if not len(ranks):
        return float("nan")
    return float(np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0)))


def retrieval_metrics(ranks: np.ndarray) -> dict[str, float]:
    """``recall_at_1``, ``recall_at_5``, ``recall_at_10`` and ``mrr_at_10`` of a rank vector (P,)."""
    out = {f"recall_at_{k}": recall_at_k(ranks, k) for k in RECALL_KS}
    out[f"mrr_at_{MRR_K}"] = mrr_at_k(ranks, MRR_K)
    return out


def recall_curve(ranks: np.ndarray, *, max_k: int = 50) -> np.ndarray:
    """(max_k,) recall@k for k = 1 .. max_k."""
    ranks = np.asarray(ranks)
    if not len(ranks):
        return np.full(max_k, np.nan)
    counts = np.bincount(np.clip(ranks, 1, max_k + 1) - 1, minlength=max_k + 1)[:max_k]
    return np.cumsum(counts) / len(ranks)

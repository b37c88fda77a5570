"""The one rule that picks exact or approximate neighbour search, from the work a search has to do.

Exact inner-product top-k of Q queries over a corpus of M rows of dimension D costs ``Q * M * D``
multiply-adds (one BLAS matrix product, faiss ``IndexFlatIP``). ``kind="auto"`` everywhere (false-negative
mining and ranks, the map's kNN graph, ...) asks :func:`choose_kind`:

- **exact** while ``Q * M * D <= EXACT_BUDGET`` (5e9 multiply-adds: about a second on two cores; measured on
  the map: 8.8k x 8.8k x 64 and 3.6k x 3.6k x 384 exact, while 20k x 20k x 64 took 3 s exact and 0.7 s through
  IVF);
- exact also when the corpus is small (``M < MIN_APPROX_CORPUS``: an IVF index over a few thousand rows has
  so few cells that each probe scans a large share of the corpus) or the queries are few
  (``Q < MIN_APPROX_QUERIES``: measuring the recall of an approximate index costs an exact search of a
  ``RECALL_SAMPLE``-query sample, so a small batch is cheaper searched exactly);
- **approximate** otherwise: an IVF index (:func:`analysis.search.index.build_index`; ``nlist`` the power of two
  at or below ``4 sqrt(M)``, :func:`analysis.search.index.default_nlist`) whose probe depth is doubled from 1
  until its recall@k, measured against exact search on a sample of queries, reaches the target
  (0.95); the measured recall travels with the result (``SearchIndex.recall``, ``describe()``). An IVF
  index that needs more than 1/8 of its cells probed (unclustered data) falls back to exact search.

- **IVF-PQ** (:mod:`analysis.search.ivfpq`) whatever the work when the corpus would not fit in memory: its
  float32 rows (``M * D * 4`` bytes) take more than ``MEMORY_FRACTION`` (1/4) of the available memory
  (:func:`corpus_fits_memory`; the other paths hold the corpus, a copy of it in the index and the queries at
  once). Its codes stay in memory, the rows on disk (the run's memory-mapped shards), re-read to re-rank.

``kind="exact"`` (or ``"ivf"`` / ``"hnsw"`` / ``"ivfpq"``) forces a path. This module imports nothing heavy, so argument
parsers and pages can read ``INDEX_KINDS`` and the rule without loading faiss.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from analysis.choices import INDEX_KINDS as INDEX_KINDS
from analysis.errors import NegScopeError

#: Multiply-adds (queries x corpus x dims) up to which ``auto`` searches exactly.
EXACT_BUDGET = 5e9
#: Corpus rows below which ``auto`` always searches exactly.
MIN_APPROX_CORPUS = 4096
#: Queries of the sample an approximate index's recall is measured on (exactly).
RECALL_SAMPLE = 500
#: Queries below which ``auto`` always searches exactly (the recall sample would cost a large share).
MIN_APPROX_QUERIES = 4 * RECALL_SAMPLE


#: Share of the available memory a float32 corpus may take before ``auto`` switches to IVF-PQ.
MEMORY_FRACTION = 0.25


def available_memory() -> float:
    """Bytes of memory available to this process now: ``MemAvailable`` of ``/proc/meminfo``, lowered to the
    cgroup's (container's) ``memory.max - memory.current`` when that is set; infinity when neither is known."""
    found = float("inf")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = float(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found = min(found, float(limit) - used)
    except (OSError, ValueError):
        pass
    return found


def corpus_fits_memory(
    n_corpus: int, dim: int, *, available: float | None = None, fraction: float = MEMORY_FRACTION
) -> bool:
    """Whether a float32 corpus of ``n_corpus`` x ``dim`` takes at most ``fraction`` of ``available`` bytes.

    Parameters
    ----------
    n_corpus, dim : int
        M and D.
    available : float, optional
        Bytes available (default :func:`available_memory`).
    fraction : float
        Share of them the corpus may take (default ``MEMORY_FRACTION``).
    """
    available = available_memory() if available is None else float(available)
    return 4.0 * float(n_corpus) * float(dim) <= fraction * available


def exact_work(n_queries: int, n_corpus: int, dim: int) -> float:
    """Multiply-adds of an exact search: ``n_queries * n_corpus * dim``."""
    return float(n_queries) * float(n_corpus) * float(dim)


def choose_kind(
    n_queries: int, n_corpus: int, dim: int, *, budget: float = EXACT_BUDGET, memory: float | None = None
) -> str:
    """``"exact"``, ``"ivf"`` or ``"ivfpq"`` for a search of ``n_queries`` queries over ``n_corpus`` rows of
    ``dim`` dims.

    Parameters
    ----------
    n_queries, n_corpus, dim : int
        Q, M and D of the search.
    budget : float
        Multiply-adds up to which the search is exact (default ``EXACT_BUDGET``).
    memory : float, optional
        Bytes of memory available (default :func:`available_memory`, now).

    Returns
    -------
    str
        ``"ivfpq"`` when ``M >= MIN_APPROX_CORPUS`` and the float32 corpus does not fit in memory
        (:func:`corpus_fits_memory`); else ``"exact"`` when ``Q * M * D <= budget``, ``M < MIN_APPROX_CORPUS``
        or ``Q < MIN_APPROX_QUERIES``; else ``"ivf"``.
    """
    if min(n_queries, n_corpus, dim) < 0 or not budget >= 0:
        raise NegScopeError(f"a search needs non-negative sizes and budget, got {n_queries}, {n_corpus}, {dim}")
    if n_corpus >= MIN_APPROX_CORPUS and not corpus_fits_memory(n_corpus, dim, available=memory):
        return "ivfpq"
    small = n_corpus < MIN_APPROX_CORPUS or n_queries < MIN_APPROX_QUERIES
    return "exact" if small or exact_work(n_queries, n_corpus, dim) <= budget else "ivf"


def resolve_kind(kind: str, n_queries: int, n_corpus: int, dim: int, *, budget: float = EXACT_BUDGET) -> str:
    """``kind`` itself when it names a search, else (``"auto"``) :func:`choose_kind`; unknown kinds raise."""
    if kind not in INDEX_KINDS:
        raise NegScopeError(f"unknown neighbour search {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    return choose_kind(n_queries, n_corpus, dim, budget=budget) if kind == "auto" else kind

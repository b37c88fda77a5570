"""Nearest-neighbour search by inner product (cosine on L2-normalised rows), through faiss.

- ``rule``: the one rule that picks exact or approximate search from the work (queries x corpus x dims) and
  its budget; every analysis that searches with ``kind="auto"`` goes through it (no heavy imports).
- ``exact``: exact kNN, counts above a threshold, exact ranks of a target, kNN graphs.
- ``index``: ``build_index``, the exact, IVF or HNSW index the rule (or the caller) picks; an approximate index
  has its recall measured against exact search on a sample, and reports it.
"""

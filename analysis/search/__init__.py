"""Nearest-neighbour search by inner product (cosine on L2-normalised rows), through faiss.

- ``exact``: exact kNN, counts above a threshold, exact ranks of a target, kNN graphs.
- ``index``: the one rule that picks exact or approximate search (IVF / HNSW) and measures the recall of an
  approximate index against exact search on a sample.
"""

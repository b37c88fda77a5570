"""Comparing checkpoints: two or more runs over the same dataset content, side by side.

- :mod:`analysis.compare.align` lines the runs up by content (item keys, pair ids, listed negatives) and
  refuses runs whose datasets differ;
- :mod:`analysis.compare.deltas` computes each run's metrics with the library's own functions (scores,
  retrieval, temperature, modality gap, geometry, optionally the detectors) and their differences from the
  first run, which is also the trajectory along training when the runs are ordered epochs;
- :mod:`analysis.compare.pairs` builds the per-pair table (``pos_sim``, margin, ranks of every run), the
  negatives that became hardest, and the false negatives across checkpoints.
"""

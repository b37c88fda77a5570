"""Numbers about what a model does with pairs and negatives.

- ``scores``: the per-pair table (pos_sim, hardest negative, margin, ranks) and its summary (AUROC, ...).
- ``retrieval``: retrieval ranks both ways, Recall@k and MRR.
- ``temperature``: InfoNCE against tau, gradient shares, loss variants.
- ``teaching``: the 2-D toy of the Teaching page.
- ``geometry``: alignment, uniformity, tolerance.
- ``modality_gap``: the gap between image and text embeddings and the shift experiment.
- ``mining_filter``: which listed negatives a hard-negative mining rule set would keep.
"""

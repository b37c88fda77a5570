"""The fixed choices of NegScope's options: candidate sources, search kinds, directions, detectors, methods.

Plain tuples and numbers with no imports, so that the CLI's argument parsers (``python -m analysis --help``)
and the pages can list them without loading numpy, pandas, torch or faiss. The module that implements each
option imports its tuple from here, so there is one definition of each.
"""

from __future__ import annotations

#: Where a negative of a pair comes from (``negatives.parquet``'s ``source``; :mod:`analysis.runs.folder`).
NEGATIVE_SOURCES = ("given", "in_batch", "mined")
#: Neighbour search: ``auto`` picks exact or approximate from the work (:mod:`analysis.search.rule`);
#: ``ivfpq`` (chosen by ``auto`` for a corpus beyond memory) re-ranks from the shards (:mod:`analysis.search.ivfpq`).
INDEX_KINDS = ("auto", "exact", "ivf", "hnsw", "ivfpq")
#: False-negative evidence weight presets and learned-queue orders (:mod:`analysis.detectors.false_negatives`,
#: :mod:`analysis.detectors.fn_learning`).
FN_WEIGHT_PRESETS = ("paraphrase", "one_to_many")
FN_QUEUE_ORDERS = ("score", "uncertainty")
#: Which side queries in the InfoNCE loss (:mod:`analysis.metrics.temperature`).
DIRECTIONS = ("forward", "reverse", "symmetric")
#: The label-noise detectors (:mod:`analysis.detectors.label_noise`).
LABEL_NOISE_KINDS = ("mismatched_pair", "label", "duplicate")
#: Which items the wrong-label detector examines, and its cross-validated probe (:mod:`analysis.detectors.labels`).
LABEL_EXAMINE = ("anchors", "positives", "all")
LABEL_METHODS = ("logreg", "knn")
#: Cosine at or above which two anchors are near duplicates (:mod:`analysis.detectors.duplicates`).
DUPLICATE_THRESHOLD = 0.98
#: Shift sizes of the modality-gap experiment: -1 to 2 in steps of 0.25 (:mod:`analysis.metrics.modality_gap`).
GAP_LAMBDAS = tuple(x / 4 for x in range(-4, 9))
#: The shift experiment's seeded samples on a large run: pairs (recall@1, loss) and items (centroid distances).
GAP_MAX_SHIFT_PAIRS = 1_024  # <= modality_gap.RECALL_SAMPLE_PAIRS: recall@1, loss and accuracy on the same pairs
GAP_MAX_SHIFT_ITEMS = 250_000  # float64 rows kept once: 2 GB at 1,024 dims
#: 2-D map projections and UMAP start layouts (:mod:`analysis.maps.embedding_map`).
MAP_METHODS = ("umap", "pca")
INIT_METHODS = ("pca", "spectral")
#: Embedding precisions (:mod:`analysis.embedding.encoders`).
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

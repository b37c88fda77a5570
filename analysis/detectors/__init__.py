"""Detectors: candidates for review, all in one result shape (ids, ``score``, ``flagged``, ``reason``).

- ``false_negatives``: listed and mined negatives that are probably positives.
- ``mismatch``: pairs whose positive does not belong to the anchor.
- ``labels``: wrong class labels (out-of-sample probabilities + cleanlab).
- ``duplicates``: near-duplicate anchors.
- ``label_noise``: the three label-noise detectors in one flag table.
"""

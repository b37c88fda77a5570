"""Run folders and the workspace: the on-disk contract every analysis reads.

- ``folder``: ``load_run`` / ``write_run`` and the :class:`Run` object (items, pairs, negatives, embeddings).
- ``workspace``: where runs and the review database live (``NEGSCOPE_HOME``), the bundled sample.
- ``candidates``: each pair's positive and listed negatives as a padded (P, 1 + K) matrix of similarities.
- ``summary``: the counts the home page and ``python -m analysis summary`` show.
"""

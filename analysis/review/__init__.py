"""Review decisions and what they do to the training data: the one home for both.

- ``store``: the append-only SQLite log of annotators' decisions (WAL mode), keyed by content.
- ``rows``: decision rows for a run's items (content keys, the content-only dataset hash).
- ``decisions``: the one reader: the current decision per key under an adjudication rule
  (latest / majority / adjudicator / unanimous), and each annotator's own decisions.
- ``corrected``: the one corrected-dataset builder (what every decision kind does), with its counts.
- ``agreement``, ``assignment``: agreement between annotators, and sharing a queue between them (built on
  ``decisions``).
- ``export``: the writers (sentence-transformers table, exclusions JSONL, BEIR folder, audit log) and the
  safe export folder (never inside the dataset's folder, never over existing files).
"""

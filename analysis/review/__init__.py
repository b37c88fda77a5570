"""Review decisions and what they do to the training data.

- ``store``: the append-only SQLite log of annotators' decisions (WAL mode).
- ``export``: corrected training data written as sentence-transformers tables, BEIR folders, the audit log.
"""

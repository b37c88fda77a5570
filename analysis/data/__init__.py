"""Reading datasets: file formats, image cells, the items / pairs / negatives tables, planted truth, and the
allowed folders (typed paths and uploads).

- ``load``: ``load_dataset(path)``, the entry point (CSV / JSONL / Parquet / BEIR / Hugging Face folders).
- ``readers``: one reader per file format, each giving a raw table of cells.
- ``tables``: raw cells -> deduplicated items, pairs, given and in-batch negatives.
- ``images``: which cells are image paths, their safety and content keys.
- ``truth``: the planted ground truth of the bundled sample, joined to a run's ids.
- ``paths``: every path that comes from a user stays inside the allowed folders; uploads and zips.
"""

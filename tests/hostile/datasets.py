"""Hostile datasets, written into a folder the test gives: files that lead outside the dataset's folder,
and labels / captions / ids that hold Markdown and HTML."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.hostile.strings import MARKUP


def secret_table(folder: Path) -> Path:
    """A valid pairs table outside every dataset folder (what a confinement bypass would read)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "secret.csv"
    path.write_text("anchor,positive\nsecret query,secret document\n", encoding="utf-8")
    return path


def symlinked_table(folder: Path, target: Path) -> Path:
    """A dataset folder whose only table, ``pairs.csv``, is a symbolic link to ``target``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.csv").symlink_to(target)
    return folder


def symlinked_beir(folder: Path, outside: Path) -> Path:
    """A BEIR folder whose ``corpus.jsonl`` is a symbolic link to a file outside it."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_text(json.dumps({"_id": "d1", "text": "secret document"}) + "\n", encoding="utf-8")
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "query"}) + "\n", encoding="utf-8")
    (folder / "corpus.jsonl").symlink_to(outside)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    return folder


def escaping_hf(folder: Path, outside: Path) -> Path:
    """A saved Hugging Face dataset whose ``state.json`` names an Arrow file in ``outside`` via '..'."""
    import datasets

    datasets.Dataset.from_dict({"anchor": ["secret query"], "positive": ["secret document"]}).save_to_disk(
        str(outside)
    )
    inner = datasets.Dataset.from_dict({"anchor": ["q"], "positive": ["d"]})
    inner.save_to_disk(str(folder))
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text(encoding="utf-8"))
    arrow = next(outside.glob("*.arrow"))
    for entry in state["_data_files"]:
        entry["filename"] = f"../{outside.name}/{arrow.name}"
    state_path.write_text(json.dumps(state), encoding="utf-8")
    for old in folder.glob("*.arrow"):
        old.unlink()
    return folder


def markup_dataset(folder: Path, *, n_pairs: int = 24) -> Path:
    """An image -> caption dataset whose captions, labels and ids hold Markdown and HTML (:data:`MARKUP`).

    Images are 8x8 grayscale PNGs (so the bundled digits model can embed them); every caption holds every
    markup string, and the three labels hold the image Markdown, the HTML image and the HTML link.
    """
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_pairs):
        pixels = (rng.random((8, 8)) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / "images" / f"{i:02d}.png")
        rows.append(
            {
                "id": f"<b>id{i}</b>" if i % 2 else f"[id{i}](http://198.51.100.7:9/id)",
                "anchor": f"images/{i:02d}.png",
                "positive": f"digit {i % 10} " + " ".join(MARKUP),
                "negative": f"digit {(i + 1) % 10} " + " ".join(reversed(MARKUP)),
                "label": f"{MARKUP[i % 3]} class {i % 3}",
            }
        )
    with (folder / "pairs.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return folder / "pairs.jsonl"

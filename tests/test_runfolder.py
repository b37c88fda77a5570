"""The run folder round-trips exactly, and a broken one is refused with a readable RunError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import RunError
from analysis.runs.folder import load_run, write_run


def _tables(n: int = 5):
    items = pd.DataFrame(
        {
            "item_id": np.arange(n),
            "modality": ["image"] * 2 + ["text"] * (n - 2),
            "content": ["a.png", "../evil.png"] + [f"t{i}" for i in range(n - 2)],
            "label": pd.array(["1", None] + ["2"] * (n - 2), dtype="string"),
        }
    )
    pairs = pd.DataFrame({"pair_id": [10, 11], "anchor_id": [0, 1], "positive_id": [2, 3]})
    negs = pd.DataFrame({"pair_id": [10, 11], "negative_id": [4, 4], "source": ["given", "in_batch"]})
    return items, pairs, negs


def test_round_trip_normalises_and_keeps_tables(tmp_path: Path) -> None:
    items, pairs, negs = _tables()
    emb = np.random.default_rng(0).normal(size=(5, 7)) * 3
    write_run(
        tmp_path / "r",
        manifest={"dataset_root": str(tmp_path)},
        items=items,
        embeddings=emb,
        pairs=pairs,
        negatives=negs,
    )
    run = load_run(tmp_path / "r")
    assert run.embeddings.dtype == np.float32 and run.embeddings.shape == (5, 7)
    np.testing.assert_allclose(np.linalg.norm(run.embeddings, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(run.embeddings, emb / np.linalg.norm(emb, axis=1, keepdims=True), atol=1e-6)
    pd.testing.assert_frame_equal(run.pairs, pairs)
    pd.testing.assert_frame_equal(run.negatives, negs)
    assert list(run.items.columns[:4]) == ["item_id", "modality", "content", "label"]
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["dim"] == 7 and manifest["n_items"] == 5
    assert run.anchor_modality() == "image" and run.positive_modality() == "text"


def test_image_path_stays_inside_dataset_folder(tmp_path: Path) -> None:
    items, pairs, negs = _tables()
    write_run(
        tmp_path / "r",
        manifest={"dataset_root": str(tmp_path / "data")},
        items=items,
        embeddings=np.eye(5, 3) + 0.1,
        pairs=pairs,
        negatives=negs,
    )
    run = load_run(tmp_path / "r")
    assert run.image_path(0) == (tmp_path / "data" / "a.png").resolve()
    with pytest.raises(RunError, match="leaves the dataset folder"):
        run.image_path(1)
    with pytest.raises(RunError, match="not an image"):
        run.image_path(2)


def test_missing_manifest_and_bad_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no manifest.json"):
        load_run(tmp_path)
    items, pairs, negs = _tables()
    with pytest.raises(RunError, match="expected"):
        write_run(tmp_path / "r", manifest={}, items=items, embeddings=np.ones((4, 3)), pairs=pairs, negatives=negs)
    write_run(tmp_path / "ok", manifest={}, items=items, embeddings=np.ones((5, 3)), pairs=pairs, negatives=negs)
    np.save(tmp_path / "ok" / "embeddings.npy", np.ones((2, 3), dtype=np.float32))
    with pytest.raises(RunError, match="shape"):
        load_run(tmp_path / "ok")
    pairs.drop(columns="positive_id").to_parquet(tmp_path / "ok" / "pairs.parquet")
    with pytest.raises(RunError, match="lacks columns"):
        load_run(tmp_path / "ok")

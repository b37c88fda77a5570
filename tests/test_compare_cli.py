"""``python -m analysis compare``: the JSON object, the per-pair CSV, and a refusal as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.compare.deltas import METRIC_KEYS
from analysis.runs.folder import load_run, write_run
from tests.synthetic import make_synthetic_run


def _other_checkpoint(tmp_path: Path):
    a, _ = make_synthetic_run(tmp_path / "a", n_pairs=60, seed=4)
    rng = np.random.default_rng(1)
    emb = a.embeddings + 0.3 * rng.normal(size=a.embeddings.shape).astype(np.float32)
    write_run(tmp_path / "b", manifest=a.manifest, items=a.items, embeddings=emb, pairs=a.pairs, negatives=a.negatives)
    return a, load_run(tmp_path / "b")


def test_json_and_pairs_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _other_checkpoint(tmp_path)
    out = tmp_path / "out" / "pairs.csv"
    code = main(["compare", str(a.path), str(b.path), "--json", "--pairs-out", str(out), "--tau", "0.05"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert {"baseline", "common_tau", "items", "pairs", "runs", "deltas"} <= set(data)
    assert data["common_tau"] == 0.05 and data["pairs"] == 60 and data["items"] == 120
    assert [r["label"] for r in data["runs"]] == ["A", "B"]
    for entry in data["runs"]:
        assert set(METRIC_KEYS) <= set(entry)
        assert {"run_id", "path", "dim", "checkpoint"} <= set(entry)
    (delta,) = data["deltas"]
    assert delta["label"] == "B" and delta["baseline"] == "A"
    for key in ("auroc", "recall_at_1", "loss_common_tau", "gap", "uniformity"):
        assert delta[key] == pytest.approx(data["runs"][1][key] - data["runs"][0][key], abs=1e-12)
    table = pd.read_csv(out)
    assert len(table) == 60
    assert {"pair_id", "pos_sim_A", "pos_sim_B", "margin_A", "margin_B", "margin_delta_B", "rank_A"} <= set(table)
    pos_b = np.sum(b.embeddings[b.pairs["anchor_id"]].astype(np.float64) * b.embeddings[b.pairs["positive_id"]], axis=1)
    np.testing.assert_allclose(table["pos_sim_B"], pos_b, atol=1e-6)


def test_labels_name_the_columns_and_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _other_checkpoint(tmp_path)
    out = tmp_path / "p.csv"
    assert main(["compare", str(a.path), str(b.path), "--labels", "base", "tuned", "--pairs-out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "auroc" in text and "change vs base" in text
    assert "margin_delta_tuned" in pd.read_csv(out).columns


def test_differing_datasets_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = make_synthetic_run(tmp_path / "a", n_pairs=30, seed=1)
    b, _ = make_synthetic_run(tmp_path / "b", n_pairs=20, seed=1)
    assert main(["compare", str(a.path), str(b.path), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the runs are over different datasets") and "\n" not in err
    assert main(["compare", str(a.path)]) == 2

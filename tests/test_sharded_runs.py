"""Sharded run folders: written part by part, opened memory-mapped by ``load_run`` behind the same ``Run``
interface, validated like the unsharded form, and giving the same analysis results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.runs.shards as shards
from analysis.errors import RunError
from analysis.runs.folder import Run, load_run
from analysis.runs.shards import ShardWriter, write_sharded_run
from tests.synthetic import make_synthetic_run


def _shard(run: Run, path: Path, *, shard_rows: int) -> Run:
    """``run`` written again in the sharded form, and loaded."""
    manifest = {k: v for k, v in run.manifest.items() if k not in ("dim", "n_items")}
    write_sharded_run(
        path,
        manifest=manifest,
        items=run.items,
        embeddings=np.asarray(run.embeddings),
        pairs=run.pairs,
        negatives=run.negatives,
        shard_rows=shard_rows,
    )
    return load_run(path)


@pytest.fixture
def plain(tmp_path: Path) -> Run:
    return make_synthetic_run(tmp_path / "plain", n_pairs=150, k=3, seed=3)[0]


def test_sharded_layout_and_manifest(plain: Run, tmp_path: Path) -> None:
    run = _shard(plain, tmp_path / "sharded", shard_rows=70)
    n = len(plain.items)
    listed = run.manifest["shards"]
    expected_parts = -(-n // 70)
    assert listed["rows"] == [min(70, n - 70 * i) for i in range(expected_parts)]
    assert listed["embeddings"][0] == "embeddings/part-00000.npy"
    assert len(listed["items"]) == expected_parts
    for name in (*listed["embeddings"], *listed["items"], *listed["pairs"], *listed["negatives"]):
        assert (tmp_path / "sharded" / name).is_file()
    assert not (tmp_path / "sharded" / "embeddings.npy").exists()
    assert run.sharded and not plain.sharded
    assert run.manifest["n_items"] == n and run.manifest["dim"] == plain.dim
    # each items part holds exactly the item ids of its embedding part
    start = 0
    for items_name, rows in zip(listed["items"], listed["rows"], strict=True):
        part = pd.read_parquet(tmp_path / "sharded" / items_name)
        assert part["item_id"].tolist() == list(range(start, start + rows))
        start += rows


def test_sharded_run_equals_the_unsharded_one(plain: Run, tmp_path: Path) -> None:
    run = _shard(plain, tmp_path / "sharded", shard_rows=64)
    np.testing.assert_array_equal(run.embeddings, plain.embeddings)
    assert run.embeddings.dtype == np.float32
    for name in ("items", "pairs", "negatives"):
        pd.testing.assert_frame_equal(getattr(run, name), getattr(plain, name))
    assert run.content_hash == plain.content_hash
    assert run.logit_scale == plain.logit_scale


def test_embedding_parts_stream_the_same_rows(plain: Run, tmp_path: Path) -> None:
    run = _shard(plain, tmp_path / "sharded", shard_rows=64)
    blocks = list(run.embedding_parts())
    assert [start for start, _ in blocks] == list(range(0, len(plain.items), 64))
    assert all(isinstance(block, np.memmap) for _, block in blocks)
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), plain.embeddings)
    assert [s for s, _ in plain.embedding_parts()] == [0]


def test_one_part_is_memory_mapped(plain: Run, tmp_path: Path) -> None:
    run = _shard(plain, tmp_path / "sharded", shard_rows=10**6)
    assert isinstance(run.embeddings, np.memmap)
    np.testing.assert_array_equal(run.embeddings, plain.embeddings)


def test_large_parts_are_joined_once_into_a_memory_map(
    plain: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "JOIN_IN_MEMORY_BYTES", 0)
    run = _shard(plain, tmp_path / "sharded", shard_rows=50)
    joined = tmp_path / "sharded" / "embeddings" / "joined.npy"
    assert joined.is_file()
    assert isinstance(run.embeddings, np.memmap)
    np.testing.assert_array_equal(run.embeddings, plain.embeddings)
    mtime = joined.stat().st_mtime_ns
    np.testing.assert_array_equal(load_run(tmp_path / "sharded").embeddings, plain.embeddings)
    assert joined.stat().st_mtime_ns == mtime  # reused, not rewritten


@pytest.mark.slow
def test_sharded_runs_give_the_same_analysis_results(tmp_path: Path) -> None:
    from analysis.metrics.scores import compute_scores
    from analysis.metrics.temperature import direction_sweep
    from analysis.runs.summary import run_summary

    plain = make_synthetic_run(tmp_path / "plain", n_pairs=60, k=3, seed=4)[0]
    run = _shard(plain, tmp_path / "sharded", shard_rows=25)
    a, b = compute_scores(plain), compute_scores(run)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    assert a.summary == b.summary
    taus = [0.02, 0.05, 0.1, 0.5]
    pd.testing.assert_frame_equal(direction_sweep(plain, taus), direction_sweep(run, taus))
    sa, sb = run_summary(plain), run_summary(run)
    assert sa.pop("run") == "plain" and sb.pop("run") == "sharded"
    assert sa == sb


@pytest.mark.slow
def test_sharded_runs_give_the_same_false_negatives(plain: Run, tmp_path: Path) -> None:
    from analysis.detectors.false_negatives import find_false_negatives

    run = _shard(plain, tmp_path / "sharded", shard_rows=64)
    fa, fb = find_false_negatives(plain), find_false_negatives(run)
    assert len(fa) > 0
    pd.testing.assert_frame_equal(fa, fb)


@pytest.mark.slow
def test_sharded_sample_run_gives_the_same_false_negatives(sample_run: Run, tmp_path: Path) -> None:
    from analysis.detectors.false_negatives import find_false_negatives
    from analysis.metrics.scores import compute_scores

    run = _shard(sample_run, tmp_path / "sharded", shard_rows=500)
    assert len(run.manifest["shards"]["embeddings"]) == -(-len(sample_run.items) // 500)
    np.testing.assert_array_equal(run.embeddings, sample_run.embeddings)
    assert compute_scores(run).summary == compute_scores(sample_run).summary
    pd.testing.assert_frame_equal(find_false_negatives(run), find_false_negatives(sample_run))


def test_writer_takes_rows_in_any_order_and_writes_parts_when_complete(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(23, 5))
    writer = ShardWriter(tmp_path / "w", n_items=23, shard_rows=10)
    order = rng.permutation(23)
    for chunk in np.array_split(order, 6):
        writer.add(chunk, emb[chunk])
    assert writer.done == 23
    reference = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    got = np.concatenate([np.load(tmp_path / "w" / shards.part_name("embeddings", i)) for i in range(3)])
    np.testing.assert_allclose(got, reference, atol=1e-6)


def test_writer_refuses_missing_duplicate_and_bad_rows(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "w", n_items=5, shard_rows=3)
    writer.add(np.array([0, 1]), np.ones((2, 4)))
    with pytest.raises(RunError, match="given twice"):
        writer.add(np.array([1]), np.ones((1, 4)))
    with pytest.raises(RunError, match="NaN"):
        writer.add(np.array([2]), np.full((1, 4), np.nan))
    with pytest.raises(RunError, match="all zeros"):
        writer.add(np.array([3]), np.zeros((1, 4)))
    with pytest.raises(RunError, match="0..4"):
        writer.add(np.array([5]), np.ones((1, 4)))
    tables = pd.DataFrame({"item_id": range(5), "modality": "text", "content": list("abcde"), "label": None})
    pairs = pd.DataFrame({"pair_id": [0], "anchor_id": [0], "positive_id": [1]})
    negatives = pd.DataFrame({"pair_id": [0], "negative_id": [2], "source": ["given"]})
    with pytest.raises(RunError, match="incomplete"):
        writer.finish(manifest={}, items=tables, pairs=pairs, negatives=negatives)


def _edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_load_run_refuses_a_shard_outside_the_folder(plain: Run, tmp_path: Path) -> None:
    _shard(plain, tmp_path / "sharded", shard_rows=64)
    np.save(tmp_path / "outside.npy", np.asarray(plain.embeddings[:64]))

    def escape(m: dict) -> None:
        m["shards"]["embeddings"][0] = "../outside.npy"

    _edit_manifest(tmp_path / "sharded", escape)
    with pytest.raises(RunError, match="leaves the run folder"):
        load_run(tmp_path / "sharded")


def test_load_run_refuses_parts_that_disagree_with_the_manifest(plain: Run, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    _shard(plain, folder, shard_rows=64)

    def wrong_rows(m: dict) -> None:
        m["shards"]["rows"][0] = 63

    _edit_manifest(folder, wrong_rows)
    with pytest.raises(RunError, match="manifest lists 63"):
        load_run(folder)

    def drop_items_part(m: dict) -> None:
        m["shards"]["rows"][0] = 64
        m["shards"]["items"] = m["shards"]["items"][1:]

    _edit_manifest(folder, drop_items_part)
    with pytest.raises(RunError):  # items no longer 0..N-1 / fewer items than embeddings
        load_run(folder)

    def not_a_list(m: dict) -> None:
        m["shards"]["embeddings"] = "embeddings/part-00000.npy"

    _edit_manifest(folder, not_a_list)
    with pytest.raises(RunError, match="non-empty list"):
        load_run(folder)


def test_load_run_checks_the_norms_of_every_part(plain: Run, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    _shard(plain, folder, shard_rows=64)
    part = np.load(folder / "embeddings" / "part-00001.npy")
    part[5] *= 2.0
    np.save(folder / "embeddings" / "part-00001.npy", part)
    with pytest.raises(RunError, match=r"row 69 \(item 69\).*L2-normalised"):
        load_run(folder)


@pytest.mark.slow
def test_score_page_shows_the_same_figures_for_a_sharded_run(tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.synthetic import write_image_files
    from ui.state import RUN_KEY

    page = str(Path(__file__).resolve().parent.parent / "pages" / "1_Score_Distributions.py")
    plain = make_synthetic_run(tmp_path / "plain", n_pairs=80, k=3, seed=5)[0]
    write_image_files(plain)
    sharded = _shard(plain, tmp_path / "sharded", shard_rows=40)

    def cards(run: Run) -> dict[str, str]:
        at = AppTest.from_file(page, default_timeout=120)
        at.session_state[RUN_KEY] = str(run.path)
        at.run()
        assert not at.exception, at.exception
        return {m.label: m.value for m in at.metric}

    shown = cards(sharded)
    assert "AUROC" in shown and shown["Pairs"] == "80"
    assert shown == cards(plain)

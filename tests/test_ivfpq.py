"""IVF-PQ over a sharded run (``analysis.search.ivfpq``): trained on a sample of every shard, filled shard by
shard, re-ranked exactly from the memory-mapped shards; its recall measured against exact search and reported;
chosen by ``auto`` only when the corpus would not fit in memory (``analysis.search.rule``), or forced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.search.rule as rule
from analysis.runs.folder import Run, load_run
from analysis.runs.shards import write_sharded_run
from analysis.search.index import build_index
from analysis.search.ivfpq import IVFPQIndex, PartedCorpus, build_ivfpq_index, exact_search
from analysis.search.rule import MIN_APPROX_CORPUS, choose_kind, corpus_fits_memory, resolve_kind
from tests.synthetic import make_synthetic_run


def _clustered(n: int, d: int, *, seed: int, centres: int = 60, noise: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(99).normal(size=(centres, d))
    x = c[rng.integers(0, centres, n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _sharded_text_run(path: Path, emb: np.ndarray, *, shard_rows: int) -> Run:
    """A text-only sharded run over ``emb``: pair i = (item 2i, item 2i+1), one given negative each."""
    n = len(emb)
    items = pd.DataFrame(
        {"item_id": np.arange(n), "modality": "text", "content": [f"text {i}" for i in range(n)], "label": None}
    )
    p = n // 2
    pairs = pd.DataFrame({"pair_id": np.arange(p), "anchor_id": 2 * np.arange(p), "positive_id": 2 * np.arange(p) + 1})
    negatives = pd.DataFrame({"pair_id": np.arange(p), "negative_id": (2 * np.arange(p) + 3) % n, "source": "given"})
    manifest = {"dataset_hash": "ivfpq-test", "model_kind": "synthetic", "logit_scale": None, "device": "cpu"}
    write_sharded_run(
        path, manifest=manifest, items=items, embeddings=emb, pairs=pairs, negatives=negatives, shard_rows=shard_rows
    )
    return load_run(path)


def _reference_top10(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """float64 exact top-10 corpus rows per query, ties by the smaller row."""
    sims = queries.astype(np.float64) @ corpus.astype(np.float64).T
    return np.argsort(-sims, axis=1, kind="stable")[:, :10]


def test_parted_corpus_reads_a_subset_part_by_part(tmp_path: Path) -> None:
    emb = _clustered(700, 12, seed=0)
    run = _sharded_text_run(tmp_path / "run", emb, shard_rows=150)
    rows = np.flatnonzero(np.arange(700) % 3 != 1)  # a subset that crosses every part boundary
    corpus = PartedCorpus.from_run(run, rows=rows)
    assert len(corpus.parts) == 5 and all(isinstance(p, np.memmap) for p in corpus.parts)
    assert corpus.n == len(rows) and corpus.dim == 12
    streamed = list(corpus.blocks(block_rows=40))
    np.testing.assert_array_equal(np.concatenate([b for _, b in streamed]), emb[rows])
    assert [first for first, _ in streamed][:3] == [0, 40, 80]  # corpus positions
    pos = np.random.default_rng(1).integers(0, len(rows), 300)
    np.testing.assert_array_equal(corpus.gather(pos), emb[rows[pos]])
    sample = corpus.sample(200, seed=0)
    found = {int(np.flatnonzero((emb == r).all(axis=1))[0]) for r in sample}
    assert len(found) == 200 and found <= set(rows.tolist())
    assert {i // 150 for i in found} == {0, 1, 2, 3, 4}  # drawn from every shard


def test_streamed_exact_search_equals_the_float64_reference() -> None:
    emb = _clustered(900, 16, seed=2)
    queries = _clustered(50, 16, seed=3)
    corpus = PartedCorpus.from_parts([(0, emb[:400]), (400, emb[400:])])
    sims, ids = exact_search(corpus, queries, 10, block_rows=130)
    np.testing.assert_array_equal(ids, _reference_top10(queries, emb))
    ref = np.take_along_axis(queries.astype(np.float64) @ emb.astype(np.float64).T, ids, 1)
    np.testing.assert_allclose(sims, ref, atol=1e-5)


@pytest.mark.slow
def test_ivfpq_on_a_sharded_run_finds_the_exact_top10_after_reranking(tmp_path: Path) -> None:
    emb = _clustered(12000, 32, seed=4)
    run = _sharded_text_run(tmp_path / "run", emb, shard_rows=3000)
    queries = _clustered(300, 32, seed=5)
    ref = _reference_top10(queries, emb)
    # start shallow, so that the depth loop has to raise nprobe and the re-ranked candidates
    default = build_ivfpq_index(PartedCorpus.from_run(run), start_nprobe=1, start_rerank=10, seed=0)
    assert default.recall is not None and default.recall >= 0.95  # the default target, on its sample
    _, ids = default.search(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref, strict=True)]) >= 0.95  # fresh queries
    # recall@10 0.95 still lets some queries miss one of ten; a stricter target gives whole top-10s
    index = build_ivfpq_index(
        PartedCorpus.from_run(run), start_nprobe=1, start_rerank=10, seed=0, target_recall=0.99
    )
    assert index.kind == "ivfpq" and index.params["train"] <= 12000
    assert len(index.tried) >= 2 and index.tried[0][2] < index.tried[-1][2]
    assert index.recall is not None and index.recall >= 0.99
    assert index.params["nprobe"] == index.tried[-1][0] and index.params["rerank"] == index.tried[-1][1]
    sims, ids = index.search(queries, 10)
    same_top10 = np.mean([set(a) == set(b) for a, b in zip(ids, ref, strict=True)])
    assert same_top10 >= 0.95
    # re-ranked: the similarities are the exact ones, nearest first
    exact = np.take_along_axis(queries.astype(np.float64) @ emb.astype(np.float64).T, ids, 1)
    np.testing.assert_allclose(sims, exact, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()
    text = index.describe()
    assert "IVF-PQ" in text and f"measured recall@10 = {index.recall:.3f} on 500 queries" in text
    assert "4 part(s)" in text and f"top {index.params['rerank']} re-ranked exactly" in text


def test_memory_rule_chooses_ivfpq_only_beyond_the_budget() -> None:
    n, d = 1_000_000, 384  # 1.536e9 bytes of float32
    assert corpus_fits_memory(n, d, available=4 * 1.536e9, fraction=0.25)
    assert not corpus_fits_memory(n, d, available=4 * 1.536e9 - 4, fraction=0.25)
    assert choose_kind(10, n, d, memory=1e9) == "ivfpq"  # whatever the queries: exact would hold the corpus
    assert choose_kind(10**6, n, d, memory=1e9) == "ivfpq"
    assert choose_kind(10, n, d, memory=1e12) == "exact" and choose_kind(10**6, n, d, memory=1e12) == "ivf"
    assert choose_kind(10**6, MIN_APPROX_CORPUS - 1, d, memory=0) == "exact"  # too small to need it
    assert resolve_kind("ivfpq", 10, 10, 4) == "ivfpq"
    assert rule.available_memory() > 0


def test_run_index_builds_ivfpq_from_the_shards_and_reuses_it(tmp_path: Path) -> None:
    from analysis.search.graph import run_index

    emb = _clustered(5000, 16, seed=6)
    run = _sharded_text_run(tmp_path / "run", emb, shard_rows=1200)
    ids = np.arange(0, 5000, 2)  # a sorted subset, as a modality's items are
    index = run_index(run, ids, kind="ivfpq", seed=0)
    assert index.kind == "ivfpq" and index.recall is not None and index.recall >= 0.95
    assert isinstance(index.corpus, PartedCorpus) and len(index.corpus.parts) == 5 and index.corpus.n == len(ids)
    assert run_index(run, ids, kind="ivfpq", seed=0) is index  # built once per run and item set
    _, pos = index.search(emb[ids[:100]], 10)
    ref = _reference_top10(emb[ids[:100]], emb[ids])
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pos, ref, strict=True)]) >= 0.95
    # rows already in memory (build_index) or in no part order: a forced IVF-PQ over the gathered rows
    assert build_index(emb, kind="ivfpq", seed=0).kind == "ivfpq"
    assert run_index(run, ids[::-1].copy(), kind="ivfpq", seed=0).kind == "ivfpq"


@pytest.mark.slow
def test_false_negatives_forced_ivfpq_on_a_sharded_run_equals_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from analysis.cli import main
    from analysis.detectors.false_negatives import Settings, find_false_negatives
    from tests.test_sharded_runs import _shard

    plain = make_synthetic_run(tmp_path / "plain", n_pairs=150, k=3, seed=3)[0]
    run = _shard(plain, tmp_path / "sharded", shard_rows=64)
    exact = find_false_negatives(run, settings=Settings(index_kind="exact"))
    approx = find_false_negatives(run, settings=Settings(index_kind="ivfpq"))
    assert "IVF-PQ" in approx.attrs["index"] and "measured recall@10 = 1.000" in approx.attrs["index"]
    pd.testing.assert_frame_equal(exact, approx)  # every recall 1.000: the same neighbours, the same table
    assert main(["false-negatives", str(run.path), "--index", "ivfpq", "--out", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "neighbour search: text: IVF-PQ (" in out and "re-ranked exactly from the shards" in out
    assert len(pd.read_csv(tmp_path / "c.csv")) == len(approx)


@pytest.mark.slow
def test_auto_mines_through_ivfpq_when_the_corpus_exceeds_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analysis.detectors.false_negatives import find_false_negatives
    from tests.test_sharded_runs import _shard

    plain = make_synthetic_run(tmp_path / "plain", n_pairs=2100, k=2, dim=16, two_modalities=False, seed=7)[0]
    run = _shard(plain, tmp_path / "sharded", shard_rows=1000)
    assert (run.items["modality"] == "text").sum() >= MIN_APPROX_CORPUS
    plenty = find_false_negatives(run)
    assert "IVF-PQ" not in plenty.attrs["index"]
    monkeypatch.setattr(rule, "available_memory", lambda: 1000.0)  # 4,200 x 16 float32 > 1/4 of 1,000 bytes
    tight = find_false_negatives(run)
    assert "IVF-PQ" in tight.attrs["index"] and "5 part(s)" in tight.attrs["index"]
    recall = float(tight.attrs["index"].split("measured recall@10 = ")[1].split()[0])
    assert recall >= 0.95
    # the same listed negatives scored; the mined ones agree as far as the recall allows
    listed = ["given", "in_batch"]
    a = plenty[plenty["source"].isin(listed)].sort_values(["pair_id", "candidate_id"]).reset_index(drop=True)
    b = tight[tight["source"].isin(listed)].sort_values(["pair_id", "candidate_id"]).reset_index(drop=True)
    pd.testing.assert_series_equal(a["candidate_id"], b["candidate_id"])


@pytest.mark.slow
def test_knn_graph_through_ivfpq_uses_the_reranked_search() -> None:
    from analysis.search.exact import knn_graph
    from analysis.search.graph import vector_graph

    x = _clustered(5000, 16, seed=8)
    built = build_ivfpq_index(PartedCorpus.from_array(x), seed=0)
    rows, sims, kind, recall, note = vector_graph(x, 10, index=built)
    assert kind == "ivfpq" and recall >= 0.95 and "IVF-PQ" in note
    assert not (rows == np.arange(len(x))[:, None]).any()  # never the row itself
    exact = np.take_along_axis(x.astype(np.float64) @ x.astype(np.float64).T, rows, 1)
    np.testing.assert_allclose(sims, exact, atol=1e-5)  # exact similarities, not PQ estimates
    _, ref = knn_graph(x, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref, strict=True)]) >= 0.95


def test_mapped_pages_are_dropped_only_beyond_the_allowance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import analysis.search.ivfpq as ivfpq

    real_release = ivfpq.release_pages
    emb = _clustered(600, 8, seed=9)
    run = _sharded_text_run(tmp_path / "run", emb, shard_rows=200)
    corpus = PartedCorpus.from_run(run)
    released: list[int] = []
    monkeypatch.setattr(ivfpq, "release_pages", lambda part: released.append(id(part)))
    monkeypatch.setattr(ivfpq, "RESIDENT_MAP_BYTES", 1 << 60)
    np.testing.assert_array_equal(corpus.gather(np.array([5, 450, 201])), emb[[5, 450, 201]])
    assert released == []
    monkeypatch.setattr(ivfpq, "RESIDENT_MAP_BYTES", 0)
    np.testing.assert_array_equal(corpus.gather(np.array([599, 0])), emb[[599, 0]])
    assert set(released) == {id(p) for p in corpus.parts}
    # a real madvise leaves the data readable (the pages come back from the file)
    real_release(corpus.parts[1])
    np.testing.assert_array_equal(np.asarray(corpus.parts[1]), emb[200:400])


def test_forced_ivfpq_on_in_memory_rows_builds_ivfpq_and_reports_recall() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(60, 32))
    x = centres[rng.integers(0, 60, 8000)] + 0.3 * rng.normal(size=(8000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = build_index(x, kind="ivfpq", seed=0)
    assert isinstance(index, IVFPQIndex) and index.kind == "ivfpq"
    assert index.recall is not None and index.recall >= 0.95
    q = x[:200]
    _, ids = index.search(q, 10)
    exact = np.argsort(-(q.astype(np.float64) @ x.astype(np.float64).T), axis=1, kind="stable")[:, :10]
    hits = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, exact, strict=True)])
    assert hits >= 0.95

"""``python -m analysis false-negatives``: the weight preset, learning from the recorded decisions and the
cross-encoder judge, each against the library it calls, and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as cli_main
from analysis.detectors.false_negatives import ONE_TO_MANY, Settings, find_false_negatives, with_decisions
from analysis.detectors.fn_learning import fit_weights, rerank
from analysis.review.rows import negative_row
from analysis.review.store import ReviewStore
from analysis.runs import workspace
from analysis.runs.folder import Run
from tests.synthetic import make_synthetic_run

FAST = ["--mine-k", "5", "--rank-depth", "30", "--mutual-k", "5", "--clusters", "8"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run, _ = make_synthetic_run(tmp_path_factory.mktemp("fncli") / "run", n_pairs=120, k=4, noise=0.4, seed=5)
    return run


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error: one line, the last on stderr (the candidates' summary line may precede it)."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in err
    assert [line for line in lines if line.startswith("error")] == lines[-1:]
    return lines[-1]


def test_weight_preset_option_scores_with_the_preset(small: Run, tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    assert (
        cli_main(
            ["false-negatives", str(small.path), *FAST, "--weights", "one_to_many", "--evidence", "--out", str(out)]
        )
        == 0
    )
    got = pd.read_csv(out)
    settings = Settings(mine_k=5, rank_depth=30, mutual_k=5, n_clusters=8, weights=ONE_TO_MANY)
    ref = find_false_negatives(small, settings=settings)
    merged = got.merge(ref, on=["pair_id", "candidate_id"], suffixes=("", "_ref"))
    assert len(merged) == len(ref) == len(got)
    np.testing.assert_allclose(merged["logit"], merged["logit_ref"], rtol=1e-9, atol=1e-9)
    plain = find_false_negatives(small, settings=Settings(mine_k=5, rank_depth=30, mutual_k=5, n_clusters=8))
    assert not np.allclose(
        plain.sort_values(["pair_id", "candidate_id"])["logit"], ref.sort_values(["pair_id", "candidate_id"])["logit"]
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--weights", "one_to_all"], "unknown weight preset 'one_to_all'; expected one of paraphrase, one_to_many"),
        (["--learn", "--learn-order", "random"], "unknown --learn-order 'random'"),
        (["--judge-top", "-1"], "judge_top"),
        (["--cross-encoder", "/nonexistent/ce"], "is not a cross-encoder folder"),
        (["--learn", "--db", "/nonexistent/reviews.sqlite"], "no review database"),
    ],
)
def test_bad_option_values_give_one_line_errors(small: Run, capsys, options: list[str], message: str) -> None:
    assert cli_main(["false-negatives", str(small.path), *FAST, *options]) == 2
    assert message in _one_line_error(capsys)


def test_learning_with_too_few_decisions_says_how_many(small: Run, capsys) -> None:
    store = ReviewStore(workspace.review_db_path())
    neg = small.negatives.head(4)
    pairs = small.pairs.set_index("pair_id")
    store.record_many(
        [
            negative_row(small, int(pairs.loc[r.pair_id, "anchor_id"]), int(r.negative_id), "false_negative", "ann")
            for r in neg.itertuples(index=False)
        ]
    )
    assert cli_main(["false-negatives", str(small.path), *FAST, "--learn"]) == 2
    assert "at least 5 decided false negatives and 5 negatives; there are 4 and 0" in _one_line_error(capsys)


@pytest.mark.slow
def test_learn_reranks_the_sample_with_the_recorded_decisions(sample_run: Run, tmp_path: Path, capsys) -> None:
    """Decisions recorded in the workspace's review database (as the page records them) drive ``--learn``."""
    from analysis.data.truth import negative_truth
    from analysis.review.decisions import current_decisions, dataset_keys, negative_decisions

    truth = negative_truth(sample_run)
    table = find_false_negatives(sample_run)
    listed = table.merge(
        truth.rename(columns={"negative_id": "candidate_id"})[["pair_id", "candidate_id", "is_false_negative"]],
        on=["pair_id", "candidate_id"],
    )
    # 40 from the top of the queue and 40 from further down, decided from the planted truth
    chosen = pd.concat([listed.head(40), listed.iloc[2000::150].head(40)])
    store = ReviewStore(workspace.review_db_path())
    store.record_many(
        [
            negative_row(
                sample_run,
                int(r.anchor_id),
                int(r.candidate_id),
                "false_negative" if r.is_false_negative else "negative",
                "ann",
            )
            for r in chosen.itertuples(index=False)
        ]
    )
    out = tmp_path / "learned.csv"
    argv = ["false-negatives", str(sample_run.path), "--learn", "--learn-order", "uncertainty", "--out", str(out)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    decisions = negative_decisions(sample_run, current_decisions(store, dataset_keys(sample_run), kind="negative"))
    learned = fit_weights(with_decisions(table, decisions))
    assert f"learned from {learned.n_decided} decisions ({learned.n_false_negative} false negatives)" in printed
    assert (
        f"precision {learned.cv_precision:.2f}" in printed and "log-odds weights (preset + learned change)" in printed
    )
    got = pd.read_csv(out, keep_default_na=False)
    assert list(got.columns)[-2:] == ["learned_score", "decision"]
    expected = rerank(with_decisions(table, decisions), learned, order="uncertainty")
    assert got["candidate_id"].tolist() == expected["candidate_id"].tolist()
    np.testing.assert_allclose(got["learned_score"].to_numpy(np.float64), expected["learned_score"], rtol=1e-6)
    n_open = int((got["decision"] == "").sum())
    assert n_open == len(got) - len(chosen)
    assert (got["decision"].iloc[:n_open] == "").all()
    assert (got["learned_score"].iloc[:n_open] - 0.5).abs().is_monotonic_increasing


@pytest.mark.slow
def test_cross_encoder_option_judges_the_top_candidates(small: Run, tmp_path: Path) -> None:
    from analysis.detectors.cross_encoder import CrossEncoderJudge
    from tests.tiny_models import make_cross_encoder

    folder = make_cross_encoder(tmp_path / "ce")
    out = tmp_path / "judged.csv"
    argv = ["false-negatives", str(small.path), *FAST, "--cross-encoder", str(folder), "--judge-top", "20"]
    assert cli_main([*argv, "--evidence", "--out", str(out)]) == 0
    got = pd.read_csv(out)
    judged = got[got["judge_candidate"].notna()]
    assert len(judged) == 20
    content = small.items["content"].astype(str).to_numpy()
    ref = CrossEncoderJudge(folder)(content[judged["anchor_id"]].tolist(), content[judged["candidate_id"]].tolist())
    np.testing.assert_allclose(judged["judge_candidate"].to_numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(judged["judge_diff"], judged["judge_candidate"] - judged["judge_positive"], atol=1e-9)


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_json_reports_counts_paths_and_each_search(
    small: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str], index: str
) -> None:
    import json

    out = tmp_path / "j.csv"
    assert cli_main(["false-negatives", str(small.path), *FAST, "--index", index, "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    got = pd.read_csv(out)
    assert report["out"] == str(out) and report["rows_written"] == len(got) == report["candidates"]
    assert report["flagged"] == int(got["flagged"].sum())
    assert report["by_source"] == got["source"].value_counts().to_dict()
    candidates = [s for s in report["searches"] if s["search"] == "candidates"]
    modalities = [s["modality"] for s in candidates]  # one search per modality of the candidates
    assert modalities and len(set(modalities)) == len(modalities) <= small.items["modality"].nunique()
    for search in report["searches"]:
        assert search["kind"] == index
        if index == "exact":
            assert search["recall"] == 1.0
        else:  # approximate: its recall measured against exact search on a sample, and its probe depth
            assert 0.0 <= search["recall"] <= 1.0 and search["recall_k"] == 10 and search["params"]["nprobe"] >= 1
            assert f"measured recall@10 = {search['recall']:.3f}" in search["description"]
    assert {s["search"] for s in report["searches"]} == {"candidates", "anchor_neighbours"}


def test_json_needs_an_output_file(small: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["false-negatives", str(small.path), *FAST, "--json"]) == 2
    assert "--json needs --out" in _one_line_error(capsys)


def test_other_mode_is_computed_only_when_used(small: Run, tmp_path: Path) -> None:
    out = tmp_path / "e.csv"
    assert cli_main(["false-negatives", str(small.path), *FAST, "--evidence", "--out", str(out)]) == 0
    got = pd.read_csv(out)
    assert got["other_mode"].isna().all()  # weighted 0 and no --learn: left empty
    base = {"mine_k": 5, "rank_depth": 30, "mutual_k": 5, "n_clusters": 8}
    ref = find_false_negatives(small, settings=Settings(**base))  # the library computes it by default
    assert ref["other_mode"].notna().any()
    keys = ["pair_id", "candidate_id"]
    merged = got.merge(ref, on=keys, suffixes=("", "_ref"))
    assert len(merged) == len(ref)  # the same scores: a weight of 0 adds nothing either way
    np.testing.assert_allclose(merged["logit"], merged["logit_ref"], rtol=1e-12, atol=1e-12)
    weighted = Settings(**base, mode_evidence=False, weights=ONE_TO_MANY.__class__(other_mode=1.0))
    np.testing.assert_allclose(  # a nonzero weight computes it anyway
        find_false_negatives(small, settings=weighted).sort_values(keys)["other_mode"],
        ref.sort_values(keys)["other_mode"],
        rtol=0,
        atol=0,
    )

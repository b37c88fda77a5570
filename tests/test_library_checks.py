"""Checks that once lived only in the CLI live in the library, so the app gets them too (and the CLI just calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.cli import main
from analysis.detectors.label_noise import detect_label_noise
from analysis.errors import NegScopeError
from analysis.metrics.modality_gap import gap_report
from analysis.runs.candidates import build_candidates, check_sources
from tests.synthetic import make_synthetic_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_run(tmp_path_factory.mktemp("checks") / "run", n_pairs=40, k=2)[0]


def test_negative_sources_are_checked_where_candidates_are_built(run) -> None:
    assert check_sources(["given", "mined"]) == ("given", "mined")
    assert check_sources("given") == ("given",)
    with pytest.raises(NegScopeError, match="unknown negative sources"):
        check_sources(("given", "hard"))
    with pytest.raises(NegScopeError, match="unknown negative sources"):
        build_candidates(run, sources=("given", "hard"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kinds": ["labels"]}, "unknown label-noise kinds"),
        ({"kinds": []}, "no label-noise kind"),
        ({"k": 0}, "k must be at least 1"),
        ({"n_folds": 1}, "n_folds at least 2"),
        ({"flag_rank": 0.0}, "flag_rank"),
        ({"duplicate_threshold": 1.5}, "duplicate_threshold"),
    ],
)
def test_label_noise_options_are_checked_before_any_work(run, options: dict, message: str) -> None:
    with pytest.raises(NegScopeError, match=message):
        detect_label_noise(run, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tau": 0.0}, "tau must be a positive number"),
        ({"tau": float("nan")}, "tau must be a positive number"),
        ({"lambdas": [0.0, float("inf")]}, "lambdas"),
    ],
)
def test_gap_report_checks_tau_and_lambdas(run, options: dict, message: str) -> None:
    with pytest.raises(NegScopeError, match=message):
        gap_report(run, **options)


def test_the_cli_reports_the_library_message_in_one_line(run, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, needle in [
        (["label-noise", str(run.path), "--kinds", "mismatched_pair", "--folds", "1"], "n_folds at least 2"),
        (["gap", str(run.path), "--tau", "-1"], "tau must be a positive number"),
        (["temperature", str(run.path), "--tau", "0.1", "0"], "temperatures must be positive"),
        (["false-negatives", str(run.path), "--rank-depth", "0"], "rank_depth"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (argv, err)


def test_embed_batch_sizes_are_checked_by_the_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["embed", "--data", str(tmp_path / "d.csv"), "--checkpoint", str(tmp_path / "m"), "--batch-size", "0"]
    assert main(argv) == 2
    assert "batch size" in capsys.readouterr().err

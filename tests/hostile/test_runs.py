"""Every CLI command on every run-folder corruption exits 2 with one line on stderr, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.cli import build_parser, main
from analysis.errors import RunError
from analysis.runs.folder import load_run, write_run
from tests.hostile.runs import CORRUPTIONS, valid_run, write_corruptions

REPO = Path(__file__).resolve().parents[2]


def _argv(command: str, run: Path, valid: Path, out: Path) -> list[str]:
    """The arguments that make ``command`` read ``run`` (``valid`` is a second, good run for compare)."""
    table = {
        "compare": ["compare", str(run), str(valid), "--json"],
        "export": [
            "export", str(run), "--out", str(out / "export"), "--db", str(out / "reviews.sqlite"), "--no-images"
        ],
        "false-negatives": ["false-negatives", str(run), "--out", str(out / "fn.csv")],
        "gap": ["gap", str(run), "--json"],
        "label-noise": ["label-noise", str(run), "--out", str(out / "ln.csv")],
        "map": ["map", str(run), "--method", "pca", "--out", str(out / "map.parquet"), "--quiet", "--no-cache"],
        "scores": ["scores", str(run), "--json"],
        "summary": ["summary", str(run)],
        "temperature": ["temperature", str(run), "--json"],
    }
    return table[command]


def _run_commands() -> list[str]:
    """Every sub-command that reads a run folder (all but ``embed``, which reads a dataset)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(name for name in sub.choices if name != "embed")


COMMANDS = _run_commands()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("hostile_runs")
    valid = valid_run(root / "valid")
    return valid, write_corruptions(valid, root / "corrupt")


def test_every_command_has_arguments_here(tmp_path: Path) -> None:
    for command in COMMANDS:
        assert _argv(command, tmp_path, tmp_path, tmp_path)[0] == command


@pytest.mark.slow
def test_every_command_works_on_the_valid_run(
    corpus: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid, _ = corpus
    for command in COMMANDS:
        out = tmp_path / command
        out.mkdir()
        assert main(_argv(command, valid, valid, out)) == 0, (command, capsys.readouterr().err)
        capsys.readouterr()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_corruption_exits_2_with_one_line(
    command: str, corpus: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid, folders = corpus
    assert set(folders) == set(CORRUPTIONS) and len(folders) >= 40
    for name, folder in folders.items():
        out = tmp_path / name
        out.mkdir()
        code = main(_argv(command, folder, valid, out))
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2, (command, name, captured.err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (command, name, captured.err[-2000:])
        assert "Traceback" not in captured.err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["manifest-list", "pairs-anchor-minus-one", "embeddings-all-nan"])
def test_corruptions_through_a_real_process(name: str, corpus: tuple[Path, dict[str, Path]]) -> None:
    _, folders = corpus
    done = subprocess.run(
        [sys.executable, "-m", "analysis", "summary", str(folders[name])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
    assert done.stdout == ""


def test_write_run_refuses_values_a_run_cannot_hold(corpus: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    run = load_run(corpus[0])
    base = dict(items=run.items, pairs=run.pairs, negatives=run.negatives)
    bad = run.embeddings.copy()
    bad[2] = np.nan
    with pytest.raises(RunError, match="item 2 holds NaN"):
        write_run(tmp_path / "a", manifest={}, embeddings=bad, **base)
    bad = run.embeddings.copy()
    bad[4] = 0
    with pytest.raises(RunError, match="item 4 is all zeros"):
        write_run(tmp_path / "b", manifest={}, embeddings=bad, **base)
    with pytest.raises(RunError, match="NaN or infinity"):
        write_run(tmp_path / "c", manifest={"logit_scale": float("nan")}, embeddings=run.embeddings, **base)
    written = write_run(tmp_path / "d", manifest={"logit_scale": None}, embeddings=run.embeddings * 3, **base)
    assert json.loads((written / "manifest.json").read_text())["logit_scale"] is None
    assert np.allclose(np.linalg.norm(load_run(written).embeddings, axis=1), 1.0, atol=1e-6)


def test_json_output_is_strict(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.commands._json import finite_json, write_json

    value = {"a": float("nan"), "b": [np.float32(-np.inf), np.float64(2.5)], "c": np.array([1.0, np.nan])}
    assert finite_json(value) == {"a": None, "b": [None, 2.5], "c": [1.0, None]}
    write_json(value)
    assert json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c)) == finite_json(value)
    # a command whose numbers go non-finite prints null, never NaN / -Infinity
    monkeypatch.setattr("analysis.runs.summary.run_summary", lambda run: {"tau": float("-inf"), "n": 3})
    monkeypatch.setattr("analysis.runs.folder.load_run", lambda path: path)
    assert main(["summary", "x"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tau": None, "n": 3}


@pytest.mark.parametrize("text", ["x" * 300, "/".join(["d" * 200] * 30), "run\nfolder"])
def test_unusable_run_paths(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", text]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")

"""``python -m analysis embed``: prints the run folder last, exits 2 with one line on user errors, and a planted
pickle is refused (never unpickled) by the CLI and by the app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.cli import main
from analysis.commands.embed import PRECISIONS
from analysis.embedding import encoders
from tests.tiny_models import make_dual_encoder, make_image_dataset, make_text_dataset, plant_pickle

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "analysis", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_embed_prints_the_run_folder_last(tmp_path: Path) -> None:
    data = make_image_dataset(tmp_path / "data", n_pairs=6, k=2)
    make_dual_encoder(tmp_path / "model")
    first = _cli("embed", "--data", data, "--checkpoint", tmp_path / "model", "--device", "cpu", "--batch-size", "4")
    assert first.returncode == 0, first.stderr
    run = Path(first.stdout.strip().splitlines()[-1])
    assert (run / "manifest.json").is_file() and (run / "embeddings.npy").is_file()
    assert run.parent == Path(os.environ["NEGSCOPE_HOME"]).resolve() / "runs"
    again = _cli("embed", "--data", data, "--checkpoint", tmp_path / "model")
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == str(run)


def test_embed_out_and_options(tmp_path: Path) -> None:
    data = make_text_dataset(tmp_path / "data", n_pairs=5)
    make_dual_encoder(tmp_path / "model")
    out = tmp_path / "runs" / "mine"
    proc = _cli(
        "embed",
        "--data",
        data,
        "--checkpoint",
        tmp_path / "model",
        "--out",
        out,
        "--precision",
        "fp32",
        "--dataset-batch-size",
        "2",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out.resolve())
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_planted_pickle_through_the_cli(tmp_path: Path, suffix: str) -> None:
    data = make_text_dataset(tmp_path / "data", n_pairs=4)
    marker = tmp_path / "pwned.txt"
    evil = plant_pickle(tmp_path / f"evil{suffix}", marker)
    proc = _cli("embed", "--data", data, "--checkpoint", evil)
    _assert_one_line_error(proc, "not a safe checkpoint", "not unpickled", str(evil))
    assert not marker.exists()
    assert not list((Path(os.environ["NEGSCOPE_HOME"]) / "runs").glob("*"))


def _in_process(capsys: pytest.CaptureFixture[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The same dispatcher as ``python -m analysis``, run in this process (quicker than a subprocess)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_user_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_dual_encoder(tmp_path / "model")
    data = make_text_dataset(tmp_path / "data", n_pairs=4)
    model = tmp_path / "model"
    _assert_one_line_error(_in_process(capsys, "embed", "--data", tmp_path / "nope.csv", "--checkpoint", model), "nope")
    _assert_one_line_error(
        _in_process(capsys, "embed", "--data", data, "--checkpoint", tmp_path / "nothing"), "does not exist"
    )
    _assert_one_line_error(
        _in_process(capsys, "embed", "--data", data, "--checkpoint", model, "--device", "cuda:7"), "cuda"
    )
    _assert_one_line_error(
        _in_process(capsys, "embed", "--data", data, "--checkpoint", model, "--modality", "anchor=sound"), "--modality"
    )
    _assert_one_line_error(
        _in_process(capsys, "embed", "--data", data, "--checkpoint", model, "--batch-size", "0"), "batch size"
    )


def test_help_lists_embed(capsys: pytest.CaptureFixture[str]) -> None:
    proc = _cli("--help")
    assert proc.returncode == 0 and "embed" in proc.stdout
    with pytest.raises(SystemExit) as info:
        main(["embed", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--checkpoint" in out and "--precision" in out
    assert PRECISIONS == encoders.PRECISIONS


def test_planted_pickle_through_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.setenv("NEGSCOPE_DATA_DIRS", str(tmp_path))
    data = make_text_dataset(tmp_path / "data", n_pairs=4)
    marker = tmp_path / "pwned.txt"
    evil = plant_pickle(tmp_path / "evil.pt", marker)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    at.radio(key="home_data_source").set_value("Path on the server").run()
    at.text_input(key="home_data_path").set_value(str(data)).run()
    at.radio(key="home_checkpoint_source").set_value("Path on the server").run()
    at.text_input(key="home_checkpoint_path").set_value(str(evil)).run()
    at.button(key="home_compute").click().run()
    assert not at.exception, at.exception
    messages = [e.value for e in at.error]
    assert any("not a safe checkpoint" in m and "not unpickled" in m for m in messages), messages
    assert not marker.exists()
    st.cache_data.clear()
    st.cache_resource.clear()


def test_tqdm_progress_draws_one_bar_per_phase(capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.commands.embed import TqdmProgress

    progress = TqdmProgress(disable=False)
    for done in (0, 500, 1000):
        progress(done, 1000, "reading the dataset")
    for done in (0, 4, 8, 10):
        progress(done, 10, "embedding texts")
    progress.close()
    err = capsys.readouterr().err
    assert "reading the dataset" in err and "embedding texts" in err
    assert "1000/1000" in err and "10/10" in err

"""Shared fixtures: synthetic runs, the embedded digits sample, an isolated workspace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.synthetic import make_synthetic_run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_workspace(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own NEGSCOPE_HOME, so no test sees another's runs or decisions."""
    home = tmp_path_factory.mktemp("negscope_home")
    monkeypatch.setenv("NEGSCOPE_HOME", str(home))
    return home


@pytest.fixture
def synthetic_run(tmp_path: Path):
    """A two-modality synthetic run and its planted truth."""
    return make_synthetic_run(tmp_path / "run")


@pytest.fixture(scope="session")
def sample_run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled digits sample embedded once per test session with its own checkpoint."""
    from analysis.embedding.engine import embed_to_run
    from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA

    out = tmp_path_factory.mktemp("sample_run") / "run"
    return Path(embed_to_run(SAMPLE_DATA, SAMPLE_CHECKPOINT, out=out, device="cpu"))


@pytest.fixture(scope="session")
def sample_run(sample_run_path: Path):
    """The embedded digits sample, loaded (a ``Run``); treat it as read-only."""
    from analysis.runs.folder import load_run

    return load_run(sample_run_path)


@pytest.fixture(autouse=True)
def clear_streamlit_caches() -> Iterator[None]:
    """AppTest runs share Streamlit's process-wide caches: start and end every test with them empty."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()

"""AppTest of the home page: it opens on the sample, shows the summary, and reports bad input clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui.state import RUN_KEY

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")


def _metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}: {[m.label for m in at.metric]}")


def test_home_opens_on_the_sample() -> None:
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception
    assert at.session_state[RUN_KEY]
    assert _metric(at, "Pairs") == "1,797"
    assert float(_metric(at, "Learned temperature τ")) > 0
    assert (Path(at.session_state[RUN_KEY]) / "manifest.json").is_file()
    # at the top: which run is loaded, then a link to every page
    banner = at.success[0].value.replace("\\", "")  # the run id is escaped for markdown
    assert banner.startswith(f"Loaded run: {Path(at.session_state[RUN_KEY]).name} · 1,797 pairs")
    links = [link.proto.page for link in at.get("page_link")]
    pages = sorted((REPO / "pages").glob("*.py"))
    assert len(links) == len(pages) and all(links), links


def test_path_outside_allowed_folders_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEGSCOPE_DATA_DIRS", str(tmp_path / "allowed"))
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.radio(key="home_data_source").set_value("Path on the server").run()
    at.text_input(key="home_data_path").set_value("/etc/passwd").run()
    assert not at.exception
    assert any("outside the folders" in e.value for e in at.error)


def test_bad_dataset_gives_a_readable_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEGSCOPE_DATA_DIRS", str(tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text("anchor,wrong\nhello,world\n")
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.radio(key="home_data_source").set_value("Path on the server").run()
    at.text_input(key="home_data_path").set_value(str(bad)).run()
    at.button(key="home_compute").click().run()
    assert not at.exception
    messages = [e.value.replace("\\", "") for e in at.error]  # user text is escaped for markdown
    assert any("bad.csv" in m and "positive" in m for m in messages), messages


def test_text_dataset_with_precomputed_embeddings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    monkeypatch.setenv("NEGSCOPE_DATA_DIRS", str(tmp_path))
    data = tmp_path / "pairs.csv"
    data.write_text("anchor,positive\nq one,d one\nq two,d two\nq three,d three\n")
    emb = tmp_path / "emb.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(6, 8)).astype("float32"))
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.radio(key="home_data_source").set_value("Path on the server").run()
    at.text_input(key="home_data_path").set_value(str(data)).run()
    at.radio(key="home_checkpoint_source").set_value("Path on the server").run()
    at.text_input(key="home_checkpoint_path").set_value(str(emb)).run()
    at.button(key="home_compute").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert _metric(at, "Pairs") == "3"
    assert _metric(at, "Dimension") == "8"

"""AppTest of the embedding-map page: map, colours, search, pair lines, selection and the review hand-over."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.maps.embedding_map import MapParams, item_neighbours, map_cache_path, pca_2d
from analysis.review.store import Decision, ReviewStore
from analysis.runs.folder import load_run, write_run
from tests.synthetic import make_synthetic_run, write_image_files
from ui.state import RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "6_Embedding_Map.py")


@pytest.fixture
def small_run(tmp_path: Path):
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=150, seed=3)
    return run


def _app(run) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state[RUN_KEY] = str(run.path)
    return at


def _figure(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def _arr(value) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array ``{"dtype", "bdata" (base64), "shape"}``."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            out = out.reshape([int(v) for v in str(value["shape"]).split(",")])
        return out
    return np.asarray(value if value is not None else [])


def _trace_ids(trace: dict) -> list[int]:
    data = _arr(trace.get("customdata"))
    return [int(v) for v in (data[:, 0] if data.ndim == 2 else data)]


def test_without_a_run_the_page_links_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ui.state.SAMPLE_DATA", tmp_path / "no-sample.csv")  # nothing to fall back on
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("No run is loaded" in info.value for info in at.info)


def _wait_for_umap(at: AppTest, run, params: MapParams | None = None, timeout: float = 240.0) -> None:
    """Wait for the background UMAP job to write its map, then rerun the page (as its progress fragment does)."""
    import time

    path = map_cache_path(run, params or MapParams())
    deadline = time.monotonic() + timeout
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    at.run()
    assert not at.exception, at.exception


@pytest.mark.slow
def test_pca_first_then_umap_replaces_it(small_run) -> None:
    at = _app(small_run)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Embedding map"
    # numbers and the map first: the formulas are kept, folded in the expander right below the title
    assert at.expander[0].label == "How this is computed" and len(at.expander[0].latex) >= 3
    if not map_cache_path(small_run, MapParams()).is_file():  # the job may already be done on a fast machine
        assert any(c.value.startswith("PCA (UMAP on its way) map") for c in at.caption)
        pca = _figure(at)
        expected = pca_2d(small_run.embeddings, seed=0)
        trace = [t for t in pca["data"] if t["type"] == "scattergl"][0]
        ids = _trace_ids(trace)
        np.testing.assert_allclose(_arr(trace["x"]), expected[ids, 0], rtol=1e-5, atol=1e-5)
    _wait_for_umap(at, small_run)
    assert any(c.value.startswith("UMAP map of") for c in at.caption)
    fig = _figure(at)
    traces = [t for t in fig["data"] if t["type"] == "scattergl"]
    names = sorted(t["name"] for t in traces)
    assert names == ["image (150)", "text (150)"]
    ids = sorted(i for t in traces for i in _trace_ids(t))
    assert ids == list(range(len(small_run.items)))  # every item once, identified by custom data
    assert map_cache_path(small_run, MapParams()).is_file()
    assert fig["layout"]["dragmode"] == "lasso"


def test_every_colouring_renders(small_run) -> None:
    store = ReviewStore(Path(os.environ["NEGSCOPE_HOME"]) / "reviews.sqlite")
    keys = small_run.items["key"].tolist()
    store.record(Decision(small_run.dataset_hash, "negative", keys[0], keys[160], "false_negative", "ann"))
    at = _app(small_run)
    at.run()
    for choice in at.selectbox(key="map_colour").options:
        at.selectbox(key="map_colour").set_value(choice).run()
        assert not at.exception, choice
        fig = _figure(at)
        drawn = sorted(i for t in fig["data"] if t.get("customdata") for i in _trace_ids(t))
        assert drawn == list(range(len(small_run.items))), choice
        if choice == "Review decision":
            names = {t["name"] for t in fig["data"]}
            assert "false negative (1)" in names and f"undecided ({len(small_run.items) - 1})" in names
        if choice == "pos_sim (anchor · positive)":
            scale = [t for t in fig["data"] if t["marker"].get("showscale")]
            assert len(scale) == 1 and len(_arr(scale[0]["x"])) == len(small_run.items)  # every item is in a pair


def test_pca_map_matches_pca(small_run) -> None:
    at = _app(small_run)
    at.run()
    at.radio(key="map_method").set_value("PCA").run()
    assert not at.exception
    fig = _figure(at)
    coords = pca_2d(small_run.embeddings)
    for trace in fig["data"]:
        ids = _trace_ids(trace)
        np.testing.assert_allclose(_arr(trace["x"]), coords[ids, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_arr(trace["y"]), coords[ids, 1], rtol=1e-5, atol=1e-6)


def test_pair_lines_toggle(small_run) -> None:
    at = _app(small_run)
    at.run()
    at.toggle(key="map_lines").set_value(True).run()
    at.slider(key="map_lines_n").set_value(40).run()
    assert not at.exception
    lines = [t for t in _figure(at)["data"] if t.get("mode") == "lines"]
    assert len(lines) == 1 and len(_arr(lines[0]["x"])) == 3 * 40


def test_search_highlights_nearest_neighbours(small_run) -> None:
    at = _app(small_run)
    at.run()
    at.text_input(key="map_search").input("caption of class 4").run()
    assert not at.exception
    picked = at.selectbox(key="map_search_pick").value
    assert "caption of class 4" in small_run.items["content"][picked]
    at.slider(key="map_search_k").set_value(7).run()
    fig = _figure(at)
    by_name = {t["name"]: t for t in fig["data"]}
    expected = item_neighbours(small_run.embeddings, picked, 7)["item_id"].tolist()
    assert _trace_ids(by_name["nearest neighbours"]) == expected
    assert _trace_ids(by_name["search result"]) == [picked]
    assert any(df.value["item_id"].tolist() == expected for df in at.dataframe)
    # an id works too, and text that matches nothing says so
    at.text_input(key="map_search").input("12").run()
    assert at.selectbox(key="map_search_pick").value == 12
    at.text_input(key="map_search").input("no such text anywhere").run()
    assert not at.exception
    assert any("No item" in info.value for info in at.info)


def test_selection_fills_the_table_and_goes_to_the_review_queue(small_run) -> None:
    write_image_files(small_run)
    at = _app(small_run)
    at.run()
    _wait_for_umap(at, small_run)  # a selection is made on the final map (UMAP replacing PCA starts afresh)
    at.session_state["map_chart"] = {
        "selection": {
            "points": [
                {"curve_number": 0, "point_index": 0, "customdata": [17]},
                {"curve_number": 1, "point_index": 0, "customdata": {"0": 160.0, "1": 0.5}},  # as plotly.js sends
                {"curve_number": 2, "point_index": 3},  # a line point: no item
                {"curve_number": 0, "point_index": 1, "customdata": [17]},
            ],
            "point_indices": [0, 0, 3, 1],
            "box": [],
            "lasso": [],
        }
    }
    at.run()
    assert not at.exception
    assert at.subheader[-1].value == "Selection: 2 items"
    table = at.dataframe[-1].value
    assert table["item_id"].tolist() == [17, 160]
    assert table["content"].tolist() == small_run.items["content"].iloc[[17, 160]].tolist()
    assert at.selectbox(key="map_show").value == 17
    # thumbnails of the selected image items
    modality = small_run.items["modality"].to_numpy()
    n_images = int(sum(modality[i] == "image" for i in (17, 160)))
    assert n_images >= 1
    assert any(c.value.startswith(f"{n_images} of {n_images} selected images") for c in at.caption)
    at.button(key="map_send").click().run()
    assert not at.exception
    assert at.session_state["fn_focus_item_ids"] == [17, 160]
    assert at.session_state["fn_focus_item_ids"] == [17, 160]
    assert any("waiting in the review queue" in s.value for s in at.success)


def test_user_text_is_escaped_in_hover(tmp_path: Path) -> None:
    run, _ = make_synthetic_run(tmp_path / "src", n_pairs=30)
    items = run.items.copy()
    items.loc[40, "content"] = "<b>bold</b> <script>alert(1)</script>"
    write_run(
        tmp_path / "run",
        manifest=run.manifest,
        items=items,
        embeddings=run.embeddings,
        pairs=run.pairs,
        negatives=run.negatives,
    )
    at = _app(load_run(tmp_path / "run"))
    at.run()
    assert not at.exception
    texts = [str(text) for t in _figure(at)["data"] for text in _arr(t.get("text"))]
    hit = [t for t in texts if "bold" in t]
    assert len(hit) == 1 and "<b>" not in hit[0] and "&lt;script&gt;" in hit[0]


def _big_run(path: Path, n_pairs: int):
    """A run of 2 * n_pairs items written directly (the synthetic generator is quadratic in the pairs)."""
    rng = np.random.default_rng(0)
    n = 2 * n_pairs
    centres = rng.normal(size=(20, 8))
    emb = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, 8))
    items = pd.DataFrame(
        {
            "item_id": np.arange(n),
            "modality": ["image"] * n_pairs + ["text"] * n_pairs,
            "content": [f"img/{i}.png" for i in range(n_pairs)] + [f"caption {i}" for i in range(n_pairs)],
            "label": None,
            "key": [f"k{i}" for i in range(n)],
        }
    )
    pairs = pd.DataFrame(
        {"pair_id": np.arange(n_pairs), "anchor_id": np.arange(n_pairs), "positive_id": n_pairs + np.arange(n_pairs)}
    )
    negatives = pd.DataFrame(
        {"pair_id": np.arange(n_pairs), "negative_id": n_pairs + (np.arange(n_pairs) + 1) % n_pairs, "source": "given"}
    )
    write_run(
        path,
        manifest={"dataset_hash": "big", "dataset_root": str(path)},
        items=items,
        embeddings=emb,
        pairs=pairs,
        negatives=negatives,
    )
    return load_run(path)


def test_two_hundred_thousand_points_stay_webgl_and_compact(tmp_path: Path) -> None:
    run = _big_run(tmp_path / "big", 100_000)
    at = AppTest.from_file(PAGE, default_timeout=600)
    at.session_state[RUN_KEY] = str(run.path)
    at.session_state["map_method"] = "PCA"
    at.run()
    assert not at.exception
    spec = at.get("plotly_chart")[0].proto.spec
    fig = json.loads(spec)
    assert {t["type"] for t in fig["data"]} == {"scattergl"}
    drawn = np.concatenate([np.asarray(_trace_ids(t)) for t in fig["data"]])
    assert len(drawn) == 200_000 and len(np.unique(drawn)) == 200_000
    # binary arrays and short hovers keep the figure small enough to send and draw
    assert all(isinstance(t["x"], dict) and "bdata" in t["x"] for t in fig["data"])
    assert len(spec) / 200_000 < 120, len(spec) / 200_000
    # a cap on the points drawn keeps a sample, plus the found item
    at.number_input(key="map_max_points").set_value(50_000).run()
    at.text_input(key="map_search").input("caption 23456").run()
    assert not at.exception
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    base = [t for t in fig["data"] if t["name"] not in ("search result", "nearest neighbours")]
    drawn = set(np.concatenate([np.asarray(_trace_ids(t)) for t in base]).tolist())
    assert 50_000 <= len(drawn) <= 50_000 + 11
    found = [t for t in fig["data"] if t["name"] == "search result"]
    assert _trace_ids(found[0]) == [123_456] and 123_456 in drawn  # the found item and its neighbours stay
    ringed = [t for t in fig["data"] if t["name"] == "nearest neighbours"]
    assert set(_trace_ids(ringed[0])) <= drawn


def _select(at: AppTest, ids: list[int]) -> None:
    """Send a lasso selection of ``ids`` as plotly.js does (custom data per point), and rerun."""
    points = [{"curve_number": 0, "point_index": i, "customdata": [item]} for i, item in enumerate(ids)]
    at.session_state["map_chart"] = {
        "selection": {"points": points, "point_indices": list(range(len(ids))), "box": [], "lasso": []}
    }
    at.run()
    assert not at.exception, at.exception


def _rings(at: AppTest) -> dict:
    rings = [t for t in _figure(at)["data"] if str(t.get("name", "")).startswith("selected (")]
    assert len(rings) <= 1
    return rings[0] if rings else {}


@pytest.mark.slow
def test_a_selection_on_the_pca_map_is_kept_when_umap_replaces_it(small_run) -> None:
    write_image_files(small_run)
    at = _app(small_run)
    at.session_state["map_method"] = "PCA"
    at.run()
    assert not at.exception and not _rings(at)
    chosen = [17, 160, 3]
    _select(at, chosen)
    assert at.session_state["map_selected"] == chosen
    rings = _rings(at)  # the selection is ringed on the map it was made on
    assert rings["name"] == "selected (3)" and _trace_ids(rings) == chosen
    pca = pca_2d(small_run.embeddings, seed=0)
    np.testing.assert_allclose(_arr(rings["x"]), pca[chosen, 0], rtol=1e-5, atol=1e-6)

    # UMAP replaces PCA (computed in the background, the PCA map standing in meanwhile): the selection stays
    at.radio(key="map_method").set_value("UMAP").run()
    assert not at.exception
    assert at.session_state["map_selected"] == chosen
    _wait_for_umap(at, small_run)
    assert any(c.value.startswith("UMAP map of") for c in at.caption)
    assert at.session_state["map_selected"] == chosen
    umap = pd.read_parquet(map_cache_path(small_run, MapParams()))
    rings = _rings(at)
    assert _trace_ids(rings) == chosen
    np.testing.assert_allclose(_arr(rings["x"]), umap["x"].to_numpy()[chosen], rtol=1e-6)
    np.testing.assert_allclose(_arr(rings["y"]), umap["y"].to_numpy()[chosen], rtol=1e-6)
    assert at.subheader[-1].value == "Selection: 3 items"
    assert at.dataframe[-1].value["item_id"].tolist() == chosen
    assert any("Selected on the PCA map; ringed on the UMAP map shown now." in c.value for c in at.caption)
    n_images = int(sum(small_run.items["modality"].to_numpy()[i] == "image" for i in chosen))
    assert any(c.value.startswith(f"{n_images} of {n_images} selected images") for c in at.caption)

    # another colouring redraws the chart too: still kept
    at.selectbox(key="map_colour").set_value("Label").run()
    assert not at.exception and at.session_state["map_selected"] == chosen and _trace_ids(_rings(at)) == chosen

    # a new selection on the UMAP map replaces the kept one; the button clears it
    _select(at, [42])
    assert at.session_state["map_selected"] == [42] and _trace_ids(_rings(at)) == [42]
    assert at.subheader[-1].value == "Selection: 1 item"
    at.button(key="map_clear").click().run()
    assert not at.exception
    assert at.session_state["map_selected"] == [] and not _rings(at)
    assert at.subheader[-1].value == "Selection: 0 items"

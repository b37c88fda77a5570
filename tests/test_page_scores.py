"""AppTest of the score distributions page: metrics, plots, worst pairs, mining-filter preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import analysis.metrics.retrieval
from analysis.metrics.mining_filter import FilterSettings, apply_filter, to_sentence_transformers
from analysis.metrics.scores import compute_scores
from analysis.runs.candidates import build_candidates
from analysis.runs.folder import Run, write_run
from tests.synthetic import make_random_run, make_synthetic_run, write_image_files
from ui.state import RUN_KEY

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "1_Score_Distributions.py")


@pytest.fixture
def image_run(tmp_path: Path) -> Run:
    """A two-modality synthetic run whose image files exist."""
    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=150, noise=0.25, mismatch_rate=0.08, seed=3)
    write_image_files(run)
    return run


def open_page(run: Run | None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    if run is not None:
        at.session_state[RUN_KEY] = str(run.path)
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in at.metric:
        out.setdefault(m.label, []).append(m.value)
    return out


def test_without_run_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("ui.state.SAMPLE_DATA", tmp_path / "no-sample.csv")  # nothing to fall back on
    at = open_page(None)
    assert any("No run is loaded" in i.value for i in at.info)
    assert not at.metric


def test_metrics_plots_and_worst_pair(image_run: Run):
    at = open_page(image_run)
    report = compute_scores(image_run)
    s = report.summary
    cards = metrics(at)
    assert cards["Pairs"] == [f"{s['pairs']:,}"]
    assert cards["AUROC"] == [f"{s['auroc']:.3f}"]
    assert cards["Mean pos_sim"] == [f"{s['pos_sim_mean']:.3f}"]
    assert cards["Hardest neg > positive"] == [f"{s['frac_hardest_neg_above_pos']:.1%}"]
    # both directions: image -> text and text -> image
    assert cards["Recall@5"] == [f"{s['recall_at_5']:.3f}", f"{s['reverse']['recall_at_5']:.3f}"]
    assert cards["MRR@10"] == [f"{s['mrr_at_10']:.3f}", f"{s['reverse']['mrr_at_10']:.3f}"]
    assert len(at.get("plotly_chart")) == 5
    # numbers first; the formulas are kept, folded in the expander right below the title
    assert at.expander[0].label == "How this is computed" and at.expander[0].get("latex")
    # the pair selector lists pairs worst margin first and starts on the worst
    picker = at.selectbox(key="scores_pair")
    margins = report.pairs["margin"].to_numpy()
    assert picker.value == int(np.nanargmin(margins))
    assert list(picker.options)[:3] == [picker.format_func(i) for i in np.argsort(margins, kind="stable")[:3]]
    # the chosen pair is drawn with its negatives, hardest first, with their scores
    worst = int(np.nanargmin(margins))
    cands = build_candidates(image_run)
    top = np.sort(cands.neg_sim[worst][cands.mask[worst]])[::-1]
    captions = [c.value.replace("\\", "") for c in at.caption]  # captions are escaped for markdown
    assert any(f"neg_sim {top[0]:.3f}" in c for c in captions)
    assert any(f"pos_sim {cands.pos_sim[worst]:.3f}" in c for c in captions)
    assert len(at.get("image")) >= 1, "the image anchor is drawn"
    assert not at.warning


def test_choosing_another_pair_and_fewer_negatives(image_run: Run):
    at = open_page(image_run)
    picker = at.selectbox(key="scores_pair")
    second = list(np.argsort(compute_scores(image_run).pairs["margin"].to_numpy(), kind="stable"))[5]
    picker.set_value(int(second))
    at.slider(key="scores_top_negs").set_value(1)
    at.run()
    assert not at.exception
    cands = build_candidates(image_run)
    best = np.max(cands.neg_sim[second][cands.mask[second]])
    captions = [c.value.replace("\\", "") for c in at.caption]  # captions are escaped for markdown
    neg_captions = [c for c in captions if c.startswith("neg_sim")]
    assert len(neg_captions) == 1 and f"neg_sim {best:.3f}" in neg_captions[0]


def test_ranking_runs_once_per_run(image_run: Run, monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = analysis.metrics.retrieval.retrieval_ranks

    def counting(*args, **kwargs):
        calls.append(kwargs.get("reverse", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis.metrics.retrieval, "retrieval_ranks", counting)
    at = open_page(image_run)
    assert sorted(calls) == [False, True]
    at.slider(key="scores_bins").set_value(100)
    at.run()
    assert not at.exception and len(calls) == 2


def test_mining_filter_preview(image_run: Run):
    at = open_page(image_run)
    at.slider(key="scores_f_range").set_value((1, 4))
    at.checkbox(key="scores_f_use_abs").check()
    at.checkbox(key="scores_f_use_rel").check()
    at.run()  # a slider can be moved once its rule is switched on
    at.slider(key="scores_f_abs").set_value(0.1)
    at.slider(key="scores_f_rel").set_value(0.2)
    at.number_input(key="scores_f_k").set_value(2)
    at.run()
    assert not at.exception
    cands = build_candidates(image_run)
    settings = FilterSettings(range_min=1, range_max=4, absolute_margin=0.1, relative_margin=0.2)
    result = apply_filter(cands, settings)
    cards = metrics(at)
    assert cards["Kept"] == [f"{result.n_kept:,}"]
    assert cards["Listed negatives"] == [f"{result.n_candidates:,}"]
    assert cards["Pairs with fewer than 2 kept"] == [f"{result.pairs_below(2):,}"]
    drops = at.dataframe[-1].value
    assert dict(zip(drops["rule"], drops["drops"], strict=True)) == {
        "rank window": result.drop_counts()["rank_window"],
        "max score": 0,
        "absolute margin": result.drop_counts()["absolute_margin"],
        "relative margin": result.drop_counts()["relative_margin"],
    }
    n_tuple = to_sentence_transformers(image_run, cands, result.kept, num_negatives=2)
    button = at.get("download_button")[-1]
    assert f"({len(n_tuple):,} rows" in button.proto.label
    # the pairs the n-tuple export leaves out are counted on the page, not only in a tooltip
    dropped = result.pairs_below(2)
    assert dropped > 0 and len(n_tuple) == len(image_run.pairs) - dropped
    assert any(f"leaves out {dropped:,} of {len(image_run.pairs):,} pairs" in i.value for i in at.info)
    at.radio(key="scores_f_format").set_value("triplet")
    at.run()
    assert not at.exception
    triplets = to_sentence_transformers(image_run, cands, result.kept, num_negatives=2, output_format="triplet")
    assert f"({len(triplets):,} rows" in at.get("download_button")[-1].proto.label


def test_pair_table_pages_on_the_server(image_run: Run):
    at = open_page(image_run)
    at.selectbox(key="scores_rows").set_value(100)
    at.run()
    table = at.dataframe[0].value
    assert len(table) == 100
    at.number_input(key="scores_table_page").set_value(2)
    at.run()
    assert not at.exception
    order = compute_scores(image_run).pairs.sort_values(["margin", "pos_sim"], na_position="last", kind="stable")
    second = at.dataframe[0].value
    assert len(second) == len(image_run.pairs) - 100
    assert second["pair_id"].tolist() == order["pair_id"].astype(str).tolist()[100:]
    assert any(f"Rows 101–{len(image_run.pairs)} of {len(image_run.pairs)} pairs" in c.value for c in at.caption)
    # the pair selector follows the page shown
    assert at.selectbox(key="scores_pair").value == int(order.index[100])


def test_sources_and_one_modality(tmp_path: Path):
    run = make_random_run(tmp_path / "run", two_modalities=False, n_pairs=60, seed=2)
    at = open_page(run)
    cards = metrics(at)
    assert len(cards["Recall@1"]) == 1, "one direction only for a one-modality run"
    assert any("same modality" in c.value for c in at.caption)
    at.multiselect(key="scores_sources").set_value(["given"])
    at.run()
    assert not at.exception
    given = compute_scores(run, sources=("given",)).summary
    assert metrics(at)["Mean neg_sim"] == [f"{given['neg_sim_mean']:.3f}"]
    at.multiselect(key="scores_sources").set_value([])
    at.run()
    assert not at.exception
    assert at.warning and metrics(at)["Mean neg_sim"] == ["n/a"]
    assert any("nothing to filter" in i.value for i in at.info)


def test_run_without_pairs_shows_error(tmp_path: Path):
    run = make_random_run(tmp_path / "src", seed=1)
    empty = write_run(
        tmp_path / "empty",
        manifest=run.manifest,
        items=run.items,
        embeddings=run.embeddings,
        pairs=run.pairs.iloc[:0],
        negatives=pd.DataFrame({"pair_id": [], "negative_id": [], "source": []}),
    )
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[RUN_KEY] = str(empty)
    at.run()
    assert not at.exception
    assert any("no pairs" in e.value for e in at.error)


def test_sample_run_page(sample_run: Run):
    at = open_page(sample_run)
    report = compute_scores(sample_run)
    assert metrics(at)["AUROC"] == [f"{report.summary['auroc']:.3f}"]
    assert len(at.get("image")) >= 1 and not at.warning


def test_figures_bin_and_label_correctly():
    from ui.score_plots import bin_edges, filter_figure, hist_trace, margin_figure, similarity_figure

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.6, 0.1, 500), rng.normal(0.2, 0.2, 3000)
    edges = bin_edges([pos, neg, np.array([np.nan])], bins=40)
    assert edges[0] < min(pos.min(), neg.min()) and edges[-1] > max(pos.max(), neg.max()) and len(edges) == 41
    dens = hist_trace(neg, edges, name="n", color="red", density=True)
    assert np.sum(np.asarray(dens.y) * np.diff(edges)) == pytest.approx(1.0)
    counts = hist_trace(np.r_[neg, np.nan], edges, name="n", color="red", density=False)
    assert np.sum(counts.y) == 3000 and "n=3,000" in counts.name
    fig = similarity_figure(pos, {"given": neg, "mined": neg[:10]}, bins=30)
    assert [t.name.split(" (")[0] for t in fig.data] == ["positives", "negatives · given", "negatives · mined"]
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text == "density" and fig.layout.barmode == "overlay"
    margins = np.r_[rng.normal(0.1, 0.1, 200), np.nan]
    mfig = margin_figure(margins, bins=30)
    assert f"{np.mean(margins[:-1] < 0):.1%} of pairs below 0" in mfig.layout.title.text
    assert sum(np.sum(t.y) for t in mfig.data) == 200
    ffig = filter_figure(pos, neg, neg[neg < 0.3], bins=30, max_score=0.3)
    assert np.sum(ffig.data[1].y) == np.sum(neg < 0.3)
    # nothing to draw: still a valid figure
    assert len(similarity_figure(np.array([]), {}).data) == 1

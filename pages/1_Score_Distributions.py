"""Score distributions: does the model separate positives from negatives, where does it fail, what would mining keep."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from analysis.errors import NegScopeError
from analysis.metrics.mining_filter import (
    OUTPUT_FORMATS,
    RULES,
    FilterResult,
    FilterSettings,
    apply_filter,
    to_sentence_transformers,
)
from analysis.metrics.retrieval import has_reverse, rank_info, rank_kinds, recall_curve, retrieval_ranks
from analysis.metrics.scores import ScoreReport, pair_table, score_report
from analysis.runs.candidates import Candidates, build_candidates
from analysis.runs.folder import NEGATIVE_SOURCES, Run
from ui.render import show_item
from ui.safe_text import escape_text
from ui.score_plots import filter_figure, hardest_figure, margin_figure, recall_figure, similarity_figure
from ui.state import require_run

st.set_page_config(page_title="Score distributions · NegScope", page_icon="📊", layout="wide")

MAX_TABLE_ROWS = (100, 500, 2000)
RANK_CACHE_ENTRIES = 8
RULE_NAMES = {
    "rank_window": "rank window",
    "max_score": "max score",
    "absolute_margin": "absolute margin",
    "relative_margin": "relative margin",
}

for key, value in {
    "scores_sources": list(NEGATIVE_SOURCES),
    "scores_bins": 60,
    "scores_density": True,
    "scores_rows": 500,
    "scores_table_page": 1,
    "scores_top_negs": 4,
    "scores_pair": None,
    "scores_f_use_max": False,
    "scores_f_max": 0.8,
    "scores_f_use_abs": False,
    "scores_f_abs": 0.0,
    "scores_f_use_rel": True,  # NV-Retriever's TopK-PercPos: keep negatives below 95% of the positive
    "scores_f_rel": 0.05,
    "scores_f_format": "n-tuple",
}.items():
    st.session_state.setdefault(key, value)


@st.cache_resource(max_entries=1, show_spinner=False)
def rank_store() -> dict[tuple[str, bool], np.ndarray]:
    """Retrieval ranks per (run folder, direction), shared by sessions; filled with a progress bar."""
    return {}


def get_ranks(run: Run, *, reverse: bool) -> np.ndarray:
    """Ranks of one direction, computed once per run with a progress bar (the exhaustive search can be slow)."""
    store = rank_store()
    key = (str(run.path), reverse)
    if key not in store:
        what = (
            "anchors among all items given each positive" if reverse else "positives among all items given each anchor"
        )
        bar = st.progress(0.0, text=f"Ranking {what}…")
        started = time.perf_counter()

        def progress(frac: float) -> None:
            elapsed = time.perf_counter() - started
            bar.progress(min(frac, 1.0), text=f"Ranking {what}… {frac:.0%} ({elapsed:.0f} s)")

        try:
            ranks = retrieval_ranks(run, reverse=reverse, progress=progress)
        finally:
            bar.empty()
        while len(store) >= RANK_CACHE_ENTRIES:
            store.pop(next(iter(store)))
        store[key] = ranks
    return store[key]


@st.cache_data(max_entries=16, show_spinner=False)
def cached_scores(
    run_path: str, sources: tuple[str, ...], _run: Run, _ranks: np.ndarray, _reverse: np.ndarray | None
) -> ScoreReport:
    """Candidates, per-pair table, long negatives table and summary (keyed by run folder and sources)."""
    cands = build_candidates(_run, sources=sources)
    return score_report(_run, cands, ranks=_ranks, reverse_ranks=_reverse, wide=False)


@st.cache_data(max_entries=32, show_spinner=False)
def cached_filter(
    run_path: str, sources: tuple[str, ...], settings: FilterSettings, _cands: Candidates
) -> FilterResult:
    """The mining filter applied to the run's listed negatives."""
    return apply_filter(_cands, settings)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_export(
    run_path: str,
    sources: tuple[str, ...],
    settings: FilterSettings,
    k: int,
    fmt: str,
    _run: Run,
    _cands: Candidates,
    _kept: np.ndarray,
) -> bytes:
    """CSV bytes of the kept negatives in the sentence-transformers format (built when the button is clicked)."""
    table = to_sentence_transformers(_run, _cands, _kept, num_negatives=k, output_format=fmt)
    return table.to_csv(index=False).encode("utf-8")


@st.cache_data(max_entries=4, show_spinner=False)
def pairs_csv(run_path: str, sources: tuple[str, ...], _run: Run, _data: ScoreReport) -> bytes:
    """CSV bytes of the full per-pair table with every listed negative (built when the button is clicked)."""
    table = _data.pairs
    reverse = None if table["reverse_rank"].isna().all() else table["reverse_rank"].to_numpy(np.int64)
    full = pair_table(
        _run,
        _data.candidates,
        ranks=table["rank"].to_numpy(np.int64),
        reverse_ranks=reverse,
        rank_kinds=rank_kinds(_run),  # how each rank was found: exact, counted (approximate top) or estimated
        reverse_rank_kinds=None if reverse is None else rank_kinds(_run, reverse=True),
    )
    return full.to_csv(index=False).encode("utf-8")


def export_rows(result: FilterResult, k: int, fmt: str) -> int:
    """Rows the sentence-transformers export will have."""
    if fmt == "n-tuple":
        return len(result.kept_per_pair) - result.pairs_below(k)
    return int(np.minimum(result.kept_per_pair, k).sum())


def explain() -> None:
    """The theory and formulas, folded under the title (kept complete)."""
    with st.expander("How this is computed", expanded=False):
        st.markdown(
            "Does the model score each anchor's **positive** above its **negatives**? Every similarity is the "
            "cosine of L2-normalised embeddings, so it lies in [-1, 1]:"
        )
        st.latex(r"\mathrm{pos\_sim}_i = a_i \cdot p_i \qquad \mathrm{neg\_sim}_{ij} = a_i \cdot n_{ij}")
        st.latex(
            r"\mathrm{hardest\_neg}_i = \max_j \mathrm{neg\_sim}_{ij} \qquad "
            r"\mathrm{margin}_i = \mathrm{pos\_sim}_i - \mathrm{hardest\_neg}_i"
        )
        st.markdown(
            "A negative margin means a listed negative beats the positive: either the model is wrong, the pair is "
            "mismatched, or the 'negative' is really a positive (a false negative). The **retrieval rank** looks "
            "beyond the listed negatives: the positive's place among *all* items of its modality (the anchor "
            "itself and the anchor's other known positives do not compete; ties count in the positive's favour)."
        )
        st.latex(
            r"\mathrm{rank}_i = 1 + \#\{x \in \mathcal{C}_i : a_i \cdot x > a_i \cdot p_i\} \qquad "
            r"\mathrm{recall@}k = \tfrac{1}{P}\sum_i [\mathrm{rank}_i \le k] \qquad "
            r"\mathrm{MRR@}10 = \tfrac{1}{P}\sum_i \frac{[\mathrm{rank}_i \le 10]}{\mathrm{rank}_i}"
        )
        st.latex(
            r"\mathrm{AUROC} = P(\mathrm{pos\_sim} > \mathrm{neg\_sim}) + \tfrac12 P(\mathrm{pos\_sim} = \mathrm{neg\_sim})"
        )
        st.markdown(
            "**Mining-filter preview.** What a hard-negative mining filter (sentence-transformers' "
            "`mine_hard_negatives`, NV-Retriever's positive-aware mining) would keep of the listed negatives. A "
            "negative is kept when it passes every enabled rule; margins protect against false negatives that "
            "score close to (or above) the positive."
        )
        st.latex(
            r"\text{keep } n_{ij} \iff r_{ij} \in [\mathrm{range\_min}, \mathrm{range\_max}) \;\wedge\; "
            r"s_{ij} \le \mathrm{max\_score} \;\wedge\; s_{ij} \le \mathrm{pos}_i - m_{\mathrm{abs}} \;\wedge\; "
            r"s_{ij} \le \mathrm{pos}_i - |\mathrm{pos}_i|\, m_{\mathrm{rel}}"
        )
        st.caption(
            "The relative margin uses |pos_sim| so the threshold stays below the positive also when pos_sim < 0 "
            "(the pos_sim·(1 − m) form would then sit above it)."
        )


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for a metric card; 'n/a' when undefined."""
    return "n/a" if value is None else format(value, spec)


def show_metrics(data: ScoreReport, run: Run) -> None:
    """Metric cards: separation and retrieval in both directions."""
    s = data.summary
    cols = st.columns(5)
    cols[0].metric("Pairs", f"{s['pairs']:,}", help="P: anchor-positive pairs in the run")
    cols[1].metric("Mean pos_sim", fmt(s["pos_sim_mean"]), help="mean anchor · positive")
    cols[2].metric("Mean neg_sim", fmt(s["neg_sim_mean"]), help="mean anchor · negative over all listed negatives")
    cols[3].metric("AUROC", fmt(s["auroc"]), help="positives vs all listed negatives; 0.5 = no separation")
    cols[4].metric(
        "Hardest neg > positive",
        fmt(s["frac_hardest_neg_above_pos"], ".1%"),
        help="hardest negative above the positive: share of the pairs with listed negatives whose hardest negative "
        "scores strictly above the positive",
    )
    a_mod, p_mod = run.anchor_modality(), run.positive_modality()
    directions = [(f"Retrieval {a_mod} → {p_mod} (anchor → positive)", s)]
    if s["reverse"] is not None:
        directions.append((f"Retrieval {p_mod} → {a_mod} (positive → anchor)", s["reverse"]))
    for title, metrics in directions:
        st.markdown(f"**{title}**")
        cols = st.columns(4)
        for col, key, label in zip(
            cols,
            ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10"),
            ("Recall@1", "Recall@5", "Recall@10", "MRR@10"),
            strict=True,
        ):
            col.metric(label, fmt(metrics[key]))
        info = rank_info(run, reverse="positive → anchor" in title)
        if info.get("rank_kind") == "estimated":
            check = info.get("check")
            bound = (
                f" Recall@1/5/10 and MRR@10 are within ±{check['max_error']:.4f} of exact ones (95%)."
                if check
                else ""
            )
            st.caption(
                escape_text(
                    "Ranks counted in each query's approximate top 32 (exact similarities; measured recall@10 "
                    f"{info['recall']:.3f}), estimated from a sample beyond it: {info['search']}.{bound}"
                )
            )
    if s["reverse"] is None:
        st.caption("Anchors and positives are the same modality, so only one retrieval direction is reported.")


@st.fragment
def show_distributions(data: ScoreReport, run: Run) -> None:
    """Histograms of similarities, hardest negatives and margins, and the recall@k curve."""
    st.header("Distributions")
    c1, c2 = st.columns([3, 1])
    c2.slider("Bins", 20, 200, step=10, key="scores_bins")
    c2.toggle("Density (area 1 per group)", key="scores_density", help="Off: raw counts")
    bins, density = int(st.session_state["scores_bins"]), bool(st.session_state["scores_density"])
    neg = data.negatives
    by_source = {src: neg.loc[neg["source"] == src, "neg_sim"].to_numpy() for src in NEGATIVE_SOURCES}
    by_source = {k: v for k, v in by_source.items() if len(v)}
    table = data.pairs
    with c1:
        st.plotly_chart(
            similarity_figure(table["pos_sim"].to_numpy(), by_source, bins=bins, density=density),
            width="stretch",
            key="scores_fig_sims",
        )
        st.caption(
            "Green: each pair's positive. Other colours: its listed negatives, one colour per source (given in the "
            "dataset, other pairs' positives of the same batch, or mined). Densities make groups of different "
            "sizes comparable; the less the coloured mass overlaps the green, the better the separation (AUROC)."
        )
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(
            hardest_figure(table["pos_sim"].to_numpy(), table["hardest_neg"].to_numpy(), bins=bins, density=density),
            width="stretch",
            key="scores_fig_hardest",
        )
        st.caption(
            "One value per pair for each colour: the positive, and the best-scoring listed negative. Contrastive "
            "losses are dominated by the hardest negatives, so this is the overlap that matters for training."
        )
    with c2:
        st.plotly_chart(margin_figure(table["margin"].to_numpy(), bins=bins), width="stretch", key="scores_fig_margin")
        st.caption(
            "margin = pos_sim − hardest_neg. Pairs left of the dashed line are listed below, worst first: "
            "mismatched pairs and false negatives gather there."
        )
    curves = {f"{run.anchor_modality()} → {run.positive_modality()}": recall_curve(table["rank"].to_numpy(np.int64))}
    if data.summary["reverse"] is not None:
        curves[f"{run.positive_modality()} → {run.anchor_modality()}"] = recall_curve(
            table["reverse_rank"].to_numpy(np.int64)
        )
    st.plotly_chart(recall_figure(curves), width="stretch", key="scores_fig_recall")
    st.caption(
        "Share of pairs whose target ranks in the top k among all items of its modality "
        f"({'exact search' if rank_info(run).get('rank_kind', 'exact') == 'exact' else 'estimated ranks, see above'}). "
        "Recall@1, @5, @10 above are points of these curves."
    )


def _on_table_select() -> None:
    """Copy the row chosen in the table into the pair selector (runs before the rerun)."""
    event = st.session_state.get("scores_table")
    ids = st.session_state.get("scores_table_rows", [])
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(ids):
        st.session_state["scores_pair"] = ids[rows[0]]


@st.fragment
def show_pairs(data: ScoreReport, run: Run, sources: tuple[str, ...]) -> None:
    """The per-pair table sorted by margin (worst first) and the chosen pair side by side with its negatives."""
    st.header("Pairs, worst margin first")
    table = data.pairs
    order = table.sort_values(["margin", "pos_sim"], na_position="last", kind="stable")
    c1, c2, c3 = st.columns([1, 1, 2])
    c1.selectbox("Rows per page", MAX_TABLE_ROWS, key="scores_rows", help="The full table: download below or CLI")
    per_page = int(st.session_state["scores_rows"])
    n_pages = max(1, -(-len(order) // per_page))
    if int(st.session_state.get("scores_table_page", 1)) > n_pages:
        st.session_state["scores_table_page"] = n_pages
    page = int(c2.number_input("Page", 1, n_pages, key="scores_table_page", help=f"{n_pages:,} pages, worst first"))
    shown = order.iloc[(page - 1) * per_page : page * per_page]  # only this page goes to the browser
    content = run.items["content"].astype(str)
    view = pd.DataFrame(
        {
            "pair_id": shown["pair_id"].astype(str),
            "margin": shown["margin"],
            "pos_sim": shown["pos_sim"],
            "hardest_neg": shown["hardest_neg"],
            "hardest source": shown["hardest_neg_source"],
            "rank": shown["rank"],
            "negatives": shown["n_negatives"],
            "anchor": content.iloc[shown["anchor_id"].to_numpy()].str.slice(0, 80).to_numpy(),
            "positive": content.iloc[shown["positive_id"].to_numpy()].str.slice(0, 80).to_numpy(),
        }
    )
    if data.summary["reverse"] is not None:
        view.insert(6, "reverse rank", shown["reverse_rank"].to_numpy())
    kinds = rank_kinds(run)
    if kinds is not None and rank_info(run).get("rank_kind") == "estimated":
        # counted: in the approximate top with exact similarities; estimated: beyond it, from a sample
        view.insert(6, "rank found", kinds[shown.index.to_numpy()])
    st.session_state["scores_table_rows"] = shown.index.tolist()
    st.dataframe(
        view,
        hide_index=True,
        width="stretch",
        height=320,
        on_select=_on_table_select,
        selection_mode="single-row",
        key="scores_table",
        column_config={
            "margin": st.column_config.NumberColumn(format="%.3f", help="pos_sim − hardest_neg"),
            "pos_sim": st.column_config.NumberColumn(format="%.3f"),
            "hardest_neg": st.column_config.NumberColumn(format="%.3f"),
            "rank": st.column_config.NumberColumn(help="positive's rank among all items of its modality"),
        },
    )
    first = (page - 1) * per_page
    c3.caption(
        f"Rows {first + 1:,}–{first + len(shown):,} of {len(table):,} pairs, worst margin first. "
        "Click a row (or use the selector) to inspect it."
    )
    st.download_button(
        "Download the full per-pair table (CSV)",
        lambda: pairs_csv(str(run.path), sources, run, data),
        file_name=f"{run.run_id}-pairs.csv",
        mime="text/csv",
        key="scores_pairs_download",
    )
    options = shown.index.tolist()
    if not options:
        return
    if st.session_state.get("scores_pair") not in options:
        st.session_state["scores_pair"] = options[0]
    labels = {
        i: f"pair {table.at[i, 'pair_id']} · "
        + ("no negatives" if np.isnan(table.at[i, "margin"]) else f"margin {table.at[i, 'margin']:.3f}")
        for i in options
    }
    c1, c2 = st.columns([2, 1])
    c1.selectbox("Pair to inspect", options, key="scores_pair", format_func=lambda i: labels.get(i, str(i)))
    c2.slider("Negatives shown", 1, 12, key="scores_top_negs")
    show_pair(data, run, int(st.session_state["scores_pair"]), int(st.session_state["scores_top_negs"]))


def show_pair(data: ScoreReport, run: Run, row: int, top: int) -> None:
    """The anchor, the positive and the top negatives of one pair, side by side with their scores."""
    cands, rec = data.candidates, data.pairs.iloc[row]
    cols = np.flatnonzero(cands.mask[row])
    cols = cols[np.argsort(-cands.neg_sim[row, cols], kind="stable")][:top]
    sources = cands.source_names()
    n_target = int((run.items["modality"] == run.items["modality"].iloc[int(rec["positive_id"])]).sum())
    panels = st.columns(2 + max(len(cols), 1))
    with panels[0]:
        st.markdown("**Anchor**")
        show_item(run, int(rec["anchor_id"]))
    with panels[1]:
        st.markdown("**Positive**")
        show_item(
            run, int(rec["positive_id"]), caption=f"pos_sim {rec['pos_sim']:.3f} · rank {rec['rank']} of {n_target:,}"
        )
    if not len(cols):
        panels[2].info("This pair lists no negatives (of the chosen sources).")
    for i, j in enumerate(cols):
        sim = float(cands.neg_sim[row, j])
        beats = " · above the positive" if sim > rec["pos_sim"] else ""
        with panels[2 + i]:
            st.markdown(f"**Negative {i + 1}**")
            show_item(run, int(cands.neg_ids[row, j]), caption=f"neg_sim {sim:.3f} · {sources[row, j]}{beats}")


def filter_settings(k_max: int) -> tuple[FilterSettings, int, str]:
    """The mining-filter widgets; returns the rule set, the wanted negatives per pair and the export format."""
    st.session_state.setdefault("scores_f_range", (0, k_max))
    st.session_state.setdefault("scores_f_k", k_max)
    lo, hi = st.session_state["scores_f_range"]
    if hi > k_max or lo > k_max:
        st.session_state["scores_f_range"] = (min(lo, k_max), k_max)
    st.session_state["scores_f_k"] = min(max(int(st.session_state["scores_f_k"]), 1), k_max)
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        st.slider(
            "Rank window (range_min, range_max)",
            0,
            k_max,
            key="scores_f_range",
            help="Each pair's listed negatives ranked by neg_sim, 0 = hardest; keep range_min ≤ rank < range_max.",
        )
        st.number_input("Negatives wanted per pair (K)", 1, k_max, key="scores_f_k")
    with c2:
        st.checkbox("Max score", key="scores_f_use_max", help="drop a negative if neg_sim > max_score")
        st.slider(
            "max_score", -1.0, 1.0, step=0.01, key="scores_f_max", disabled=not st.session_state["scores_f_use_max"]
        )
    with c3:
        st.checkbox("Absolute margin", key="scores_f_use_abs", help="drop a negative if neg_sim > pos_sim − m")
        st.slider(
            "m (absolute)", -0.5, 1.0, step=0.01, key="scores_f_abs", disabled=not st.session_state["scores_f_use_abs"]
        )
    with c4:
        st.checkbox(
            "Relative margin", key="scores_f_use_rel", help="drop a negative if neg_sim > pos_sim − |pos_sim| · m"
        )
        st.slider(
            "m (relative)", 0.0, 1.0, step=0.01, key="scores_f_rel", disabled=not st.session_state["scores_f_use_rel"]
        )
    lo, hi = st.session_state["scores_f_range"]
    settings = FilterSettings(
        range_min=int(lo),
        range_max=int(hi),
        max_score=float(st.session_state["scores_f_max"]) if st.session_state["scores_f_use_max"] else None,
        absolute_margin=float(st.session_state["scores_f_abs"]) if st.session_state["scores_f_use_abs"] else None,
        relative_margin=float(st.session_state["scores_f_rel"]) if st.session_state["scores_f_use_rel"] else None,
    )
    return settings, int(st.session_state["scores_f_k"]), str(st.session_state["scores_f_format"])


@st.fragment
def show_filter(data: ScoreReport, run: Run, sources: tuple[str, ...]) -> None:
    """The mining-filter preview: rules, what they drop, before/after histograms, the download."""
    st.header("Mining-filter preview")
    st.caption(
        "What a hard-negative mining filter would keep of the listed negatives (the rules: "
        "'How this is computed' at the top)."
    )
    cands = data.candidates
    k_max = int(cands.mask.sum(axis=1).max()) if cands.mask.size else 0
    if k_max == 0:
        st.info("This run lists no negatives of the chosen sources, so there is nothing to filter.")
        return
    settings, k, out_fmt = filter_settings(k_max)
    result = cached_filter(str(run.path), sources, settings, cands)
    counts, sole = result.drop_counts(), result.sole_drop_counts()
    c = st.columns(4)
    c[0].metric("Listed negatives", f"{result.n_candidates:,}")
    c[1].metric("Kept", f"{result.n_kept:,}", delta=f"{result.n_kept - result.n_candidates:,}")
    c[2].metric(f"Pairs with fewer than {k} kept", f"{result.pairs_below(k):,}")
    c[3].metric("Pairs with none kept", f"{result.pairs_below(1):,}")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(
            filter_figure(
                cands.pos_sim,
                cands.neg_sim[cands.mask],
                cands.neg_sim[result.kept],
                bins=int(st.session_state["scores_bins"]),
                max_score=settings.max_score,
            ),
            width="stretch",
            key="scores_fig_filter",
        )
    with right:
        st.markdown("**What each rule drops**")
        st.dataframe(
            pd.DataFrame(
                {
                    "rule": [RULE_NAMES[r] for r in RULES],
                    "drops": [counts[r] for r in RULES],
                    "only this rule": [sole[r] for r in RULES],
                }
            ),
            hide_index=True,
            width="stretch",
        )
        st.caption("A negative can fail several rules; 'only this rule' counts those no other rule drops.")
        st.radio(
            "Export format",
            OUTPUT_FORMATS,
            key="scores_f_format",
            horizontal=True,
            help="n-tuple: anchor, positive, negative_1..negative_K (pairs with fewer than K kept are left out); "
            "triplet: one anchor, positive, negative row per kept negative (at most K per pair).",
        )
        n_rows = export_rows(result, k, out_fmt)
        n_pairs = len(result.kept_per_pair)
        short = result.pairs_below(k)
        if out_fmt == "n-tuple" and short:
            st.info(
                f"The n-tuple export leaves out {short:,} of {n_pairs:,} pairs: they have fewer than K = {k} "
                f"kept negatives, and an n-tuple row needs exactly K. Lower K, loosen the rules, or choose "
                "'triplet' to keep them."
            )
        elif out_fmt != "n-tuple" and result.pairs_below(1):
            st.caption(
                f"{result.pairs_below(1):,} of {n_pairs:,} pairs have no kept negative and give no triplet row."
            )
        st.download_button(
            f"Download kept negatives ({n_rows:,} rows)",
            lambda: cached_export(str(run.path), sources, settings, k, out_fmt, run, cands, result.kept),
            file_name=f"{run.run_id}-mined-{out_fmt}.csv",
            mime="text/csv",
            key="scores_filter_download",
            disabled=n_rows == 0,
            help="CSV in the sentence-transformers column format, ready for a training script",
        )
        st.caption(
            "Cells hold the texts, or the image paths relative to the dataset folder, as the dataset wrote them."
        )


def main() -> None:
    """Read inputs, compute through cached wrappers, render: numbers first, each control group a fragment."""
    st.title("Score distributions")
    explain()
    run = require_run()
    st.sidebar.multiselect(
        "Negative sources",
        list(NEGATIVE_SOURCES),
        key="scores_sources",
        help="given: listed in the dataset; in_batch: other pairs' positives of the same batch; mined: added by mining",
    )
    sources = tuple(s for s in NEGATIVE_SOURCES if s in st.session_state["scores_sources"])
    if not sources:
        st.warning("No negative source is selected: only positives and retrieval ranks are shown.")
    if not len(run.pairs):
        st.error("This run has no pairs.")
        st.stop()
    try:
        ranks = get_ranks(run, reverse=False)
        reverse = get_ranks(run, reverse=True) if has_reverse(run) else None
        data = cached_scores(str(run.path), sources, run, ranks, reverse)
    except NegScopeError as exc:
        st.error(escape_text(exc))
        st.stop()
    except (MemoryError, ValueError) as exc:
        st.error(f"The scores of this run could not be computed ({type(exc).__name__}): {escape_text(exc)}")
        st.stop()
    show_metrics(data, run)
    show_distributions(data, run)
    show_pairs(data, run, sources)
    show_filter(data, run, sources)


main()

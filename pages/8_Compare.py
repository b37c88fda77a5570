"""Compare checkpoints: what changed between two models, or along a training run, down to pairs and negatives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis.compare.align import Alignment, align_runs
from analysis.compare.deltas import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    METRIC_KEYS,
    Comparison,
    DetectorFlags,
    compare_runs,
    detector_flags,
)
from analysis.compare.pairs import false_negatives_across, negative_changes, pair_comparison, worse_pairs
from analysis.compare.sample import embed_sample_checkpoints, sample_available
from analysis.errors import NegScopeError
from analysis.metrics.scores import ScoreReport, compute_scores
from analysis.metrics.temperature import DEFAULT_TAU
from analysis.runs.folder import Run, load_run
from analysis.runs.locate import resolve_run_id, run_id_for
from analysis.runs.workspace import list_runs, runs_dir
from ui.compare_plots import delta_histogram, pair_scatter, sample_rows, trajectory_figure
from ui.render import show_item
from ui.safe_text import escape_text
from ui.state import require_run

st.set_page_config(page_title="Compare checkpoints · NegScope", page_icon="⚖️", layout="wide")

VIEWS = ("Metrics", "Trajectory", "Pairs", "False negatives")
COMPARE_PARAM = "compare"  # the URL keeps the chosen runs: ?compare=<run id>,<run id>,...
MAX_URL_RUNS = 12
TABLE_ROWS = 50
CARDS = (
    ("auroc", "AUROC"),
    ("recall_at_1", "Recall@1"),
    ("reverse_recall_at_1", "Recall@1 (reverse)"),
    ("loss_common_tau", "Loss at common τ"),
    ("gap", "Modality gap"),
    ("uniformity", "Uniformity"),
)
METRIC_NAMES = {
    "auroc": "AUROC (positive vs listed negatives)",
    "pos_sim_mean": "mean pos_sim",
    "neg_sim_mean": "mean neg_sim",
    "frac_hardest_neg_above_pos": "share of pairs with a negative above the positive",
    "recall_at_1": "recall@1, anchor → positive",
    "recall_at_5": "recall@5, anchor → positive",
    "recall_at_10": "recall@10, anchor → positive",
    "mrr_at_10": "MRR@10, anchor → positive",
    "reverse_recall_at_1": "recall@1, positive → anchor",
    "reverse_recall_at_5": "recall@5, positive → anchor",
    "reverse_recall_at_10": "recall@10, positive → anchor",
    "reverse_mrr_at_10": "MRR@10, positive → anchor",
    "tau": "temperature τ (learned, else 0.07)",
    "tau_is_learned": "τ learned by the checkpoint",
    "loss_own_tau": "InfoNCE loss at the run's own τ",
    "loss_common_tau": "InfoNCE loss at the common τ",
    "gap": "modality gap ‖mean A − mean B‖",
    "gap_centroid_cosine": "cosine of the two centroids",
    "gap_variance_share": "variance share along the gap",
    "alignment": "alignment (Wang & Isola)",
    "uniformity": "uniformity (Wang & Isola)",
    "fn_flagged": "flagged false negatives",
    "label_noise_flagged": "label-noise flags (all kinds)",
    "mismatched_pair_flagged": "flagged mismatched pairs",
    "label_flagged": "flagged wrong labels",
    "duplicate_flagged": "flagged near duplicates",
}

for key, value in {
    "compare_runs": None,
    "compare_tau": DEFAULT_TAU,
    "compare_detectors": False,
    "compare_view": VIEWS[0],
    "compare_a": None,
    "compare_b": None,
    "compare_scatter": "margin",
    "compare_pair": None,
    "compare_only_hardest": True,
}.items():
    st.session_state.setdefault(key, value)


# ------------------------------------------------------------------------------------------------ cached wrappers


@st.cache_resource(max_entries=2, show_spinner=False)
def cached_sample_runs(workspace: str) -> list[tuple[str, str]]:
    """(label, run folder) of the sample embedded with each of its three checkpoints (once per workspace)."""
    return [(label, str(path)) for label, path in embed_sample_checkpoints()]


def sample_runs() -> list[tuple[str, str]]:
    """:func:`cached_sample_runs`, embedded again when a run folder was removed since."""
    runs = cached_sample_runs(str(runs_dir()))
    if not all((Path(path) / "manifest.json").is_file() for _, path in runs):
        cached_sample_runs.clear()
        runs = cached_sample_runs(str(runs_dir()))
    return runs


@st.cache_resource(max_entries=16, show_spinner=False)
def cached_load(path: str, mtime: float) -> Run:
    """A run folder, loaded once per (path, manifest time)."""
    return load_run(path)


@st.cache_resource(max_entries=16, show_spinner=False)
def cached_scores(_run: Run, path: str, mtime: float) -> ScoreReport:
    """Scores and exact retrieval ranks of one run (shared by every comparison it is part of)."""
    return compute_scores(_run)


@st.cache_resource(max_entries=16, show_spinner=False)
def cached_flags(_run: Run, path: str, mtime: float) -> DetectorFlags:
    """The false-negative and label-noise detectors on one run (slow; once per run)."""
    return detector_flags(_run)


@st.cache_resource(max_entries=8, show_spinner=False)
def cached_alignment(paths: tuple[str, ...], labels: tuple[str, ...], mtimes: tuple[float, ...]) -> Alignment:
    """The runs lined up by item content (raises NegScopeError when their datasets differ)."""
    return align_runs([cached_load(p, m) for p, m in zip(paths, mtimes, strict=True)], labels=labels)


@st.cache_resource(max_entries=8, show_spinner=False)
def cached_comparison(
    _al: Alignment, key: tuple[tuple[str, ...], tuple[str, ...], tuple[float, ...]], tau: float, detectors: bool
) -> Comparison:
    """Every run's metrics; the per-run scores and detector results come from their own caches."""
    paths, _, mtimes = key
    reports = [cached_scores(run, p, m) for run, p, m in zip(_al.runs, paths, mtimes, strict=True)]
    flags = [cached_flags(run, p, m) for run, p, m in zip(_al.runs, paths, mtimes, strict=True)] if detectors else None
    return compare_runs(_al, common_tau=tau, flags=flags, reports=reports)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_pair_table(_comp: Comparison, key: tuple, tau: float, detectors: bool) -> pd.DataFrame:
    """The per-pair table of the comparison (reference ids)."""
    return pair_comparison(_comp)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_negative_changes(_comp: Comparison, key: tuple, a: str, b: str) -> pd.DataFrame:
    """Every listed negative in runs a and b."""
    return negative_changes(_comp, a, b)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_fn_across(_comp: Comparison, key: tuple, detectors: bool, a: str, b: str) -> pd.DataFrame:
    """Known, decided and flagged false negatives with their similarity in every run."""
    return false_negatives_across(_comp, a=a, b=b)


# ------------------------------------------------------------------------------------------------ explanation


def explain() -> None:
    st.title("Compare checkpoints")
    with st.expander("How this is computed"):
        st.markdown(
            "Two or more runs of the **same dataset content** (checkpoints, epochs, a fine-tune and its base) are "
            "lined up by content: every item by its content key, every pair by its id, anchor and positive, every "
            "listed negative by (pair, negative, source). Runs whose items, pairs or negatives differ are refused. "
            "Embedding dimensions may differ. The first run is the baseline; every delta is *run − first run*, "
            "and the tables use the first run's ids."
        )
        st.latex(
            r"\mathrm{margin} = \mathrm{pos\_sim} - \max_j \mathrm{neg\_sim}_j,\qquad"
            r"\mathrm{AUROC} = P(\mathrm{pos\_sim} > \mathrm{neg\_sim}) + \tfrac12 P(=),\qquad"
            r"\mathrm{MRR@10} = \operatorname{mean} \tfrac{1}{\mathrm{rank}}\,[\mathrm{rank} \le 10]"
        )
        st.latex(
            r"\mathcal{L}(\tau) = \operatorname{mean}_i\, -\log \frac{e^{s_{i+}/\tau}}{e^{s_{i+}/\tau} + \sum_j e^{s_{ij}/\tau}},"
            r"\qquad \text{gap} = \lVert \bar x_{A} - \bar x_{B} \rVert"
        )
        st.latex(
            r"\text{alignment} = \mathbb{E}\,\lVert f(a) - f(p) \rVert^2,\qquad"
            r"\text{uniformity} = \log \mathbb{E}_{x \ne y}\, e^{-2 \lVert f(x) - f(y) \rVert^2}"
        )
        st.markdown(
            "The loss is the symmetric (CLIP) InfoNCE over each pair's positive and listed negatives, at each run's "
            "own learned τ and at one **common τ** (so the loss compares the embeddings alone). Recall and MRR "
            "rank the target among every item of its modality, both directions. A **negative that became "
            "hardest** is its pair's most similar negative in B but not in A; its *rise* is how much closer "
            "to its positive it came: (neg_sim − pos_sim) in B minus the same in A. **False negatives across "
            "checkpoints** lists the sample's recorded false negatives, the review decisions and (with the "
            "detectors on) every flagged candidate, with anchor · candidate in each run: a negative change means "
            "the later checkpoint pushed something that really matches further away. The detectors are slow, "
            "so their counts are optional and computed once per run."
        )


# ------------------------------------------------------------------------------------------------ choosing runs


def _manifest(path: Path) -> dict:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _content_hash(manifest: dict) -> str:
    return str(manifest.get("dataset_content_hash") or manifest.get("dataset_hash") or "")


def _mtime(path: str) -> float:
    return (Path(path) / "manifest.json").stat().st_mtime


def run_options(current: Run) -> tuple[dict[str, str], list[str]]:
    """(run folder -> label) of every run that can be chosen, and the default selection.

    The default is the runs of the current run's dataset when the workspace holds two or more of them and
    the current run is not the sample; otherwise the sample's three checkpoints (embedded on first use).
    """
    options: dict[str, str] = {}
    sample: list[str] = []
    if sample_available():
        try:
            with st.spinner("Embedding the sample with its three checkpoints (once)…"):
                for label, path in sample_runs():
                    options[path] = f"{label} (sample)"
                    sample.append(path)
        except NegScopeError as exc:
            st.warning(f"The sample's checkpoints cannot be embedded: {escape_text(exc)}")
    runs = list(reversed(list_runs()))  # oldest first: training order for runs made one after another
    manifests = {str(p): _manifest(p) for p in runs}
    for path, manifest in manifests.items():
        if path not in options:
            name = Path(str(manifest.get("checkpoint_path") or "")).name or Path(path).name
            options[path] = f"{name} · {Path(path).name}"
    current_path = str(current.path)
    if current_path not in options:
        options[current_path] = f"{current.run_id} (current)"
    same = [p for p, m in manifests.items() if _content_hash(m) and _content_hash(m) == _content_hash(current.manifest)]
    if current_path not in sample and len(same) >= 2:
        return options, same
    return options, sample


def runs_from_url(options: dict[str, str]) -> list[str] | None:
    """The runs named by ``?compare=`` (read once per session), added to ``options``; None when absent or bad."""
    if st.session_state.get("compare_url_read"):
        return None
    st.session_state["compare_url_read"] = True
    text = st.query_params.get(COMPARE_PARAM)
    if not text:
        return None
    paths = []
    for run_id in str(text).split(",")[:MAX_URL_RUNS]:
        try:
            path = resolve_run_id(run_id)
        except NegScopeError as exc:
            st.warning(f"The link names runs this server cannot open ({escape_text(exc)}); showing the default runs.")
            return None
        paths.append(str(path))
        if str(path) not in options:
            name = Path(str(_manifest(path).get("checkpoint_path") or "")).name or path.name
            options[str(path)] = f"{name} · {path.name}"
    return paths if len(paths) >= 2 else None


def runs_to_url(paths: list[str]) -> None:
    """Name the chosen runs in the URL (when every one of them can be named there)."""
    ids = [run_id_for(p) for p in paths]
    value = ",".join(ids) if ids and all(i and "," not in i for i in ids) else None
    if value and st.query_params.get(COMPARE_PARAM) != value:
        st.query_params[COMPARE_PARAM] = value
    elif not value and COMPARE_PARAM in st.query_params:
        del st.query_params[COMPARE_PARAM]


def _labels(paths: list[str], options: dict[str, str]) -> tuple[str, ...]:
    """Short distinct labels (the sample's 'epoch N', else the checkpoint name, numbered when repeated)."""
    raw = [options.get(p, Path(p).name).split(" (sample)")[0].split(" · ")[0] for p in paths]
    out, seen = [], {}
    for name in raw:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return tuple(out)


# ------------------------------------------------------------------------------------------------ views


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{float(value):.4f}"


def metrics_view(comp: Comparison) -> None:
    labels = comp.labels
    first, last = labels[0], labels[-1]
    deltas = comp.deltas()
    st.text(f"The last run, {last}, against the first, {first}:")
    cols = st.columns(len(CARDS))
    for col, (key, name) in zip(cols, CARDS, strict=True):
        value = comp.metrics.at[last, key]
        delta = deltas.at[last, key] if key in deltas.columns else None
        colour = "normal" if key in HIGHER_IS_BETTER else "inverse" if key in LOWER_IS_BETTER else "off"
        col.metric(
            name,
            _fmt(value),
            delta=None if delta is None or not np.isfinite(delta) else f"{delta:+.4f}",
            delta_color=colour,
        )
    rows = []
    for key in METRIC_KEYS:
        values = comp.metrics.loc[:, key]
        if values.isna().all():
            continue
        row = {"metric": METRIC_NAMES.get(key, key), "key": key}
        row.update({label: _fmt(values[label]) for label in labels})
        for label in labels[1:]:
            d = deltas.at[label, key] if key in deltas.columns else None
            row[f"Δ {label} − {first}"] = "" if d is None or not np.isfinite(d) else f"{d:+.4f}"
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=36 * (len(rows) + 1) + 4)
    st.caption(
        f"Common τ = {comp.common_tau:g}. Loss: symmetric InfoNCE for two-modality data. Higher is better for "
        "AUROC, recall and MRR; lower is better for the loss, alignment, uniformity and the share of pairs with "
        "a negative above the positive."
    )
    if comp.metrics["fn_flagged"].isna().all():
        st.caption("Detector flag counts are off (they run the detectors on every run): turn them on above.")
    al = comp.alignment
    st.download_button(
        "Download the comparison (JSON)",
        json.dumps(comp.to_json(), indent=1),
        file_name="compare.json",
        mime="application/json",
        key="compare_download_json",
    )
    st.caption(
        " · ".join(
            f"{escape_text(label)}: {escape_text(run.run_id)} (dim {run.dim})"
            for label, run in zip(labels, al.runs, strict=True)
        )
    )


def trajectory_view(comp: Comparison) -> None:
    if len(comp.labels) < 3:
        st.info("With two runs the trajectory is one step; choose three or more ordered runs (epochs) above.")
    st.plotly_chart(trajectory_figure(comp.metrics), width="stretch", key="compare_trajectory")


def _pick_two(labels: tuple[str, ...]) -> tuple[str, str]:
    if st.session_state.get("compare_a") not in labels:
        st.session_state["compare_a"] = labels[0]
    if st.session_state.get("compare_b") not in labels:
        st.session_state["compare_b"] = labels[-1]
    c1, c2 = st.columns(2)
    a = c1.selectbox("Run A (before)", labels, key="compare_a")
    b = c2.selectbox("Run B (after)", labels, key="compare_b")
    if a == b:
        st.info("Run A and run B are the same run: every change is zero. Pick two different runs.")
    return a, b


def _selected_row(event: object) -> int | None:
    points = getattr(getattr(event, "selection", None), "points", None) or []
    for point in points:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if custom:
            try:
                return int(custom[0])
            except (TypeError, ValueError):
                continue
    return None


def pair_detail(comp: Comparison, table: pd.DataFrame, row: int, a: str, b: str) -> None:
    """The pair side by side: anchor and positive once, then each run's numbers and hardest negative."""
    al = comp.alignment
    ref = al.reference
    st.subheader("The selected pair")
    st.text(f"pair {table['pair_id'].iloc[row]}")
    c1, c2 = st.columns(2)
    with c1:
        show_item(ref, int(table["anchor_id"].iloc[row]), caption="anchor")
    with c2:
        show_item(ref, int(table["positive_id"].iloc[row]), caption="positive")
    cols = st.columns(2)
    for col, label in zip(cols, (a, b), strict=True):
        with col:
            st.text(f"Run {label}")
            rank = table[f"rank_{label}"].iloc[row]
            numbers = pd.DataFrame(
                {
                    "value": [
                        _fmt(table[f"pos_sim_{label}"].iloc[row]),
                        _fmt(table[f"hardest_neg_{label}"].iloc[row]),
                        _fmt(table[f"margin_{label}"].iloc[row]),
                        "—" if pd.isna(rank) else str(int(rank)),
                    ]
                },
                index=["pos_sim", "hardest neg_sim", "margin", "rank of the positive"],
            )
            st.dataframe(numbers, width="stretch")
            hardest = table[f"hardest_neg_id_{label}"].iloc[row]
            if pd.notna(hardest):
                show_item(ref, int(hardest), caption=f"hardest negative in {label}")


@st.fragment
def pairs_view(comp: Comparison, key: tuple, tau: float, detectors: bool) -> None:
    a, b = _pick_two(comp.labels)
    table = cached_pair_table(comp, key, tau, detectors)
    metric = st.radio(
        "Scatter", ["margin", "pos_sim"], key="compare_scatter", horizontal=True, help="Click a point to open the pair."
    )
    rows = sample_rows(len(table))
    if len(rows) < len(table):
        st.caption(f"Drawing a random {len(rows):,} of the {len(table):,} pairs; the tables below use them all.")
    fig = pair_scatter(
        table[f"{metric}_{a}"].to_numpy(),
        table[f"{metric}_{b}"].to_numpy(),
        rows,
        table["pair_id"].to_numpy(dtype=object),
        metric=metric,
        labels=(a, b),
        selected=st.session_state.get("compare_pair"),
    )
    event = st.plotly_chart(
        fig, width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"), key=f"compare_scatter_{metric}_{a}_{b}"
    )
    picked = _selected_row(event)
    if picked is not None:
        st.session_state["compare_pair"] = picked
    change = table[f"{metric}_{b}"] - table[f"{metric}_{a}"]
    st.plotly_chart(
        delta_histogram(change.to_numpy(), name=f"{metric} change ({b} − {a})", title=f"{metric} change per pair"),
        width="stretch",
        key="compare_change_hist",
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**Pairs that got worse most**")
        worst = worse_pairs(table, a, b, by=metric, n=TABLE_ROWS)
        contents = comp.alignment.reference.items["content"].astype(str).to_numpy()
        shown = worst.assign(positive=contents[worst["positive_id"].to_numpy(np.int64)])
        shown = shown[["pair_id", "positive", *[c for c in shown.columns if c not in ("pair_id", "positive")]]]
        ev = st.dataframe(
            shown,
            hide_index=True,
            width="stretch",
            on_select="rerun",
            selection_mode="single-row",
            key=f"compare_worst_{metric}_{a}_{b}",
        )
        chosen = list(getattr(getattr(ev, "selection", None), "rows", []) or [])
        if chosen:
            pair_id = worst["pair_id"].iloc[chosen[0]]
            st.session_state["compare_pair"] = int(np.flatnonzero(table["pair_id"].to_numpy() == pair_id)[0])
    with right:
        st.markdown("**Negatives that became hardest**")
        only = st.toggle("Only negatives that became their pair's hardest", key="compare_only_hardest")
        negs = cached_negative_changes(comp, key, a, b)
        if only:
            negs = negs[negs["became_hardest"]]
        negs = negs.head(TABLE_ROWS)
        contents = comp.alignment.reference.items["content"].astype(str).to_numpy()
        negs = negs.assign(negative=contents[negs["negative_id"].to_numpy(np.int64)])
        st.dataframe(
            negs[["pair_id", "negative", *[c for c in negs.columns if c not in ("pair_id", "negative")]]],
            hide_index=True,
            width="stretch",
            key=f"compare_negs_{a}_{b}_{only}",
        )
    row = st.session_state.get("compare_pair")
    if row is not None and 0 <= int(row) < len(table):
        pair_detail(comp, table, int(row), a, b)
    else:
        st.caption("Click a point in the scatter or a row of the first table to see the pair side by side.")


@st.fragment
def false_negatives_view(comp: Comparison, key: tuple, detectors: bool) -> None:
    a, b = _pick_two(comp.labels)
    table = cached_fn_across(comp, key, detectors, a, b)
    if table.empty:
        st.info(
            "No false negatives are known for this dataset (no recorded truth, no review decisions) and the detectors "
            "are off. Turn on the detector counts above to follow flagged candidates across the runs."
        )
        return
    pushed = int((table["sim_delta"] < 0).sum())
    cols = st.columns(4)
    cols[0].metric("Known or flagged false negatives", f"{len(table):,}")
    cols[1].metric("Pushed further away in run B", f"{pushed:,}", help="anchor · candidate fell from run A to run B")
    cols[2].metric("Mean change of anchor · candidate", _fmt(float(table["sim_delta"].mean())))
    if "status" in table.columns:
        counts = table["status"].value_counts()
        cols[3].metric(
            "Flags appeared / disappeared (A → B)",
            f"{int(counts.get('appeared', 0)):,} / {int(counts.get('disappeared', 0)):,}",
        )
    else:
        cols[3].metric("Flags appeared / disappeared", "—", help="turn on the detector counts above")
    st.plotly_chart(
        delta_histogram(
            table["sim_delta"].to_numpy(),
            name=f"anchor · candidate change ({b} − {a})",
            title="How the checkpoints moved the false negatives (negative = pushed apart)",
            higher_is_better=True,
        ),
        width="stretch",
        key="compare_fn_hist",
    )
    contents = comp.alignment.reference.items["content"].astype(str).to_numpy()
    shown = table.head(TABLE_ROWS * 4)
    st.markdown("**Pushed furthest away first**")
    st.dataframe(
        shown.assign(
            anchor=contents[shown["anchor_id"].to_numpy(np.int64)],
            candidate=contents[shown["candidate_id"].to_numpy(np.int64)],
        ),
        hide_index=True,
        width="stretch",
        key="compare_fn_table",
    )


# ------------------------------------------------------------------------------------------------ page


def main() -> None:
    explain()
    current = require_run()
    options, default = run_options(current)
    from_url = runs_from_url(options)
    if from_url:
        st.session_state["compare_runs"] = from_url
    if not st.session_state.get("compare_runs") or not set(st.session_state["compare_runs"]) <= set(options):
        st.session_state["compare_runs"] = list(default)
    chosen = st.multiselect(
        "Runs to compare, in order (the first is the baseline)",
        list(options),
        format_func=lambda p: options.get(p, Path(p).name),
        key="compare_runs",
        help="Runs of the same dataset content, e.g. checkpoints along one training run.",
    )
    c1, c2 = st.columns(2)
    tau = float(
        c1.number_input(
            "Common τ", min_value=0.001, max_value=10.0, step=0.01, format="%.3f", key="compare_tau",
            help="The temperature at which every run's loss is also computed, so the loss compares embeddings alone.",
        )
    )  # fmt: skip
    detectors = c2.toggle(
        "Count detector flags",
        key="compare_detectors",
        help="Slow: runs the false-negative and label-noise detectors on every run, once (then cached).",
    )
    runs_to_url(list(chosen))
    if len(chosen) < 2:
        st.info("Choose at least two runs to compare.")
        return
    paths = tuple(chosen)
    labels = _labels(list(paths), options)
    try:
        mtimes = tuple(_mtime(p) for p in paths)
        with st.spinner("Lining the runs up by content…"):
            al = cached_alignment(paths, labels, mtimes)
        with st.spinner("Computing every run's metrics (exact retrieval ranks; detectors when on)…"):
            comp = cached_comparison(al, (paths, labels, mtimes), tau, detectors)
    except (NegScopeError, OSError) as exc:
        st.error(f"These runs cannot be compared: {escape_text(exc)}")
        return
    key = (paths, labels, mtimes, tau, detectors)
    if st.session_state.get("compare_view") not in VIEWS:
        st.session_state["compare_view"] = VIEWS[0]
    view = st.segmented_control("View", VIEWS, key="compare_view", help="Only the chosen view is computed.")
    view = view or VIEWS[0]
    if view == "Metrics":
        metrics_view(comp)
    elif view == "Trajectory":
        trajectory_view(comp)
    elif view == "Pairs":
        pairs_view(comp, key, tau, detectors)
    else:
        false_negatives_view(comp, key, detectors)


main()

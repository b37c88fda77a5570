"""Embedding map: every item of the run in 2-D (UMAP or PCA), coloured, searchable and selectable."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.scriptrunner import get_script_run_ctx

from analysis.errors import NegScopeError
from analysis.maps.embedding_map import (
    REVIEW_STATUSES,
    MapParams,
    compute_map,
    find_items,
    fit_note,
    fit_sample,
    is_cached,
    item_attributes,
    item_neighbours,
    pair_lines,
    per_item_scores,
    review_status,
)
from analysis.runs.folder import Run
from analysis.search.exact import flat_index
from ui import review
from ui.map_jobs import Job, map_job, umap_warmup
from ui.map_selection import SelectionState, figure_signature, next_selection
from ui.render import show_item
from ui.safe_text import escape_text
from ui.state import require_run

st.set_page_config(page_title="Embedding map · NegScope", page_icon="🗺️", layout="wide")

#: Session-state keys the false-negative review page reads to narrow its queue to these item ids.
QUEUE_KEY = "fn_focus_item_ids"  # read by pages/4_False_Negatives.py to filter its queue
FN_PAGE = "pages/4_False_Negatives.py"
MAX_CATEGORIES = 20
MAX_SELECTION_ROWS = 1_000
MAX_THUMBNAILS = 24
THUMBNAIL_PX = 72
HOVER_CHARS = 80
SELECTED = "#e6007e"  # the ring around selected items (kept when the map is redrawn)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
COLOUR_BY = {
    "Modality": ("modality", "category"),
    "Label": ("label", "category"),
    "Role in pairs": ("role", "category"),
    "Negative source": ("negative_source", "category"),
    "pos_sim (anchor · positive)": ("pos_sim", "number"),
    "Review decision": ("review", "category"),
    "False-negative score": ("fn_score", "number"),
    "False-negative flag": ("fn_flag", "category"),
    "Label-noise score": ("ln_score", "number"),
    "Label-noise flag": ("ln_flag", "category"),
}

for key, value in {
    "map_method": "UMAP",
    "map_neighbors": 15,
    "map_min_dist": 0.1,
    "map_auto_epochs": True,
    "map_epochs": 200,
    "map_seed": 0,
    "map_colour": "Modality",
    "map_lines": False,
    "map_lines_n": 200,
    "map_point_size": 4,
    "map_max_points": 200_000,
    "map_search": "",
    "map_search_k": 10,
    "map_selected": [],  # the kept selection (item ids): it outlives redraws of the chart (ui/map_selection.py)
    "map_selected_on": "",  # the map it was made on ("PCA", "UMAP")
    "map_chart_sig": "",
    "map_event_ids": [],
}.items():
    st.session_state.setdefault(key, value)


# ------------------------------------------------------------------------------------------------ cached wrappers


@st.cache_data(max_entries=8, show_spinner=False)
def cached_map(_run: Run, run_path: str, params: MapParams) -> pd.DataFrame:
    """The map (read from the run folder's cache, which :func:`ensure_map` filled with a progress bar)."""
    return compute_map(_run, params)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_attributes(_run: Run, run_path: str) -> pd.DataFrame:
    """Modality, label, role, negative source and pos_sim of every item."""
    return item_attributes(_run)


@st.cache_resource(max_entries=2, show_spinner=False)
def cached_index(_run: Run, run_path: str) -> faiss.Index:
    """An exact inner-product index over the run's embeddings, for the neighbour search."""
    return flat_index(_run.embeddings)


@st.cache_data(max_entries=4, show_spinner="Running the false-negative detector…")
def cached_fn_scores(_run: Run, run_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the highest false-negative score it gets as a candidate, and whether any is flagged."""
    from analysis.detectors.false_negatives import find_false_negatives

    return per_item_scores(find_false_negatives(_run), len(_run.items), id_column="candidate_id")


@st.cache_data(max_entries=4, show_spinner="Running the label-noise detectors…")
def cached_ln_scores(_run: Run, run_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the highest label-noise score (mismatched pair, wrong label, duplicate) and any flag."""
    from analysis.detectors.label_noise import detect_label_noise

    return per_item_scores(detect_label_noise(_run).table(), len(_run.items), id_column="item_id")


def review_column(run: Run) -> np.ndarray:
    """Each item's review status from the shared database (read fresh: other annotators write to it)."""
    return review_status(run, review.decisions(run))


# ------------------------------------------------------------------------------------------------ page parts


def explain() -> None:
    """The theory and formulas, folded under the title (kept complete)."""
    with st.expander("How this is computed", expanded=False):
        st.markdown(
            "Every item of the run (anchors, positives, negatives) is one point; nearby points have similar "
            "embeddings. **PCA** is a linear projection onto the two directions of largest variance: it keeps "
            "global distances honest but squashes clusters together. **UMAP** keeps each item's nearest "
            "neighbours near it, at the price of distances between clusters meaning little. The PCA map shows at "
            "once; a UMAP map is computed in the background and replaces it when ready (then it is read from the "
            "run folder)."
        )
        st.markdown("PCA: the top two eigenvectors $w_1, w_2$ of the covariance of the centred embeddings,")
        st.latex(
            r"w = \arg\max_{\|w\|=1} w^\top \Sigma w, \quad \Sigma = \tfrac{1}{N-1} \sum_i (x_i - \bar x)(x_i - \bar x)^\top"
        )
        st.markdown(
            "UMAP: each item gets fuzzy memberships to its $k$ nearest neighbours (found exactly with faiss, "
            "or with a recall-checked approximate index for large runs), and the map is optimised so that "
            "the same memberships hold between the 2-D points:"
        )
        st.latex(
            r"v_{j|i} = \exp\!\left(-\frac{d(x_i, x_j) - \rho_i}{\sigma_i}\right), \quad"
            r"v_{ij} = v_{j|i} + v_{i|j} - v_{j|i} v_{i|j}, \quad"
            r"w_{ij} = \left(1 + a \|y_i - y_j\|^{2b}\right)^{-1}"
        )
        st.latex(
            r"\min_{y} \; \sum_{i \ne j} v_{ij} \log \frac{v_{ij}}{w_{ij}} + (1 - v_{ij}) \log \frac{1 - v_{ij}}{1 - w_{ij}}"
        )
        st.markdown(
            "How well a map keeps neighbourhoods is measured by its **trustworthiness** (1 = every map "
            "neighbour is a real neighbour; $r(i,j)$ is j's rank among i's neighbours in the embedding space):"
        )
        st.latex(r"T(k) = 1 - \frac{2}{N k (2N - 3k - 1)} \sum_i \sum_{j \in U_k(i)} \big(r(i,j) - k\big)")
        st.markdown(
            "Select points with the box or lasso tool (or click one) to list them below and send them to the "
            "false-negative review queue."
        )


def settings_sidebar() -> MapParams:
    """Map parameters from the sidebar."""
    sb = st.sidebar
    sb.header("Map")
    sb.radio("Projection", ["UMAP", "PCA"], key="map_method", horizontal=True)
    umap_on = st.session_state["map_method"] == "UMAP"
    sb.slider("Neighbours (k)", 2, 100, key="map_neighbors", disabled=not umap_on, help="UMAP's n_neighbors")
    sb.slider("Minimum distance", 0.0, 0.99, step=0.01, key="map_min_dist", disabled=not umap_on)
    sb.checkbox("Choose epochs automatically", key="map_auto_epochs", disabled=not umap_on)
    sb.number_input(
        "Epochs", 10, 2000, step=10, key="map_epochs", disabled=not umap_on or st.session_state["map_auto_epochs"]
    )
    sb.number_input("Seed", 0, 2**31 - 1, key="map_seed", help="Same seed, same map.")
    return MapParams(
        method="umap" if umap_on else "pca",
        n_neighbors=int(st.session_state["map_neighbors"]),
        min_dist=float(st.session_state["map_min_dist"]),
        n_epochs=None if st.session_state["map_auto_epochs"] else int(st.session_state["map_epochs"]),
        seed=int(st.session_state["map_seed"]),
    )


def map_for_page(run: Run, params: MapParams) -> tuple[pd.DataFrame, Job | None]:
    """The map to draw now, and the background UMAP job while it runs (the PCA map is drawn meanwhile).

    PCA, and any map already in the run folder's cache, is returned at once. A UMAP map not computed yet
    starts a background job (once per run and parameters) and the PCA map stands in until it is done.
    """
    if params.method == "pca" or is_cached(run, params):
        return cached_map(run, str(run.path), params), None
    job = map_job(str(run.path), params.key(), run, params)
    if job.done.is_set() and not job.error:
        if is_cached(run, params):
            return cached_map(run, str(run.path), params), None
        return job.result, None  # the run folder is not writable: the map lives in memory
    stand_in = MapParams(method="pca", seed=params.seed)
    return cached_map(run, str(run.path), stand_in), job


@st.fragment(run_every=1.0)
def umap_progress(job: Job) -> None:
    """A progress bar that moves while the UMAP job runs; swaps the map in (a full rerun) when it is done."""
    if job.done.is_set():
        if job.error:
            st.error(f"The UMAP map could not be computed ({escape_text(job.error)}); the PCA map is shown.")
            return
        ctx = get_script_run_ctx()
        if ctx is not None and ctx.fragment_ids_this_run:  # only a timer tick reruns the page (never a user's click)
            st.rerun(scope="app")
    view = job.progress.view()  # staged: the compilation moves the bar by time, the layout by its epochs
    st.progress(
        max(view.fraction, 0.01),
        text=f"UMAP is being computed in the background ({view.elapsed_s:.0f} s): {view.text()}. "
        "The PCA map is shown meanwhile; UMAP replaces it when ready (a selection made on it is kept).",
    )


def colour_values(run: Run, choice: str, attrs: pd.DataFrame) -> tuple[np.ndarray, str]:
    """(N,) values to colour by and their kind ('category' or 'number')."""
    column, kind = COLOUR_BY[choice]
    if column in attrs.columns:
        return attrs[column].to_numpy(), kind
    if column == "review":
        return review_column(run), kind
    if column.startswith("fn_"):
        score, flagged = cached_fn_scores(run, str(run.path))
    else:
        score, flagged = cached_ln_scores(run, str(run.path))
    if column.endswith("_score"):
        return score, kind
    names = np.where(flagged, "flagged", np.where(np.isnan(score), "not examined", "not flagged"))
    return names.astype(object), kind


@st.cache_data(max_entries=4, show_spinner=False)
def cached_hover(_run: Run, run_path: str) -> np.ndarray:
    """(N,) hover lines: role, label and the text (or image path), escaped so plotly never reads markup."""
    attrs = cached_attributes(_run, run_path)
    content = _run.items["content"].astype(str)
    short = content.where(content.str.len() <= HOVER_CHARS, content.str.slice(0, HOVER_CHARS - 1) + "…")
    head = attrs["modality"].astype(str) + " · " + attrs["role"].astype(str) + " · label " + attrs["label"].astype(str)
    return np.array(
        [escape_text(h, plot=True) + "<br>" + escape_text(t, plot=True) for h, t in zip(head, short, strict=True)],
        dtype=object,
    )


def shown_rows(n: int, limit: int, keep: np.ndarray, seed: int) -> np.ndarray:
    """All rows, or a seeded random ``limit`` of them plus ``keep`` (highlighted rows stay visible)."""
    if n <= limit:
        return np.arange(n)
    rows = np.random.default_rng(seed).choice(n, size=limit, replace=False)
    return np.unique(np.concatenate([rows, keep.astype(np.int64)]))


def build_figure(
    coords: np.ndarray,
    values: np.ndarray,
    kind: str,
    hover: np.ndarray,
    rows: np.ndarray,
    *,
    point_size: int,
    lines: tuple[np.ndarray, np.ndarray] | None,
    query: int | None,
    neighbours: np.ndarray,
    title: str,
    selected: np.ndarray | None = None,
) -> go.Figure:
    """The WebGL scatter: one trace per category (or one with a colour scale), overlays on top."""
    fig = go.Figure()
    ids = rows.astype(np.int64)
    if kind == "category":
        cats = pd.Series(values[rows]).astype(str)
        counts = cats.value_counts()
        top = list(counts.index[:MAX_CATEGORIES])
        if len(counts) > MAX_CATEGORIES:
            cats = cats.where(cats.isin(top), "other")
            top.append("other")
        order = [c for c in REVIEW_STATUSES if c in top] if set(top) <= set(REVIEW_STATUSES) else sorted(top)
        for i, cat in enumerate(order):
            mask = (cats == cat).to_numpy()
            sel = ids[mask]
            fig.add_trace(
                go.Scattergl(
                    x=coords[sel, 0],
                    y=coords[sel, 1],
                    mode="markers",
                    name=f"{escape_text(cat, plot=True)} ({int(mask.sum()):,})",
                    marker={"size": point_size, "color": PALETTE[i % len(PALETTE)], "opacity": 0.75},
                    customdata=sel[:, None].astype(np.int32),
                    text=hover[sel],
                    hovertemplate="item %{customdata[0]}<br>%{text}<extra>" + escape_text(cat, plot=True) + "</extra>",
                )
            )
    else:
        v = values[rows].astype(np.float64)
        ok = np.isfinite(v)
        if (~ok).any():
            sel = ids[~ok]
            fig.add_trace(
                go.Scattergl(
                    x=coords[sel, 0],
                    y=coords[sel, 1],
                    mode="markers",
                    name=f"no value ({int((~ok).sum()):,})",
                    marker={"size": point_size, "color": "#c7c7c7", "opacity": 0.5},
                    customdata=sel[:, None].astype(np.int32),
                    text=hover[sel],
                    hovertemplate="item %{customdata[0]}<br>%{text}<extra>no value</extra>",
                )
            )
        sel = ids[ok]
        fig.add_trace(
            go.Scattergl(
                x=coords[sel, 0],
                y=coords[sel, 1],
                mode="markers",
                name=title,
                marker={
                    "size": point_size,
                    "color": v[ok],
                    "colorscale": "Viridis",
                    "showscale": True,
                    "colorbar": {"title": {"text": title}},
                    "opacity": 0.8,
                },
                customdata=np.column_stack([sel, v[ok]]).astype(np.float32),
                text=hover[sel],
                hovertemplate="item %{customdata[0]} · value %{customdata[1]:.3f}<br>%{text}<extra></extra>",
            )
        )
    if lines is not None:
        fig.add_trace(
            go.Scattergl(
                x=lines[0],
                y=lines[1],
                mode="lines",
                name="anchor → positive",
                line={"width": 1, "color": "rgba(60,60,60,0.35)"},
                hoverinfo="skip",
                connectgaps=False,
            )
        )
    if len(neighbours):
        fig.add_trace(
            go.Scattergl(
                x=coords[neighbours, 0],
                y=coords[neighbours, 1],
                mode="markers",
                name="nearest neighbours",
                marker={"size": point_size + 8, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "black"}},
                customdata=neighbours[:, None],
                text=hover[neighbours],
                hovertemplate="neighbour: item %{customdata[0]}<br>%{text}<extra></extra>",
            )
        )
    if selected is not None and len(selected):
        fig.add_trace(
            go.Scattergl(
                x=coords[selected, 0],
                y=coords[selected, 1],
                mode="markers",
                name=f"selected ({len(selected):,})",
                marker={  # thin rings when many are selected, so the colours underneath stay readable
                    "size": point_size + (6 if len(selected) <= 300 else 3),
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": 2 if len(selected) <= 300 else 1, "color": SELECTED},
                },
                customdata=selected[:, None].astype(np.int32),
                text=hover[selected],
                hovertemplate="selected: item %{customdata[0]}<br>%{text}<extra></extra>",
            )
        )
    if query is not None:
        fig.add_trace(
            go.Scattergl(
                x=[coords[query, 0]],
                y=[coords[query, 1]],
                mode="markers",
                name="search result",
                marker={
                    "size": point_size + 14,
                    "color": "gold",
                    "symbol": "star",
                    "line": {"width": 1, "color": "black"},
                },
                customdata=[[int(query)]],
                text=[hover[query]],
                hovertemplate="found: item %{customdata[0]}<br>%{text}<extra></extra>",
            )
        )
    fig.update_layout(
        height=650,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"itemsizing": "constant", "title": {"text": title}},
        dragmode="lasso",
        xaxis={"showticklabels": False, "title": None, "zeroline": False},
        yaxis={"showticklabels": False, "title": None, "zeroline": False, "scaleanchor": "x", "scaleratio": 1},
        uirevision="map",
    )
    return fig


def selected_ids(event, n_items: int) -> list[int]:
    """Item ids of the selected points, read from their custom data (never from point indices)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out: list[int] = []
    for point in points or []:
        data = point.get("customdata") if isinstance(point, dict) else None
        if data is None:
            continue
        # plotly.js hands typed-array custom data over as {"0": id, "1": value}, plain lists as [id, value]
        if isinstance(data, dict):
            value = data.get("0", data.get(0))
        elif isinstance(data, list | tuple):
            value = data[0] if data else None
        else:
            value = data
        try:
            item = int(value)
        except (TypeError, ValueError):
            continue
        if 0 <= item < n_items and item not in out:
            out.append(item)
    return out


def search_panel(run: Run) -> tuple[int | None, pd.DataFrame]:
    """The search box: finds an item by id or text; returns it and its nearest neighbours."""
    st.text_input(
        "Find an item (an item id, or text its content contains)",
        key="map_search",
        placeholder="e.g. 42, or 'seven', or images/0007.png",
    )
    query = st.session_state["map_search"].strip()
    if not query:
        return None, pd.DataFrame()
    found = find_items(run, query, limit=200)
    if len(found) == 0:
        st.info(f"No item has the id or contains the text {escape_text(repr(query))}.")
        return None, pd.DataFrame()
    contents = run.items["content"].astype(str)
    labels = {int(i): f"{int(i)} · {contents.iloc[int(i)][:70]}" for i in found}
    if st.session_state.get("map_search_pick") not in labels:
        st.session_state["map_search_pick"] = int(found[0])
    left, right = st.columns([3, 1])
    left.selectbox(
        f"{len(found)} match{'es' if len(found) != 1 else ''}" + (" (first 200)" if len(found) == 200 else ""),
        list(labels),
        format_func=lambda i: labels[i],
        key="map_search_pick",
    )
    right.slider("Neighbours to highlight", 1, 50, key="map_search_k")
    item = int(st.session_state["map_search_pick"])
    nbrs = item_neighbours(
        run.embeddings, item, int(st.session_state["map_search_k"]), index=cached_index(run, str(run.path))
    )
    return item, nbrs


def item_table(run: Run, attrs: pd.DataFrame, ids: list[int], extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows of ``attrs`` for ``ids``, with the content, ready to show."""
    table = attrs.iloc[ids][["item_id", "modality", "role", "label", "negative_source", "pos_sim"]].copy()
    table.insert(2, "content", run.items["content"].astype(str).iloc[ids].to_numpy())
    if extra is not None:
        table = extra.merge(table, on="item_id", how="left")
    return table.reset_index(drop=True)


def thumbnails(run: Run, ids: list[int]) -> None:
    """Small pictures of the selected image items (the first ``MAX_THUMBNAILS``), with their item ids."""
    modality = run.items["modality"].to_numpy()
    images = [i for i in ids if modality[int(i)] == "image"]
    if not images:
        return
    paths, captions = [], []
    for i in images[:MAX_THUMBNAILS]:
        try:
            path = run.image_path(int(i))
        except NegScopeError:
            continue
        if path.is_file():
            paths.append(str(path))
            captions.append(f"item {int(i)}")
    if paths:
        st.image(paths, width=THUMBNAIL_PX, caption=captions, clamp=True)
        st.caption(
            f"{len(paths):,} of {len(images):,} selected images"
            + (f" (the first {MAX_THUMBNAILS})" if len(images) > MAX_THUMBNAILS else "")
        )
    else:
        st.caption(f"{len(images):,} selected images; their files are not found next to the dataset.")


def clear_selection() -> None:
    """Empty the kept selection (before the page reruns, so the rings go too)."""
    st.session_state["map_selected"] = []


def current_map() -> str:
    """The map drawn in this run: "PCA" while UMAP is on its way, else the chosen method."""
    return str(st.session_state.get("map_drawn", ""))


def selection_panel(run: Run, attrs: pd.DataFrame, ids: list[int]) -> None:
    """The table of selected items, one of them drawn, and the hand-over to the review queue."""
    st.subheader(f"Selection: {len(ids):,} item{'s' if len(ids) != 1 else ''}")
    if not ids:
        st.caption("Use the box or lasso tool on the map (or click a point) to select items.")
        return
    made_on, shown_on = st.session_state.get("map_selected_on", ""), current_map()
    note = f"Selected on the {made_on} map; ringed on the {shown_on} map shown now. " if made_on not in ("", shown_on) else ""
    left, right = st.columns([4, 1])
    left.caption(note + "The selected items are ringed on the map; a new selection replaces them.")
    right.button("Clear the selection", key="map_clear", on_click=clear_selection)
    table = item_table(run, attrs, ids)
    thumbnails(run, ids)
    shown = table.head(MAX_SELECTION_ROWS)  # a page of rows goes to the browser; the download has them all
    st.dataframe(shown, hide_index=True, height=min(400, 38 + 35 * len(shown)), key="map_selection_table")
    if len(table) > len(shown):
        st.caption(f"The first {len(shown):,} of {len(table):,} selected items; download the CSV for all of them.")
    left, right = st.columns([1, 2])
    with left:
        if st.session_state.get("map_show") not in ids:
            st.session_state["map_show"] = ids[0]
        st.selectbox("Show item", ids, key="map_show")
        show_item(run, int(st.session_state["map_show"]), width=200)
    with right:
        st.markdown(
            "Send these items to the **false-negative review queue**: it will list only the candidates whose "
            "anchor or candidate is one of them."
        )
        if st.button(f"Send {len(ids):,} items to the review queue", key="map_send", type="primary"):
            st.session_state[QUEUE_KEY] = list(ids)
            st.session_state["map_sent"] = len(ids)
        if st.session_state.get("map_sent"):
            st.success(f"{st.session_state['map_sent']:,} items are waiting in the review queue.")
            try:
                st.page_link(FN_PAGE, label="Open the false-negative review", icon="🔍")
            except StreamlitAPIException:  # the page runs on its own (not under app.py): no page registry
                st.caption("Open **False Negatives** in the sidebar to review them.")
        st.download_button(
            "Download the selection (CSV)",
            table.to_csv(index=False).encode(),
            file_name=f"{run.run_id}_selection.csv",
            mime="text/csv",
            key="map_download",
        )


# ------------------------------------------------------------------------------------------------ the page


st.title("Embedding map")
explain()
run = require_run()
umap_warmup()  # started by app.py already; this covers the page opened on its own
if st.session_state.get("map_selection_run") != str(run.path):  # another run: its item ids mean other items
    st.session_state.update(map_selected=[], map_chart_sig="", map_event_ids=[], map_selection_run=str(run.path))
params = settings_sidebar()
n = len(run.items)
if n == 0:
    st.warning("This run has no items to draw.")
    st.stop()

try:
    table, pending = map_for_page(run, params)
    attrs = cached_attributes(run, str(run.path))
except NegScopeError as exc:
    st.error(f"The map could not be computed: {escape_text(exc)}")
    st.stop()
except (MemoryError, OSError, ValueError) as exc:
    st.error(f"The map could not be computed ({type(exc).__name__}): {escape_text(exc)}")
    st.stop()
coords = table[["x", "y"]].to_numpy(np.float32)

if pending is not None:
    umap_progress(pending)
controls = st.columns([2, 1.4, 1.2, 1])
controls[0].selectbox("Colour by", list(COLOUR_BY), key="map_colour")
controls[1].toggle("Pair lines", key="map_lines", help="Lines from anchor to positive, for a random sample of pairs")
controls[2].slider("Pairs drawn", 10, 2000, step=10, key="map_lines_n", disabled=not st.session_state["map_lines"])
controls[3].slider("Point size", 1, 12, key="map_point_size")
if n > 50_000:
    st.number_input(
        "Points drawn at most (a random sample above this; found and selected items always stay)",
        10_000,
        2_000_000,
        step=10_000,
        key="map_max_points",
    )

try:
    values, kind = colour_values(run, st.session_state["map_colour"], attrs)
except (NegScopeError, ValueError) as exc:
    st.error(f"Cannot colour by {escape_text(st.session_state['map_colour'])}: {escape_text(exc)}")
    values, kind = attrs["modality"].to_numpy(), "category"

query_item, nbrs = search_panel(run)
neighbour_ids = nbrs["item_id"].to_numpy(np.int64) if len(nbrs) else np.empty(0, dtype=np.int64)
keep = np.concatenate([neighbour_ids, [query_item] if query_item is not None else []]).astype(np.int64)
keep = np.concatenate([keep, np.asarray(st.session_state["map_selected"], dtype=np.int64)])
rows = shown_rows(n, int(st.session_state["map_max_points"]), keep, int(st.session_state["map_seed"]))
lines = None
if st.session_state["map_lines"]:
    xs, ys, _ = pair_lines(
        run, coords, n_pairs=int(st.session_state["map_lines_n"]), seed=int(st.session_state["map_seed"])
    )
    lines = (xs, ys)

fig = build_figure(
    coords,
    values,
    kind,
    cached_hover(run, str(run.path)),
    rows,
    point_size=int(st.session_state["map_point_size"]),
    lines=lines,
    query=query_item,
    neighbours=neighbour_ids,
    title=st.session_state["map_colour"],
    selected=np.asarray(st.session_state["map_selected"], dtype=np.int64),
)
how = "read from the run folder" if table.attrs.get("cached", True) else "just computed"
shown_method = "PCA (UMAP on its way)" if pending is not None else params.method.upper()
sampled = f"a random {len(rows):,} drawn" if len(rows) < n else f"all {len(rows):,} drawn"
st.caption(
    f"{shown_method} map of {n:,} items ({sampled}, WebGL) · {how} · "
    "drag to select (lasso; the box tool is in the toolbar; a click picks one point), scroll to zoom; "
    "the selection stays ringed when the map is redrawn (UMAP replacing PCA, another colouring)."
)
if pending is None and params.method == "umap" and fit_note(fit_sample(n, params), n):
    st.caption(fit_note(fit_sample(n, params), n))  # a large run's UMAP: fitted on a seeded sample
chart_config = {"scrollZoom": True, "displaylogo": False}
chart_was_drawn = "map_chart" in st.session_state  # False after another page: the chart's old selection is gone
event = st.plotly_chart(
    fig,
    on_select="rerun",
    selection_mode=("box", "lasso", "points"),
    key="map_chart",
    config=chart_config,
)
kept = SelectionState(
    tuple(st.session_state["map_selected"]),
    st.session_state["map_chart_sig"],
    tuple(st.session_state["map_event_ids"]),
)
now = next_selection(
    kept,
    chart_sig=figure_signature(fig, chart_config, skip=("text",)),  # hover texts follow from the ids
    event_ids=selected_ids(event, n),
    chart_was_drawn=chart_was_drawn,
)
st.session_state["map_drawn"] = "PCA" if pending is not None else params.method.upper()
if now.selected != kept.selected:
    st.session_state["map_selected_on"] = st.session_state["map_drawn"]
st.session_state["map_selected"] = list(now.selected)
st.session_state["map_chart_sig"] = now.chart_sig
st.session_state["map_event_ids"] = list(now.event_ids)
if now.selected != kept.selected:
    st.rerun()  # draw the rings of the new selection (the chart starts afresh; the kept ids carry over)

if query_item is not None and len(nbrs):
    with st.expander(f"Item {query_item} and its {len(nbrs)} nearest neighbours (cosine similarity)", expanded=True):
        left, right = st.columns([1, 3])
        with left:
            show_item(run, query_item, caption="searched item", width=160)
        with right:
            st.dataframe(item_table(run, attrs, nbrs["item_id"].tolist(), extra=nbrs), hide_index=True)

selection_panel(run, attrs, st.session_state["map_selected"])

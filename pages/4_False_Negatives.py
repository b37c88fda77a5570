"""False negatives: the review queue of "negatives" that are probably positives, decisions, and the export."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis.detectors.false_negatives import (
    FLAG_METHODS,
    Settings,
    find_false_negatives,
    flag_by,
    retrieval_before_after,
    with_decisions,
)
from analysis.errors import NegScopeError
from analysis.review.assignment import queue_key
from analysis.review.decisions import negative_decisions
from analysis.review.rows import negative_row
from analysis.review.store import Decision
from analysis.runs.folder import NEGATIVE_SOURCES, Run
from analysis.runs.workspace import list_runs
from ui import annotators, review
from ui import fn_learning as fn_learning_ui
from ui.render import show_item
from ui.safe_text import escape_text
from ui.state import annotator_name, cached_run, require_run

st.set_page_config(page_title="False negatives · NegScope", page_icon="🔍", layout="wide")

FOCUS_KEY = "fn_focus_item_ids"  # other pages put item ids here to send them to this queue
STATES = ("Undecided", "Decided", "False negative", "Negative", "Unsure", "All")
STATE_DECISION = {"False negative": "false_negative", "Negative": "negative", "Unsure": "unsure"}
BUTTONS = (("False negative", "false_negative"), ("Negative", "negative"), ("Unsure", "unsure"))
BUTTON_HELP = {value: label for label, value in BUTTONS}
SHORTCUTS = {"false_negative": "F", "negative": "N", "unsure": "U"}
KEYS = (("F", "false negative"), ("N", "negative"), ("U", "unsure"), ("Z", "undo"), ("→", "next"), ("←", "previous"))
METHOD_NAMES = {"score": "Combined score", "absolute": "Absolute margin", "relative": "Relative margin"}
GRID_SIZE = 8
TABLE_ROWS = 1000
MAX_CACHED = 4

for key, value in {
    "fn_view": "One at a time",
    "fn_state": "Undecided",
    "fn_sources": list(NEGATIVE_SOURCES),
    "fn_min_score": 0.0,
    "fn_flagged_only": False,
    "fn_pos": 0,
    "fn_page": 0,
    "fn_mine_k": 10,
    "fn_use_labels": True,
    "fn_method": "score",
    "fn_threshold": 0.5,
    "fn_margin": 0.1,
    "fn_guide": "",
    "fn_bulk_decision": "false_negative",
}.items():
    st.session_state.setdefault(key, value)


# --- cached computation ---------------------------------------------------------------------------------


@st.cache_resource(max_entries=1, show_spinner=False)
def _result_cache() -> dict:
    """A small LRU of detector results shared by all sessions (filled outside, so a progress bar can show)."""
    return {"lock": threading.Lock(), "entries": OrderedDict()}


def candidates(run: Run, settings: Settings, guide: Run | None) -> pd.DataFrame:
    """The detector's table for (run, settings, guide), computed once with a progress bar, then cached."""
    cache = _result_cache()
    key = (run.run_id, str(run.path), settings, None if guide is None else str(guide.path))
    with cache["lock"]:
        if key in cache["entries"]:
            cache["entries"].move_to_end(key)
            return cache["entries"][key]
    bar = st.progress(0.0, text="Mining false-negative candidates…")
    try:
        table = find_false_negatives(
            run, settings=settings, guide=guide, progress=lambda f: bar.progress(f, text="Mining candidates…")
        )
    finally:
        bar.empty()
    with cache["lock"]:
        cache["entries"][key] = table
        while len(cache["entries"]) > MAX_CACHED:
            cache["entries"].popitem(last=False)
    return table


@st.cache_data(max_entries=8, show_spinner="Recomputing retrieval metrics…")
def cached_before_after(_run: Run, run_id: str, fn_pairs: tuple[tuple[int, int], ...]) -> pd.DataFrame:
    """Retrieval metrics before/after counting the decided false negatives as positives (keyed by run and pairs)."""
    extra = pd.DataFrame(list(fn_pairs), columns=["anchor_id", "candidate_id"])
    return retrieval_before_after(_run, extra)


# --- page parts ------------------------------------------------------------------------------------------


def explain() -> None:
    """What am I looking at."""
    st.title("False negatives")
    st.markdown(
        "A **false negative** is an item listed (or mined) as a negative for an anchor that really matches it: "
        "training pushes the anchor away from something it should be close to. Candidates are every listed "
        "negative plus each anchor's nearest items found by corpus-wide search (faiss), ranked by a **score** "
        "that combines several kinds of evidence. Review them one at a time or in a grid; every decision is "
        "saved at once in the shared review database (several annotators can work together), and the export "
        "writes training data with the false negatives removed."
    )
    with st.expander("How the score is computed", expanded=False):
        st.markdown(
            "For a candidate $c$ of the pair (anchor $a$, positive $p$), each continuous piece of evidence is "
            "turned into a robust z-score against the listed negatives (most of which are true negatives):"
        )
        st.latex(
            r"z(x) = \operatorname{clip}\!\left(\frac{x - \operatorname{median}(x)}{1.4826\,\operatorname{MAD}(x)}, -4, 4\right)"
        )
        st.markdown(
            "The evidence: $d = a\\cdot c - a\\cdot p$ (how close the negative scores to the positive); "
            "$s_p = c\\cdot p$ (does it look like the positive — same modality); $s_a = a \\cdot \\bar a_c$ "
            "(the anchors that $c$ is the positive of, averaged, against $a$); the rank $r$ of $c$ among "
            "$a$'s neighbours; mutual nearest neighbours; the same k-means cell as $p$; label agreement; and "
            "optionally a guide model's $d$. They add up as log-odds:"
        )
        st.latex(
            r"\ell = b + w_d z(d) + w_p z(s_p) + w_a z(s_a) + w_r z(-\log r) + w_m[\text{mutual}]"
            r" + w_c[\text{cluster}] + w_\ell(2\,\text{agree}-1) + w_g z(d_{\text{guide}})"
        )
        st.latex(
            r"\text{score} = \sigma(\ell) = \frac{1}{1 + e^{-\ell}}, \qquad \text{flagged} \iff \text{score} \geq 0.5"
        )
        st.markdown(
            "Defaults: $b=-3$, $w_d=w_p=w_a=w_g=1$, $w_r=w_m=w_c=0.5$, $w_\\ell=1.5$; missing evidence adds 0. "
            "Instead of the score, the sentence-transformers margins can decide what is flagged:"
        )
        st.latex(
            r"\text{absolute: } \text{neg\_sim} > \text{pos\_sim} - m \qquad"
            r"\text{relative (sign-safe): } \text{neg\_sim} > \text{pos\_sim} - |\text{pos\_sim}|\, m"
        )


def settings_sidebar(run: Run) -> tuple[Settings, Run | None, str, float]:
    """Detector options: what to mine, labels, guide run and the flag rule."""
    with st.sidebar.expander("False-negative settings", expanded=False):
        mine_k = st.number_input("Mined neighbours per anchor", min_value=0, max_value=100, step=5, key="fn_mine_k")
        use_labels = st.checkbox("Use class labels as evidence", key="fn_use_labels")
        weights = fn_learning_ui.weight_preset()
        guides = [p for p in list_runs() if p.resolve() != run.path.resolve() and _same_dataset(p, run)]
        options = [""] + [str(p) for p in guides]
        if st.session_state["fn_guide"] not in options:
            st.session_state["fn_guide"] = ""
        guide_path = st.selectbox(
            "Guide run (same data, another checkpoint)",
            options,
            format_func=lambda p: "None" if not p else Path(p).name,
            key="fn_guide",
        )
        method = st.selectbox("Flag by", FLAG_METHODS, format_func=METHOD_NAMES.get, key="fn_method")
        if method == "score":
            value = st.slider("Score threshold", 0.0, 1.0, step=0.05, key="fn_threshold")
        else:
            value = st.number_input("Margin m", min_value=-1.0, max_value=2.0, step=0.01, key="fn_margin")
    guide = None
    if guide_path:
        try:
            guide = cached_run(guide_path, (Path(guide_path) / "manifest.json").stat().st_mtime)
        except (OSError, NegScopeError) as exc:
            st.sidebar.error(f"The guide run cannot be read: {escape_text(exc)}")
    settings = Settings(mine_k=int(mine_k), use_labels=bool(use_labels), weights=weights)
    return settings, guide, method, float(value)


def _same_dataset(path: Path, run: Run) -> bool:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict):
        return False
    if manifest.get("dataset_content_hash"):
        return manifest["dataset_content_hash"] == run.content_hash
    return manifest.get("dataset_hash") == run.dataset_hash


def filters(table: pd.DataFrame) -> pd.DataFrame:
    """Filter widgets; returns the queue (rows to review), highest score first."""
    cols = st.columns([5, 2, 2, 2, 3])
    sources = cols[0].multiselect("Sources", list(NEGATIVE_SOURCES), key="fn_sources")
    state = cols[1].selectbox("Decision state", STATES, key="fn_state")
    min_score = cols[2].slider("Minimum score", 0.0, 1.0, step=0.01, key="fn_min_score")
    flagged_only = cols[3].toggle("Flagged only", key="fn_flagged_only")
    cols[4].radio("View", ["One at a time", "Grid"], key="fn_view", horizontal=True)
    keep = table["source"].isin(sources) & (table["score"] >= min_score)
    if flagged_only:
        keep &= table["flagged"]
    if state == "Undecided":
        keep &= table["decision"] == ""
    elif state == "Decided":
        keep &= table["decision"] != ""
    elif state in STATE_DECISION:
        keep &= table["decision"] == STATE_DECISION[state]
    focus = st.session_state.get(FOCUS_KEY)
    if focus:
        ids = {int(i) for i in focus}
        keep &= table["anchor_id"].isin(ids) | table["candidate_id"].isin(ids)
        c1, c2 = st.columns([4, 1])
        c1.info(f"Showing only candidates that involve the {len(ids):,} items sent from another page.")
        if c2.button("Show all", key="fn_clear_focus"):
            st.session_state[FOCUS_KEY] = None
            st.rerun()
    return table[keep]


def decision_for(run: Run, row: pd.Series, decision: str, annotator: str) -> Decision:
    """The store row for a decision on one candidate (keyed by content hashes)."""
    return negative_row(
        run,
        int(row["anchor_id"]),
        int(row["candidate_id"]),
        decision,
        annotator,
        note=f"pair {row['pair_id']} · {row['source']} · score {row['score']:.3f}",
    )


def record(decisions: list[Decision], annotator: str) -> bool:
    """Save decisions (refused without an annotator name); the outcome shows as a toast and beside the buttons."""
    what = decisions[0].decision.replace("_", " ") if len(decisions) == 1 else f"{len(decisions)} decisions"
    return annotators.record_one(decisions, annotator, what=what)


def _decide(run: Run, row: pd.Series, value: str, annotator: str, pos: int, stays: bool) -> None:
    """Button callback: record one decision; move on when the decided row stays in the queue."""
    if record([decision_for(run, row, value, annotator)], annotator) and stays:
        st.session_state["fn_pos"] = pos + 1


def _move(key: str, to: int) -> None:
    st.session_state[key] = to


def _undo(run: Run, annotator: str) -> None:
    """Button callback: undo the annotator's latest decision on this page."""
    if not annotator:
        annotators.say("refused", "Nothing undone. Enter your name in the sidebar to undo your decisions.")
        return
    undone = review.undo(run, annotator, kinds=("negative",))
    text = "Nothing to undo." if undone is None else f"Undone: back to {undone.decision.replace('_', ' ')}"
    annotators.say("undone", text)


def evidence_metrics(row: pd.Series) -> None:
    """The numbers behind one candidate's score."""
    cols = [*st.columns(3), *st.columns(3)]  # two rows, so no label is cut off
    cols[0].metric(
        "Score (log-odds ℓ)", f"{row['logit']:.3f}",
        f"p {row['score']:.4f} · " + ("flagged" if row["flagged"] else "not flagged"), delta_color="off",
        help="The log-odds ℓ keeps resolution at the top of the queue, where p = σ(ℓ) prints 1.000 for many rows.",
    )
    cols[1].metric("neg_sim", f"{row['neg_sim']:.3f}", f"pos_sim {row['pos_sim']:.3f}", delta_color="off")
    cols[2].metric(
        "Neighbour rank", str(int(row["rank"])), help="Rank of the candidate among the anchor's nearest neighbours"
    )
    stp = row["sim_to_positive"]
    cols[3].metric("Similarity to the positive", "–" if pd.isna(stp) else f"{stp:.3f}")
    asd = row["anchor_side_sim"]
    cols[4].metric(
        "Anchor vs its own anchor",
        "–" if pd.isna(asd) else f"{asd:.3f}",
        help="Similarity between this anchor and the anchor the candidate is paired with",
    )
    flags = []
    if row["mutual"] == 1:
        flags.append("mutual kNN")
    if row["same_cluster"] == 1:
        flags.append("same cluster")
    if row["label_agree"] == 1:
        flags.append("same label")
    elif row["label_agree"] == 0:
        flags.append("other label")
    with cols[5]:  # several flags: a wrapping list, not a metric card that cuts them off
        st.caption("Other evidence")
        st.text("\n".join(flags) or "none")


def one_at_a_time(run: Run, queue: pd.DataFrame, annotator: str, state: str) -> None:
    """Anchor, positive and candidate side by side, with the decision buttons."""
    pos = min(max(int(st.session_state["fn_pos"]), 0), len(queue) - 1)
    st.session_state["fn_pos"] = pos
    row = queue.iloc[pos]
    st.markdown(
        f"**Candidate {pos + 1:,} of {len(queue):,}** · pair {escape_text(row['pair_id'])} · "
        f"source {escape_text(row['source'])}"
    )
    if row["decision"]:
        st.caption(f"Current decision: {row['decision'].replace('_', ' ')}")
    cols = st.columns(3)
    with cols[0]:
        show_item(run, int(row["anchor_id"]), caption="Anchor")
    with cols[1]:
        show_item(run, int(row["positive_id"]), caption=f"Positive · pos_sim {row['pos_sim']:.3f}")
    with cols[2]:
        show_item(run, int(row["candidate_id"]), caption=f"Candidate ({row['source']}) · neg_sim {row['neg_sim']:.3f}")
    st.text(str(row["reason"]))
    evidence_metrics(row)
    annotators.needs_name(annotator)
    buttons = st.columns(6)
    for col, (label, value) in zip(buttons[:3], BUTTONS, strict=True):
        # when the decided row stays in the queue, move on to the next one; otherwise the next slides in
        stays = state in ("Decided", "All") or STATE_DECISION.get(state) == value
        col.button(
            label,
            key=f"fn_btn_{value}",
            type="primary" if value == "false_negative" else "secondary",
            shortcut=SHORTCUTS[value],
            on_click=_decide,
            args=(run, row, value, annotator, pos, stays),
        )
    buttons[3].button("Undo", key="fn_undo", shortcut="Z", on_click=_undo, args=(run, annotator))
    buttons[4].button(
        "Previous", key="fn_btn_prev", disabled=pos == 0, shortcut="Left", on_click=_move, args=("fn_pos", pos - 1)
    )
    buttons[5].button("Next", key="fn_btn_skip", shortcut="Right", on_click=_move, args=("fn_pos", pos + 1))
    annotators.show_feedback()
    annotators.keyboard_help(KEYS)


def grid(run: Run, queue: pd.DataFrame, annotator: str) -> None:
    """A page of candidates as cards, each with its own decision buttons."""
    pages = max(1, -(-len(queue) // GRID_SIZE))
    page = min(max(int(st.session_state["fn_page"]), 0), pages - 1)
    st.session_state["fn_page"] = page
    nav = st.columns([1, 1, 4])
    nav[0].button(
        "◀ Previous page", key="fn_grid_prev", disabled=page == 0, on_click=_move, args=("fn_page", page - 1)
    )
    nav[1].button(
        "Next page ▶", key="fn_grid_next", disabled=page >= pages - 1, on_click=_move, args=("fn_page", page + 1)
    )
    nav[2].caption(f"Page {page + 1} of {pages}")
    chunk = queue.iloc[page * GRID_SIZE : (page + 1) * GRID_SIZE]
    cols = st.columns(4)
    for i, (_, row) in enumerate(chunk.iterrows()):
        with cols[i % 4], st.container(border=True):
            st.caption(f"score {row['score']:.3f} · {escape_text(row['source'])} · pair {escape_text(row['pair_id'])}")
            show_item(run, int(row["anchor_id"]), caption="Anchor", width=90)
            show_item(run, int(row["candidate_id"]), caption=f"Candidate · neg_sim {row['neg_sim']:.3f}", width=90)
            if row["decision"]:
                st.caption(f"decided: {row['decision'].replace('_', ' ')}")
            b = st.columns(3)
            for col, (label, value) in zip(
                b, (("FN", "false_negative"), ("Neg", "negative"), ("?", "unsure")), strict=True
            ):
                col.button(
                    label,
                    key=f"fn_grid_{i}_{value}",
                    help=BUTTON_HELP[value],
                    on_click=_decide,
                    args=(run, row, value, annotator, page, False),
                )


def bulk(run: Run, queue: pd.DataFrame, annotator: str) -> None:
    """The queue as a table; select rows and decide them all at once."""
    shown = fn_learning_ui.with_score_labels(queue.head(TABLE_ROWS))
    cols = ["pair_id", "anchor_id", "candidate_id", "source", "score", "log_odds", "flagged", "decision", "reason"]
    # the widget key follows the rows listed, so a selection never outlives the rows it was made on
    signature = hashlib.sha1(
        pd.util.hash_pandas_object(shown[["pair_id", "candidate_id"]].astype(str), index=False).to_numpy().tobytes()
    ).hexdigest()[:12]
    st.session_state["fn_table_key"] = f"fn_table_{signature}"
    event = st.dataframe(
        shown[cols],
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="multi-row",
        column_config={"score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0, format="%.3f")},
        key=st.session_state["fn_table_key"],
    )
    st.caption(f"{len(shown):,} of {len(queue):,} queued candidates listed (highest score first).")
    selected = list(event.selection.rows) if event is not None else []
    c = st.columns([2, 2, 3])
    c[0].selectbox(
        "Decision for the selection",
        [v for _, v in BUTTONS],
        format_func=lambda v: v.replace("_", " "),
        key="fn_bulk_decision",
    )
    c[1].button(
        f"Apply to {len(selected)} selected",
        key="fn_bulk_apply",
        disabled=not selected,
        on_click=_bulk,
        args=(run, shown.iloc[selected], annotator),
    )
    annotators.show_feedback()


def _bulk(run: Run, rows: pd.DataFrame, annotator: str) -> None:
    """Button callback: the chosen decision for every selected row, in one transaction."""
    decision = st.session_state["fn_bulk_decision"]
    record([decision_for(run, row, decision, annotator) for _, row in rows.iterrows()], annotator)


def before_after(run: Run, decisions: pd.DataFrame) -> None:
    """Retrieval metrics with the decided false negatives counted as positives."""
    st.subheader("What the decisions change")
    fn = decisions[decisions["decision"] == "false_negative"]
    pairs = tuple(sorted({(int(a), int(c)) for a, c in zip(fn["anchor_id"], fn["candidate_id"], strict=True)}))
    st.markdown(
        "Anchor → positive retrieval over all items of the positive's modality. A hit at $k$ means a relevant "
        "item in the top $k$; after review, decided false negatives count as relevant too:"
    )
    st.latex(
        r"\text{recall@}k = \frac{1}{|A|}\sum_{a\in A} \big[\min_{i \in R(a)} \text{rank}_a(i) \le k\big], \qquad"
        r"\text{MRR@}10 = \frac{1}{|A|}\sum_{a} \frac{[\text{rank}_a \le 10]}{\text{rank}_a}"
    )
    try:
        table = cached_before_after(run, run.run_id, pairs)
    except NegScopeError as exc:
        st.error(escape_text(exc))
        return
    st.dataframe(table, hide_index=True, width="stretch", key="fn_before_after")
    st.caption(f"{len(pairs):,} decided false negatives counted as positives in 'after'.")


def _describe(run: Run, row: pd.Series) -> str:
    """Plain text naming a conflict's anchor and candidate (their contents, shortened)."""
    ids = run.item_ids_for_keys([row["anchor_key"], row["candidate_key"]])
    contents = run.items["content"].astype(str)
    text = [contents.iloc[int(i)][:60] if i >= 0 else "(not in this run)" for i in ids]
    return f"{text[0]} → {text[1]}"


@st.fragment
def queue_area(
    run: Run, result: pd.DataFrame, method: str, value: float, annotator: str, team: annotators.Team
) -> None:
    """Progress, filters and the queue; a decision reruns only this part of the page."""
    sharing = bool(team.names) and team.mine_only and annotator in team.names
    try:
        if sharing:  # each annotator reviews their share on their own: the queue follows their own decisions
            decisions = negative_decisions(run, annotators.my_decisions(run, annotator, kind="negative"))
        else:
            decisions = negative_decisions(run, review.decisions(run, kind="negative"))
    except (NegScopeError, OSError) as exc:
        st.error(f"The review database cannot be opened: {escape_text(exc)}")
        return
    table = with_decisions(result, decisions)
    table["flagged"] = flag_by(table, method=method, value=value)
    if sharing:
        keys = run.item_keys
        names = [queue_key(keys[a], keys[c]) for a, c in zip(table["anchor_id"], table["candidate_id"], strict=True)]
        table = table[annotators.my_share(names, annotator, team)]
    flagged = table["flagged"]
    reviewed_flagged = int((flagged & (table["decision"] != "")).sum())
    m = st.columns(4)
    m[0].metric("Candidates" + (" (my share)" if sharing else ""), f"{len(table):,}")
    m[1].metric("Flagged", f"{int(flagged.sum()):,}")
    m[2].metric("Reviewed (flagged)", f"{reviewed_flagged:,} / {int(flagged.sum()):,}")
    m[3].metric(
        "Decided false negatives" + (" (mine)" if sharing else ""),
        f"{int((decisions['decision'] == 'false_negative').sum()):,}",
    )
    st.progress(reviewed_flagged / max(int(flagged.sum()), 1), text="Review progress over the flagged candidates")
    st.caption(f"Neighbour search: {result.attrs.get('index', '')}")

    st.subheader("Review queue")
    table = fn_learning_ui.learning_panel(table)
    queue = filters(table)
    if queue.empty:
        st.info("No candidates match the filters.")
        annotators.show_feedback()
    elif st.session_state["fn_view"] == "Grid":
        annotators.needs_name(annotator)
        grid(run, queue, annotator)
        st.button("Undo my last decision", key="fn_undo", on_click=_undo, args=(run, annotator))
        annotators.show_feedback()
    else:
        one_at_a_time(run, queue, annotator, st.session_state["fn_state"])
    annotators.stale_note(run, prefix="fn")
    # a toggle, not an expander: a folded expander would still build the table at every decision
    if not queue.empty and st.toggle("Show the table and bulk decisions", key="fn_show_table"):
        bulk(run, queue, annotator)


def main() -> None:
    explain()
    run = require_run()
    annotator = annotator_name().strip()
    settings, guide, method, value = settings_sidebar(run)
    try:
        result = candidates(run, settings, guide)
    except NegScopeError as exc:
        st.error(escape_text(exc))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - the browser gets a message, never a traceback
        st.error(f"Mining false-negative candidates failed ({type(exc).__name__}): {escape_text(exc)}")
        st.stop()
    team = annotators.team_settings(annotator)
    annotators.mark_full_run(run, prefix="fn")
    queue_area(run, result, method, value, annotator, team)
    try:
        decisions = negative_decisions(run, review.decisions(run, kind="negative"))
    except (NegScopeError, OSError) as exc:
        st.error(f"The review database cannot be opened: {escape_text(exc)}")
        st.stop()
    with st.expander("Agreement between annotators and conflicts", expanded=False):
        annotators.agreement_panel(run, kinds=("negative",), prefix="fn")
        annotators.conflicts_view(
            run, kinds=("negative",), annotator=annotator, prefix="fn", describe=lambda r: _describe(run, r)
        )
    before_after(run, decisions)
    st.subheader("Which decision counts")
    annotators.rule_panel(run, kinds=("negative",), prefix="fn", annotator=annotator)
    st.button("Refresh the counts below with the latest decisions", key="fn_refresh")
    review.export_panel(run, prefix="fn")


main()

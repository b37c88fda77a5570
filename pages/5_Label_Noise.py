"""Label noise: mismatched pairs, wrong class labels and near-duplicate anchors, reviewed and exported."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from analysis.detectors.duplicates import DEFAULT_THRESHOLD
from analysis.detectors.label_noise import KINDS, LabelNoise, detect_label_noise
from analysis.detectors.labels import EXAMINE, METHODS
from analysis.errors import NegScopeError
from analysis.review.assignment import queue_key
from analysis.review.rows import duplicate_row, label_row, pair_row
from analysis.review.store import Decision
from analysis.runs.folder import Run
from ui import annotators, review
from ui.render import show_item
from ui.safe_text import escape_text
from ui.state import annotator_name, require_run

st.set_page_config(page_title="Label noise · NegScope", page_icon="🏷️", layout="wide")

KIND_NAMES = {"mismatched_pair": "Mismatched pair", "label": "Wrong label", "duplicate": "Near duplicate"}
STATES = ("Undecided", "Decided", "All")
REVIEW_KINDS = ("pair", "label", "duplicate")
KEYS = (
    ("F", "mismatched / save the corrected label / duplicate"),
    ("N", "OK / not a duplicate"),
    ("U", "unsure"),
    ("Z", "undo"),
    ("→", "next"),
    ("←", "previous"),
)

for key, value in {
    "ln_kinds": list(KINDS),
    "ln_flagged_only": True,
    "ln_state": "Undecided",
    "ln_min_score": 0.0,
    "ln_flag_rank": 0,
    "ln_examine": "anchors",
    "ln_method": "logreg",
    "ln_dup_threshold": DEFAULT_THRESHOLD,
}.items():
    st.session_state.setdefault(key, value)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_detector(
    _run: Run, run_id: str, kind: str, flag_rank: float | None, examine: str, method: str, threshold: float
) -> pd.DataFrame:
    """One detector's frame for one run and one set of options (keyed by run id, kind and the options)."""
    result = detect_label_noise(
        _run, kinds=[kind], flag_rank=flag_rank, examine=examine, method=method, duplicate_threshold=threshold
    )
    return {"mismatched_pair": result.mismatch, "label": result.labels, "duplicate": result.duplicates}[kind]


def detect(run: Run, flag_rank: float | None, examine: str, method: str, threshold: float) -> LabelNoise:
    """The three detectors, each cached, with a progress bar between them (none may be drawn inside a cache)."""
    bar = st.progress(0.0, text="Looking for label noise…")
    frames = []
    for i, kind in enumerate(KINDS):
        bar.progress(i / len(KINDS), text=f"Looking for label noise: {KIND_NAMES[kind].lower()}s…")
        frames.append(cached_detector(run, run.run_id, kind, flag_rank, examine, method, threshold))
    bar.empty()
    return LabelNoise(mismatch=frames[0], labels=frames[1], duplicates=frames[2])


def explain() -> None:
    """What am I looking at."""
    st.title("Label noise")
    st.markdown(
        "Three kinds of noise in a contrastive dataset, each ranked by a **score** (higher = more suspicious) "
        "and **flagged** at a default threshold, with the evidence that fired."
    )
    with st.expander("How the scores are computed", expanded=False):
        st.markdown(
            "**Mismatched pair** (the positive does not belong to the anchor). Two tests, each a mutual rank. "
            "*Direct*: the positive's rank among all candidates when the anchor searches them, and the anchor's "
            "rank among all anchors when the positive searches them (1 = best; the anchor's other positives are "
            "left out). *Neighbours*: the k pairs with the nearest anchors vote with their positives (their mean "
            "is a prototype of what this positive should look like) and we take the positive's rank for that "
            "prototype; the same from the positive's side. The neighbour test still works when the model has "
            "memorised its noisy training pairs."
        )
        st.latex(
            r"\mathrm{MR} = \sqrt{r_{a\to p}\, r_{p\to a}}, \qquad"
            r"\mathrm{MR}_{\text{nbr}} = \sqrt{r_{\bar p(a)\to p}\, r_{\bar a(p)\to a}}, \qquad"
            r"\text{score} = \frac{\log \max(\mathrm{MR}, \mathrm{MR}_{\text{nbr}})}{\log \sqrt{n_p\, n_a}} \in [0, 1]"
        )
        st.markdown(
            "A pair is flagged when either mutual rank is above the cut (default: 5% of the candidates, at least "
            "10): the positive cannot be told from a random candidate. The anchor's preferred candidate and the "
            "gap `best_sim - pos_sim` are shown as evidence."
        )
        st.markdown(
            "**Wrong label.** A probe (logistic regression or kNN) on the embeddings gives out-of-sample class "
            "probabilities through K-fold cross-validation; cleanlab's confident learning decides which labels "
            "to flag, and the label quality (self-confidence) ranks them:"
        )
        st.latex(
            r"\hat p_i = \text{probe}_{-\text{fold}(i)}(x_i), \qquad"
            r"\text{score}_i = 1 - \hat p_i(\tilde y_i)"
        )
        st.markdown(
            "Each flag shows its nearest labelled neighbours: when most of them carry another class, the given "
            "label is likely wrong. Only the anchors' labels are examined by default (the label describes the "
            "anchor; examining the positive too would count each pair twice)."
        )
        st.markdown("**Near duplicate.** Each anchor's most similar other anchor; flagged when")
        st.latex(r"\cos(a_i, a_j) = a_i \cdot a_j \geq \theta \quad (j \neq i)")
        st.markdown(
            "or when the same (anchor, positive) is listed twice, or, with a `split` column, one anchor sits in "
            "two splits."
        )


def settings() -> tuple[float | None, str, str, float]:
    """Detector options (sidebar)."""
    with st.sidebar.expander("Detector settings"):
        rank = st.number_input(
            "Mismatched pairs: flag above mutual rank (0 = default)", min_value=0, step=10, key="ln_flag_rank"
        )
        examine = st.selectbox("Labels: examine", EXAMINE, key="ln_examine")
        method = st.selectbox("Labels: probe", METHODS, key="ln_method")
        threshold = st.slider("Duplicates: cosine threshold", 0.80, 1.0, step=0.005, key="ln_dup_threshold")
    return (float(rank) if rank else None), examine, method, float(threshold)


def with_decisions(run: Run, table: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The flag table with each row's current review decision (empty when undecided), matched by content keys."""
    table = table.copy()
    table["decision"] = ""
    keys = run.item_keys
    pairs = run.pairs.assign(anchor_key=keys[run.pairs["anchor_id"].to_numpy(int)],
                             candidate_key=keys[run.pairs["positive_id"].to_numpy(int)])  # fmt: skip
    by_key = {
        (str(k), str(a), str(c)): (str(d) if d != "relabel" else f"relabel → {lbl}")
        for k, a, c, d, lbl in decisions[["kind", "anchor_key", "candidate_key", "decision", "label"]].itertuples(
            index=False
        )
    }
    pair_key = dict(zip(pairs["pair_id"].astype(str), zip(pairs["anchor_key"], pairs["candidate_key"], strict=True),
                        strict=True))  # fmt: skip
    if not by_key:  # nothing decided: skip the walk over the rows (it runs at every decision)
        return table
    found = []
    needed = [c for c in ("kind", "pair_id", "item_id", "other_item_id", "near_duplicate") if c in table.columns]
    for row in table[needed].to_dict("records"):  # plain dicts: cell access on the frame is ~100x slower
        kind = row["kind"]
        if kind == "mismatched_pair":
            a, c = pair_key.get(str(row["pair_id"]), ("", ""))
            found.append(by_key.get(("pair", a, c), ""))
        elif kind == "label":
            found.append(by_key.get(("label", str(keys[int(row["item_id"])]), ""), ""))
        elif kind == "duplicate":
            own, other = duplicate_keys(run, row)
            found.append(by_key.get(("duplicate", own, other), by_key.get(("duplicate", own, own), "")))
        else:
            found.append("")
    table["decision"] = found
    return table


def duplicate_keys(run: Run, row: pd.Series | dict) -> tuple[str, str]:
    """(item key, other key) a duplicate decision on this flag row is stored under: the nearest other anchor
    when it is at or above the threshold, else the item itself (its repeated pairs)."""
    keys = run.item_keys
    own = str(keys[int(row["item_id"])])
    other = row.get("other_item_id")
    if pd.notna(other) and bool(row.get("near_duplicate", True)):
        return own, str(keys[int(other)])
    return own, own


def filters(table: pd.DataFrame) -> pd.DataFrame:
    """Filter widgets; returns the rows to list."""
    cols = st.columns([3, 2, 2, 2])
    kinds = cols[0].multiselect("Kinds", list(KINDS), format_func=KIND_NAMES.get, key="ln_kinds")
    flagged_only = cols[1].toggle("Flagged only", key="ln_flagged_only")
    state = cols[2].selectbox("Review state", STATES, key="ln_state")
    min_score = cols[3].slider("Minimum score", 0.0, 1.0, step=0.01, key="ln_min_score")
    keep = table["kind"].isin(kinds) & (table["score"] >= min_score)
    if flagged_only:
        keep &= table["flagged"]
    if state == "Undecided":
        keep &= table["decision"] == ""
    elif state == "Decided":
        keep &= table["decision"] != ""
    return table[keep]


def describe(row: pd.Series) -> str:
    """One line naming a flag row in the picker."""
    return f"{KIND_NAMES[row['kind']]} · pair {row['pair_id']} · item {row['item_id']} · score {row['score']:.3f}"


def record(decision: Decision) -> bool:
    """Write one decision; the outcome shows as a toast and beside the buttons."""
    what = decision.decision.replace("_", " ") + (f" → {decision.label}" if decision.label else "")
    return annotators.record_one([decision], decision.annotator, what=what)


def _decide(make: Callable[[], Decision], annotator: str) -> None:
    """Button callback: build and record one decision, then move on to the next flag when it stays listed."""
    if not annotator:
        annotators.say("refused", "Not saved. Enter your name in the sidebar first: decisions are signed.")
        return
    try:
        decision = make()
    except NegScopeError as exc:
        annotators.say("refused", f"Not saved: {exc}")
        return
    if record(decision) and st.session_state.get("ln_state") != "Undecided":
        _step(+1)


def _step(delta: int) -> None:
    """Button callback: pick the next (+1) or previous (-1) flag of the list."""
    options = st.session_state.get("ln_options") or []
    current = st.session_state.get("ln_pick")
    if not options:
        return
    i = options.index(current) if current in options else 0
    st.session_state["ln_pick"] = options[min(max(i + delta, 0), len(options) - 1)]


def _undo(run: Run, annotator: str) -> None:
    if not annotator:
        annotators.say("refused", "Nothing undone. Enter your name in the sidebar to undo your decisions.")
        return
    undone = undo_last(run, annotator)
    annotators.say("undone", "Nothing to undo." if undone is None else f"Undone: back to {undone.decision}")


def decision_buttons(
    run: Run, buttons: tuple[tuple[str, str, str, str], ...], make: Callable[[str], Decision], annotator: str
) -> None:
    """One flag's decision buttons (label, decision, shortcut, widget key), undo / previous / next, feedback."""
    annotators.needs_name(annotator)
    cols = st.columns(len(buttons) + 3)
    for col, (label, value, shortcut, key) in zip(cols, buttons, strict=False):
        col.button(label, key=key, shortcut=shortcut, on_click=_decide, args=(lambda v=value: make(v), annotator))
    nav = cols[len(buttons) :]
    nav[0].button("Undo", key="ln_undo", shortcut="Z", on_click=_undo, args=(run, annotator))
    nav[1].button("Previous", key="ln_prev", shortcut="Left", on_click=_step, args=(-1,))
    nav[2].button("Next", key="ln_next", shortcut="Right", on_click=_step, args=(+1,))
    annotators.show_feedback()
    annotators.keyboard_help(KEYS)


def show_mismatch(run: Run, result: LabelNoise, row: pd.Series, annotator: str) -> None:
    """Detail of a mismatched-pair flag, with its decision buttons."""
    m = result.mismatch[result.mismatch["pair_id"].astype(str) == str(row["pair_id"])].iloc[0]
    st.caption(escape_text(m["reason"]))
    cols = st.columns(4)
    with cols[0]:
        show_item(run, int(m["anchor_id"]), caption="Anchor")
    with cols[1]:
        show_item(run, int(m["positive_id"]), caption=f"Positive · sim {m['pos_sim']:.3f}")
    with cols[2]:
        if int(m["best_id"]) >= 0:
            show_item(run, int(m["best_id"]), caption=f"Anchor's best other candidate · sim {m['best_sim']:.3f}")
    with cols[3]:
        if int(m["best_anchor_id"]) >= 0:
            show_item(
                run, int(m["best_anchor_id"]), caption=f"Positive's best other anchor · sim {m['best_anchor_sim']:.3f}"
            )
    metrics = [*st.columns(3), *st.columns(3)]  # two rows, so no label is cut off
    metrics[0].metric("Direct ranks (a→p, p→a)", f"{int(m['rank_a2p'])}, {int(m['rank_p2a'])}")
    metrics[1].metric("Direct mutual rank", f"{m['mutual_rank']:.1f}")
    metrics[2].metric("Neighbours' ranks", f"{int(m['nbr_rank_a'])}, {int(m['nbr_rank_p'])}")
    metrics[3].metric("Neighbours' mutual rank", f"{m['nbr_mutual_rank']:.1f}")
    metrics[4].metric("Gap best_sim − pos_sim", f"{m['gap']:.3f}")
    decision_buttons(
        run,
        (
            ("Mismatched", "mismatched", "F", "ln_pair_mismatched"),
            ("OK, a real pair", "ok", "N", "ln_pair_ok"),
            ("Unsure", "unsure", "U", "ln_pair_unsure"),
        ),
        lambda value: pair_row(run, row["pair_id"], value, annotator),
        annotator,
    )


def known_classes(run: Run) -> list[str]:
    """Every class label in the run, numbers in numeric order."""
    labels = list(dict.fromkeys(v for v in run.labels if v is not None))

    def key(v: str) -> tuple[int, float, str]:
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    return sorted(labels, key=key)


def show_label(run: Run, result: LabelNoise, row: pd.Series, annotator: str) -> None:
    """Detail of a label flag: the item, its pair, its nearest labelled neighbours; relabel or confirm."""
    lab = result.labels[result.labels["item_id"] == int(row["item_id"])].iloc[0]
    st.caption(escape_text(lab["reason"]))
    left, right = st.columns([1, 3])
    with left:
        show_item(run, int(lab["item_id"]), caption=f"Given label '{lab['given_label']}'")
        pair = run.pairs[run.pairs["pair_id"].astype(str) == str(lab["pair_id"])]
        if len(pair):
            other = int(pair.iloc[0]["positive_id"])
            if other == int(lab["item_id"]):
                other = int(pair.iloc[0]["anchor_id"])
            show_item(run, other, caption="The other side of its pair", width=120)
    with right:
        m = st.columns(3)
        m[0].metric(
            "Probe suggests",
            str(lab["suggested_label"]),
            f"p = {lab['p_suggested']:.2f}",
            delta_color="off",
            delta_arrow="off",
        )
        m[1].metric("p(given label)", f"{lab['p_given']:.2f}")
        m[2].metric("Neighbours disagreeing", f"{lab['knn_disagreement']:.0%}")
        st.markdown("**Nearest labelled neighbours**")
        ids, labels, sims = lab["neighbor_ids"], lab["neighbor_labels"], lab["neighbor_sims"]
        per_row = 5
        for start in range(0, len(ids), per_row):
            cols = st.columns(per_row)
            for col, i, label, sim in zip(
                cols,
                ids[start : start + per_row],
                labels[start : start + per_row],
                sims[start : start + per_row],
                strict=False,
            ):
                with col:
                    show_item(run, int(i), caption=f"'{label}' · sim {sim:.3f}", width=90)
    classes = known_classes(run)
    suggested = str(lab["suggested_label"])
    st.session_state.setdefault("ln_new_label", suggested)
    if st.session_state.get("ln_new_label_for") != int(lab["item_id"]):
        st.session_state["ln_new_label"] = suggested if suggested in classes else classes[0]
        st.session_state["ln_new_label_for"] = int(lab["item_id"])
    st.selectbox("Corrected label", classes, key="ln_new_label")
    item = int(lab["item_id"])

    def make(value: str) -> Decision:
        label = st.session_state["ln_new_label"] if value == "relabel" else None
        return label_row(run, item, value, annotator, label=label)

    decision_buttons(
        run, (("Save corrected label", "relabel", "F", "ln_relabel"), ("Label is OK", "ok", "N", "ln_label_ok")),
        make, annotator,
    )  # fmt: skip


def show_duplicate(run: Run, result: LabelNoise, row: pd.Series, annotator: str) -> None:
    """Detail of a duplicate flag: the anchor, its nearest other anchor, and both pairs' positives."""
    d = result.duplicates[result.duplicates["item_id"] == int(row["item_id"])].iloc[0]
    st.caption(escape_text(d["reason"]))
    cols = st.columns(4)
    pair = run.pairs[run.pairs["anchor_id"] == int(d["item_id"])].iloc[0]
    with cols[0]:
        show_item(run, int(d["item_id"]), caption=f"Anchor (pair {d['pair_id']})")
    with cols[1]:
        show_item(run, int(pair["positive_id"]), caption="Its positive")
    if pd.notna(d["other_item_id"]):
        other_pair = run.pairs[run.pairs["anchor_id"] == int(d["other_item_id"])].iloc[0]
        with cols[2]:
            show_item(run, int(d["other_item_id"]), caption=f"Nearest other anchor · cos {d['sim']:.3f}")
        with cols[3]:
            show_item(run, int(other_pair["positive_id"]), caption=f"Its positive (pair {other_pair['pair_id']})")
    near = pd.notna(d["sim"]) and float(d["sim"]) >= float(st.session_state["ln_dup_threshold"])
    own, other = duplicate_keys(run, pd.concat([d, pd.Series({"near_duplicate": near})]))
    if own == other:
        st.caption("Decided a duplicate, this anchor's repeated (anchor, positive) pairs keep their first copy.")
    else:
        st.caption("Decided a duplicate, the pairs of whichever of the two anchors comes later are dropped.")
    other_id = None if own == other else int(d["other_item_id"])
    decision_buttons(
        run,
        (
            ("Duplicate", "duplicate", "F", "ln_dup_duplicate"),
            ("Not a duplicate", "not_duplicate", "N", "ln_dup_not_duplicate"),
            ("Unsure", "unsure", "U", "ln_dup_unsure"),
        ),
        lambda value: duplicate_row(run, int(d["item_id"]), other_id, value, annotator),
        annotator,
    )


def undo_last(run: Run, annotator: str) -> Decision | None:
    """Undo the annotator's latest pair, label or duplicate decision (never one made on another page)."""
    return review.undo(run, annotator, kinds=("pair", "label", "duplicate"))


def row_keys(run: Run, table: pd.DataFrame) -> list[str]:
    """The assignment key of each flag row: the content keys its decision is stored under."""
    keys = run.item_keys
    pairs = dict(zip(run.pairs["pair_id"].astype(str), zip(run.pairs["anchor_id"], run.pairs["positive_id"],
                                                           strict=True), strict=True))  # fmt: skip
    out = []
    for row in table.to_dict("records"):
        if row["kind"] == "mismatched_pair":
            a, p = pairs[str(row["pair_id"])]
            out.append(queue_key(str(keys[int(a)]), str(keys[int(p)])))
        elif row["kind"] == "label":
            out.append(queue_key(str(keys[int(row["item_id"])]), ""))
        else:
            out.append(queue_key(*duplicate_keys(run, row)))
    return out


def _describe(run: Run, row: pd.Series) -> str:
    """Plain text naming a conflict's items (their contents, shortened)."""
    ids = run.item_ids_for_keys([k for k in (row["anchor_key"], row["candidate_key"]) if k])
    contents = run.items["content"].astype(str)
    return " → ".join(contents.iloc[int(i)][:60] if i >= 0 else "(not in this run)" for i in ids)


@st.fragment
def review_area(run: Run, result: LabelNoise, annotator: str, team: annotators.Team) -> None:
    """The flag table, the picker and the flag under review; a decision reruns only this part of the page."""
    sharing = bool(team.names) and team.mine_only and annotator in team.names
    try:
        if sharing:  # each annotator reviews their share on their own: the list follows their own decisions
            states = annotators.annotator_states(run)
            decisions = states[states["kind"].isin(REVIEW_KINDS) & (states["annotator"] == annotator)]
        else:
            decisions = review.decisions(run)
    except (NegScopeError, OSError) as exc:
        st.error(f"The review database cannot be opened: {escape_text(exc)}")
        return
    table = with_decisions(run, result.table(), decisions)
    if sharing and not table.empty:
        names = row_keys(run, table)
        table = table[annotators.my_share(names, annotator, team)]
        st.caption(f"Your share: {len(table):,} flags (your own decisions shown).")
    shown = filters(table)
    event = st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={"score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0, format="%.3f")},
        on_select="rerun",
        selection_mode="single-row",
        key="ln_table",
    )
    st.caption(f"{len(shown):,} of {len(table):,} rows; click a row to review it.")
    selected = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    # A click in the table picks that row, once (the picker below may move on from it afterwards).
    if selected and selected != st.session_state.get("ln_table_applied") and selected[0] < len(shown):
        st.session_state["ln_pick"] = shown.index[selected[0]]
    st.session_state["ln_table_applied"] = selected

    st.subheader("Review")
    if shown.empty:
        st.info("No rows match the filters.")
        annotators.show_feedback()
        return
    options = list(shown.index[:1000])
    if st.session_state.get("ln_pick") in shown.index and st.session_state["ln_pick"] not in options:
        options.append(st.session_state["ln_pick"])  # picked in the table beyond the first 1,000 rows
    if st.session_state.get("ln_pick") not in options:
        st.session_state["ln_pick"] = options[0]
    st.session_state["ln_options"] = options
    pick = st.selectbox("Flag", options, format_func=lambda i: describe(table.loc[i]), key="ln_pick")
    row = table.loc[pick]
    if row["kind"] == "mismatched_pair":
        show_mismatch(run, result, row, annotator)
    elif row["kind"] == "label":
        show_label(run, result, row, annotator)
    else:
        show_duplicate(run, result, row, annotator)
    annotators.stale_note(run, prefix="ln")


def main() -> None:
    explain()
    run = require_run()
    annotator = annotator_name().strip()
    flag_rank, examine, method, threshold = settings()
    try:
        result = detect(run, flag_rank, examine, method, threshold)
    except NegScopeError as exc:
        st.error(escape_text(exc))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - the browser gets a message, never a traceback
        st.error(f"The label-noise detectors failed ({type(exc).__name__}): {escape_text(exc)}")
        st.stop()
    team = annotators.team_settings(annotator)
    summary = result.summary().set_index("kind")
    cols = st.columns(3)
    for col, kind in zip(cols, KINDS, strict=True):
        col.metric(
            f"{KIND_NAMES[kind]}: flagged / examined",
            f"{summary.loc[kind, 'flagged']:,} / {summary.loc[kind, 'examined']:,}",
        )
    if summary.loc["label", "examined"] == 0:
        st.caption("No labels to examine: the dataset has no label column, or fewer than two classes.")
    searched = [f"Mismatched pairs: ranks {result.mismatch.attrs['ranks']}; {result.mismatch.attrs['search']}."]
    searched = searched if str(result.mismatch.attrs.get("ranks", "exact")).startswith("estimated") else []
    searched += [f"Labels: {probe}." for probe in result.labels.attrs.get("probes", [])]
    if searched:
        st.caption(escape_text(" ".join(searched)))
    annotators.mark_full_run(run, prefix="ln")
    review_area(run, result, annotator, team)
    with st.expander("Agreement between annotators and conflicts", expanded=False):
        annotators.agreement_panel(run, kinds=REVIEW_KINDS, prefix="ln")
        annotators.conflicts_view(
            run, kinds=REVIEW_KINDS, annotator=annotator, prefix="ln", describe=lambda r: _describe(run, r)
        )
    st.subheader("Which decision counts")
    annotators.rule_panel(run, kinds=REVIEW_KINDS, prefix="ln", annotator=annotator)
    st.button("Refresh the counts below with the latest decisions", key="ln_refresh")
    review.export_panel(run, prefix="ln")


main()

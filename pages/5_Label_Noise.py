"""Label noise: mismatched pairs, wrong class labels and near-duplicate anchors, reviewed and exported."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.detectors.duplicates import DEFAULT_THRESHOLD
from analysis.detectors.label_noise import KINDS, LabelNoise, detect_label_noise
from analysis.detectors.labels import EXAMINE, METHODS, clean_labels
from analysis.errors import NegScopeError
from analysis.review.label_export import (
    clean_pairs,
    corrected_labels,
    duplicate_pairs_to_drop,
    label_decision,
    label_decisions,
    pair_decision,
    pair_decisions,
)
from analysis.review.store import Decision, ReviewStore
from analysis.runs.folder import Run
from analysis.runs.workspace import review_db_path
from ui.render import show_item
from ui.state import annotator_name, require_run

st.set_page_config(page_title="Label noise · NegScope", page_icon="🏷️", layout="wide")

KIND_NAMES = {"mismatched_pair": "Mismatched pair", "label": "Wrong label", "duplicate": "Near duplicate"}
STATES = ("Undecided", "Decided", "All")

for key, value in {
    "ln_kinds": list(KINDS),
    "ln_flagged_only": True,
    "ln_state": "Undecided",
    "ln_min_score": 0.0,
    "ln_flag_rank": 0,
    "ln_examine": "anchors",
    "ln_method": "logreg",
    "ln_dup_threshold": DEFAULT_THRESHOLD,
    "ln_drop_duplicates": False,
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


def with_decisions(run: Run, table: pd.DataFrame, store: ReviewStore) -> pd.DataFrame:
    """The flag table with each row's current review decision (empty when undecided)."""
    table = table.copy()
    table["decision"] = ""
    pairs = pair_decisions(run, store)
    if len(pairs):
        by_pair = dict(zip(pairs["pair_id"].astype(str), pairs["decision"], strict=True))
        mask = table["kind"] == "mismatched_pair"
        table.loc[mask, "decision"] = table.loc[mask, "pair_id"].astype(str).map(by_pair).fillna("")
    labels = label_decisions(run, store)
    if len(labels):
        text = labels["decision"].where(labels["decision"] != "relabel", "relabel → " + labels["label"].astype(str))
        by_item = dict(zip(labels["item_id"].astype(int), text, strict=True))
        mask = table["kind"] == "label"
        table.loc[mask, "decision"] = table.loc[mask, "item_id"].astype(int).map(by_item).fillna("")
    return table


def filters(table: pd.DataFrame) -> pd.DataFrame:
    """Filter widgets; returns the rows to list."""
    cols = st.columns([3, 1, 1, 2])
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


def record(store: ReviewStore, decision: Decision) -> None:
    """Write one decision; say so, or show why it failed."""
    try:
        store.record(decision)
    except (NegScopeError, OSError) as exc:
        st.error(f"The decision was not saved: {exc}")
        return
    st.session_state["ln_saved"] = f"Saved: {decision.decision}" + (f" → {decision.label}" if decision.label else "")


def show_mismatch(run: Run, result: LabelNoise, row: pd.Series, store: ReviewStore, annotator: str) -> None:
    """Detail of a mismatched-pair flag, with its decision buttons."""
    m = result.mismatch[result.mismatch["pair_id"].astype(str) == str(row["pair_id"])].iloc[0]
    st.caption(str(m["reason"]))
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
    metrics = st.columns(5)
    metrics[0].metric("Direct ranks (a→p, p→a)", f"{int(m['rank_a2p'])}, {int(m['rank_p2a'])}")
    metrics[1].metric("Direct mutual rank", f"{m['mutual_rank']:.1f}")
    metrics[2].metric("Neighbours' ranks", f"{int(m['nbr_rank_a'])}, {int(m['nbr_rank_p'])}")
    metrics[3].metric("Neighbours' mutual rank", f"{m['nbr_mutual_rank']:.1f}")
    metrics[4].metric("Gap best_sim − pos_sim", f"{m['gap']:.3f}")
    buttons = st.columns(3)
    for col, (label, value) in zip(
        buttons, (("Mismatched", "mismatched"), ("OK, a real pair", "ok"), ("Unsure", "unsure")), strict=True
    ):
        if col.button(label, key=f"ln_pair_{value}", disabled=not annotator):
            record(store, pair_decision(run, row["pair_id"], value, annotator))
            st.rerun()


def known_classes(run: Run) -> list[str]:
    """Every class label in the run, numbers in numeric order."""
    labels = clean_labels(run.items["label"]).dropna().unique().tolist() if "label" in run.items.columns else []

    def key(v: str) -> tuple[int, float, str]:
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    return sorted(labels, key=key)


def show_label(run: Run, result: LabelNoise, row: pd.Series, store: ReviewStore, annotator: str) -> None:
    """Detail of a label flag: the item, its pair, its nearest labelled neighbours; relabel or confirm."""
    lab = result.labels[result.labels["item_id"] == int(row["item_id"])].iloc[0]
    st.caption(str(lab["reason"]))
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
    cols = st.columns([2, 1, 1])
    new_label = cols[0].selectbox("Corrected label", classes, key="ln_new_label")
    if cols[1].button("Save corrected label", key="ln_relabel", disabled=not annotator):
        record(store, label_decision(run, int(lab["item_id"]), "relabel", annotator, label=new_label))
        st.rerun()
    if cols[2].button("Label is OK", key="ln_label_ok", disabled=not annotator):
        record(store, label_decision(run, int(lab["item_id"]), "ok", annotator))
        st.rerun()


def show_duplicate(run: Run, result: LabelNoise, row: pd.Series) -> None:
    """Detail of a duplicate flag: the anchor, its nearest other anchor, and both pairs' positives."""
    d = result.duplicates[result.duplicates["item_id"] == int(row["item_id"])].iloc[0]
    st.caption(str(d["reason"]))
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
    st.info("Duplicates take no review decision: the export below can leave out the later copy of each one.")


def undo_last(run: Run, store: ReviewStore, annotator: str) -> Decision | None:
    """Undo the annotator's latest pair or label decision (never one made on another page)."""
    hist = store.history(run.dataset_hash)
    mine = hist[(hist["annotator"] == annotator) & hist["kind"].isin(["pair", "label"])]
    if mine.empty:
        return None
    return store.undo(run.dataset_hash, annotator=annotator, kind=str(mine.iloc[-1]["kind"]))


def export(run: Run, result: LabelNoise, store: ReviewStore, threshold: float) -> None:
    """Download the corrected labels and the pairs minus the mismatched ones."""
    st.subheader("Export")
    pairs_dec = pair_decisions(run, store)
    labels_dec = label_decisions(run, store)
    fixed = corrected_labels(run, labels_dec)
    n_mismatched = int((pairs_dec["decision"] == "mismatched").sum()) if len(pairs_dec) else 0
    drop_dups = st.checkbox("Also leave out the later copy of each flagged near duplicate", key="ln_drop_duplicates")
    extra = duplicate_pairs_to_drop(result.duplicates, run.pairs, threshold=threshold) if drop_dups else []
    cleaned = clean_pairs(run, pair_decisions=pairs_dec, label_decisions=labels_dec, drop_pair_ids=extra)
    cols = st.columns(2)
    cols[0].download_button(
        f"Corrected labels ({len(fixed)} items, CSV)",
        fixed.to_csv(index=False).encode(),
        file_name=f"{run.run_id}-corrected-labels.csv",
        mime="text/csv",
        key="ln_download_labels",
    )
    cols[1].download_button(
        f"Pairs minus {n_mismatched} mismatched ({len(cleaned)} pairs, CSV)",
        cleaned.to_csv(index=False).encode(),
        file_name=f"{run.run_id}-pairs-clean.csv",
        mime="text/csv",
        key="ln_download_pairs",
    )
    st.caption(
        "The pairs file uses the dataset's columns (id, anchor, positive, negative_1…, label) with corrected labels "
        "applied; image paths stay relative to the dataset folder, so save it there to load it back."
    )


def main() -> None:
    explain()
    run = require_run()
    annotator = annotator_name().strip()
    flag_rank, examine, method, threshold = settings()
    try:
        result = detect(run, flag_rank, examine, method, threshold)
    except NegScopeError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - the browser gets a message, never a traceback
        st.error(f"The label-noise detectors failed ({type(exc).__name__}): {exc}")
        st.stop()
    try:
        store = ReviewStore(review_db_path())
    except (NegScopeError, OSError) as exc:
        st.error(f"The review database cannot be opened: {exc}")
        st.stop()

    summary = result.summary().set_index("kind")
    cols = st.columns(3)
    for col, kind in zip(cols, KINDS, strict=True):
        col.metric(
            f"{KIND_NAMES[kind]}: flagged / examined",
            f"{summary.loc[kind, 'flagged']:,} / {summary.loc[kind, 'examined']:,}",
        )
    if summary.loc["label", "examined"] == 0:
        st.caption("No labels to examine: the dataset has no label column, or fewer than two classes.")

    table = with_decisions(run, result.table(), store)
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

    if not annotator:
        st.warning("Enter your name in the sidebar to record decisions.")
    if "ln_saved" in st.session_state:
        st.success(st.session_state.pop("ln_saved"))

    st.subheader("Review")
    if shown.empty:
        st.info("No rows match the filters.")
    else:
        options = list(shown.index[:1000])
        if st.session_state.get("ln_pick") in shown.index and st.session_state["ln_pick"] not in options:
            options.append(st.session_state["ln_pick"])  # picked in the table beyond the first 1,000 rows
        if st.session_state.get("ln_pick") not in options:
            st.session_state["ln_pick"] = options[0]
        pick = st.selectbox("Flag", options, format_func=lambda i: describe(table.loc[i]), key="ln_pick")
        row = table.loc[pick]
        if row["kind"] == "mismatched_pair":
            show_mismatch(run, result, row, store, annotator)
        elif row["kind"] == "label":
            show_label(run, result, row, store, annotator)
        else:
            show_duplicate(run, result, row)
    if annotator and st.button("Undo my last decision on this page", key="ln_undo"):
        undone = undo_last(run, store, annotator)
        st.session_state["ln_saved"] = "Nothing to undo." if undone is None else f"Undone: back to {undone.decision}"
        st.rerun()
    export(run, result, store, threshold)


main()

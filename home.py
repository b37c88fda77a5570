"""NegScope's home page: which run is loaded (with links to every page), load another, the run's summary.

``app.py`` (the entry point, ``streamlit run app.py``) lists this page first, as "Home"; it opens on the
bundled digits sample with no other step.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from analysis.data.paths import resolve_user_path, save_upload
from analysis.embedding.engine import embed_to_run
from analysis.errors import NegScopeError
from analysis.runs.folder import load_run
from analysis.runs.summary import run_summary
from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA, list_runs
from ui.safe_text import escape_text
from ui.state import current_run_path, get_run, set_current_run

PAGES_DIR = Path(__file__).resolve().parent / "pages"
SAMPLE = "Bundled sample (handwritten digits)"
SERVER = "Path on the server"
UPLOAD = "Upload a file"
PAST = "A run computed earlier"


def _compute(data: Path, checkpoint: Path, *, device: str, batch_size: int, precision: str) -> Path | None:
    """Embed with a progress bar; show a readable error instead of a traceback."""
    bar = st.progress(0.0, text="Starting…")

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(min(done / total, 1.0) if total else 1.0, text=f"{message} ({done:,}/{total:,})")

    try:
        path = embed_to_run(
            data, checkpoint, device=device, batch_size=batch_size, precision=precision, progress=progress
        )
    except NegScopeError as exc:
        bar.empty()
        st.error(escape_text(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - the browser gets a message, never a traceback
        bar.empty()
        st.error(f"Embedding failed unexpectedly ({type(exc).__name__}): {escape_text(exc)}")
        return None
    bar.empty()
    return path


def _choose_data() -> Path | None:
    source = st.radio("Dataset", [SAMPLE, SERVER, UPLOAD], key="home_data_source", horizontal=True)
    if source == SAMPLE:
        st.caption(f"`{SAMPLE_DATA.relative_to(SAMPLE_DATA.parents[2])}`: 1,797 digit scans with captions.")
        return SAMPLE_DATA
    if source == SERVER:
        text = st.text_input(
            "Dataset path (CSV, JSONL, Parquet, a BEIR folder or a saved Hugging Face dataset)",
            key="home_data_path",
        )
        if not text:
            return None
        try:
            return resolve_user_path(text)
        except NegScopeError as exc:
            st.error(escape_text(exc))
            return None
    upload = st.file_uploader(
        "A table (CSV, JSONL, Parquet), or a zip with a table and its images",
        type=["csv", "jsonl", "parquet", "zip"],
        key="home_data_upload",
    )
    if upload is None:
        return None
    try:
        return save_upload(upload.name, upload.getvalue(), kind="data")
    except NegScopeError as exc:
        st.error(escape_text(exc))
        return None


def _choose_checkpoint() -> Path | None:
    source = st.radio("Checkpoint", [SAMPLE, SERVER, UPLOAD], key="home_checkpoint_source", horizontal=True)
    if source == SAMPLE:
        st.caption("NegScope's tiny dual encoder trained on the digits (image MLP, bag-of-words text tower).")
        return SAMPLE_CHECKPOINT
    if source == SERVER:
        text = st.text_input(
            "Checkpoint path (NegScope or sentence-transformers folder, CLIP/SigLIP folder, "
            ".npy/.npz/.parquet embeddings, or a .pt state dict)",
            key="home_checkpoint_path",
        )
        if not text:
            return None
        try:
            return resolve_user_path(text)
        except NegScopeError as exc:
            st.error(escape_text(exc))
            return None
    upload = st.file_uploader(
        "Precomputed embeddings (.npy, .npz, .parquet), a weights file, or a zipped model folder",
        type=["npy", "npz", "parquet", "zip", "pt", "pth", "bin", "ckpt"],
        key="home_checkpoint_upload",
    )
    if upload is None:
        return None
    try:
        return save_upload(upload.name, upload.getvalue(), kind="checkpoint")
    except NegScopeError as exc:
        st.error(escape_text(exc))
        return None


def _load_section() -> None:
    st.subheader("1 · Load a dataset and a checkpoint")
    mode = st.radio("Start from", ["New embedding", PAST], key="home_mode", horizontal=True)
    if mode == PAST:
        runs = list_runs()
        if not runs:
            st.info("No run has been computed in this workspace yet.")
            return
        labels = {str(p): f"{p.name}" for p in runs}
        chosen = st.selectbox("Run", list(labels), format_func=labels.get, key="home_past_run")
        if st.button("Open this run", key="home_open_run") and chosen:
            set_current_run(chosen)
        return
    left, right = st.columns(2)
    with left:
        data = _choose_data()
    with right:
        checkpoint = _choose_checkpoint()
    with st.expander("Options"):
        c1, c2, c3 = st.columns(3)
        device = c1.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="home_device")
        batch_size = int(c2.number_input("Batch size", 1, 4096, 256, key="home_batch_size"))
        precision = c3.selectbox("Precision", ["auto", "fp32", "fp16", "bf16"], key="home_precision")
    ready = data is not None and checkpoint is not None
    if st.button("Compute embeddings", key="home_compute", type="primary", disabled=not ready):
        path = _compute(data, checkpoint, device=device, batch_size=batch_size, precision=precision)
        if path is not None:
            set_current_run(path)
            st.success(f"Run ready: {escape_text(Path(path).name)}")


def _summary_section() -> None:
    run = get_run()
    if run is None:
        return
    st.subheader("2 · The loaded run")
    summary = run_summary(run)
    cols = st.columns(5)
    cols[0].metric("Pairs", f"{summary['pairs']:,}")
    cols[1].metric("Items", f"{summary['items']:,}")
    cols[2].metric("Dimension", summary["dim"])
    cols[3].metric("Device", str(summary["device"]))
    tau = summary["tau"]
    cols[4].metric(
        "Learned temperature τ",
        f"{tau:.4f}" if tau else "none",
        help="1 / logit_scale of the checkpoint" if tau else "this checkpoint has no learned temperature",
    )
    left, right = st.columns(2)
    left.markdown("**Items per modality**")
    left.dataframe(pd.DataFrame(summary["items_per_modality"].items(), columns=["modality", "items"]), hide_index=True)
    right.markdown("**Negatives per pair, by source**")
    right.dataframe(
        pd.DataFrame(summary["negatives_per_pair"].items(), columns=["source", "per pair"]), hide_index=True
    )
    man = run.manifest
    st.caption(
        f"Run {escape_text(run.run_id)} · model kind {escape_text(man.get('model_kind'))} · "
        f"dtype {escape_text(man.get('dtype'))} · dataset {escape_text(man.get('dataset_path'))} · "
        f"checkpoint {escape_text(man.get('checkpoint_path'))}"
    )


def page_links(*, columns: int = 4) -> None:
    """A link to every analysis page, in a grid."""
    pages = sorted(PAGES_DIR.glob("*.py"))
    cols = st.columns(columns)
    for i, page in enumerate(pages):
        label = page.stem.split("_", 1)[-1].replace("_", " ")
        with cols[i % columns]:
            try:
                st.page_link(f"pages/{page.name}", label=label)
            except StreamlitAPIException:  # this file runs on its own (AppTest): no page registry
                st.caption(label)


def loaded_run_banner() -> None:
    """At the top: the run every page shows, and links to the pages."""
    run = get_run()
    if run is None:
        st.info("No run is loaded yet: load a dataset and a checkpoint below.")
        return
    st.success(
        f"Loaded run: {escape_text(run.run_id)} · {len(run.pairs):,} pairs · {len(run.items):,} items · D = {run.dim}",
        icon="✅",
    )
    page_links()


def _auto_load_sample() -> None:
    """On a first visit, open the bundled sample so the app shows something with no other step."""
    if st.session_state.get("home_autoloaded") or current_run_path():
        return
    st.session_state["home_autoloaded"] = True
    if not (SAMPLE_DATA.is_file() and SAMPLE_CHECKPOINT.is_dir()):
        return
    with st.spinner("Opening the bundled sample…"):
        path = _compute(SAMPLE_DATA, SAMPLE_CHECKPOINT, device="auto", batch_size=256, precision="auto")
    if path is not None:
        load_run(path)
        set_current_run(path)


st.title("NegScope")
_auto_load_sample()
loaded_run_banner()
_load_section()
_summary_section()
with st.expander("What NegScope does", expanded=False):
    st.markdown(
        "NegScope shows what a contrastive embedding model does with **pairs and negatives**: how positives and "
        "negatives score, how the temperature shapes the InfoNCE loss, how far apart image and text embeddings "
        "sit, which *negatives* are really positives, and which pairs or labels look wrong. Load a dataset of "
        "(anchor, positive, negatives) rows and a checkpoint; NegScope embeds every distinct item once, keeps "
        "the result in a run folder, and each page in the sidebar analyses that run."
    )
    st.latex(
        r"\mathrm{sim}(a, b) = \frac{f(a)\cdot f(b)}{\lVert f(a)\rVert\,\lVert f(b)\rVert},\qquad "
        r"\mathcal{L}_{\mathrm{InfoNCE}} = -\log\frac{e^{\mathrm{sim}(a,p)/\tau}}"
        r"{e^{\mathrm{sim}(a,p)/\tau} + \sum_j e^{\mathrm{sim}(a,n_j)/\tau}}"
    )

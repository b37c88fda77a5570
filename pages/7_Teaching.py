"""Teaching: InfoNCE on the unit circle, for a class. No model and no run needed; its own temperature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from analysis.errors import NegScopeError
from analysis.metrics.teaching import ToyResult, random_angles, toy_state, toy_tau_curve
from ui.safe_text import escape_text
from ui.teaching_plots import shares_bar, shares_curve, toy_figure

st.set_page_config(page_title="Teaching · NegScope", page_icon="🎓", layout="wide")

TOY_TAUS = tuple(float(t) for t in np.round(np.geomspace(0.01, 5.0, 41), 4))
ARROWS = ("Forces on the anchor", "Gradient step of every point")

for key, value in {
    "teach_mode": "Random",
    "teach_n": 4,
    "teach_seed": 0,
    "teach_tau": min(TOY_TAUS, key=lambda t: abs(np.log(t / 0.1))),
    "teach_arrows": ARROWS[0],
}.items():
    st.session_state.setdefault(key, value)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_toy(anchor: float, positive: float, negatives: tuple[float, ...], tau: float) -> tuple[ToyResult, pd.DataFrame]:
    """The toy at one tau, and every negative's share against tau (the curve does not depend on ``tau``)."""
    return toy_state(anchor, positive, list(negatives), tau), cached_curve(anchor, positive, negatives)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_curve(anchor: float, positive: float, negatives: tuple[float, ...]) -> pd.DataFrame:
    """Loss and each negative's share on the page's tau grid."""
    return toy_tau_curve(anchor, positive, list(negatives), np.array(TOY_TAUS))


def explain() -> None:
    """The formulas, folded under the title."""
    with st.expander("How this is computed", expanded=False):
        st.markdown(
            "An **anchor** $a$, its **positive** $c_+$ and a few **negatives** $c_j$ are unit vectors on a circle; "
            "the similarity is the cosine of the angle between two of them. InfoNCE is the cross-entropy of "
            "picking the positive among the candidates, with logits $s_k/\\tau$:"
        )
        st.latex(
            r"p_k = \frac{e^{s_k/\tau}}{e^{s_+/\tau} + \sum_j e^{s_j/\tau}},\qquad \mathcal{L} = -\log p_+,\qquad "
            r"w_j = \frac{p_j}{1-p_+},\qquad N_\text{eff} = \exp\Big(-\sum_j w_j \log w_j\Big)"
        )
        st.latex(
            r"-\frac{\partial \mathcal{L}}{\partial a} = \underbrace{\frac{1-p_+}{\tau}\, c_+}_{\text{pull}}"
            r"\;-\; \sum_j \underbrace{\frac{p_j}{\tau}\, c_j}_{\text{push}}"
        )
        st.markdown(
            "$w_j$ is negative $j$'s **share of the push**; $N_\\text{eff}$ counts the negatives that really take "
            "part. At a small $\\tau$ the closest negative takes almost all of the push (the loss is "
            "*hardness-aware*, Wang & Liu 2021); at a large $\\tau$ every negative pushes about equally. "
            "The arrows show either each candidate's force on the anchor (thick: their sum) or the gradient "
            "step $-\\partial\\mathcal{L}/\\partial x$ of every point, projected onto the circle."
        )


def layout_controls() -> tuple[float, float, list[float]]:
    """The points: a seeded random layout, or angles typed in degrees."""
    c1, c2, c3 = st.columns(3)
    mode = c1.radio("Points", ["Random", "Place by angles"], key="teach_mode", horizontal=True)
    n = int(c2.slider("Negatives", 1, 8, key="teach_n"))
    seed = int(c3.number_input("Random seed", min_value=0, max_value=10_000, step=1, key="teach_seed"))
    anchor, positive, negatives = random_angles(n, seed=seed)
    if mode == "Random":
        return anchor, positive, negatives
    st.caption("Angles in degrees on the unit circle (0 = right, 90 = up).")
    cols = st.columns(min(n + 2, 5))
    defaults = [("teach_anchor", anchor), ("teach_positive", positive)] + [
        (f"teach_neg_{i}", negatives[i]) for i in range(n)
    ]
    labels = ["anchor", "positive"] + [f"negative {i + 1}" for i in range(n)]
    values = []
    for i, ((key, default), label) in enumerate(zip(defaults, labels, strict=True)):
        st.session_state.setdefault(key, float(default))
        values.append(float(cols[i % len(cols)].number_input(label, -360.0, 720.0, step=5.0, key=key)))
    return values[0], values[1], values[2:]


def readable_table(res: ToyResult) -> pd.DataFrame:
    """The toy's numbers for the table: one row per point."""
    return res.table[["name", "angle_deg", "sim", "logit", "p", "weight"]].rename(
        columns={"angle_deg": "angle (°)", "sim": "cosine", "p": "softmax p", "weight": "share of push"}
    )


@st.fragment
def toy() -> None:
    """Controls and plots; a change reruns this fragment only."""
    anchor, positive, negatives = layout_controls()
    c1, c2 = st.columns(2)
    tau = float(
        c1.select_slider(
            "Temperature τ", options=TOY_TAUS, key="teach_tau", format_func=lambda t: f"{t:g}", help="Log-spaced."
        )
    )
    arrows = c2.radio(
        "Arrows show",
        ARROWS,
        key="teach_arrows",
        horizontal=True,
        help="Forces: the positive's pull and each negative's push on the anchor (thick: their sum). Steps: "
        "−∂L/∂x of every point, projected onto the circle.",
    )
    try:
        res, curve = cached_toy(anchor, positive, tuple(negatives), tau)
    except NegScopeError as exc:
        st.error(escape_text(exc))
        return
    m = st.columns(4)
    m[0].metric("Loss", f"{res.loss:.3g}")
    m[1].metric("Effective negatives", f"{res.effective_negatives:.2f} of {len(negatives)}")
    p_pos = float(res.table["p"].iloc[1])
    m[2].metric("Positive's probability p₊", f"{p_pos:.3g}")
    hardest = res.table[res.table["role"] == "negative"]["weight"].max()
    m[3].metric("Largest share of the push", f"{hardest:.1%}")
    left, right = st.columns([3, 2])
    left.plotly_chart(toy_figure(res.table, arrows), width="stretch", key="teach_fig_circle")
    with right:
        st.plotly_chart(shares_bar(res.table), width="stretch", key="teach_fig_bar")
        st.plotly_chart(shares_curve(curve, tau), width="stretch", key="teach_fig_curve")
    st.dataframe(
        readable_table(res),
        hide_index=True,
        width="stretch",
        column_config={
            "angle (°)": st.column_config.NumberColumn(format="%.1f"),
            "cosine": st.column_config.NumberColumn(format="%.4f"),
            "logit": st.column_config.NumberColumn(format="%.2f", help="cosine / τ"),
            "softmax p": st.column_config.NumberColumn(format="%.3e", help="probability of picking this candidate"),
            "share of push": st.column_config.NumberColumn(
                format="%.3e", help="this negative's share of the repulsive gradient"
            ),
        },
    )
    st.caption("Labels: n1, n2, … are the negatives with their share of the push; thin grey leaders join a label "
               "to its point when close points pushed the labels apart.")


st.title("Teaching: InfoNCE on the unit circle")
explain()
st.markdown(
    "No model needed: move the temperature and watch which negatives take the gradient. "
    "At a small τ the closest negative takes almost all of it."
)
toy()

"""A 2-D toy for teaching: an anchor, a positive and a few negatives on the unit circle.

With ``a`` the anchor, ``c_0`` the positive, ``c_j`` the negatives (unit vectors at the given angles) and
logits ``l_k = a · c_k / tau``, the InfoNCE loss is ``L = -l_0 + log sum_k exp(l_k)`` and, with ``p`` the softmax
of the logits,

- ``dL/da = (1/tau) (-(1 - p_0) c_0 + sum_j p_j c_j)``: a pull towards the positive of size ``(1 - p_0)/tau``
  and a push away from each negative of size ``p_j / tau``;
- ``dL/dc_0 = -(1 - p_0) a / tau`` and ``dL/dc_j = p_j a / tau``.

A gradient step moves every point along ``-dL/dx`` projected onto the circle's tangent (the embedding stays on
the unit sphere). Shrinking ``tau`` concentrates ``p`` on the closest negatives: the loss becomes hardness-aware.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError

TOY_COLUMNS = (
    "name", "role", "angle_deg", "x", "y", "sim", "logit", "p", "weight",
    "grad_x", "grad_y", "step_x", "step_y", "force_x", "force_y",
)  # fmt: skip


@dataclass(frozen=True)
class ToyResult:
    """The toy's state at one temperature.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per point (anchor first, then the positive, then the negatives) with ``TOY_COLUMNS``:
        position, similarity to the anchor, logit, softmax ``p`` over the candidates (NaN for the anchor),
        ``weight`` (share of the repulsive gradient, negatives only), the Euclidean gradient ``dL/dx``,
        ``step`` (``-dL/dx`` projected onto the circle's tangent) and ``force`` (this candidate's
        contribution to the anchor's ``-dL/da``; the anchor's own row holds the total).
    loss : float
        The InfoNCE loss.
    tau : float
        The temperature.
    effective_negatives : float
        ``exp(entropy of weight)``.
    """

    table: pd.DataFrame
    loss: float
    tau: float
    effective_negatives: float


def random_angles(n_negatives: int, *, seed: int = 0) -> tuple[float, float, list[float]]:
    """A random toy layout in degrees: anchor, positive (within 60 degrees of it) and negatives anywhere.

    Returns
    -------
    (float, float, list of float)
        Anchor angle, positive angle, negative angles.
    """
    if n_negatives < 1:
        raise NegScopeError("the toy needs at least one negative")
    rng = np.random.default_rng(seed)
    anchor = float(rng.uniform(0, 360))
    positive = float((anchor + rng.uniform(-60, 60)) % 360)
    negatives = [float(a) for a in np.round(rng.uniform(0, 360, size=n_negatives), 1)]
    return round(anchor, 1), round(positive, 1), negatives


def _unit(deg: np.ndarray) -> np.ndarray:
    rad = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=-1)


def toy_state(anchor_deg: float, positive_deg: float, negatives_deg: list[float] | np.ndarray, tau: float) -> ToyResult:
    """Softmax weights and gradients of the InfoNCE loss for points on the unit circle.

    Parameters
    ----------
    anchor_deg, positive_deg : float
        Angles of the anchor and the positive, in degrees.
    negatives_deg : list of float
        (K,) angles of the negatives, in degrees (K >= 1).
    tau : float
        Temperature (> 0).

    Returns
    -------
    ToyResult
    """
    neg = np.asarray(negatives_deg, dtype=np.float64).ravel()
    if neg.size < 1:
        raise NegScopeError("the toy needs at least one negative")
    if not (np.isfinite(tau) and tau > 0):
        raise NegScopeError(f"tau must be a positive number, got {tau}")
    a = _unit(np.array([anchor_deg]))[0]
    cands = _unit(np.concatenate([[positive_deg], neg]))  # (1 + K, 2)
    sims = cands @ a
    logits = sims / tau
    shifted = logits - logits.max()
    p = np.exp(shifted) / np.exp(shifted).sum()
    loss = float(-np.log(p[0]))
    w = p[1:] / p[1:].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(w > 0, w * np.log(w), 0.0))

    coef = p.copy()
    coef[0] -= 1.0  # dL/dl_k = p_k - [k == 0]
    grad_a = (coef[:, None] * cands).sum(axis=0) / tau
    grad_c = coef[:, None] * a[None, :] / tau
    forces = -(coef[:, None] * cands) / tau  # each candidate's share of -dL/da

    def tangent(g: np.ndarray, x: np.ndarray) -> np.ndarray:
        return -(g - np.sum(g * x, axis=-1, keepdims=True) * x)

    pos_all = np.vstack([a[None], cands])
    grads = np.vstack([grad_a[None], grad_c])
    steps = tangent(grads, pos_all)
    force_rows = np.vstack([forces.sum(axis=0)[None], forces])
    roles = ["anchor", "positive"] + ["negative"] * len(neg)
    names = ["anchor", "positive"] + [f"negative {i + 1}" for i in range(len(neg))]
    table = pd.DataFrame(
        {
            "name": names,
            "role": roles,
            "angle_deg": np.concatenate([[anchor_deg, positive_deg], neg]),
            "x": pos_all[:, 0],
            "y": pos_all[:, 1],
            "sim": np.concatenate([[1.0], sims]),
            "logit": np.concatenate([[np.nan], logits]),
            "p": np.concatenate([[np.nan], p]),
            "weight": np.concatenate([[np.nan, np.nan], w]),
            "grad_x": grads[:, 0],
            "grad_y": grads[:, 1],
            "step_x": steps[:, 0],
            "step_y": steps[:, 1],
            "force_x": force_rows[:, 0],
            "force_y": force_rows[:, 1],
        }
    )
    return ToyResult(table=table, loss=loss, tau=float(tau), effective_negatives=float(np.exp(entropy)))


def toy_tau_curve(
    anchor_deg: float, positive_deg: float, negatives_deg: list[float] | np.ndarray, taus: np.ndarray
) -> pd.DataFrame:
    """Loss and each negative's weight against tau for one toy layout.

    Returns
    -------
    pandas.DataFrame
        One row per tau: ``tau``, ``loss``, ``effective_negatives`` and one column per negative
        (``negative 1`` ...) holding its share of the repulsive gradient.
    """
    rows = []
    for tau in np.asarray(taus, dtype=np.float64):
        res = toy_state(anchor_deg, positive_deg, negatives_deg, float(tau))
        neg = res.table[res.table["role"] == "negative"]
        row = {"tau": float(tau), "loss": res.loss, "effective_negatives": res.effective_negatives}
        row.update(dict(zip(neg["name"], neg["weight"].astype(float), strict=True)))
        rows.append(row)
    return pd.DataFrame(rows)

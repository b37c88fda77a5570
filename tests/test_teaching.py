"""The unit-circle toy: weights and gradient vectors against torch.autograd and a float64 softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.errors import NegScopeError
from analysis.metrics.teaching import TOY_COLUMNS, random_angles, toy_state, toy_tau_curve


def _autograd(anchor: float, positive: float, negatives: list[float], tau: float):
    ang = torch.tensor(np.deg2rad([anchor, positive, *negatives]), dtype=torch.float64)
    pts = torch.stack([torch.cos(ang), torch.sin(ang)], dim=1).detach().requires_grad_(True)
    logits = pts[1:] @ pts[0] / tau
    loss = -torch.log_softmax(logits, dim=0)[0]
    loss.backward()
    return float(loss.detach()), pts.grad.numpy(), pts.detach().numpy(), torch.softmax(logits, 0).detach().numpy()


@pytest.mark.parametrize("tau", [0.05, 0.3, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_gradients_match_autograd(tau: float, seed: int) -> None:
    anchor, positive, negatives = random_angles(5, seed=seed)
    res = toy_state(anchor, positive, negatives, tau)
    table = res.table
    assert list(table.columns) == list(TOY_COLUMNS)
    assert table["role"].tolist() == ["anchor", "positive"] + ["negative"] * 5
    loss, grad, pts, p = _autograd(anchor, positive, negatives, tau)
    assert res.loss == pytest.approx(loss, rel=1e-10)
    np.testing.assert_allclose(table[["x", "y"]], pts, atol=1e-12)
    np.testing.assert_allclose(table[["grad_x", "grad_y"]], grad, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(table["p"].iloc[1:], p, rtol=1e-9)
    w = p[1:] / p[1:].sum()
    np.testing.assert_allclose(table["weight"].iloc[2:], w, rtol=1e-9)
    assert res.effective_negatives == pytest.approx(np.exp(-np.sum(w * np.log(w))), rel=1e-9)
    # steps are -grad projected onto the tangent: orthogonal to the position
    steps = table[["step_x", "step_y"]].to_numpy()
    np.testing.assert_allclose(np.sum(steps * pts, axis=1), 0.0, atol=1e-10)
    tangent = np.stack([-pts[:, 1], pts[:, 0]], axis=1)
    np.testing.assert_allclose(np.sum(steps * tangent, axis=1), -np.sum(grad * tangent, axis=1), rtol=1e-9, atol=1e-12)
    # the anchor's forces add up to -dL/da; the positive pulls, each negative pushes with p_j / tau
    forces = table[["force_x", "force_y"]].to_numpy()
    np.testing.assert_allclose(forces[0], -grad[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(forces[1:].sum(axis=0), -grad[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(forces[2:], axis=1), p[1:] / tau, rtol=1e-9)
    assert np.linalg.norm(forces[1]) == pytest.approx((1 - p[0]) / tau, rel=1e-9)


def test_small_tau_concentrates_on_the_closest_negative() -> None:
    negatives = [30.0, 90.0, 180.0]
    cold = toy_state(0.0, 10.0, negatives, 0.02)
    warm = toy_state(0.0, 10.0, negatives, 5.0)
    w_cold = cold.table["weight"].iloc[2:].to_numpy()
    assert w_cold.argmax() == 0 and w_cold[0] > 0.99
    assert cold.effective_negatives < 1.05 < warm.effective_negatives
    assert warm.effective_negatives == pytest.approx(3.0, abs=0.2)


def test_tau_curve_and_errors() -> None:
    curve = toy_tau_curve(0.0, 20.0, [40.0, 200.0], np.array([0.05, 0.5, 5.0]))
    assert list(curve.columns) == ["tau", "loss", "effective_negatives", "negative 1", "negative 2"]
    np.testing.assert_allclose(curve["negative 1"] + curve["negative 2"], 1.0)
    assert curve["effective_negatives"].is_monotonic_increasing
    with pytest.raises(NegScopeError):
        toy_state(0.0, 10.0, [], 0.1)
    with pytest.raises(NegScopeError):
        toy_state(0.0, 10.0, [20.0], 0.0)
    with pytest.raises(NegScopeError):
        random_angles(0)

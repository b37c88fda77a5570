"""Alignment, uniformity (Wang & Isola 2020) and tolerance (Wang & Liu 2021) of an embedding.

On L2-normalised embeddings (rows are re-normalised here):

- alignment ``E_{(x, y) positive} ||f(x) - f(y)||^2`` (alpha = 2): 0 when every positive pair coincides, 4 when
  they are antipodal, 2 for unrelated random directions. Lower is better.
- uniformity ``log E_{x, y} exp(-t ||f(x) - f(y)||^2)`` (t = 2) over all distinct pairs of items: 0 when
  everything collapses to one point, about -4 for points spread uniformly on a high-dimensional sphere.
  Lower is better.
- tolerance ``E_{x, y same label} f(x) · f(y)`` over distinct same-label pairs: how close the model keeps
  semantically similar items (high tolerance = tolerant of similar samples, Wang & Liu 2021).

With too few samples the expectations mean nothing: the functions then return NaN and
:class:`GeometryReport` carries a message saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from analysis.data.tables import normalise_labels
from analysis.runs.folder import Run

MIN_PAIRS = 10
MIN_ITEMS = 10


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def alignment(x: np.ndarray, y: np.ndarray, *, alpha: float = 2.0) -> float:
    """Alignment loss ``mean ||x_i - y_i||^alpha`` over positive pairs (rows of ``x`` and ``y``).

    Parameters
    ----------
    x, y : numpy.ndarray
        (P, D) embeddings of the two sides of P positive pairs; rows are L2-normalised here.
    alpha : float
        Exponent (Wang & Isola use 2).

    Returns
    -------
    float
        The alignment, or NaN when there are fewer than ``MIN_PAIRS`` pairs.
    """
    x, y = _normalise(x), _normalise(y)
    if x.shape != y.shape:
        raise ValueError(f"alignment needs equal shapes, got {x.shape} and {y.shape}")
    if len(x) < MIN_PAIRS:
        return float("nan")
    dist = np.linalg.norm(x.astype(np.float64) - y.astype(np.float64), axis=1)
    return float(np.mean(dist**alpha))


def uniformity(
    x: np.ndarray,
    *,
    t: float = 2.0,
    max_items: int = 4096,
    block_size: int = 1024,
    seed: int = 0,
) -> float:
    """Uniformity ``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` over all distinct pairs of rows.

    Computed blockwise in torch with a running log-sum-exp (never an (N, N) matrix in memory at once).

    Parameters
    ----------
    x : numpy.ndarray
        (N, D) embeddings; rows are L2-normalised here.
    t : float
        The kernel's scale (Wang & Isola use 2).
    max_items : int
        Above this many rows a random subset of this size is used (seeded), as the metric is an expectation.
    block_size : int
        Rows per block.
    seed : int
        Seed of the subset.

    Returns
    -------
    float
        The uniformity, or NaN when there are fewer than ``MIN_ITEMS`` rows.
    """
    x = _normalise(x)
    n = len(x)
    if n < MIN_ITEMS:
        return float("nan")
    if n > max_items:
        x = x[np.sort(np.random.default_rng(seed).choice(n, size=max_items, replace=False))]
        n = max_items
    xt = torch.as_tensor(x, dtype=torch.float64)
    total = torch.tensor(float("-inf"), dtype=torch.float64)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        sims = xt[start:stop] @ xt[start:].T  # (b, n - start)
        # ||x - y||^2 = 2 - 2 x·y on the unit sphere; keep only j > i
        log_k = -t * torch.clamp(2.0 - 2.0 * sims, min=0.0)
        upper = torch.arange(start, stop)[:, None] < torch.arange(start, n)[None, :]
        total = torch.logaddexp(total, torch.logsumexp(log_k[upper], dim=0))
    n_pairs = n * (n - 1) / 2
    return float(total - np.log(n_pairs))


def tolerance(x: np.ndarray, labels: np.ndarray | pd.Series) -> float:
    """Mean cosine similarity over distinct pairs of rows that share a label (NaN or None labels skipped).

    Uses ``sum_{i != j in c} x_i · x_j = ||sum_{i in c} x_i||^2 - n_c`` for unit rows, pooled over classes.

    Parameters
    ----------
    x : numpy.ndarray
        (N, D) embeddings; rows are L2-normalised here.
    labels : array-like
        (N,) class labels.

    Returns
    -------
    float
        The tolerance, or NaN when fewer than ``MIN_PAIRS`` same-label pairs exist.
    """
    x = _normalise(x).astype(np.float64)
    lab = pd.Series(normalise_labels(np.asarray(labels, dtype=object).tolist()), dtype=object)
    known = lab.notna()
    if not known.any():
        return float("nan")
    codes, _ = pd.factorize(lab[known].astype(str))
    xs = x[known.to_numpy()]
    n_c = np.bincount(codes)
    sums = np.zeros((len(n_c), x.shape[1]))
    np.add.at(sums, codes, xs)
    n_pairs = float(np.sum(n_c * (n_c - 1)))
    if n_pairs / 2 < MIN_PAIRS:
        return float("nan")
    return float((np.sum(sums * sums) - np.sum(np.sum(xs * xs, axis=1))) / n_pairs)


@dataclass(frozen=True)
class GeometryReport:
    """Alignment, uniformity and tolerance of one run.

    Attributes
    ----------
    alignment : float
        Over the run's positive pairs (anchor, positive).
    uniformity : float
        Over every item of the run (a seeded subset above 4096 items).
    uniformity_by_group : dict
        Uniformity within each modality (or anchor side / other side for one-modality runs).
    tolerance : float
        Mean similarity of same-label items; NaN without labels.
    n_pairs, n_items, n_labelled : int
        Sample sizes.
    messages : list of str
        Why a value is NaN (too few samples, no labels).
    """

    alignment: float
    uniformity: float
    uniformity_by_group: dict[str, float]
    tolerance: float
    n_pairs: int
    n_items: int
    n_labelled: int
    messages: list[str] = field(default_factory=list)


def geometry_report(run: Run, *, embeddings: np.ndarray | None = None) -> GeometryReport:
    """Alignment, uniformity (overall and per group) and tolerance of a run.

    Parameters
    ----------
    run : Run
        The run.
    embeddings : numpy.ndarray, optional
        (N, D) replacement embeddings (for example with the modality gap closed).
    """
    emb = run.embeddings if embeddings is None else embeddings
    anchors = run.pairs["anchor_id"].to_numpy(np.int64)
    positives = run.pairs["positive_id"].to_numpy(np.int64)
    messages = []
    align = alignment(emb[anchors], emb[positives])
    if np.isnan(align):
        messages.append(f"alignment needs at least {MIN_PAIRS} positive pairs; this run has {len(anchors)}.")
    uni = uniformity(emb)
    if np.isnan(uni):
        messages.append(f"uniformity needs at least {MIN_ITEMS} items; this run has {len(emb)}.")
    modality = run.items["modality"].to_numpy()
    groups: dict[str, np.ndarray]
    if len(set(modality)) > 1:
        groups = {str(m): np.flatnonzero(modality == m) for m in sorted(set(modality))}
    else:
        is_anchor = np.zeros(len(emb), dtype=bool)
        is_anchor[anchors] = True
        groups = {"anchor side": np.flatnonzero(is_anchor), "other side": np.flatnonzero(~is_anchor)}
    by_group = {name: uniformity(emb[idx]) for name, idx in groups.items()}
    labels = run.labels
    n_labelled = int(sum(v is not None for v in labels))
    tol = tolerance(emb, labels)
    if np.isnan(tol):
        if n_labelled == 0:
            messages.append("tolerance needs class labels; this dataset has none.")
        else:
            messages.append(f"tolerance needs at least {MIN_PAIRS} pairs of items with the same label.")
    return GeometryReport(
        alignment=align,
        uniformity=uni,
        uniformity_by_group=by_group,
        tolerance=tol,
        n_pairs=len(anchors),
        n_items=len(emb),
        n_labelled=n_labelled,
        messages=messages,
    )


def random_reference(dim: int, *, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Alignment and uniformity of independent uniformly random unit vectors in ``dim`` dimensions.

    A reference point for the alignment/uniformity plane: a model that learnt nothing sits here.

    Returns
    -------
    (float, float)
        (alignment, uniformity); alignment is about 2.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = rng.normal(size=(n, dim))
    return alignment(x, y), uniformity(x)

"""InfoNCE against the temperature: loss, which negatives take the gradient, and three loss variants.

For pair ``i`` the candidates are its positive and its listed negatives (every source in
``negatives.parquet``); the logits are ``sim / tau``. With ``l_+ = pos_sim / tau`` and ``l_j = neg_sim_j / tau``:

- InfoNCE loss ``L_i = -log softmax(l)_+ = log(exp(l_+) + sum_j exp(l_j)) - l_+``.
- ``dL/dl_j = p_j`` (the softmax over *all* candidates) for a negative and ``dL/dl_+ = p_+ - 1`` for the
  positive, so the positive's gradient magnitude is ``1 - p_+ = sum_j p_j`` and negative ``j``'s share of the
  repulsive gradient is ``w_j = p_j / (1 - p_+)``, the softmax over the negatives alone.
- Effective number of negatives ``exp(H(w))`` (1 when one negative takes all of it, K when all share equally).
- Hardest-negative share ``max_j w_j`` (the top-1 weight), the top-5 share, and the share on negatives known
  or decided to be false negatives.

Directions
----------
``forward``: the anchor is the query, the candidates are its positive and listed negatives.

``reverse`` (two modalities): the positive is the query and the candidates are anchors. Candidate slot ``j`` of
pair ``i`` is the anchor of the pair whose positive is the listed negative ``n_ij`` (the first such pair, in
dataset order, whose anchor differs from ``a_i``): exactly the image that caption stands for in a CLIP batch.
When ``n_ij`` is no pair's positive (a hand-written hard negative, say), the slot takes the anchor of pair
``(i + 1 + j) mod P`` instead (the in-batch convention); a slot whose anchor equals ``a_i`` is left empty. So
both directions have the same number of candidates per pair, and their losses are on the same ``log K`` scale.

``symmetric``: the mean of the forward and reverse losses (the CLIP objective).

Variants (all per pair, averaged)
---------------------------------
- ``infonce``: the plain loss above.
- ``fn_removed``: known or decided false negatives dropped from the denominator.
- ``debiased`` (Chuang et al. 2020) with class prior ``tau_plus``:
  ``Ng = max((sum_j e^{l_j} - tau_plus N e^{l_+}) / (1 - tau_plus), N e^{-1/tau})``,
  ``L = -log(e^{l_+} / (e^{l_+} + Ng))``.
- ``hard`` (Robinson et al. 2021) with concentration ``beta``: the negatives' sum is replaced by the
  importance-weighted ``N * sum_j e^{(1+beta) l_j} / sum_j e^{beta l_j}``; ``tau_plus = 0`` gives pure hardness
  weighting, ``tau_plus > 0`` the full debiased hard-negative loss (``hcl``).

Everything is computed in log space, so tiny temperatures neither overflow nor lose the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from analysis.choices import DIRECTIONS as DIRECTIONS
from analysis.errors import NegScopeError
from analysis.runs.candidates import Candidates, build_candidates
from analysis.runs.folder import Run

_T = TypeVar("_T")
VARIANTS = ("infonce", "fn_removed", "debiased", "hard", "hcl")
VARIANT_LABELS = {
    "infonce": "InfoNCE",
    "fn_removed": "InfoNCE, false negatives removed",
    "debiased": "Debiased (Chuang et al. 2020)",
    "hard": "Hardness-weighted (Robinson et al. 2021)",
    "hcl": "Hard + debiased (Robinson et al. 2021)",
}
DEFAULT_TAU = 0.07


def tau_grid(lo: float = 0.005, hi: float = 1.0, n: int = 64) -> np.ndarray:
    """Log-spaced temperatures.

    Returns
    -------
    numpy.ndarray
        (n,) float64 from ``lo`` to ``hi``, log-spaced.
    """
    if not (0 < lo < hi) or n < 2:
        raise NegScopeError(f"a tau grid needs 0 < lo < hi and n >= 2 (got lo={lo}, hi={hi}, n={n})")
    return np.geomspace(lo, hi, n)


def _check_taus(taus: np.ndarray | list[float] | float) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    if arr.size == 0:
        raise NegScopeError("give at least one temperature")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise NegScopeError(f"temperatures must be positive numbers, got {arr.tolist()}")
    return arr


# ----------------------------------------------------------------------------------------------------------
# Inputs: similarities of each query to its candidates, one direction
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossInputs:
    """Similarities of every pair's query to its positive and its negative candidates, for one direction.

    Attributes
    ----------
    direction : str
        ``forward`` (anchor queries) or ``reverse`` (positive queries).
    pair_ids : numpy.ndarray
        (P,) pair ids, in ``run.pairs`` order.
    query_ids, positive_ids : numpy.ndarray
        (P,) int64 item ids of the query and of its positive candidate.
    pos_sim : numpy.ndarray
        (P,) float32 query · positive.
    neg_ids : numpy.ndarray
        (P, K) int64 item ids of the negative candidates, -1 where padded.
    neg_sim : numpy.ndarray
        (P, K) float32 query · negative, NaN where padded.
    false_negative : numpy.ndarray
        (P, K) bool, True where a negative candidate is a known or decided false negative.
    """

    direction: str
    pair_ids: np.ndarray
    query_ids: np.ndarray
    positive_ids: np.ndarray
    pos_sim: np.ndarray
    neg_ids: np.ndarray
    neg_sim: np.ndarray
    false_negative: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(P, K) bool, True where a real negative candidate sits."""
        return self.neg_ids >= 0

    @property
    def n_negatives(self) -> np.ndarray:
        """(P,) number of real negative candidates per pair."""
        return self.mask.sum(axis=1)


def has_two_modalities(run: Run) -> bool:
    """True when anchors and positives are of different modalities (image and text)."""
    return run.anchor_modality() != run.positive_modality()


def forward_inputs(run: Run, *, cands: Candidates | None = None, fn_table: pd.DataFrame | None = None) -> LossInputs:
    """Anchor-as-query inputs: the positive and every listed negative of each pair.

    Parameters
    ----------
    run : Run
        The run.
    cands : Candidates, optional
        Precomputed ``build_candidates(run)``.
    fn_table : pandas.DataFrame, optional
        ``anchor_id``, ``candidate_id`` of known or decided false negatives (see
        :func:`false_negative_table`); none when omitted.
    """
    cands = build_candidates(run) if cands is None else cands
    fn = _lookup(fn_table, cands.anchor_ids[:, None], cands.neg_ids) & cands.mask
    return LossInputs(
        direction="forward",
        pair_ids=cands.pair_ids,
        query_ids=cands.anchor_ids,
        positive_ids=cands.positive_ids,
        pos_sim=cands.pos_sim,
        neg_ids=cands.neg_ids,
        neg_sim=cands.neg_sim,
        false_negative=fn,
    )


def reverse_inputs(run: Run, *, cands: Candidates | None = None, fn_table: pd.DataFrame | None = None) -> LossInputs:
    """Positive-as-query inputs: the pair's anchor against the anchors that stand for its listed negatives.

    Slot ``j`` of pair ``i`` holds the anchor of the first pair (dataset order) whose positive is the listed
    negative ``n_ij`` and whose anchor is not ``a_i``; when ``n_ij`` is no pair's positive, the anchor of pair
    ``(i + 1 + j) mod P`` (in-batch convention). Slots whose anchor equals ``a_i`` are left empty (-1, NaN).
    A reverse candidate ``a_m`` counts as a false negative when the listed negative ``p_i`` of anchor ``a_m``
    is a known or decided false negative.

    Parameters
    ----------
    run : Run
        The run.
    cands : Candidates, optional
        Precomputed ``build_candidates(run)``.
    fn_table : pandas.DataFrame, optional
        ``anchor_id``, ``candidate_id`` of known or decided false negatives.
    """
    cands = build_candidates(run) if cands is None else cands
    p, k = cands.neg_ids.shape
    anchors, positives = cands.anchor_ids, cands.positive_ids
    # The first pair (by row) for each positive item, and a second one for when the first shares our anchor.
    order = pd.DataFrame({"positive": positives, "anchor": anchors, "row": np.arange(p)})
    firsts = order.groupby("positive", sort=False).head(2)
    first = firsts.groupby("positive", sort=False)["anchor"].agg(list)
    first_anchor = pd.Series({pos: vals[0] for pos, vals in first.items()}, dtype=np.int64)
    second_anchor = pd.Series({pos: (vals[1] if len(vals) > 1 else -1) for pos, vals in first.items()}, dtype=np.int64)

    flat_neg = cands.neg_ids.ravel()
    mapped = first_anchor.reindex(flat_neg).to_numpy(dtype=np.float64)
    alt = second_anchor.reindex(flat_neg).to_numpy(dtype=np.float64)
    own = np.repeat(anchors, k)
    mapped = np.where(mapped == own, alt, mapped)
    mapped = np.where(np.isnan(mapped), -2, mapped).astype(np.int64)  # -2: no pair has it as positive
    rows = np.repeat(np.arange(p), k)
    cols = np.tile(np.arange(k), p)
    fallback = anchors[(rows + 1 + cols) % max(p, 1)] if p else np.empty(0, dtype=np.int64)
    rev = np.where(mapped == -2, fallback, mapped)
    rev = np.where(flat_neg < 0, -1, rev)
    rev = np.where(rev == own, -1, rev).reshape(p, k)

    valid = rev >= 0
    emb = run.embeddings
    neg_sim = np.full((p, k), np.nan, dtype=np.float32)
    if valid.any():
        r, c = np.nonzero(valid)
        neg_sim[r, c] = np.einsum("ij,ij->i", emb[positives[r]], emb[rev[r, c]])
    fn = _lookup(fn_table, rev, positives[:, None]) & valid
    return LossInputs(
        direction="reverse",
        pair_ids=cands.pair_ids,
        query_ids=positives,
        positive_ids=anchors,
        pos_sim=cands.pos_sim,
        neg_ids=rev,
        neg_sim=neg_sim,
        false_negative=fn,
    )


def _lookup(fn_table: pd.DataFrame | None, anchor_ids: np.ndarray, candidate_ids: np.ndarray) -> np.ndarray:
    """(P, K) bool: is (anchor, candidate) in ``fn_table``? Arrays broadcast to a common shape."""
    anchor_ids, candidate_ids = np.broadcast_arrays(np.asarray(anchor_ids), np.asarray(candidate_ids))
    if fn_table is None or fn_table.empty:
        return np.zeros(anchor_ids.shape, dtype=bool)
    base = np.int64(
        max(
            int(anchor_ids.max(initial=0)),
            int(candidate_ids.max(initial=0)),
            int(fn_table["candidate_id"].max()),
            int(fn_table["anchor_id"].max()),
        )
        + 1
    )
    known = fn_table["anchor_id"].to_numpy(np.int64) * base + fn_table["candidate_id"].to_numpy(np.int64)
    query = anchor_ids.astype(np.int64) * base + candidate_ids.astype(np.int64)
    return np.isin(query, known) & (anchor_ids >= 0) & (candidate_ids >= 0)


def false_negative_table(
    run: Run,
    *,
    use_truth: bool = True,
    decisions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Known (sample truth) and decided (review) false negatives of a run, as (anchor, candidate) item ids.

    Parameters
    ----------
    run : Run
        The run.
    use_truth : bool
        Read ``analysis.data.truth.negative_truth(run)`` (rows with ``is_false_negative``), where it exists.
    decisions : pandas.DataFrame, optional
        The current review decisions (:func:`analysis.review.decisions.run_decisions`, or
        ``workspace_decisions``): ``negative`` ones decided ``false_negative`` count, matched to every item
        holding the anchor's and the candidate's content keys. None: no review decisions.

    Returns
    -------
    pandas.DataFrame
        ``anchor_id``, ``candidate_id`` (int64 item ids) and ``source`` (``truth`` | ``review``), one row per
        (anchor, candidate, source).
    """
    frames = []
    if use_truth:
        truth = _negative_truth(run)
        if truth is not None and not truth.empty:
            fn = truth[truth["is_false_negative"].astype(bool)]
            anchor_of_pair = pd.Series(run.pairs["anchor_id"].to_numpy(np.int64), index=run.pairs["pair_id"].to_numpy())
            anchors = anchor_of_pair.reindex(fn["pair_id"].to_numpy()).to_numpy(dtype=np.float64)
            ok = ~np.isnan(anchors)
            frames.append(
                pd.DataFrame(
                    {
                        "anchor_id": anchors[ok].astype(np.int64),
                        "candidate_id": fn["negative_id"].to_numpy(np.int64)[ok],
                        "source": "truth",
                    }
                )
            )
    if decisions is not None and len(decisions):
        decided = decisions[(decisions["kind"] == "negative") & (decisions["decision"] == "false_negative")]
        a = run.items_for_keys(decided["anchor_key"].astype(str))
        c = run.items_for_keys(decided["candidate_key"].astype(str))
        both = a.merge(c, on="position", suffixes=("_a", "_c"))
        frames.append(
            pd.DataFrame(
                {
                    "anchor_id": both["item_id_a"].to_numpy(np.int64),
                    "candidate_id": both["item_id_c"].to_numpy(np.int64),
                    "source": "review",
                }
            )
        )
    if not frames:
        return pd.DataFrame(
            {
                "anchor_id": pd.Series(dtype=np.int64),
                "candidate_id": pd.Series(dtype=np.int64),
                "source": pd.Series(dtype=object),
            }
        )
    out = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)
    return out.astype({"anchor_id": np.int64, "candidate_id": np.int64})


def _negative_truth(run: Run) -> pd.DataFrame | None:
    """``analysis.data.truth.negative_truth(run)`` when that module exists, else None."""
    try:
        from analysis.data.truth import negative_truth
    except ImportError:
        return None
    return negative_truth(run)


def loss_inputs(run: Run, direction: str, *, fn_table: pd.DataFrame | None = None) -> LossInputs:
    """Inputs for ``forward`` or ``reverse`` (the latter only for two-modality runs)."""
    if direction == "forward":
        return forward_inputs(run, fn_table=fn_table)
    if direction == "reverse":
        return reverse_inputs(run, fn_table=fn_table)
    raise NegScopeError(f"unknown direction {direction!r}; expected 'forward' or 'reverse'")


# ----------------------------------------------------------------------------------------------------------
# The sweep over tau (vectorised, torch)
# ----------------------------------------------------------------------------------------------------------


SWEEP_COLUMNS = (
    "tau",
    "loss",
    "positive_gradient",
    "effective_negatives",
    "top1_weight",
    "top5_weight",
    "false_negative_weight",
    "n_pairs",
)


def _check_pair_shapes(pos_shape: tuple[int, ...], neg_shape: tuple[int, ...]) -> None:
    """Raise :class:`~analysis.errors.NegScopeError` unless the shapes are (P,) and (P, K).

    Parameters
    ----------
    pos_shape : tuple of int
        Shape of ``pos_sim``, expected (P,).
    neg_shape : tuple of int
        Shape of ``neg_sim``, expected (P, K).
    """
    if len(neg_shape) != 2 or pos_shape[0] != neg_shape[0]:
        raise NegScopeError(f"pos_sim {pos_shape} and neg_sim {neg_shape} do not match as (P,), (P, K)")


def _prepare(pos_sim: np.ndarray, neg_sim: np.ndarray, device: str | torch.device):
    neg = torch.as_tensor(np.asarray(neg_sim, dtype=np.float32), device=device)
    pos = torch.as_tensor(np.asarray(pos_sim, dtype=np.float32), device=device)
    _check_pair_shapes(tuple(pos.shape), tuple(neg.shape))
    mask = ~torch.isnan(neg)
    has = mask.any(dim=1)
    ninf = torch.tensor(float("-inf"), device=device)
    hardest = torch.where(mask, neg, ninf).amax(dim=1) if neg.shape[1] else torch.full_like(pos, float("-inf"))
    hardest = torch.where(has, hardest, torch.zeros_like(hardest))
    # d <= 0 everywhere (0 at the hardest negative), -inf where padded: exp(d / tau) never overflows.
    d = torch.where(mask, neg - hardest[:, None], ninf)
    s0 = torch.where(mask, neg, torch.zeros((), device=device))
    return pos, d, s0, mask, has, hardest


STAT_NAMES = ("loss", "positive_gradient", "effective_negatives", "top1_weight", "top5_weight", "false_negative_weight")
BLOCK_ELEMENTS = 32_768  # torch's intra-op grain size: smaller ops run serially, without any thread hand-off


def map_row_blocks(
    fn: Callable[[int, int], _T],
    n_rows: int,
    n_cols: int,
    *,
    block_elements: int = BLOCK_ELEMENTS,
    workers: int | None = None,
    name: str = "negscope-blocks",
) -> list[_T]:
    """``fn(lo, hi)`` for consecutive blocks of rows of a (n_rows, n_cols) problem, in a small thread pool.

    Each block holds about ``block_elements`` elements (at least one row; one empty block ``(0, 0)`` when
    there are no rows). The blocks run on ``workers`` threads (default: torch's intra-op thread count), each
    with small serial torch ops, so the working set stays in cache and no op waits for a thread hand-off (on
    a busy machine torch's own intra-op parallelism made these loops several times slower). Even with one
    worker the blocks run in a pool thread: measured faster than torch ops from the main thread.

    Returns
    -------
    list
        The results, in block order.
    """
    rows = max(1, block_elements // max(n_cols, 1))
    blocks = [(lo, min(lo + rows, n_rows)) for lo in range(0, n_rows, rows)] or [(0, 0)]
    n_workers = max(1, min(len(blocks), workers or torch.get_num_threads()))
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix=name) as pool:
        return list(pool.map(lambda bounds: fn(*bounds), blocks))


def _stats_from_sums(
    z: torch.Tensor,
    zs: torch.Tensor,
    zf: torch.Tensor | None,
    pos: torch.Tensor,
    d: torch.Tensor,
    hardest: torch.Tensor,
    inv: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Per-pair statistics (T, P) from the sums ``z = sum_j e_j``, ``zs = sum_j e_j s_j``, ``zf = sum_fn e_j``.

    ``e_j = exp((s_j - hardest) / tau)``, so ``z >= 1`` and nothing overflows.
    """
    iv = inv[:, None]
    log_z = torch.log(z)
    # L = softplus(lse(l) - l_+) with lse(l) = hardest / tau + log z; p_+ = exp(-L)
    loss = torch.nn.functional.softplus((hardest - pos) * iv + log_z)
    # H(w) = lse(l) - sum_j w_j l_j
    entropy = (hardest - zs / z) * iv + log_z
    d_top = torch.topk(d, min(5, d.shape[1]), dim=1).values  # (P, <=5), the hardest first
    top5 = torch.exp(d_top.unsqueeze(0) * inv[:, None, None]).sum(dim=2) / z
    stats = {
        "loss": loss,
        "positive_gradient": -torch.expm1(-loss),
        "effective_negatives": torch.exp(entropy),
        "top1_weight": 1.0 / z,
        "top5_weight": top5,
    }
    if zf is not None:
        stats["false_negative_weight"] = zf / z
    return stats


def _block_sums(
    pos: torch.Tensor,
    d: torch.Tensor,
    s0: torch.Tensor,
    hardest: torch.Tensor,
    fn_f: torch.Tensor | None,
    inv_values: list[float],
    inv: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Sums over the rows of one block of every per-pair statistic, for every tau: (T,) float64 each."""
    r, k = d.shape
    n_t = len(inv_values)
    z = torch.empty(n_t, r)
    zs = torch.empty(n_t, r)
    zf = torch.empty(n_t, r) if fn_f is not None else None
    buf = torch.empty(r, k)
    buf2 = torch.empty(r, k) if fn_f is not None else None
    for t, iv in enumerate(inv_values):
        torch.mul(d, iv, out=buf)
        buf.exp_()  # un-normalised weights: 1 at the hardest negative, 0 at padding
        torch.sum(buf, dim=1, out=z[t])
        if zf is not None:
            torch.mul(buf, fn_f, out=buf2)
            torch.sum(buf2, dim=1, out=zf[t])
        buf.mul_(s0)
        torch.sum(buf, dim=1, out=zs[t])
    stats = _stats_from_sums(z, zs, zf, pos, d, hardest, inv)
    return {key: value.double().sum(dim=1) for key, value in stats.items()}


def _sweep_kernel(
    pos: torch.Tensor,
    d: torch.Tensor,
    s0: torch.Tensor,
    hardest: torch.Tensor,
    fn: torch.Tensor | None,
    taus: np.ndarray,
    device: str | torch.device,
    *,
    block_elements: int = BLOCK_ELEMENTS,
    workers: int | None = None,
    vectorised: bool | None = None,
) -> dict[str, np.ndarray]:
    """The hot loop of :func:`sweep`, for pairs that all have at least one negative: mean statistics per tau.

    On the CPU the pairs are cut into blocks of about ``block_elements`` similarities (:func:`map_row_blocks`),
    each handled tau by tau with small serial ops into preallocated buffers. On another device (CUDA)
    everything runs as large vectorised ops instead (``vectorised=True`` forces that path anywhere).
    """
    p, k = d.shape
    inv = torch.as_tensor(1.0 / taus, dtype=torch.float32, device=device)
    fn_f = fn.to(torch.float32) if fn is not None else None
    if vectorised if vectorised is not None else torch.device(device).type != "cpu":
        e = torch.exp(d.unsqueeze(0) * inv[:, None, None])
        z, zs = e.sum(dim=2), (e * s0).sum(dim=2)
        zf = (e * fn_f).sum(dim=2) if fn_f is not None else None
        stats = _stats_from_sums(z, zs, zf, pos, d, hardest, inv)
        return {key: value.double().mean(dim=1).cpu().numpy() for key, value in stats.items()}
    inv_values = [float(x) for x in inv]

    def run_block(lo: int, hi: int) -> dict[str, torch.Tensor]:
        return _block_sums(
            pos[lo:hi], d[lo:hi], s0[lo:hi], hardest[lo:hi], None if fn_f is None else fn_f[lo:hi], inv_values, inv
        )

    parts = map_row_blocks(run_block, p, k, block_elements=block_elements, workers=workers, name="negscope-sweep")
    return {key: (sum(part[key] for part in parts) / p).numpy() for key in parts[0]}


def sweep(
    pos_sim: np.ndarray,
    neg_sim: np.ndarray,
    taus: np.ndarray | list[float],
    *,
    false_negative: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Mean InfoNCE loss and gradient statistics for every temperature.

    Pairs without any negative candidate are left out of every mean (their loss is 0 by definition).

    Parameters
    ----------
    pos_sim : numpy.ndarray
        (P,) query · positive.
    neg_sim : numpy.ndarray
        (P, K) query · negative, NaN where padded.
    taus : array-like
        (T,) positive temperatures.
    false_negative : numpy.ndarray, optional
        (P, K) bool; when given, ``false_negative_weight`` is the mean share of the repulsive gradient on them.
    device : str or torch.device
        Where to compute.

    Returns
    -------
    pandas.DataFrame
        One row per tau (in the order given) with ``SWEEP_COLUMNS``: mean loss, mean positive gradient
        ``1 - p_+``, mean effective negatives ``exp(H(w))``, mean top-1 and top-5 weights, mean false-negative
        weight (NaN without a mask) and the number of pairs used.
    """
    taus = _check_taus(taus)
    pos, d, s0, mask, has, hardest = _prepare(pos_sim, neg_sim, device)
    n_used = int(has.sum())
    out = np.full((len(taus), len(SWEEP_COLUMNS)), np.nan)
    out[:, 0] = taus
    out[:, -1] = n_used
    if n_used:
        fn = None
        if false_negative is not None and np.any(false_negative):
            fn = (torch.as_tensor(np.asarray(false_negative, dtype=bool), device=device) & mask)[has]
        stats = _sweep_kernel(pos[has], d[has], s0[has], hardest[has], fn, taus, device)
        for col, values in stats.items():
            out[:, SWEEP_COLUMNS.index(col)] = values
    df = pd.DataFrame(out, columns=list(SWEEP_COLUMNS))
    df["n_pairs"] = df["n_pairs"].astype(int)
    return df


def sweep_inputs(inputs: LossInputs, taus: np.ndarray | list[float], *, device: str = "cpu") -> pd.DataFrame:
    """:func:`sweep` on one direction's :class:`LossInputs` (with its false-negative mask)."""
    return sweep(inputs.pos_sim, inputs.neg_sim, taus, false_negative=inputs.false_negative, device=device)


def check_directions(run: Run, directions: tuple[str, ...] | list[str] | str | None) -> tuple[str, ...]:
    """The directions to compute for ``run``: every one it has when None, else ``directions`` after checks.

    Raises
    ------
    NegScopeError
        An unknown direction, none at all, or ``reverse`` / ``symmetric`` on a one-modality run.
    """
    if directions is None:
        return DIRECTIONS if has_two_modalities(run) else ("forward",)
    directions = (directions,) if isinstance(directions, str) else tuple(directions)
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions:
        raise NegScopeError(f"unknown directions {bad}; expected some of {', '.join(DIRECTIONS)}")
    two_sided = [d for d in directions if d != "forward"]
    if two_sided and not has_two_modalities(run):
        raise NegScopeError(
            f"direction {two_sided[0]} needs a two-modality run; {run.run_id} has "
            f"{run.anchor_modality()} anchors and {run.positive_modality()} positives"
        )
    return directions


DEFAULT_TAUS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def default_taus(run: Run) -> list[float]:
    """``DEFAULT_TAUS`` and the run's learned tau (or ``DEFAULT_TAU``), ascending, without repeats."""
    learned, _ = learned_or_default_tau(run)
    return sorted({*DEFAULT_TAUS, round(learned, 6)})


def direction_sweep(
    run: Run,
    taus: np.ndarray | list[float],
    *,
    directions: tuple[str, ...] | list[str] | str | None = None,
    fn_table: pd.DataFrame | None = None,
    device: str = "cpu",
    require_negatives: bool = False,
) -> pd.DataFrame:
    """:func:`sweep` for each direction, stacked with a ``direction`` column (directions in ``DIRECTIONS`` order).

    Parameters
    ----------
    run : Run
    taus : array-like
        (T,) positive temperatures (checked before any work).
    directions : sequence of str, optional
        Some of ``DIRECTIONS``; default every direction the run has: ``forward`` for one-modality runs, also
        ``reverse`` and ``symmetric`` (every statistic the mean of the two directions', which for the loss is
        the CLIP objective) for two-modality runs.
    fn_table : pandas.DataFrame, optional
        Known or decided false negatives (:func:`false_negative_table`).
    device : str
        Where to compute.
    require_negatives : bool
        Raise ``NegScopeError`` when no pair has a negative (the loss is then undefined) instead of returning
        rows with ``n_pairs == 0``.

    Returns
    -------
    pandas.DataFrame
        ``direction`` and ``SWEEP_COLUMNS``, one row per (direction, tau); a symmetric row's ``n_pairs`` is the
        smaller of the two directions'.
    """
    taus = _check_taus(taus)
    wanted = check_directions(run, directions)
    cands = build_candidates(run)
    tables: dict[str, pd.DataFrame] = {}
    if "forward" in wanted or "symmetric" in wanted:
        tables["forward"] = sweep_inputs(forward_inputs(run, cands=cands, fn_table=fn_table), taus, device=device)
    if "reverse" in wanted or "symmetric" in wanted:
        tables["reverse"] = sweep_inputs(reverse_inputs(run, cands=cands, fn_table=fn_table), taus, device=device)
    if "symmetric" in wanted:
        fwd, rev = tables["forward"], tables["reverse"]
        sym = (fwd.drop(columns="n_pairs") + rev.drop(columns="n_pairs")) / 2
        sym["tau"] = fwd["tau"]
        sym["n_pairs"] = np.minimum(fwd["n_pairs"], rev["n_pairs"])
        tables["symmetric"] = sym
    if require_negatives and any(int(tables[d]["n_pairs"].iloc[0]) == 0 for d in wanted):
        raise NegScopeError(f"no pair of {run.run_id} has a negative: the loss is not defined")
    frames = [tables[d].assign(direction=d) for d in DIRECTIONS if d in wanted]
    return pd.concat(frames, ignore_index=True)[["direction", *SWEEP_COLUMNS]]


# ----------------------------------------------------------------------------------------------------------
# One temperature, every pair
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairStats:
    """Per-pair loss and gradient shares at one temperature.

    Attributes
    ----------
    tau : float
        The temperature.
    loss : numpy.ndarray
        (P,) InfoNCE loss per pair (0 for a pair without negatives).
    p_pos : numpy.ndarray
        (P,) softmax probability of the positive; ``1 - p_pos`` is the positive's gradient magnitude.
    weights : numpy.ndarray
        (P, K) share of the repulsive gradient on each negative (softmax over the negatives alone), NaN where
        padded; each row sums to 1 (rows without negatives are all NaN).
    effective_negatives : numpy.ndarray
        (P,) ``exp(entropy of weights)``, NaN without negatives.
    top1_weight, top5_weight : numpy.ndarray
        (P,) share on the hardest 1 and 5 negatives.
    false_negative_weight : numpy.ndarray
        (P,) share on false negatives (0 where none is known).
    """

    tau: float
    loss: np.ndarray
    p_pos: np.ndarray
    weights: np.ndarray
    effective_negatives: np.ndarray
    top1_weight: np.ndarray
    top5_weight: np.ndarray
    false_negative_weight: np.ndarray


def pair_stats(
    pos_sim: np.ndarray,
    neg_sim: np.ndarray,
    tau: float,
    *,
    false_negative: np.ndarray | None = None,
) -> PairStats:
    """Per-pair loss, positive probability, negative weights and their summaries at one temperature.

    Parameters
    ----------
    pos_sim : numpy.ndarray
        (P,) query · positive.
    neg_sim : numpy.ndarray
        (P, K) query · negative, NaN where padded.
    tau : float
        Temperature.
    false_negative : numpy.ndarray, optional
        (P, K) bool mask of false negatives.
    """
    tau = float(_check_taus(tau)[0])
    pos_sim = np.asarray(pos_sim, dtype=np.float32)
    neg_sim = np.asarray(neg_sim, dtype=np.float32)
    _check_pair_shapes(pos_sim.shape, neg_sim.shape)
    fn = None if false_negative is None else np.asarray(false_negative, dtype=bool)
    p, k = neg_sim.shape

    def run_block(lo: int, hi: int) -> dict[str, np.ndarray]:
        return _pair_stats_block(pos_sim[lo:hi], neg_sim[lo:hi], None if fn is None else fn[lo:hi], tau)

    parts = map_row_blocks(run_block, p, k, name="negscope-pairs")
    return PairStats(tau=tau, **{key: np.concatenate([part[key] for part in parts]) for key in parts[0]})


def _pair_stats_block(
    pos_sim: np.ndarray, neg_sim: np.ndarray, false_negative: np.ndarray | None, tau: float
) -> dict[str, np.ndarray]:
    """:func:`pair_stats` for one block of rows; returns the :class:`PairStats` fields but ``tau``."""
    pos, d, s0, mask, has, hardest = _prepare(pos_sim, neg_sim, "cpu")
    inv = 1.0 / tau
    e = torch.exp(d * inv)
    z = e.sum(dim=1)
    log_z = torch.log(z)
    w = e / z[:, None]
    weighted_sim = (e * s0).sum(dim=1) / z
    entropy = (hardest - weighted_sim) * inv + log_z
    loss = torch.nn.functional.softplus((hardest - pos) * inv + log_z)
    loss = torch.where(has, loss, torch.zeros_like(loss))
    p_pos = torch.exp(-loss)
    k = d.shape[1]
    top5 = (torch.topk(w.nan_to_num(0.0), min(5, k), dim=1).values.sum(dim=1)) if k else torch.zeros_like(pos)
    if false_negative is not None and k:
        fnw = (w.nan_to_num(0.0) * torch.as_tensor(false_negative)).sum(dim=1)
    else:
        fnw = torch.zeros_like(pos)
    nan = torch.tensor(float("nan"))
    weights = torch.where(mask & has[:, None], w, nan)
    return {
        "loss": loss.numpy(),
        "p_pos": p_pos.numpy(),
        "weights": weights.numpy(),
        "effective_negatives": torch.where(has, torch.exp(entropy), nan).numpy(),
        "top1_weight": torch.where(has, 1.0 / z, nan).numpy(),
        "top5_weight": torch.where(has, top5, nan).numpy(),
        "false_negative_weight": torch.where(has, fnw, nan).numpy(),
    }


def pair_table(inputs: LossInputs, stats: PairStats) -> pd.DataFrame:
    """One row per pair: ids, similarities, loss, ``p_pos`` and the gradient summaries, hardest loss first.

    ``row`` is the pair's row in ``inputs`` (and in ``run.pairs``).
    """
    mask = inputs.mask
    with np.errstate(invalid="ignore"):
        hardest = np.where(mask, inputs.neg_sim, -np.inf).max(axis=1, initial=-np.inf)
    df = pd.DataFrame(
        {
            "row": np.arange(len(inputs.pair_ids)),
            "pair_id": inputs.pair_ids,
            "query_id": inputs.query_ids,
            "positive_id": inputs.positive_ids,
            "pos_sim": inputs.pos_sim,
            "hardest_neg_sim": np.where(np.isfinite(hardest), hardest, np.nan),
            "n_negatives": inputs.n_negatives,
            "loss": stats.loss,
            "p_pos": stats.p_pos,
            "positive_gradient": 1.0 - stats.p_pos,
            "effective_negatives": stats.effective_negatives,
            "top1_weight": stats.top1_weight,
            "top5_weight": stats.top5_weight,
            "false_negative_weight": stats.false_negative_weight,
        }
    )
    return df.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)


def negatives_of_pair(inputs: LossInputs, stats: PairStats, row: int) -> pd.DataFrame:
    """The negative candidates of pair row ``row``, heaviest gradient share first.

    Returns
    -------
    pandas.DataFrame
        ``item_id``, ``sim``, ``weight`` (share of the repulsive gradient), ``p`` (softmax over all
        candidates = ``dL/dlogit``), ``false_negative``.
    """
    mask = inputs.mask[row]
    w = stats.weights[row][mask]
    df = pd.DataFrame(
        {
            "item_id": inputs.neg_ids[row][mask],
            "sim": inputs.neg_sim[row][mask],
            "weight": w,
            "p": w * (1.0 - stats.p_pos[row]),
            "false_negative": inputs.false_negative[row][mask],
        }
    )
    return df.sort_values("weight", ascending=False, kind="stable").reset_index(drop=True)


def weight_histogram(stats: PairStats, *, bins: int = 40) -> pd.DataFrame:
    """Histogram of every real negative's weight (log-spaced bins from 1e-6 to 1).

    Returns
    -------
    pandas.DataFrame
        ``left``, ``right``, ``count`` per bin (weights below 1e-6 fall into the first bin).
    """
    w = stats.weights[~np.isnan(stats.weights)]
    edges = np.geomspace(1e-6, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(w, 1e-6, 1.0), bins=edges)
    return pd.DataFrame({"left": edges[:-1], "right": edges[1:], "count": counts})


def weight_by_rank(stats: PairStats) -> pd.DataFrame:
    """Mean gradient share of the hardest, second hardest, ... negative (how concentrated the gradient is).

    Returns
    -------
    pandas.DataFrame
        ``rank`` (1 = hardest), ``mean_weight`` (over the pairs that have that many negatives),
        ``cumulative`` (mean share on the ``rank`` hardest) and ``n_pairs``.
    """
    w = stats.weights
    if w.size == 0:
        return pd.DataFrame(columns=["rank", "mean_weight", "cumulative", "n_pairs"])
    ranked = -np.sort(-w, axis=1)  # descending, NaN (padding) last
    present = ~np.isnan(ranked)
    counts = present.sum(axis=0)
    keep = counts > 0
    sums = np.where(present, ranked, 0.0).sum(axis=0)
    cum = np.nancumsum(np.where(present, ranked, 0.0), axis=1)
    has = present[:, 0]
    cumulative = cum[has].mean(axis=0) if has.any() else np.full(w.shape[1], np.nan)
    return pd.DataFrame(
        {
            "rank": np.arange(1, w.shape[1] + 1)[keep],
            "mean_weight": (sums[keep] / counts[keep]),
            "cumulative": cumulative[keep],
            "n_pairs": counts[keep],
        }
    )


# ----------------------------------------------------------------------------------------------------------
# Variants: false negatives removed, debiased, hardness-weighted
# ----------------------------------------------------------------------------------------------------------


def _log_sub_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(e^a - e^b), -inf where e^a <= e^b."""
    diff = b - a
    out = a + torch.log(-torch.expm1(torch.clamp(diff, max=0.0)))
    return torch.where(diff < 0, out, torch.full_like(a, float("-inf")))


def _check_variant_options(tau_plus: float, beta: float) -> None:
    if not 0.0 <= tau_plus < 1.0:
        raise NegScopeError(f"tau_plus is a class prior in [0, 1), got {tau_plus}")
    if beta < 0:
        raise NegScopeError(f"beta must be >= 0, got {beta}")


def _variant_tensors(
    pos_sim: np.ndarray, neg_sim: np.ndarray, false_negative: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    neg = torch.as_tensor(np.asarray(neg_sim, dtype=np.float64))
    pos = torch.as_tensor(np.asarray(pos_sim, dtype=np.float64))
    _check_pair_shapes(tuple(pos.shape), tuple(neg.shape))
    mask = ~torch.isnan(neg)
    kept = None
    if false_negative is not None and np.any(false_negative):
        kept = mask & ~torch.as_tensor(np.asarray(false_negative, dtype=bool))
    return pos, torch.nan_to_num(neg, nan=0.0), mask, kept


def _variant_kernel(
    pos: torch.Tensor,
    neg: torch.Tensor,
    mask: torch.Tensor,
    kept: torch.Tensor | None,
    tau: float,
    *,
    tau_plus: float,
    beta: float,
    variants: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Per-pair losses of several variants at one tau, sharing the log-sum-exps between them."""
    ninf = torch.tensor(float("-inf"), dtype=torch.float64)
    has = mask.any(dim=1)
    logits = torch.where(mask, neg / tau, ninf)
    lpos = pos / tau
    log_n = torch.log(mask.sum(dim=1).to(torch.float64))
    lse = torch.logsumexp(logits, dim=1)
    hard_sum = None
    if beta > 0 and any(v in ("hard", "hcl") for v in variants):
        # N * sum_j e^{(1+beta) l_j} / sum_j e^{beta l_j}
        hard_sum = log_n + torch.logsumexp((1.0 + beta) * logits, dim=1) - torch.logsumexp(beta * logits, dim=1)

    def debias(log_sum: torch.Tensor, tp: float) -> torch.Tensor:
        # (sum - tau_plus N e^{l_+}) / (1 - tau_plus), -inf where the estimate is negative (then the clamp wins)
        est = _log_sub_exp(log_sum, np.log(tp) + log_n + lpos) - np.log1p(-tp) if tp > 0.0 else log_sum
        return torch.maximum(est, log_n - 1.0 / tau)

    out = {}
    for variant in variants:
        if variant == "infonce":
            log_ng = lse
        elif variant == "fn_removed":
            log_ng = lse if kept is None else torch.logsumexp(torch.where(kept, logits, ninf), dim=1)
        elif variant == "debiased":
            log_ng = debias(lse, tau_plus)
        elif variant == "hard":
            log_ng = debias(lse if hard_sum is None else hard_sum, 0.0)
        elif variant == "hcl":
            log_ng = debias(lse if hard_sum is None else hard_sum, tau_plus)
        else:
            raise NegScopeError(f"unknown loss variant {variant!r}; expected one of {VARIANTS}")
        loss = torch.nn.functional.softplus(log_ng - lpos)
        loss = torch.where(torch.isfinite(log_ng), loss, torch.zeros_like(loss))  # every negative removed: L = 0
        out[variant] = torch.where(has, loss, torch.full_like(loss, float("nan"))).numpy()
    return out


def _variant_blocks(
    pos: torch.Tensor,
    neg: torch.Tensor,
    mask: torch.Tensor,
    kept: torch.Tensor | None,
    tau: float,
    *,
    tau_plus: float,
    beta: float,
    variants: tuple[str, ...],
    block_elements: int = BLOCK_ELEMENTS // 2,
) -> dict[str, np.ndarray]:
    """:func:`_variant_kernel` over blocks of rows (:func:`map_row_blocks`)."""
    p, k = neg.shape

    def run_block(lo: int, hi: int) -> dict[str, np.ndarray]:
        part_kept = None if kept is None else kept[lo:hi]
        return _variant_kernel(
            pos[lo:hi], neg[lo:hi], mask[lo:hi], part_kept, tau, tau_plus=tau_plus, beta=beta, variants=variants
        )

    parts = map_row_blocks(run_block, p, k, block_elements=block_elements, name="negscope-variants")
    return {v: np.concatenate([part[v] for part in parts]) for v in variants}


def variant_losses(
    pos_sim: np.ndarray,
    neg_sim: np.ndarray,
    tau: float,
    *,
    false_negative: np.ndarray | None = None,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    variants: tuple[str, ...] = VARIANTS,
) -> dict[str, np.ndarray]:
    """Per-pair loss of several variants at one temperature (float64, log space).

    Parameters
    ----------
    pos_sim : numpy.ndarray
        (P,) query · positive.
    neg_sim : numpy.ndarray
        (P, K) query · negative, NaN where padded.
    tau : float
        Temperature.
    false_negative : numpy.ndarray, optional
        (P, K) bool; removed from the denominator by ``fn_removed``.
    tau_plus : float
        Class prior of the debiased losses (``debiased`` and ``hcl``), in [0, 1).
    beta : float
        Hardness concentration of ``hard`` and ``hcl`` (0 = no reweighting).
    variants : tuple of str
        Which of ``VARIANTS``.

    Returns
    -------
    dict
        variant -> (P,) loss per pair; NaN for pairs without negatives, 0 where every negative was removed.
    """
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise NegScopeError(f"unknown loss variant {bad[0]!r}; expected one of {VARIANTS}")
    _check_variant_options(tau_plus, beta)
    tau = float(_check_taus(tau)[0])
    pos, neg, mask, kept = _variant_tensors(pos_sim, neg_sim, false_negative)
    return _variant_blocks(pos, neg, mask, kept, tau, tau_plus=tau_plus, beta=beta, variants=tuple(variants))


def variant_loss(
    pos_sim: np.ndarray,
    neg_sim: np.ndarray,
    tau: float,
    *,
    variant: str,
    false_negative: np.ndarray | None = None,
    tau_plus: float = 0.1,
    beta: float = 1.0,
) -> np.ndarray:
    """Per-pair loss of one variant at one temperature; see :func:`variant_losses`.

    Returns
    -------
    numpy.ndarray
        (P,) loss per pair; NaN for pairs without negatives.
    """
    return variant_losses(
        pos_sim, neg_sim, tau, false_negative=false_negative, tau_plus=tau_plus, beta=beta, variants=(variant,)
    )[variant]


def variant_sweep(
    pos_sim: np.ndarray,
    neg_sim: np.ndarray,
    taus: np.ndarray | list[float],
    *,
    false_negative: np.ndarray | None = None,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    variants: tuple[str, ...] = VARIANTS,
    progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """Mean loss of every variant for every temperature.

    ``progress``, when given, is called with the fraction done after each temperature.

    Returns
    -------
    pandas.DataFrame
        Long table ``tau``, ``variant``, ``label``, ``loss`` (mean over pairs with negatives).
    """
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise NegScopeError(f"unknown loss variant {bad[0]!r}; expected one of {VARIANTS}")
    _check_variant_options(tau_plus, beta)
    taus = _check_taus(taus)
    pos, neg, mask, kept = _variant_tensors(pos_sim, neg_sim, false_negative)
    rows = []
    for t, tau in enumerate(taus):
        losses = _variant_blocks(pos, neg, mask, kept, float(tau), tau_plus=tau_plus, beta=beta, variants=variants)
        for v in variants:
            per_pair = losses[v]
            mean = float(np.nanmean(per_pair)) if np.any(~np.isnan(per_pair)) else float("nan")
            rows.append((float(tau), v, VARIANT_LABELS[v], mean))
        if progress is not None:
            progress((t + 1) / len(taus))
    return pd.DataFrame(rows, columns=["tau", "variant", "label", "loss"])


def learned_or_default_tau(run: Run) -> tuple[float, bool]:
    """The checkpoint's learned tau, or ``DEFAULT_TAU`` (0.07) with False when the checkpoint has none."""
    tau = run.tau
    if tau is not None and np.isfinite(tau) and tau > 0:
        return float(tau), True
    return DEFAULT_TAU, False

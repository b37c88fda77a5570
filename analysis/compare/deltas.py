"""Each run's headline metrics, computed by the library's own functions, and their differences.

Per run (keys of :data:`METRIC_KEYS`; undefined values are None):

- score distributions and retrieval (:mod:`analysis.metrics.scores`, :mod:`analysis.metrics.retrieval`):
  ``auroc`` (positives vs listed negatives), ``pos_sim_mean``, ``neg_sim_mean``,
  ``frac_hardest_neg_above_pos``, ``recall_at_{1,5,10}`` and ``mrr_at_10`` anchor -> positive, and
  ``reverse_recall_at_{1,5,10}``, ``reverse_mrr_at_10`` positive -> anchor (two-modality runs only);
- InfoNCE (:mod:`analysis.metrics.temperature`): ``tau`` (the checkpoint's learned temperature, or 0.07 when it
  has none: ``tau_is_learned`` says which), ``loss_own_tau`` (the mean loss at that tau) and
  ``loss_common_tau`` (at one tau shared by every run, so the numbers compare the embeddings only). The loss is
  the symmetric (CLIP) loss for two-modality runs and the anchor -> positive loss otherwise;
- modality gap (:mod:`analysis.metrics.modality_gap`'s groups): ``gap`` = ``||mean(A) - mean(B)||`` of the
  unit rows, ``gap_centroid_cosine`` and ``gap_variance_share`` (share of the pooled variance along the gap);
- geometry (:mod:`analysis.metrics.geometry`): ``alignment`` over the positive pairs and ``uniformity`` over
  every item (a seeded subset above 4,096 items, the same items in every run);
- optionally the detectors' flag counts (slow): ``fn_flagged`` (false-negative candidates flagged by
  :func:`analysis.detectors.false_negatives.find_false_negatives`) and ``label_noise_flagged`` (all kinds of
  :func:`analysis.detectors.label_noise.detect_label_noise`), with ``mismatched_pair_flagged``,
  ``label_flagged`` and ``duplicate_flagged``.

Deltas: for every run after the first, ``value(run) - value(first run)`` of every numeric metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.compare.align import Alignment
from analysis.errors import NegScopeError
from analysis.metrics.geometry import alignment as alignment_metric
from analysis.metrics.geometry import uniformity as uniformity_metric
from analysis.metrics.modality_gap import modality_groups, variance_share_along
from analysis.metrics.scores import REVERSE_KEYS, ScoreReport, compute_scores
from analysis.metrics.temperature import DEFAULT_TAU, direction_sweep, has_two_modalities, learned_or_default_tau
from analysis.runs.folder import Run

SCORE_KEYS = ("auroc", "pos_sim_mean", "neg_sim_mean", "frac_hardest_neg_above_pos", *REVERSE_KEYS)
LOSS_KEYS = ("tau", "tau_is_learned", "loss_own_tau", "loss_common_tau")
GAP_KEYS = ("gap", "gap_centroid_cosine", "gap_variance_share")
GEOMETRY_KEYS = ("alignment", "uniformity")
DETECTOR_KEYS = ("fn_flagged", "label_noise_flagged", "mismatched_pair_flagged", "label_flagged", "duplicate_flagged")
METRIC_KEYS = (
    *SCORE_KEYS,
    *(f"reverse_{k}" for k in REVERSE_KEYS),
    *LOSS_KEYS,
    *GAP_KEYS,
    *GEOMETRY_KEYS,
    *DETECTOR_KEYS,
)
#: Metrics where a higher value is better, and where a lower one is; the rest (tau, gap, flag counts) say
#: what changed without a direction.
HIGHER_IS_BETTER = frozenset({"auroc", *REVERSE_KEYS, *(f"reverse_{k}" for k in REVERSE_KEYS)})
LOWER_IS_BETTER = frozenset(
    {"frac_hardest_neg_above_pos", "loss_own_tau", "loss_common_tau", "alignment", "uniformity"}
)


@dataclass(frozen=True)
class DetectorFlags:
    """The detectors' results for one run (the slow part of a comparison; cache it per run).

    Attributes
    ----------
    false_negatives : pandas.DataFrame
        :func:`~analysis.detectors.false_negatives.find_false_negatives` (``pair_id``, ``anchor_id``,
        ``candidate_id``, ``source``, ``score``, ``flagged``, ``reason``, evidence...), in the run's ids.
    label_noise : pandas.DataFrame
        :meth:`~analysis.detectors.label_noise.LabelNoise.summary`: ``kind``, ``examined``, ``flagged``.
    """

    false_negatives: pd.DataFrame
    label_noise: pd.DataFrame

    def counts(self) -> dict[str, int]:
        """``fn_flagged``, ``label_noise_flagged`` and one ``<kind>_flagged`` per label-noise kind."""
        out = {"fn_flagged": int(self.false_negatives["flagged"].sum())}
        per_kind = dict(zip(self.label_noise["kind"], self.label_noise["flagged"].astype(int), strict=True))
        out["label_noise_flagged"] = int(sum(per_kind.values()))
        for kind, value in per_kind.items():
            out[f"{kind}_flagged"] = int(value)
        return out


def detector_flags(run: Run, *, progress: Callable[[float], None] | None = None) -> DetectorFlags:
    """Run the false-negative and label-noise detectors on ``run`` with their default settings (slow).

    Parameters
    ----------
    run : Run
        The run.
    progress : callable, optional
        Called with the fraction done.
    """
    from analysis.detectors.false_negatives import find_false_negatives
    from analysis.detectors.label_noise import detect_label_noise

    def part(offset: float) -> Callable[[float], None] | None:
        return None if progress is None else (lambda f: progress(offset + 0.5 * f))

    fn = find_false_negatives(run, progress=part(0.0))
    noise = detect_label_noise(run, progress=part(0.5))
    return DetectorFlags(false_negatives=fn, label_noise=noise.summary())


def _clean(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def loss_at(run: Run, taus: Sequence[float]) -> list[float]:
    """Mean InfoNCE loss of ``run`` at each tau: symmetric for two-modality runs, anchor -> positive otherwise."""
    sweep = direction_sweep(run, list(taus))
    direction = "symmetric" if has_two_modalities(run) else "forward"
    rows = sweep[sweep["direction"] == direction]
    return [float(x) for x in rows["loss"].to_numpy()]


def gap_numbers(run: Run, embeddings: np.ndarray) -> dict[str, float]:
    """``gap``, ``gap_centroid_cosine`` and ``gap_variance_share`` of ``embeddings`` (N, D) in ``run``'s item ids."""
    groups = modality_groups(run)
    if not len(groups.a_ids) or not len(groups.b_ids):
        return {"gap": float("nan"), "gap_centroid_cosine": float("nan"), "gap_variance_share": float("nan")}
    emb = np.asarray(embeddings, dtype=np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    ca, cb = emb[groups.a_ids].mean(axis=0), emb[groups.b_ids].mean(axis=0)
    gap = ca - cb
    denom = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    pooled = emb[np.concatenate([groups.a_ids, groups.b_ids])]
    return {
        "gap": float(np.linalg.norm(gap)),
        "gap_centroid_cosine": float(ca @ cb / denom) if denom > 0 else float("nan"),
        "gap_variance_share": variance_share_along(pooled, gap) if np.linalg.norm(gap) > 0 else float("nan"),
    }


def run_metrics(
    run: Run,
    report: ScoreReport,
    *,
    embeddings: np.ndarray,
    common_tau: float,
    flags: DetectorFlags | None = None,
) -> dict[str, Any]:
    """The metrics of one run (keys :data:`METRIC_KEYS`).

    Parameters
    ----------
    run : Run
        The run.
    report : ScoreReport
        ``compute_scores(run)``.
    embeddings : numpy.ndarray
        (N, D) the run's embeddings in the reference run's item order (so that the uniformity subset is the
        same items in every run).
    common_tau : float
        The shared temperature of ``loss_common_tau``.
    flags : DetectorFlags, optional
        The detectors' results; the flag counts are None without them.
    """
    s = report.summary
    out: dict[str, Any] = {k: s.get(k) for k in SCORE_KEYS}
    reverse = s.get("reverse") or {}
    out.update({f"reverse_{k}": reverse.get(k) for k in REVERSE_KEYS})
    tau, learned = learned_or_default_tau(run)
    own, common = loss_at(run, [tau, common_tau])
    out.update({"tau": tau, "tau_is_learned": learned, "loss_own_tau": own, "loss_common_tau": common})
    out.update(gap_numbers(run, run.embeddings))
    anchors = run.pairs["anchor_id"].to_numpy(np.int64)
    positives = run.pairs["positive_id"].to_numpy(np.int64)
    out["alignment"] = alignment_metric(run.embeddings[anchors], run.embeddings[positives])
    out["uniformity"] = uniformity_metric(embeddings)
    counts = flags.counts() if flags is not None else {}
    out.update({k: counts.get(k) for k in DETECTOR_KEYS})
    return {k: _clean(out[k]) for k in METRIC_KEYS}


@dataclass(frozen=True, eq=False)
class Comparison:
    """Two or more aligned runs, their metrics and the per-run score reports.

    Attributes
    ----------
    alignment : Alignment
        The runs and the id maps (the first run is the baseline of every delta).
    common_tau : float
        The shared temperature of ``loss_common_tau``.
    metrics : pandas.DataFrame
        One row per run (index: the run labels, in order) with ``METRIC_KEYS``.
    reports : tuple of ScoreReport
        ``compute_scores`` of each run (in that run's own ids and pair order).
    flags : tuple of DetectorFlags or None
        The detectors' results per run, or None when they were not run.
    """

    alignment: Alignment
    common_tau: float
    metrics: pd.DataFrame
    reports: tuple[ScoreReport, ...]
    flags: tuple[DetectorFlags, ...] | None

    @property
    def labels(self) -> tuple[str, ...]:
        """The run labels, in order."""
        return self.alignment.labels

    def deltas(self) -> pd.DataFrame:
        """``value(run) - value(first run)`` for every later run (index: labels) and every numeric metric."""
        numeric = [k for k in METRIC_KEYS if k != "tau_is_learned"]
        values = self.metrics[numeric].astype(float)
        return (values.iloc[1:] - values.iloc[0]).astype(float)

    def to_json(self) -> dict[str, Any]:
        """The documented JSON object of ``python -m analysis compare --json`` (see ``docs/compare.md``)."""
        al = self.alignment
        runs = []
        for label, run in zip(al.labels, al.runs, strict=True):
            runs.append(
                {
                    "label": label,
                    "run_id": run.run_id,
                    "path": str(run.path),
                    "dim": run.dim,
                    "checkpoint": run.manifest.get("checkpoint_path"),
                    **{k: _clean(self.metrics.at[label, k]) for k in METRIC_KEYS},
                }
            )
        deltas = []
        table = self.deltas()
        for label in table.index:
            deltas.append(
                {"label": label, "baseline": al.labels[0], **{k: _clean(table.at[label, k]) for k in table.columns}}
            )
        return {
            "baseline": al.labels[0],
            "common_tau": self.common_tau,
            "items": int(al.item_index.shape[1]),
            "pairs": int(al.pair_index.shape[1]),
            "runs": runs,
            "deltas": deltas,
        }


def compare_runs(
    alignment: Alignment,
    *,
    common_tau: float = DEFAULT_TAU,
    flags: Sequence[DetectorFlags] | None = None,
    reports: Sequence[ScoreReport] | None = None,
    progress: Callable[[float], None] | None = None,
) -> Comparison:
    """Compute every run's metrics.

    Parameters
    ----------
    alignment : Alignment
        From :func:`analysis.compare.align.align_runs`.
    common_tau : float
        Temperature shared by every run for ``loss_common_tau`` (default 0.07, CLIP's initial value).
    flags : sequence of DetectorFlags, optional
        One per run (from :func:`detector_flags`, usually cached); the flag counts are None without them.
    reports : sequence of ScoreReport, optional
        Precomputed ``compute_scores(run)`` per run (the page caches them per run).
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    Comparison
    """
    if not (math.isfinite(common_tau) and common_tau > 0):
        raise NegScopeError(f"the common tau must be a positive number, got {common_tau}")
    n = len(alignment)
    for name, given in (("flags", flags), ("reports", reports)):
        if given is not None and len(given) != n:
            raise NegScopeError(f"{len(given)} {name} for {n} runs")
    rows, done_reports = [], []
    for r, run in enumerate(alignment.runs):

        def part(frac: float, r: int = r) -> None:
            if progress is not None:
                progress((r + frac) / n)

        report = reports[r] if reports is not None else compute_scores(run, progress=part)
        done_reports.append(report)
        rows.append(
            run_metrics(
                run,
                report,
                embeddings=alignment.embeddings(r),
                common_tau=common_tau,
                flags=None if flags is None else flags[r],
            )
        )
        part(1.0)
    metrics = pd.DataFrame(rows, index=pd.Index(alignment.labels, name="label"), columns=list(METRIC_KEYS))
    return Comparison(
        alignment=alignment,
        common_tau=float(common_tau),
        metrics=metrics,
        reports=tuple(done_reports),
        flags=None if flags is None else tuple(flags),
    )

"""A run's summary: what the home page and ``python -m analysis summary`` show."""

from __future__ import annotations

from typing import Any

from analysis.runs.folder import NEGATIVE_SOURCES, Run


def run_summary(run: Run) -> dict[str, Any]:
    """Summarise a run.

    Returns
    -------
    dict
        ``items`` (N), ``items_per_modality`` ({modality: count}), ``pairs`` (P),
        ``negatives_per_pair`` ({source: mean count per pair}), ``dim`` (D), ``device``, ``dtype``,
        ``model_kind``, ``logit_scale`` and ``tau`` (None when the checkpoint has none), ``labelled_items``.
    """
    n_pairs = len(run.pairs)
    per_source = run.negatives.groupby("source").size()
    return {
        "run": run.run_id,
        "items": len(run.items),
        "items_per_modality": {str(k): int(v) for k, v in run.items["modality"].value_counts().sort_index().items()},
        "pairs": n_pairs,
        "negatives_per_pair": {
            s: (float(per_source.get(s, 0)) / n_pairs if n_pairs else 0.0) for s in NEGATIVE_SOURCES
        },
        "dim": run.dim,
        "device": run.manifest.get("device"),
        "dtype": run.manifest.get("dtype"),
        "model_kind": run.manifest.get("model_kind"),
        "logit_scale": run.logit_scale,
        "tau": run.tau,
        "labelled_items": int(run.items["label"].notna().sum()),
    }

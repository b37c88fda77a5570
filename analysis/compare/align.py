"""Lining up runs of the same dataset content, computed with different checkpoints.

Two run folders hold the same dataset content when they have

- the same items, by content key (``items.key``: a hash of modality + text or image bytes), each once;
- the same pairs: the same ``pair_id`` with the same anchor and positive (by key);
- the same listed negatives: the same (``pair_id``, negative key, ``source``) rows, counted with multiplicity.

Item ids, the row order of every table and the embedding dimension may differ. The first run is the
**reference**: :class:`Alignment` maps each reference item and pair row to the matching row of every run, and
the comparison's tables use the reference run's ids. Anything else is refused with a
:class:`~analysis.errors.NegScopeError` that says what differs and gives an example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError
from analysis.runs.folder import Run

MAX_EXAMPLE = 60


@dataclass(frozen=True, eq=False)
class Alignment:
    """Runs of the same dataset content and the maps between their ids.

    Attributes
    ----------
    runs : tuple of Run
        The runs, in the order given (the first is the reference).
    labels : tuple of str
        A short label per run (``A``, ``B``, ... unless given).
    item_index : numpy.ndarray
        (R, N) int64: ``item_index[r, i]`` is the item id in run ``r`` of the reference's item ``i``
        (row 0 is ``arange(N)``).
    pair_index : numpy.ndarray
        (R, P) int64: ``pair_index[r, p]`` is the row of ``runs[r].pairs`` that is the reference's pair row ``p``.
    """

    runs: tuple[Run, ...]
    labels: tuple[str, ...]
    item_index: np.ndarray
    pair_index: np.ndarray

    @property
    def reference(self) -> Run:
        """The first run; the comparison's ids are its ids."""
        return self.runs[0]

    def __len__(self) -> int:
        return len(self.runs)

    def embeddings(self, r: int) -> np.ndarray:
        """(N, D_r) embeddings of run ``r`` in the reference's item order (a copy unless ``r`` is the reference)."""
        if r == 0:
            return self.runs[0].embeddings
        return self.runs[r].embeddings[self.item_index[r]]

    def to_reference_items(self, r: int, ids: np.ndarray) -> np.ndarray:
        """Map item ids of run ``r`` to the reference's item ids (-1 stays -1)."""
        ids = np.asarray(ids, dtype=np.int64)
        inverse = np.empty(self.item_index.shape[1], dtype=np.int64)
        inverse[self.item_index[r]] = np.arange(self.item_index.shape[1])
        return np.where(ids >= 0, inverse[np.clip(ids, 0, None)], -1)


def default_labels(n: int) -> tuple[str, ...]:
    """``A``, ``B``, ..., ``Z``, then ``R27``, ``R28``, ..."""
    return tuple(chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(n))


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_EXAMPLE else text[: MAX_EXAMPLE - 1] + "…"


def _item_keys(run: Run) -> pd.Index:
    keys = pd.Index(run.items["key"].astype(str).to_numpy(), dtype=object)
    if not keys.is_unique:
        dup = keys[keys.duplicated()][0]
        raise NegScopeError(f"run {run.run_id} lists the item with content key {_short(dup)!r} more than once")
    return keys


def _pair_frame(run: Run, keys: pd.Index) -> pd.DataFrame:
    """``pair_id`` (as text), anchor and positive keys and the occurrence number of each such row."""
    frame = pd.DataFrame(
        {
            "pair_id": run.pairs["pair_id"].astype(str).to_numpy(),
            "anchor": keys.to_numpy()[run.pairs["anchor_id"].to_numpy(np.int64)],
            "positive": keys.to_numpy()[run.pairs["positive_id"].to_numpy(np.int64)],
        }
    )
    frame["n"] = frame.groupby(["pair_id", "anchor", "positive"], sort=False).cumcount()
    return frame


def _negative_counts(run: Run, keys: pd.Index) -> pd.Series:
    """Count of each (pair_id, negative key, source) row of ``run.negatives``."""
    neg = run.negatives
    frame = pd.DataFrame(
        {
            "pair_id": neg["pair_id"].astype(str).to_numpy(),
            "negative": keys.to_numpy()[neg["negative_id"].to_numpy(np.int64)],
            "source": neg["source"].astype(str).to_numpy(),
        }
    )
    return frame.value_counts(sort=False)


def _describe_items(missing: pd.Index, extra: pd.Index, ref: Run, run: Run) -> str:
    parts = []
    if len(missing):
        parts.append(f"{len(missing):,} items of {ref.run_id} are not in {run.run_id} (e.g. key {_short(missing[0])!r})")
    if len(extra):
        parts.append(f"{len(extra):,} items of {run.run_id} are not in {ref.run_id} (e.g. key {_short(extra[0])!r})")
    return "; ".join(parts)


def _content_of(run: Run, keys: pd.Index, key: str) -> str:
    row = int(keys.get_loc(key))
    return f"{run.items['modality'].iloc[row]} {_short(run.items['content'].iloc[row])!r}"


def _check_items(ref: Run, ref_keys: pd.Index, run: Run, keys: pd.Index) -> np.ndarray:
    missing = ref_keys.difference(keys, sort=False)
    extra = keys.difference(ref_keys, sort=False)
    if len(missing) or len(extra):
        detail = _describe_items(missing, extra, ref, run)
        example = _content_of(ref, ref_keys, missing[0]) if len(missing) else _content_of(run, keys, extra[0])
        raise NegScopeError(
            f"the runs are over different datasets: the items differ ({detail}; for example the {example}). "
            "Compare runs of the same dataset content only."
        )
    return keys.get_indexer(ref_keys).astype(np.int64)


def _check_pairs(ref: Run, ref_pairs: pd.DataFrame, run: Run, pairs: pd.DataFrame) -> np.ndarray:
    cols = ["pair_id", "anchor", "positive", "n"]
    ref_index = pd.MultiIndex.from_frame(ref_pairs[cols])
    index = pd.MultiIndex.from_frame(pairs[cols])
    rows = index.get_indexer(ref_index) if index.is_unique and ref_index.is_unique else np.full(len(ref_index), -1)
    if len(ref_pairs) != len(pairs) or (rows < 0).any():
        only_ref = ref_index.difference(index, sort=False)
        only_run = index.difference(ref_index, sort=False)
        example = only_ref[0] if len(only_ref) else only_run[0] if len(only_run) else None
        where = ref.run_id if len(only_ref) else run.run_id
        detail = f"{ref.run_id} has {len(ref_pairs):,} pairs and {run.run_id} {len(pairs):,}"
        if example is not None:
            detail += f"; pair {_short(example[0])!r} of {where} has no match with the same anchor and positive"
        raise NegScopeError(f"the runs are over different datasets: the pairs differ ({detail}).")
    return rows.astype(np.int64)


def _check_negatives(ref: Run, ref_counts: pd.Series, run: Run, counts: pd.Series) -> None:
    joined = pd.concat([ref_counts.rename("ref"), counts.rename("run")], axis=1).fillna(0)
    diff = joined[joined["ref"] != joined["run"]]
    if len(diff):
        sources = sorted(set(diff.index.get_level_values("source")))
        pair_id, _, source = diff.index[0]
        raise NegScopeError(
            "the runs are over different datasets: the listed negatives differ "
            f"({len(diff):,} (pair, negative, source) rows, sources {', '.join(sources)}; e.g. pair "
            f"{_short(pair_id)!r}, source {source!r}: {int(diff['ref'].iloc[0])} in {ref.run_id}, "
            f"{int(diff['run'].iloc[0])} in {run.run_id}). In-batch negatives follow the dataset batch size: "
            "embed both with the same one."
        )


def align_runs(runs: Sequence[Run], *, labels: Sequence[str] | None = None) -> Alignment:
    """Line up two or more runs of the same dataset content by item content.

    Parameters
    ----------
    runs : sequence of Run
        Two or more runs; the first is the reference whose ids the comparison uses.
    labels : sequence of str, optional
        One short distinct label per run (default ``A``, ``B``, ...).

    Returns
    -------
    Alignment
        The runs and the maps from the reference's item ids and pair rows to every run's.

    Raises
    ------
    NegScopeError
        With fewer than two runs, duplicate labels, or when the items, pairs or listed negatives differ
        (the message names which and gives an example).
    """
    runs = tuple(runs)
    if len(runs) < 2:
        raise NegScopeError(f"comparing needs at least two runs, got {len(runs)}")
    labels = default_labels(len(runs)) if labels is None else tuple(str(x) for x in labels)
    if len(labels) != len(runs):
        raise NegScopeError(f"{len(labels)} labels for {len(runs)} runs")
    if len(set(labels)) != len(labels) or any(not x for x in labels):
        raise NegScopeError(f"run labels must be distinct and non-empty, got {list(labels)}")
    ref = runs[0]
    ref_keys = _item_keys(ref)
    ref_pairs = _pair_frame(ref, ref_keys)
    ref_negs = _negative_counts(ref, ref_keys)
    item_index = [np.arange(len(ref_keys), dtype=np.int64)]
    pair_index = [np.arange(len(ref_pairs), dtype=np.int64)]
    for run in runs[1:]:
        keys = _item_keys(run)
        item_index.append(_check_items(ref, ref_keys, run, keys))
        pair_index.append(_check_pairs(ref, ref_pairs, run, _pair_frame(run, keys)))
        _check_negatives(ref, ref_negs, run, _negative_counts(run, keys))
    return Alignment(
        runs=runs,
        labels=labels,
        item_index=np.vstack(item_index),
        pair_index=np.vstack(pair_index),
    )

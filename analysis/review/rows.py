"""Decision rows for a run's items: the store's :class:`Decision`, keyed by content, built from run ids.

Every row is written under the run's content-only dataset hash (``Run.content_hash``) with the items'
content keys, so it applies to every run of the same data.
"""

from __future__ import annotations

from analysis.errors import NegScopeError
from analysis.review.store import Decision
from analysis.runs.folder import Run


def _key(run: Run, item_id: int) -> str:
    item = int(item_id)
    if not 0 <= item < len(run.items):
        raise NegScopeError(f"item {item_id} is not in run {run.run_id}")
    return str(run.item_keys[item])


def negative_row(
    run: Run, anchor_id: int, candidate_id: int, decision: str, annotator: str, *, note: str = ""
) -> Decision:
    """A decision on a candidate negative (``false_negative`` | ``negative`` | ``unsure``) of an anchor."""
    return Decision(
        dataset_hash=run.content_hash,
        kind="negative",
        anchor_key=_key(run, anchor_id),
        candidate_key=_key(run, candidate_id),
        decision=decision,
        annotator=annotator,
        note=note,
    )


def pair_row(run: Run, pair_id: object, decision: str, annotator: str, *, note: str = "") -> Decision:
    """A decision on pair ``pair_id`` (``mismatched`` | ``ok`` | ``unsure``), keyed by its anchor and positive."""
    match = run.pairs[run.pairs["pair_id"].astype(str) == str(pair_id)]
    if match.empty:
        raise NegScopeError(f"pair {pair_id!r} is not in run {run.run_id}")
    row = match.iloc[0]
    return Decision(
        dataset_hash=run.content_hash,
        kind="pair",
        anchor_key=_key(run, int(row["anchor_id"])),
        candidate_key=_key(run, int(row["positive_id"])),
        decision=decision,
        annotator=annotator,
        note=note,
    )


def label_row(
    run: Run, item_id: int, decision: str, annotator: str, *, label: str | None = None, note: str = ""
) -> Decision:
    """A decision on an item's class label (``relabel`` with ``label``, or ``ok``)."""
    return Decision(
        dataset_hash=run.content_hash,
        kind="label",
        anchor_key=_key(run, item_id),
        candidate_key="",
        decision=decision,
        annotator=annotator,
        label=label,
        note=note,
    )


def duplicate_row(
    run: Run, item_id: int, other_item_id: int | None, decision: str, annotator: str, *, note: str = ""
) -> Decision:
    """A decision that anchor ``item_id`` duplicates ``other_item_id`` (``duplicate`` | ``not_duplicate`` |
    ``unsure``); ``other_item_id`` None (or the item itself) means the item's repeated pairs."""
    own = _key(run, item_id)
    other = own if other_item_id is None else _key(run, other_item_id)
    return Decision(
        dataset_hash=run.content_hash,
        kind="duplicate",
        anchor_key=own,
        candidate_key=other,
        decision=decision,
        annotator=annotator,
        note=note,
    )


__all__ = ["duplicate_row", "label_row", "negative_row", "pair_row"]

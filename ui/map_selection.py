"""The map's selection kept across redraws: UMAP replacing PCA, another colouring, a search.

Streamlit gives a plotly chart a new identity whenever its figure changes, and the new chart starts with an empty
selection. The page therefore keeps the selected item ids itself and takes the chart's selection event as the
user's only when it comes from the same figure as the last run and differs from the event seen then (the user
selected, or cleared, on that chart). A redrawn figure keeps the kept ids, which the page rings on the new map.
No Streamlit here: the page passes its session state's values in and stores what comes back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SelectionState:
    """The kept selection and what the last run saw.

    Attributes
    ----------
    selected : tuple of int
        The selected item ids, in the order they were selected.
    chart_sig : str
        :func:`figure_signature` of the figure drawn last ('' before the first).
    event_ids : tuple of int
        The item ids the chart's selection event held in the last run.
    """

    selected: tuple[int, ...] = ()
    chart_sig: str = ""
    event_ids: tuple[int, ...] = ()


def next_selection(
    state: SelectionState, *, chart_sig: str, event_ids: Sequence[int], chart_was_drawn: bool
) -> SelectionState:
    """The selection after this run's chart event.

    Parameters
    ----------
    state : SelectionState
        The previous run's state.
    chart_sig : str
        :func:`figure_signature` of the figure drawn in this run.
    event_ids : sequence of int
        The item ids in this run's selection event (empty on a chart that was just created).
    chart_was_drawn : bool
        Whether the chart was on the page in the previous run (False after coming back from another page: its
        widget state was dropped, so its empty event says nothing).

    Returns
    -------
    SelectionState
        ``selected`` is ``event_ids`` when the user changed the selection on the same chart, else unchanged.
    """
    ids = tuple(int(i) for i in event_ids)
    same_chart = chart_was_drawn and chart_sig == state.chart_sig
    selected = ids if same_chart and ids != state.event_ids else state.selected
    return SelectionState(selected=selected, chart_sig=chart_sig, event_ids=ids)


def _feed(h: Any, value: Any, skip: frozenset[str] = frozenset()) -> None:
    if isinstance(value, np.ndarray):
        h.update(f"nd{value.dtype.str}{value.shape}".encode())
        if value.dtype == object:
            h.update("\x1f".join(map(str, value.ravel().tolist())).encode("utf-8", "surrogatepass"))
        else:
            h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        h.update(b"{")
        for key in sorted(value, key=str):
            if key in skip and isinstance(value[key], np.ndarray | list | tuple):  # arrays only: a title stays
                continue
            h.update(str(key).encode() + b":")
            _feed(h, value[key], skip)
        h.update(b"}")
    elif isinstance(value, list | tuple):
        h.update(b"[")
        for item in value:
            _feed(h, item, skip)
            h.update(b",")
        h.update(b"]")
    else:
        h.update(repr(value).encode("utf-8", "surrogatepass"))


def figure_signature(figure: Mapping[str, Any] | Any, *extra: Iterable[Any], skip: Iterable[str] = ()) -> str:
    """A digest of everything a plotly figure draws (its data arrays included) and of ``extra`` values.

    Parameters
    ----------
    figure : plotly.graph_objects.Figure or dict
        The figure (``to_plotly_json()`` is read when it has one).
    *extra
        More values that change the chart's identity (its selection modes, its config).
    skip : iterable of str
        Keys whose arrays are left out wherever they occur (a scalar under such a key, a title's text, still
        counts): the map passes ``("text",)``, its hover texts follow from the item ids
        in ``customdata`` (hashing 200,000 strings would take 0.1 s of every rerun).

    Returns
    -------
    str
        A hex digest: equal for equal figures.
    """
    spec = figure.to_plotly_json() if hasattr(figure, "to_plotly_json") else figure
    h = hashlib.blake2b(digest_size=16)
    _feed(h, spec, frozenset(skip))
    for value in extra:
        _feed(h, value)
    return h.hexdigest()

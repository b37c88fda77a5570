"""Sharing a review queue between annotators: a deterministic share each, and an overlap reviewed twice.

Each queue entry is named by a key built from item content hashes (so the share does not depend on the
order of the queue, on the checkpoint or on the session). For a key ``k`` and an annotator ``a``,

    weight(k, a) = first 8 bytes of SHA-256(``"<salt>|<k>|<a>"``) as an unsigned integer

and the key goes to the annotator with the highest weight (rendezvous hashing: every annotator gets about
1/N of the queue, and adding or removing an annotator only moves the keys that annotator gains or loses).
A share ``overlap`` of the keys, chosen by ``SHA-256("<salt>|overlap|<k>")`` below ``overlap * 2**64``, also
goes to the annotator with the second-highest weight, so two people review it and agreement can be measured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError

_SCALE = float(2**64)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def queue_key(anchor_key: str, candidate_key: str) -> str:
    """The assignment key of a (anchor, candidate) queue entry."""
    return f"{anchor_key}|{candidate_key}"


def _annotators(annotators: Iterable[str]) -> list[str]:
    names = sorted({str(a).strip() for a in annotators if str(a).strip()})
    if not names:
        raise NegScopeError("assigning the queue needs at least one annotator name")
    return names


def assign(keys: Sequence[str], annotators: Iterable[str], *, overlap: float = 0.0, salt: str = "") -> pd.DataFrame:
    """Who reviews each key.

    Parameters
    ----------
    keys : sequence of str
        N queue keys (:func:`queue_key`); duplicates get the same reviewers.
    annotators : iterable of str
        The annotators' names (order and repeats do not matter; blank names are ignored).
    overlap : float
        Share of the keys in [0, 1] reviewed by two annotators (needs two annotators or more to take effect).
    salt : str
        Changes the whole draw (e.g. per project) while keeping it deterministic.

    Returns
    -------
    pandas.DataFrame
        N rows in the order of ``keys``: ``key``, ``first`` (the annotator it goes to), ``second`` (the second
        reviewer on overlap keys, ``''`` elsewhere), ``overlap`` (bool).

    Raises
    ------
    NegScopeError
        With no annotator, or ``overlap`` outside [0, 1].
    """
    names = _annotators(annotators)
    if not 0.0 <= float(overlap) <= 1.0:
        raise NegScopeError(f"the overlap must lie between 0 and 1, got {overlap}")
    firsts, seconds, shared = [], [], []
    for key in keys:
        weights = sorted(((_hash64(f"{salt}|{key}|{a}"), a) for a in names), reverse=True)
        twice = len(names) >= 2 and _hash64(f"{salt}|overlap|{key}") < float(overlap) * _SCALE
        firsts.append(weights[0][1])
        seconds.append(weights[1][1] if twice else "")
        shared.append(bool(twice))
    return pd.DataFrame({"key": list(keys), "first": firsts, "second": seconds, "overlap": shared})


def share_mask(
    keys: Sequence[str], annotator: str, annotators: Iterable[str], *, overlap: float = 0.0, salt: str = ""
) -> np.ndarray:
    """Which keys are ``annotator``'s to review (as first or second reviewer).

    Returns
    -------
    numpy.ndarray
        Shape (N,), bool, in the order of ``keys``; all False when ``annotator`` is not among ``annotators``.
    """
    who = str(annotator).strip()
    table = assign(keys, annotators, overlap=overlap, salt=salt)
    return ((table["first"] == who) | (table["second"] == who)).to_numpy(dtype=bool)

"""Run ids: the short, shareable name of a run folder that a page URL carries (``?run=...``).

A run inside the workspace's runs folder is named by its folder name (``run-e7df92fa62991389``); a run
elsewhere inside an allowed folder (see :func:`analysis.data.paths.allowed_roots`) by its absolute path. A
run id that comes from a URL is untrusted: :func:`resolve_run_id` only ever returns a run folder inside
the allowed folders.
"""

from __future__ import annotations

from pathlib import Path

from analysis.data.paths import allowed_roots
from analysis.errors import NegScopeError
from analysis.runs.workspace import list_runs, runs_dir

MAX_RUN_ID = 1000


def run_id_for(path: str | Path) -> str | None:
    """The run id that names ``path`` in a URL, or None when a URL cannot name it.

    Parameters
    ----------
    path : str or Path
        A run folder.

    Returns
    -------
    str or None
        The folder's path relative to the runs folder (POSIX separators) when it lies inside it, else its
        absolute path when it lies inside an allowed folder, else None.
    """
    resolved = Path(path).expanduser().resolve()
    runs = runs_dir().resolve()
    if resolved.is_relative_to(runs) and resolved != runs:
        return resolved.relative_to(runs).as_posix()
    if any(resolved.is_relative_to(root) for root in allowed_roots()):
        return resolved.as_posix()
    return None


def resolve_run_id(run_id: str) -> Path:
    """The run folder a run id names, checked.

    Parameters
    ----------
    run_id : str
        A folder name inside the runs folder, or an absolute path inside an allowed folder.

    Returns
    -------
    Path
        The resolved run folder (it holds a ``manifest.json``).

    Raises
    ------
    NegScopeError
        When the id is empty or too long, points outside the allowed folders (``..``, links and absolute
        paths elsewhere included), or names no run folder.
    """
    text = str(run_id).strip()
    if not text:
        raise NegScopeError("the run id is empty")
    if len(text) > MAX_RUN_ID or "\x00" in text:
        raise NegScopeError("the run id is not a valid run name")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = runs_dir() / candidate
    resolved = candidate.resolve()
    runs = runs_dir().resolve()
    inside = (resolved.is_relative_to(runs) and resolved != runs) or any(
        resolved.is_relative_to(root) for root in allowed_roots()
    )
    if not inside:
        raise NegScopeError(f"run {text!r} is outside the folders this server may read")
    if not (resolved / "manifest.json").is_file():
        raise NegScopeError(f"there is no run {text!r} in this workspace")
    return resolved


def latest_run() -> Path | None:
    """The most recently written run folder of the workspace, or None when it has none."""
    runs = list_runs()
    return runs[0] if runs else None

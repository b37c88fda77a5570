"""Where NegScope keeps its runs and its review database (``NEGSCOPE_HOME``, default ``./.negscope``)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO_ROOT / "sample_data" / "digits"
SAMPLE_DATA = SAMPLE_DIR / "pairs.csv"
SAMPLE_CHECKPOINT = SAMPLE_DIR / "model"


def workspace_dir() -> Path:
    """Return the workspace folder, created if missing.

    Returns
    -------
    Path
        ``$NEGSCOPE_HOME`` when set, else ``./.negscope`` relative to the current directory.
    """
    home = Path(os.environ.get("NEGSCOPE_HOME", ".negscope")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def runs_dir() -> Path:
    """Return the folder that holds one sub-folder per run."""
    path = workspace_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def review_db_path() -> Path:
    """Return the path of the shared SQLite review database."""
    return workspace_dir() / "reviews.sqlite"


def list_runs() -> list[Path]:
    """Return the run folders in the workspace, newest first."""
    runs = [p for p in runs_dir().iterdir() if (p / "manifest.json").is_file()]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)

"""Paths that come from the browser: they must stay inside the allowed folders.

Allowed folders: the bundled ``sample_data/``, the workspace (``NEGSCOPE_HOME``), and the folders listed in
``NEGSCOPE_DATA_DIRS`` (separated by ``os.pathsep``; default: the current working directory).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

from analysis.errors import NegScopeError
from analysis.runs.workspace import REPO_ROOT, workspace_dir

UPLOAD_SUFFIXES = {".csv", ".jsonl", ".parquet", ".zip", ".npy", ".npz", ".pt", ".pth", ".bin", ".ckpt"}


def allowed_roots() -> list[Path]:
    """The folders a browser-supplied path may point into (resolved)."""
    extra = os.environ.get("NEGSCOPE_DATA_DIRS")
    dirs = [Path(p) for p in extra.split(os.pathsep) if p] if extra else [Path.cwd()]
    roots = [REPO_ROOT / "sample_data", workspace_dir(), *dirs]
    return [r.expanduser().resolve() for r in roots]


def resolve_user_path(text: str) -> Path:
    """Resolve a path typed in the browser, refusing anything outside :func:`allowed_roots`.

    Parameters
    ----------
    text : str
        Absolute, or relative to the current working directory.

    Raises
    ------
    NegScopeError
        When the path is empty, does not exist, or lies outside every allowed folder.
    """
    text = text.strip()
    if not text:
        raise NegScopeError("no path was given")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    path = path.resolve()
    roots = allowed_roots()
    if not any(path.is_relative_to(root) for root in roots):
        listing = ", ".join(str(r) for r in roots)
        raise NegScopeError(
            f"{text} is outside the folders this server may read ({listing}); "
            "start the app with NEGSCOPE_DATA_DIRS set to add a folder"
        )
    if not path.exists():
        raise NegScopeError(f"{text} does not exist")
    return path


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip file, refusing members that would land outside ``dest`` (or links)."""
    dest = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (dest / member.filename).resolve()
                if not target.is_relative_to(dest):
                    raise NegScopeError(
                        f"{archive.name}: member {member.filename!r} would be written outside its folder"
                    )
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise NegScopeError(f"{archive.name}: member {member.filename!r} is a symbolic link")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise NegScopeError(f"{archive.name} is not a valid zip file") from exc


def save_upload(name: str, data: bytes, *, kind: str) -> Path:
    """Store an uploaded file in the workspace and return the path to hand to the loaders.

    Parameters
    ----------
    name : str
        The file name the browser sent (only its final component and suffix are used).
    data : bytes
        The file's content.
    kind : str
        ``"data"`` or ``"checkpoint"`` (sub-folder of ``uploads/``).

    Returns
    -------
    Path
        The saved file, or for a zip the extracted folder (or its single top-level folder).
    """
    base = Path(name).name
    suffix = Path(base).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise NegScopeError(f"{base}: unsupported file type {suffix or '(none)'}")
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = workspace_dir() / "uploads" / kind / digest
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / base
    target.write_bytes(data)
    if suffix != ".zip":
        return target
    out = folder / "extracted"
    if not out.exists():
        tmp = folder / "extracting"
        tmp.mkdir(exist_ok=True)
        _safe_extract(target, tmp)
        tmp.rename(out)
    entries = [p for p in out.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else out

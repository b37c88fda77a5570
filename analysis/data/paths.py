"""Paths that come from the browser: they must stay inside the allowed folders.

Allowed folders: the bundled ``sample_data/``, the workspace (``NEGSCOPE_HOME``), and the folders listed in
``NEGSCOPE_DATA_DIRS`` (separated by ``os.pathsep``; default: the current working directory).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
import zlib
from pathlib import Path

from analysis.errors import NegScopeError
from analysis.runs.workspace import REPO_ROOT, workspace_dir

UPLOAD_SUFFIXES = {".csv", ".jsonl", ".parquet", ".zip", ".npy", ".npz", ".pt", ".pth", ".bin", ".ckpt"}

#: Largest upload accepted, in bytes; ``.streamlit/config.toml`` sets ``server.maxUploadSize`` to the same 200 MB.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
#: Caps on what one uploaded zip may write: total extracted bytes, members, and the ratio of extracted to
#: compressed bytes (whole archive and each member). A dataset of PNG/JPEG images compresses about 1:1 and a
#: CSV about 1:5; a zip bomb compresses 1:1000 and more.
MAX_EXTRACTED_BYTES = 2 * 1024 * 1024 * 1024
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_RATIO = 100
#: Longest path a user may type, and longest file name component (bytes, as most file systems allow).
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255


def check_path_text(text: str, *, what: str = "the path") -> None:
    """Refuse a path string the operating system cannot take: NUL or control characters, over-long names.

    Raises
    ------
    NegScopeError
        With a one-line message saying what is wrong (the text itself is shortened to 80 characters).
    """
    shown = repr(text[:80]) + ("..." if len(text) > 80 else "")
    if "\0" in text:
        raise NegScopeError(f"{what} {shown} holds a NUL character")
    if any(ord(c) < 32 for c in text):
        raise NegScopeError(f"{what} {shown} holds a control character (a line break or tab?)")
    if len(text) > MAX_PATH_CHARS:
        raise NegScopeError(f"{what} is {len(text):,} characters long; at most {MAX_PATH_CHARS:,} are allowed")
    for part in Path(text).parts:
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            raise NegScopeError(f"{what} {shown} is not valid Unicode") from None
        if size > MAX_NAME_BYTES:
            raise NegScopeError(
                f"{what} has a name of {size:,} bytes ({part[:40]!r}...); at most {MAX_NAME_BYTES} are allowed"
            )


def confined(path: Path, root: Path, *, what: str = "file") -> Path:
    """Resolve ``path`` (symbolic links included) and check that it lies inside ``root``.

    Every file that a dataset or a checkpoint names (a table in a folder, BEIR files, a saved Hugging Face
    dataset's data files, weight shards) goes through this before it is opened, so that a link or a ``..``
    inside a folder cannot make the server read a file outside it.

    Parameters
    ----------
    path : Path
        The file, absolute or relative to the current directory.
    root : Path
        The folder it must stay in.
    what : str
        How to name the file in the message.

    Returns
    -------
    Path
        The resolved path.

    Raises
    ------
    NegScopeError
        When the path leaves ``root`` or cannot be resolved.
    """
    try:
        base = Path(root).resolve()
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise NegScopeError(f"the {what} {str(path)[:200]} cannot be resolved ({exc})") from None
    if not resolved.is_relative_to(base):
        raise NegScopeError(
            f"the {what} {str(path)[:200]} leads outside its folder {base} (through '..' or a symbolic link); "
            "it is refused"
        )
    return resolved


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
    check_path_text(text)
    try:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        path = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise NegScopeError(f"the path {text[:200]} cannot be resolved ({exc})") from None
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
    """Extract a zip file, refusing members that would land outside ``dest``, links, and zip bombs.

    The caps (:data:`MAX_EXTRACTED_BYTES`, :data:`MAX_ZIP_MEMBERS`, :data:`MAX_ZIP_RATIO`) are checked on
    the sizes the archive declares before anything is written, and again on the bytes actually
    decompressed (a member may lie about its size), so at most the cap is ever written.

    Raises
    ------
    NegScopeError
        For an invalid zip, an unsafe member, or an archive over a cap (the message names the cap).
    """
    dest = dest.resolve()
    compressed_total = max(archive.stat().st_size, 1)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise NegScopeError(
                    f"{archive.name} holds {len(members):,} members; at most {MAX_ZIP_MEMBERS:,} are allowed"
                )
            declared = 0
            for member in members:
                check_path_text(member.filename, what=f"{archive.name}: the member name")
                target = (dest / member.filename).resolve()
                if not target.is_relative_to(dest):
                    raise NegScopeError(
                        f"{archive.name}: member {member.filename!r} would be written outside its folder"
                    )
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise NegScopeError(f"{archive.name}: member {member.filename!r} is a symbolic link")
                _check_ratio(archive, member.filename, member.file_size, member.compress_size)
                declared += member.file_size
            _check_total(archive, declared, compressed_total)
            written = 0
            for member in members:
                target = (dest / member.filename).resolve()
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                size = 0
                with zf.open(member) as src, target.open("wb") as out:
                    while block := src.read(1 << 20):
                        size += len(block)
                        written += len(block)
                        if size > member.file_size:
                            raise NegScopeError(
                                f"{archive.name}: member {member.filename!r} holds more than the "
                                f"{member.file_size:,} bytes it declares; the archive is refused"
                            )
                        _check_total(archive, written, compressed_total)
                        out.write(block)
    except zipfile.BadZipFile as exc:
        raise NegScopeError(f"{archive.name} is not a valid zip file ({exc})") from None
    except (NotImplementedError, RuntimeError, EOFError, zlib.error, OSError, ValueError) as exc:
        raise NegScopeError(f"{archive.name} cannot be extracted ({exc})") from None


def _check_ratio(archive: Path, name: str, size: int, compressed: int) -> None:
    if size > 1024 * 1024 and size > MAX_ZIP_RATIO * max(compressed, 1):
        raise NegScopeError(
            f"{archive.name}: member {name!r} expands {size / max(compressed, 1):,.0f} times "
            f"({size:,} bytes); at most {MAX_ZIP_RATIO} times is allowed (a zip bomb?)"
        )


def _check_total(archive: Path, size: int, compressed: int) -> None:
    if size > MAX_EXTRACTED_BYTES:
        raise NegScopeError(
            f"{archive.name} expands to more than {MAX_EXTRACTED_BYTES // 2**20:,} MB; "
            "unzip it on the server and type its path instead"
        )
    if size > 1024 * 1024 and size > MAX_ZIP_RATIO * compressed:
        raise NegScopeError(
            f"{archive.name} expands more than {MAX_ZIP_RATIO} times its size (a zip bomb?); it is refused"
        )


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
    check_path_text(name, what="the uploaded file name")
    base = Path(name).name
    suffix = Path(base).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise NegScopeError(f"{base[:120]}: unsupported file type {suffix[:20] or '(none)'}")
    if len(data) > MAX_UPLOAD_BYTES:
        raise NegScopeError(
            f"{base[:120]} is {len(data) / 2**20:,.0f} MB; uploads are limited to {MAX_UPLOAD_BYTES // 2**20} MB "
            "(copy larger files to the server and type their path)"
        )
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
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            _safe_extract(target, tmp)
        except NegScopeError:
            shutil.rmtree(tmp, ignore_errors=True)
            target.unlink(missing_ok=True)
            raise
        tmp.rename(out)
    entries = [p for p in out.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else out

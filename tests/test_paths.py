"""Browser-supplied paths stay inside the allowed folders; uploads and zips are stored safely."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from analysis.data.paths import resolve_user_path, save_upload
from analysis.errors import NegScopeError


def test_paths_inside_allowed_folders_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "x.csv").write_text("a")
    monkeypatch.setenv("NEGSCOPE_DATA_DIRS", str(allowed))
    assert resolve_user_path(str(allowed / "sub" / "x.csv")) == (allowed / "sub" / "x.csv").resolve()
    for bad in ["/etc/passwd", str(allowed / ".." / "elsewhere")]:
        with pytest.raises(NegScopeError, match="outside"):
            resolve_user_path(bad)
    (allowed / "link").symlink_to("/etc")
    with pytest.raises(NegScopeError, match="outside"):
        resolve_user_path(str(allowed / "link" / "passwd"))
    with pytest.raises(NegScopeError, match="does not exist"):
        resolve_user_path(str(allowed / "missing.csv"))
    with pytest.raises(NegScopeError, match="no path"):
        resolve_user_path("  ")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_uploads_are_stored_and_zips_extracted_safely(isolated_workspace: Path) -> None:
    table = save_upload("../../x.csv", b"anchor,positive\n", kind="data")
    assert table.name == "x.csv" and table.is_relative_to(isolated_workspace)
    folder = save_upload("set.zip", _zip({"set/pairs.csv": b"a", "set/img/1.png": b"b"}), kind="data")
    assert folder.name == "set" and (folder / "img" / "1.png").read_bytes() == b"b"
    with pytest.raises(NegScopeError, match="outside"):
        save_upload("evil.zip", _zip({"../../escape.csv": b"x"}), kind="data")
    assert not (isolated_workspace / "uploads" / "escape.csv").exists()
    with pytest.raises(NegScopeError, match="not a valid zip"):
        save_upload("broken.zip", b"not a zip", kind="data")
    with pytest.raises(NegScopeError, match="unsupported"):
        save_upload("run.exe", b"x", kind="data")

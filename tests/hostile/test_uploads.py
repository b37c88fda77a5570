"""Uploads and typed paths: zip bombs, member counts, lying sizes and unusable names end in clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import analysis.data.paths as paths
from analysis.data.paths import resolve_user_path, save_upload
from analysis.errors import NegScopeError
from tests.hostile import strings, zips


def _written(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "uploads").rglob("*") if p.is_file())


def test_zip_bomb_is_refused_before_writing(isolated_workspace: Path) -> None:
    data = zips.bomb(64 * 1024 * 1024)
    assert len(data) < 200_000
    with pytest.raises(NegScopeError, match="zip bomb"):
        save_upload("bomb.zip", data, kind="data")
    assert _written(isolated_workspace) < 1024 * 1024  # neither the archive nor any member is left behind


def test_total_size_cap(isolated_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "MAX_EXTRACTED_BYTES", 1000)
    data = zips._zip({"set/a.bin": bytes(range(256)) * 4, "set/b.bin": bytes(range(256)) * 4}, method=0)
    with pytest.raises(NegScopeError, match="expands to more than"):
        save_upload("big.zip", data, kind="data")


def test_member_count_cap(isolated_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "MAX_ZIP_MEMBERS", 50)
    with pytest.raises(NegScopeError, match="holds 51 members"):
        save_upload("many.zip", zips.many_members(51), kind="data")
    assert save_upload("ok.zip", zips.many_members(50), kind="data").name == "set"


def test_member_that_lies_about_its_size(isolated_workspace: Path) -> None:
    with pytest.raises(NegScopeError, match="liar.zip"):
        save_upload("liar.zip", zips.lying_size(), kind="data")
    assert _written(isolated_workspace) < 2 * 1024 * 1024


def test_upload_size_cap_matches_streamlit_config() -> None:
    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == paths.MAX_UPLOAD_BYTES
    assert paths.MAX_EXTRACTED_BYTES <= paths.MAX_ZIP_RATIO * paths.MAX_UPLOAD_BYTES


@pytest.mark.parametrize("name", strings.BAD_PATHS)
def test_bad_upload_names_and_typed_paths(name: str, isolated_workspace: Path) -> None:
    with pytest.raises(NegScopeError) as caught:
        save_upload(name, b"anchor,positive\na,b\n", kind="data")
    assert "\n" not in str(caught.value)
    with pytest.raises(NegScopeError) as caught:
        resolve_user_path(name)
    assert "\n" not in str(caught.value)


def test_bad_member_names_in_a_zip(isolated_workspace: Path) -> None:
    data = zips._zip({"set/" + "x" * 300 + ".csv": b"a"})
    with pytest.raises(NegScopeError, match="at most 255"):
        save_upload("long.zip", data, kind="data")


@pytest.mark.parametrize("name", sorted(zips.odd_members()))
def test_zips_that_cannot_be_extracted(name: str, isolated_workspace: Path) -> None:
    with pytest.raises(NegScopeError) as caught:
        save_upload(f"{name}.zip", zips.odd_members()[name], kind="data")
    assert "\n" not in str(caught.value)

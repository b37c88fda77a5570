"""Every file a dataset names stays inside the dataset's folder: links and Hugging Face data files included."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.data.load import load_dataset
from analysis.errors import DatasetError
from tests.hostile import datasets as hostile


def test_symlinked_table_inside_a_folder_is_refused(tmp_path: Path) -> None:
    secret = hostile.secret_table(tmp_path / "outside")
    folder = hostile.symlinked_table(tmp_path / "allowed" / "set", secret)
    with pytest.raises(DatasetError, match="leads outside its folder"):
        load_dataset(folder)


def test_symlinked_beir_file_is_refused(tmp_path: Path) -> None:
    folder = hostile.symlinked_beir(tmp_path / "allowed" / "beir", tmp_path / "outside" / "corpus.jsonl")
    with pytest.raises(DatasetError, match="leads outside its folder"):
        load_dataset(folder)


def test_hf_state_json_cannot_name_files_outside(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    folder = hostile.escaping_hf(tmp_path / "allowed" / "hf", tmp_path / "allowed" / "outside_hf")
    with pytest.raises(DatasetError, match="leads outside its folder"):
        load_dataset(folder)


def test_markup_dataset_loads_as_plain_text(tmp_path: Path) -> None:
    table = hostile.markup_dataset(tmp_path / "markup")
    data = load_dataset(table)
    assert data.items["content"].str.contains("<img", regex=False).any()
    assert data.items["label"].dropna().str.contains("![pixel]", regex=False).any()

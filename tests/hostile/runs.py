"""Run-folder corruptions: each one a small change to a valid run folder that ``load_run`` must refuse.

:func:`write_corruptions` copies a valid run once per corruption and damages the copy; every CLI command on
every copy must exit 2 with a one-line message (``tests/hostile/test_runs.py``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tests.synthetic import make_synthetic_run


def valid_run(path: Path) -> Path:
    """A small valid two-modality run (30 pairs, 60 items, 3 negatives each, labels, learned logit scale)."""
    make_synthetic_run(path, n_pairs=30, dim=8, n_classes=3, k=3, seed=5)
    return path


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _set_manifest(**changes: object) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = _manifest(path)
        data.update(changes)
        (path / "manifest.json").write_text(json.dumps(data))

    return apply


def _write_manifest_text(text: str) -> Callable[[Path], None]:
    return lambda path: (path / "manifest.json").write_text(text)


def _embeddings(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        emb = np.load(path / "embeddings.npy")
        np.save(path / "embeddings.npy", change(emb.copy()), allow_pickle=True)

    return apply


def _table(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        file = path / f"{name}.parquet"
        change(pd.read_parquet(file)).to_parquet(file, index=False)

    return apply


def _setcol(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(table: pd.DataFrame) -> pd.DataFrame:
        values = table[column].astype(object).tolist()
        values[row] = value
        table[column] = pd.Series(values, dtype=None if value is None or isinstance(value, str) else type(value))
        return table

    return change


def _with_column(column: str, values: Callable[[pd.DataFrame], object]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table[column] = values(table)
        return table

    return change


def _remove(name: str) -> Callable[[Path], None]:
    return lambda path: (path / name).unlink()


def _garbage(name: str, data: bytes = b"this is not what the file should hold\n") -> Callable[[Path], None]:
    return lambda path: (path / name).write_bytes(data)


def _huge_header(path: Path) -> None:
    """An .npy header that declares 10**12 rows (32 TB) in a file of a few hundred bytes."""
    with (path / "embeddings.npy").open("wb") as fh:
        header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 8)}
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)


def _nan_row(emb: np.ndarray) -> np.ndarray:
    emb[3] = np.nan
    return emb


def _inf_row(emb: np.ndarray) -> np.ndarray:
    emb[0, 0] = -np.inf
    return emb


#: name -> function that damages a copy of a valid run folder in place.
CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    # manifest.json
    "manifest-missing": _remove("manifest.json"),
    "manifest-not-json": _write_manifest_text("{not json"),
    "manifest-list": _write_manifest_text("[1, 2, 3]"),
    "manifest-string": _write_manifest_text('"a string"'),
    "manifest-deep": _write_manifest_text("[" * 100_000 + "]" * 100_000),
    "manifest-not-utf8": lambda path: (path / "manifest.json").write_bytes(b'{"a": "\xff\xfe"}'),
    "logit-scale-string": _set_manifest(logit_scale="14.3"),
    "logit-scale-nan": _write_manifest_text('{"logit_scale": NaN}'),
    "logit-scale-infinite": _write_manifest_text('{"logit_scale": Infinity}'),
    "logit-scale-negative": _set_manifest(logit_scale=-3.0),
    "logit-scale-zero": _set_manifest(logit_scale=0),
    "logit-scale-bool": _set_manifest(logit_scale=True),
    "logit-scale-huge-int": _write_manifest_text('{"logit_scale": 1' + "0" * 400 + "}"),
    "manifest-dim-wrong": _set_manifest(dim=99),
    "manifest-n-items-wrong": _set_manifest(n_items=3),
    "manifest-root-number": _set_manifest(dataset_root=42),
    "manifest-hash-list": _set_manifest(dataset_hash=["x"]),
    # embeddings.npy
    "embeddings-missing": _remove("embeddings.npy"),
    "embeddings-not-npy": _garbage("embeddings.npy"),
    "embeddings-truncated": lambda path: (path / "embeddings.npy").write_bytes(
        (path / "embeddings.npy").read_bytes()[:200]
    ),
    "embeddings-header-lies": _huge_header,
    "embeddings-object-pickle": _embeddings(lambda e: np.array([None] * len(e), dtype=object)),
    "embeddings-int": _embeddings(lambda e: np.ones(e.shape, dtype=np.int64)),
    "embeddings-complex": _embeddings(lambda e: e.astype(np.complex64)),
    "embeddings-1d": _embeddings(lambda e: e[:, 0].copy()),
    "embeddings-3d": _embeddings(lambda e: e[:, :, None].copy()),
    "embeddings-no-columns": _embeddings(lambda e: np.zeros((len(e), 0), dtype=np.float32)),
    "embeddings-rows-short": _embeddings(lambda e: e[:-1].copy()),
    "embeddings-nan-row": _embeddings(_nan_row),
    "embeddings-all-nan": _embeddings(lambda e: np.full_like(e, np.nan)),
    "embeddings-inf": _embeddings(_inf_row),
    "embeddings-all-zero": _embeddings(np.zeros_like),
    "embeddings-unnormalised": _embeddings(lambda e: e * 7.5),
    # items.parquet
    "items-missing": _remove("items.parquet"),
    "items-not-parquet": _garbage("items.parquet"),
    "items-no-modality": _table("items", lambda t: t.drop(columns="modality")),
    "items-ids-shuffled": _table("items", _with_column("item_id", lambda t: np.roll(t["item_id"].to_numpy(), 1))),
    "items-id-duplicated": _table("items", _setcol("item_id", 1, 0)),
    "items-id-float": _table("items", _with_column("item_id", lambda t: t["item_id"] + 0.5)),
    "items-id-string": _table("items", _with_column("item_id", lambda t: t["item_id"].astype(str))),
    "items-bad-modality": _table("items", _setcol("modality", 2, "audio")),
    "items-content-null": _table("items", _setcol("content", 2, None)),
    "items-empty": _table("items", lambda t: t.iloc[:0]),
    # pairs.parquet
    "pairs-missing": _remove("pairs.parquet"),
    "pairs-no-positive": _table("pairs", lambda t: t.drop(columns="positive_id")),
    "pairs-anchor-minus-one": _table("pairs", _setcol("anchor_id", 0, -1)),
    "pairs-anchor-out-of-range": _table("pairs", _setcol("anchor_id", 0, 10_000)),
    "pairs-positive-float": _table("pairs", _with_column("positive_id", lambda t: t["positive_id"] + 0.5)),
    "pairs-positive-string": _table("pairs", _with_column("positive_id", lambda t: t["positive_id"].astype(str))),
    "pairs-positive-bool": _table("pairs", _with_column("positive_id", lambda t: t["positive_id"] > 40)),
    "pairs-id-duplicated": _table("pairs", _setcol("pair_id", 1, 0)),
    "pairs-id-null": _table("pairs", _with_column("pair_id", lambda t: [None, *t["pair_id"].astype(str)[1:]])),
    "pairs-empty": _table("pairs", lambda t: t.iloc[:0]),
    # negatives.parquet
    "negatives-missing": _remove("negatives.parquet"),
    "negatives-no-source": _table("negatives", lambda t: t.drop(columns="source")),
    "negatives-id-minus-one": _table("negatives", _setcol("negative_id", 0, -1)),
    "negatives-id-out-of-range": _table("negatives", _setcol("negative_id", 0, 60)),
    "negatives-bad-source": _table("negatives", _setcol("source", 0, "invented")),
    "negatives-unknown-pair": _table("negatives", _setcol("pair_id", 0, 999)),
}


def write_corruptions(valid: Path, out: Path) -> dict[str, Path]:
    """Copy ``valid`` once per entry of :data:`CORRUPTIONS` into ``out/<name>`` and damage each copy."""
    folders = {}
    for name, damage in CORRUPTIONS.items():
        target = out / name
        shutil.copytree(valid, target)
        damage(target)
        folders[name] = target
    return folders

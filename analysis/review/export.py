"""Writers of a :class:`~analysis.review.corrected.CorrectedDataset`, and the safe export folder.

One export is one new folder::

    OUT/pairs.csv             sentence-transformers table (ntuple: anchor, positive, negative_1..k; or triplet)
    OUT/<image paths>         the images the table names, at the relative paths the dataset wrote
    OUT/exclusions.jsonl      {"anchor": ..., "excluded": [...]} per anchor with decided false negatives
    OUT/beir/                 corpus.jsonl, queries.jsonl, qrels/test.tsv (false negatives relevant)
    OUT/decisions.jsonl       the audit log: every decision row of the dataset, oldest first
    OUT/export.json           options and counts (what the files hold)

Safety: the export folder must not exist or be empty; it may not lie inside the dataset's folder (nor the
run folder), nor hold them. Everything is written to a hidden sibling folder first and renamed into place,
so a failed export leaves nothing half-written. With ``overwrite=True`` an existing folder is replaced: the
new folder is complete before the old one is renamed away and deleted. The dataset's own files are never
opened for writing.

Each table loads back with :func:`analysis.data.load.load_dataset` (images are copied, or hard-linked, beside
the table); the BEIR format is text-only, so image items are written as their paths there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError, RunError
from analysis.review.corrected import CorrectedDataset, pair_label
from analysis.runs.folder import Run

FORMATS = ("st", "exclusions", "beir", "decisions")
ST_STYLES = ("ntuple", "triplet")
ST_FILE = "pairs.csv"
EXCLUSIONS_FILE = "exclusions.jsonl"
DECISIONS_FILE = "decisions.jsonl"
BEIR_FOLDER = "beir"
SUMMARY_FILE = "export.json"
AUDIT_FIELDS = (
    "id", "time", "time_unix", "dataset_hash", "kind", "anchor_key", "candidate_key", "decision", "label",
    "annotator", "note", "anchor_id", "candidate_id", "anchor", "candidate",
)  # fmt: skip


class ExportError(NegScopeError):
    """An export that would write where it must not (a non-empty folder, the dataset's folder)."""


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes
    ----------
    path : Path
        The export folder.
    files : list of Path
        Every file written (relative to ``path``), sorted.
    counts : dict
        The corrected dataset's counts, plus ``rows`` per written table and ``images_copied``.
    """

    path: Path
    files: list[Path] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


# --- tables ------------------------------------------------------------------------------------------------


def st_table(corrected: CorrectedDataset, *, style: str = "ntuple") -> pd.DataFrame:
    """The sentence-transformers table of the corrected pairs.

    Parameters
    ----------
    corrected : CorrectedDataset
    style : {"ntuple", "triplet"}
        ``ntuple``: one row per pair, ``id, anchor, positive, negative_1 .. negative_k`` (blank where a pair
        has fewer than k); ``triplet``: one ``id, anchor, positive, negative`` row per kept negative (id
        ``<pair id>#<j>``; a pair without negatives keeps one row with a blank negative).
        Labels follow as ``label`` or ``anchor_label, positive_label`` (``corrected.label_layout``).

    Returns
    -------
    pandas.DataFrame
    """
    if style not in ST_STYLES:
        raise NegScopeError(f"unknown style {style!r}; expected one of {ST_STYLES}")
    rows = corrected.pairs
    content = corrected.run.items["content"].astype(str).to_numpy()
    label = pair_label(corrected)
    rows = rows.assign(pair_label=label)
    table: dict[str, list] = {}
    if style == "ntuple":
        k = int(rows["negative_ids"].map(len).max()) if len(rows) else 0
        table["id"] = [str(v) for v in rows["id"]]
        table["anchor"] = content[rows["anchor_id"].to_numpy(np.int64)].tolist()
        table["positive"] = content[rows["positive_id"].to_numpy(np.int64)].tolist()
        for j in range(k):
            table[f"negative_{j + 1}"] = [content[n[j]] if j < len(n) else None for n in rows["negative_ids"]]
        label_rows = rows
    else:
        expanded = [
            (f"{r.id}#{j + 1}", r.anchor_id, r.positive_id, n, r.anchor_label, r.positive_label, r.pair_label)
            for r in rows.itertuples(index=False)
            for j, n in enumerate(r.negative_ids or [None])
        ]
        label_rows = pd.DataFrame(
            expanded,
            columns=["id", "anchor_id", "positive_id", "negative_id", "anchor_label", "positive_label", "pair_label"],
        )
        table["id"] = label_rows["id"].tolist()
        table["anchor"] = content[label_rows["anchor_id"].to_numpy(np.int64)].tolist()
        table["positive"] = content[label_rows["positive_id"].to_numpy(np.int64)].tolist()
        table["negative"] = [None if pd.isna(n) else content[int(n)] for n in label_rows["negative_id"]]
    if corrected.label_layout == "label":
        table["label"] = label_rows["pair_label"].tolist()
    elif corrected.label_layout == "roles":
        table["anchor_label"] = label_rows["anchor_label"].tolist()
        table["positive_label"] = label_rows["positive_label"].tolist()
    return pd.DataFrame(table)


def exclusion_records(corrected: CorrectedDataset) -> list[dict]:
    """One record per anchor with decided false negatives: ``anchor`` (its content, as in the table),
    ``excluded`` (the contents to mask from its in-batch negatives), ``anchor_key``, ``excluded_keys``."""
    content = corrected.run.items["content"].astype(str).to_numpy()
    keys = corrected.run.item_keys
    return [
        {
            "anchor": content[a],
            "excluded": [content[i] for i in ids],
            "anchor_key": str(keys[a]),
            "excluded_keys": [str(keys[i]) for i in ids],
        }
        for a, ids in zip(corrected.exclusions["anchor_id"], corrected.exclusions["excluded_ids"], strict=True)
    ]


def _doc_id(prefix: str, key: str) -> str:
    return prefix + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def beir_tables(corrected: CorrectedDataset) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(corpus, queries, qrels)`` of the corrected data.

    Queries: the distinct anchors of the output pairs. Corpus: every positive, kept given negative and
    excluded item. Qrels (score 1): each output pair (extra positive pairs included) and each exclusion.
    Ids are ``q`` / ``d`` + 16 hex digits of the SHA-1 of the item's content key (stable across runs).
    """
    keys = corrected.run.item_keys
    content = corrected.run.items["content"].astype(str).to_numpy()
    pairs = corrected.pairs
    rel = [(int(a), int(p)) for a, p in zip(pairs["anchor_id"], pairs["positive_id"], strict=True)]
    rel += [(int(a), int(i)) for a, ids in zip(corrected.exclusions["anchor_id"], corrected.exclusions["excluded_ids"],
                                                strict=True) for i in ids]  # fmt: skip
    rel = list(dict.fromkeys(rel))
    negs = [int(n) for ids in pairs["negative_ids"] for n in ids]
    doc_items = np.unique(np.array([d for _, d in rel] + negs, dtype=np.int64))
    query_items = np.unique(np.array([a for a, _ in rel], dtype=np.int64))
    queries = pd.DataFrame({"_id": [_doc_id("q", keys[i]) for i in query_items], "text": content[query_items]})
    corpus = pd.DataFrame({"_id": [_doc_id("d", keys[i]) for i in doc_items], "title": "", "text": content[doc_items]})
    qrels = pd.DataFrame(
        {
            "query-id": [_doc_id("q", keys[a]) for a, _ in rel],
            "corpus-id": [_doc_id("d", keys[d]) for _, d in rel],
            "score": 1,
        }
    )
    return corpus, queries, qrels


def audit_log(corrected: CorrectedDataset) -> pd.DataFrame:
    """Every decision row of the dataset (``corrected.history``, else the current decisions), oldest first,
    with the run's item ids and contents.

    Returns
    -------
    pandas.DataFrame
        Columns ``AUDIT_FIELDS``; ``time`` is ISO 8601 UTC, ``time_unix`` seconds; ``anchor_id`` /
        ``candidate_id`` are None where the item is not in this run (or the key is empty).
    """
    run = corrected.run
    hist = corrected.history if corrected.history is not None else corrected.decisions
    hist = hist.sort_values("id", kind="stable")
    content = run.items["content"].astype(str).to_numpy()
    a_ids = [None if i < 0 else int(i) for i in run.item_ids_for_keys(hist["anchor_key"].astype(str))]
    c_ids = [None if i < 0 else int(i) for i in run.item_ids_for_keys(hist["candidate_key"].astype(str))]
    return pd.DataFrame(
        {
            "id": hist["id"].astype(int).tolist(),
            "time": [datetime.fromtimestamp(float(t), tz=UTC).isoformat() for t in hist["time"]],
            "time_unix": hist["time"].astype(float).tolist(),
            "dataset_hash": hist["dataset_hash"].tolist() if "dataset_hash" in hist else [""] * len(hist),
            "kind": hist["kind"].tolist(),
            "anchor_key": hist["anchor_key"].tolist(),
            "candidate_key": hist["candidate_key"].tolist(),
            "decision": hist["decision"].tolist(),
            "label": [None if v is None or pd.isna(v) or v == "" else str(v) for v in hist["label"]],
            "annotator": hist["annotator"].tolist(),
            "note": hist["note"].tolist() if "note" in hist else [""] * len(hist),
            "anchor_id": a_ids,
            "candidate_id": c_ids,
            "anchor": [None if i is None else content[i] for i in a_ids],
            "candidate": [None if i is None else content[i] for i in c_ids],
        },
        columns=list(AUDIT_FIELDS),
        dtype=object,
    )


def read_audit_log(path: str | Path) -> pd.DataFrame:
    """Read an audit log written by :func:`write_export` back into a table (``AUDIT_FIELDS``).

    Raises
    ------
    NegScopeError
        When a line is not a JSON object with the audit fields.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise NegScopeError(f"cannot read the audit log {path}: {exc}") from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NegScopeError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        missing = [f for f in AUDIT_FIELDS if not isinstance(record, dict) or f not in record]
        if missing:
            raise NegScopeError(f"{path}, line {number}: missing fields {missing}")
        records.append(record)
    return pd.DataFrame(records, columns=list(AUDIT_FIELDS))


# --- writing -------------------------------------------------------------------------------------------


def _jsonl(path: Path, records: Iterable[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")


def _copy_images(run: Run, item_ids: np.ndarray, dest_root: Path) -> int:
    """Copy the image items into ``dest_root`` at the relative paths the dataset wrote; returns how many."""
    modality = run.items["modality"].to_numpy()
    content = run.items["content"].astype(str).to_numpy()
    copied = 0
    dest_root = dest_root.resolve()
    for item in np.unique(item_ids):
        if modality[item] != "image":
            continue
        src = run.image_path(int(item))
        dst = (dest_root / content[item]).resolve()
        if not dst.is_relative_to(dest_root):
            raise RunError(f"image path of item {item} leaves the export folder")
        if dst.exists():
            continue
        if not src.is_file():
            raise RunError(f"the image of item {item} is missing: {src}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        copied += 1
    return copied


def _protected(run: Run) -> list[Path]:
    """Folders an export may neither enter nor contain: the dataset's folder and the run folder."""
    out = [run.path.resolve()]
    for key in ("dataset_root", "dataset_path", "dataset_source"):
        value = run.manifest.get(key)
        if not value:
            continue
        path = Path(str(value)).expanduser().resolve()
        out.append(path if path.is_dir() or not path.suffix else path.parent)
    return list(dict.fromkeys(out))


def check_output(out: str | Path, run: Run, *, overwrite: bool = False) -> Path:
    """The resolved export folder, after the safety checks (see the module docstring).

    Raises
    ------
    ExportError
        When ``out`` is a file, a non-empty folder (without ``overwrite``), lies inside the dataset's or the
        run's folder, or contains one of them.
    """
    try:
        target = Path(out).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"the export folder {out} cannot be used ({exc})") from None
    for folder in _protected(run):
        if target == folder or target.is_relative_to(folder):
            raise ExportError(f"refusing to export into {target}: it lies inside the dataset or run folder {folder}")
        if folder.is_relative_to(target):
            raise ExportError(f"refusing to export into {target}: it holds the dataset or run folder {folder}")
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is a file; the export is a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ExportError(f"{target} is not empty; choose a new folder (or pass --overwrite to replace it)")
    return target


def write_export(
    corrected: CorrectedDataset,
    out: str | Path,
    *,
    formats: Iterable[str] = FORMATS,
    style: str = "ntuple",
    copy_images: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Write the corrected dataset into a new folder (layout and safety in the module docstring).

    Parameters
    ----------
    corrected : CorrectedDataset
        :func:`analysis.review.corrected.build_corrected` output.
    out : str or Path
        The export folder: must not exist, or be empty (any folder with ``overwrite``).
    formats : iterable of {"st", "exclusions", "beir", "decisions"}
        What to write (``export.json`` is always written).
    style : {"ntuple", "triplet"}
        The sentence-transformers layout.
    copy_images : bool
        Copy the images the table names beside it.
    overwrite : bool
        Replace an existing folder (swapped in after the new one is complete).

    Returns
    -------
    ExportResult

    Raises
    ------
    ExportError
        See :func:`check_output`.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise NegScopeError(f"unknown export format(s) {unknown}; expected some of {FORMATS}")
    if style not in ST_STYLES:
        raise NegScopeError(f"unknown style {style!r}; expected one of {ST_STYLES}")
    target = check_output(out, corrected.run, overwrite=overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
    except OSError as exc:
        raise ExportError(f"cannot create the export folder {target}: {exc}") from exc
    counts: dict = dict(corrected.counts)
    try:
        if "st" in formats:
            table = st_table(corrected, style=style)
            table.to_csv(stage / ST_FILE, index=False, lineterminator="\n")
            counts["st_rows"] = len(table)
            pairs = corrected.pairs
            used = np.concatenate(
                [pairs["anchor_id"].to_numpy(np.int64), pairs["positive_id"].to_numpy(np.int64)]
                + [np.asarray(n, dtype=np.int64) for n in pairs["negative_ids"]]
            ) if len(pairs) else np.zeros(0, dtype=np.int64)  # fmt: skip
            counts["images_copied"] = _copy_images(corrected.run, used, stage) if copy_images else 0
        if "exclusions" in formats:
            records = exclusion_records(corrected)
            _jsonl(stage / EXCLUSIONS_FILE, records)
            counts["exclusion_rows"] = len(records)
        if "beir" in formats:
            corpus, queries, qrels = beir_tables(corrected)
            (stage / BEIR_FOLDER / "qrels").mkdir(parents=True)
            _jsonl(stage / BEIR_FOLDER / "corpus.jsonl", corpus.to_dict(orient="records"))
            _jsonl(stage / BEIR_FOLDER / "queries.jsonl", queries.to_dict(orient="records"))
            qrels.to_csv(stage / BEIR_FOLDER / "qrels" / "test.tsv", sep="\t", index=False, lineterminator="\n")
            counts["qrels_rows"] = len(qrels)
        if "decisions" in formats:
            log = audit_log(corrected)
            _jsonl(stage / DECISIONS_FILE, log.to_dict(orient="records"))
            counts["decision_rows"] = len(log)
        summary = {
            "run": corrected.run.run_id,
            "dataset_content_hash": corrected.run.content_hash,
            "formats": formats,
            "style": style,
            "options": corrected.options,
            "counts": counts,
        }
        (stage / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _swap_in(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    files = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    return ExportResult(path=target, files=files, counts=counts)


def _swap_in(stage: Path, target: Path) -> None:
    """Rename the complete ``stage`` folder to ``target``; an existing ``target`` is moved away first and
    deleted only once the new folder is in place."""
    if not target.exists():
        os.rename(stage, target)
        return
    if not any(target.iterdir()):
        os.rename(stage, target)  # replaces an empty folder atomically
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    try:
        os.rename(stage, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "AUDIT_FIELDS",
    "FORMATS",
    "ST_STYLES",
    "ExportError",
    "ExportResult",
    "audit_log",
    "beir_tables",
    "check_output",
    "exclusion_records",
    "read_audit_log",
    "st_table",
    "write_export",
]

"""Corrected training data from review decisions: sentence-transformers tables, BEIR folders, the audit log.

What the decisions change (latest decision per (anchor, candidate) of the run's dataset, see
:mod:`analysis.review.store`):

- a ``false_negative`` candidate is removed from the given negatives of every pair of that anchor, and,
  with ``add_positive_pairs``, added as an extra (anchor, candidate) positive pair (id ``<pair_id>+fn<j>``)
  that carries the anchor's remaining negatives;
- ``negative`` and ``unsure`` keep the negative (``drop_unsure`` removes unsure ones too);
- with ``drop_mismatched`` pairs decided ``mismatched`` are left out, and with ``apply_relabels`` items
  relabelled on the label-noise page carry their corrected label (both from :mod:`analysis.review.label_export`).

Each export loads back with :func:`analysis.data.load.load_dataset`. Image cells keep the relative paths the
dataset wrote, and the images are copied beside the exported table (hard links where the file system allows)
so that those paths resolve; the BEIR format is text-only, so image items are written as their paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.detectors.false_negatives import negative_decisions
from analysis.errors import NegScopeError, RunError
from analysis.review.store import ReviewStore
from analysis.runs.folder import Run

FORMATS = ("st", "beir", "decisions")
ST_STYLES = ("ntuple", "triplet")
TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")
AUDIT_FIELDS = (
    "id",
    "time",
    "time_unix",
    "dataset_hash",
    "kind",
    "anchor_key",
    "candidate_key",
    "decision",
    "label",
    "annotator",
    "note",
    "anchor_id",
    "candidate_id",
    "anchor",
    "candidate",
)


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes
    ----------
    path : Path
        The table file (st), the folder (beir) or the JSONL file (decisions).
    rows : int
        Rows written (pairs or triplets; qrels lines; decisions).
    counts : dict
        Details: ``pairs``, ``negatives_removed``, ``positive_pairs_added``, ``images_copied`` ...
    files : list of Path
        Every file written.
    """

    path: Path
    rows: int
    counts: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


# --- what the decisions say ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corrections:
    """The decisions of a run, as item-id sets.

    Attributes
    ----------
    false_negatives : pandas.DataFrame
        ``anchor_id``, ``candidate_id`` decided ``false_negative``.
    removed : set of (int, int)
        (anchor_id, negative_id) to remove from the negatives.
    mismatched_pairs : set
        ``pair_id`` values decided ``mismatched``.
    relabel : dict of int to str
        item_id -> corrected label.
    """

    false_negatives: pd.DataFrame
    removed: set
    mismatched_pairs: set
    relabel: dict


def corrections(
    run: Run,
    store: ReviewStore,
    *,
    drop_unsure: bool = False,
    drop_mismatched: bool = True,
    apply_relabels: bool = True,
) -> Corrections:
    """Read the current decisions of ``run``'s dataset from ``store`` (see the module docstring)."""
    neg = negative_decisions(run, store)
    fn = neg[neg["decision"] == "false_negative"][["anchor_id", "candidate_id"]].reset_index(drop=True)
    drop = {"false_negative", "unsure"} if drop_unsure else {"false_negative"}
    removed = {(int(a), int(c)) for a, c in neg.loc[neg["decision"].isin(drop), ["anchor_id", "candidate_id"]].values}
    mismatched: set = set()
    relabel: dict = {}
    if drop_mismatched or apply_relabels:
        from analysis.review.label_export import label_decisions, pair_decisions

        if drop_mismatched:
            pd_ = pair_decisions(run, store)
            mismatched = set(pd_.loc[pd_["decision"] == "mismatched", "pair_id"].tolist())
        if apply_relabels:
            ld = label_decisions(run, store)
            ld = ld[ld["decision"] == "relabel"]
            relabel = {int(i): str(lbl) for i, lbl in zip(ld["item_id"], ld["label"], strict=True)}
    return Corrections(false_negatives=fn, removed=removed, mismatched_pairs=mismatched, relabel=relabel)


def _labels(run: Run, fix: Corrections) -> np.ndarray:
    labels = run.items["label"].astype("string").to_numpy(dtype=object, na_value=None)
    labels = np.array(
        [None if v is None or str(v).strip() in ("", "nan", "None", "<NA>") else str(v) for v in labels], dtype=object
    )
    for item, label in fix.relabel.items():
        labels[item] = label
    return labels


def corrected_rows(run: Run, fix: Corrections, *, add_positive_pairs: bool = False) -> pd.DataFrame:
    """The corrected pairs, one row each: ``id``, ``anchor_id``, ``positive_id``, ``negative_ids`` (list of
    item ids, given negatives in dataset order minus the removed ones), ``anchor_label``, ``positive_label``."""
    negs = run.negatives[run.negatives["source"] == "given"]
    neg_lists = negs.groupby("pair_id", sort=False)["negative_id"].agg(list)
    labels = _labels(run, fix)
    records = []
    first_of_anchor: dict[int, list[int]] = {}
    existing = set()
    for pid, a, p in run.pairs[["pair_id", "anchor_id", "positive_id"]].itertuples(index=False):
        a, p = int(a), int(p)
        existing.add((a, p))
        if pid in fix.mismatched_pairs:
            continue
        kept = [int(n) for n in neg_lists.get(pid, []) if (a, int(n)) not in fix.removed]
        first_of_anchor.setdefault(a, kept)
        records.append((pid, a, p, kept, labels[a], labels[p]))
    if add_positive_pairs and len(fix.false_negatives):
        count: dict = {}
        pair_of_anchor = run.pairs.drop_duplicates("anchor_id").set_index("anchor_id")["pair_id"]
        for a, c in fix.false_negatives[["anchor_id", "candidate_id"]].itertuples(index=False):
            a, c = int(a), int(c)
            if (a, c) in existing or a not in pair_of_anchor.index:
                continue
            base = pair_of_anchor[a]
            count[base] = count.get(base, 0) + 1
            negatives = [n for n in first_of_anchor.get(a, []) if n != c]
            label = labels[a] if labels[a] is not None else labels[c]
            records.append((f"{base}+fn{count[base]}", a, c, negatives, label, label))
            existing.add((a, c))
    return pd.DataFrame(records, columns=["id", "anchor_id", "positive_id", "negative_ids", "anchor_label",
                                          "positive_label"])  # fmt: skip


# --- writing -----------------------------------------------------------------------------------------------


def _write_table(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table.to_csv(tmp, index=False)
    elif suffix == ".jsonl":
        table.to_json(tmp, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        table.to_parquet(tmp, index=False)
    else:
        raise NegScopeError(f"cannot write {path}: expected a .csv, .jsonl or .parquet file name")
    os.replace(tmp, path)


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
        if dst == src or dst.exists():
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


def _table_path(out: str | Path, default_name: str) -> Path:
    out = Path(out)
    if out.suffix.lower() in TABLE_SUFFIXES:
        return out
    if out.suffix:
        raise NegScopeError(f"{out}: expected a folder or a .csv, .jsonl or .parquet file name")
    return out / default_name


def export_st(
    run: Run,
    store: ReviewStore,
    out: str | Path,
    *,
    style: str = "ntuple",
    add_positive_pairs: bool = False,
    drop_unsure: bool = False,
    drop_mismatched: bool = True,
    apply_relabels: bool = True,
    copy_images: bool = True,
) -> ExportResult:
    """Write sentence-transformers training data with decided false negatives removed from the negatives.

    Parameters
    ----------
    run : Run
    store : ReviewStore
    out : str or Path
        A .csv / .jsonl / .parquet file, or a folder (``pairs.csv`` is written in it).
    style : {"ntuple", "triplet"}
        ``ntuple``: one row per pair, ``anchor, positive, negative_1 .. negative_k`` (blank cells where a pair
        has fewer negatives than k); ``triplet``: one ``anchor, positive, negative`` row per kept negative
        (a pair left without negatives keeps one row with a blank negative), id ``<pair_id>#<j>``.
    add_positive_pairs : bool
        Add each decided false negative as an extra positive pair.
    drop_unsure, drop_mismatched, apply_relabels : bool
        See the module docstring.
    copy_images : bool
        Copy the images beside the table (False: the image paths then resolve only from the dataset folder).

    Returns
    -------
    ExportResult
    """
    if style not in ST_STYLES:
        raise NegScopeError(f"unknown style {style!r}; expected one of {ST_STYLES}")
    fix = corrections(
        run, store, drop_unsure=drop_unsure, drop_mismatched=drop_mismatched, apply_relabels=apply_relabels
    )
    rows = corrected_rows(run, fix, add_positive_pairs=add_positive_pairs)
    content = run.items["content"].astype(str).to_numpy()
    path = _table_path(out, "pairs.csv")
    labelled = rows["anchor_label"].notna() | rows["positive_label"].notna()
    # one `label` column when the dataset had one label per pair (before corrections); a relabelled item
    # then sets its pair's label (the anchor's correction first)
    orig = _labels(run, Corrections(fix.false_negatives, fix.removed, fix.mismatched_pairs, {}))
    a_ids, p_ids = rows["anchor_id"].to_numpy(np.int64), rows["positive_id"].to_numpy(np.int64)
    single = all(
        x is None or y is None or x == y for x, y in zip(orig[a_ids], orig[p_ids], strict=True)
    )  # fmt: skip
    use_positive = np.array(
        [(p in fix.relabel and a not in fix.relabel) for a, p in zip(a_ids, p_ids, strict=True)], dtype=bool
    )
    rows = rows.assign(
        pair_label=np.where(
            use_positive | rows["anchor_label"].isna().to_numpy(), rows["positive_label"], rows["anchor_label"]
        )
    )
    table: dict[str, list] = {}
    if style == "ntuple":
        k = int(rows["negative_ids"].map(len).max()) if len(rows) else 0
        table["id"] = rows["id"].tolist()
        table["anchor"] = content[rows["anchor_id"].to_numpy(np.int64)].tolist()
        table["positive"] = content[rows["positive_id"].to_numpy(np.int64)].tolist()
        for j in range(k):
            table[f"negative_{j + 1}"] = [content[n[j]] if j < len(n) else None for n in rows["negative_ids"]]
        label_rows = rows
    else:
        expanded = []
        for r in rows.itertuples(index=False):
            for j, n in enumerate(r.negative_ids or [None]):
                expanded.append(
                    (f"{r.id}#{j + 1}", r.anchor_id, r.positive_id, n, r.anchor_label, r.positive_label, r.pair_label)
                )
        label_rows = pd.DataFrame(
            expanded,
            columns=["id", "anchor_id", "positive_id", "negative_id", "anchor_label", "positive_label", "pair_label"],
        )
        table["id"] = label_rows["id"].tolist()
        table["anchor"] = content[label_rows["anchor_id"].to_numpy(np.int64)].tolist()
        table["positive"] = content[label_rows["positive_id"].to_numpy(np.int64)].tolist()
        table["negative"] = [None if pd.isna(n) else content[int(n)] for n in label_rows["negative_id"]]
    if labelled.any():
        if single:
            table["label"] = label_rows["pair_label"].tolist()
        else:
            table["anchor_label"] = label_rows["anchor_label"].tolist()
            table["positive_label"] = label_rows["positive_label"].tolist()
    frame = pd.DataFrame(table)
    used = np.concatenate(
        [rows["anchor_id"].to_numpy(np.int64), rows["positive_id"].to_numpy(np.int64)]
        + [np.asarray(n, dtype=np.int64) for n in rows["negative_ids"]]
    ) if len(rows) else np.zeros(0, dtype=np.int64)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    images = _copy_images(run, used, path.parent) if copy_images else 0
    _write_table(frame, path)
    given = run.negatives[run.negatives["source"] == "given"].merge(run.pairs[["pair_id", "anchor_id"]], on="pair_id")
    given = given[~given["pair_id"].isin(fix.mismatched_pairs)]
    n_removed = sum(
        (int(a), int(n)) in fix.removed for a, n in zip(given["anchor_id"], given["negative_id"], strict=True)
    )
    return ExportResult(
        path=path,
        rows=len(frame),
        counts={
            "pairs": int(len(rows)),
            "negatives_removed": int(n_removed),
            "positive_pairs_added": int(rows["id"].astype(str).str.contains(r"\+fn", regex=True).sum()),
            "pairs_dropped_mismatched": len(fix.mismatched_pairs),
            "labels_corrected": len(fix.relabel),
            "images_copied": images,
        },
        files=[path],
    )


def _doc_id(prefix: str, key: str) -> str:
    return prefix + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def export_beir(
    run: Run,
    store: ReviewStore,
    out: str | Path,
    *,
    drop_mismatched: bool = True,
    split: str = "test",
) -> ExportResult:
    """Write a BEIR folder whose qrels count decided false negatives as relevant.

    ``queries.jsonl``: one query per distinct anchor; ``corpus.jsonl``: every positive and given negative
    (text, or the image path); ``qrels/<split>.tsv``: score 1 for each (anchor, positive) pair and each
    decided (anchor, false negative). Ids are ``q`` / ``d`` + 16 hex digits of the item's content key's
    SHA-1, stable across checkpoints.
    """
    fix = corrections(run, store, drop_mismatched=drop_mismatched, apply_relabels=False)
    out = Path(out)
    if out.suffix:
        raise NegScopeError(f"{out}: a BEIR export is a folder; pass a folder name")
    keys = run.items["key"].astype(str).to_numpy()
    content = run.items["content"].astype(str).to_numpy()
    pairs = run.pairs[~run.pairs["pair_id"].isin(fix.mismatched_pairs)]
    rel = pd.DataFrame(
        {"anchor_id": pairs["anchor_id"].to_numpy(np.int64), "doc_id": pairs["positive_id"].to_numpy(np.int64)}
    )
    fn = fix.false_negatives.rename(columns={"candidate_id": "doc_id"})
    n_before = len(rel.drop_duplicates())
    rel = pd.concat([rel, fn[["anchor_id", "doc_id"]]], ignore_index=True).drop_duplicates()
    given = run.negatives[run.negatives["source"] == "given"]["negative_id"].to_numpy(np.int64)
    doc_items = np.unique(np.concatenate([rel["doc_id"].to_numpy(np.int64), given]))
    query_items = np.unique(rel["anchor_id"].to_numpy(np.int64))
    queries = pd.DataFrame({"_id": [_doc_id("q", keys[i]) for i in query_items], "text": content[query_items]})
    corpus = pd.DataFrame({"_id": [_doc_id("d", keys[i]) for i in doc_items], "title": "", "text": content[doc_items]})
    qrels = pd.DataFrame(
        {
            "query-id": [_doc_id("q", keys[i]) for i in rel["anchor_id"]],
            "corpus-id": [_doc_id("d", keys[i]) for i in rel["doc_id"]],
            "score": 1,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    files = [out / "corpus.jsonl", out / "queries.jsonl", out / "qrels" / f"{split}.tsv"]
    _write_table(corpus, files[0])
    _write_table(queries, files[1])
    tmp = files[2].with_name(f".{files[2].name}.tmp")
    qrels.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, files[2])
    return ExportResult(
        path=out,
        rows=len(qrels),
        counts={
            "queries": len(queries),
            "corpus": len(corpus),
            "qrels_before": n_before,
            "qrels_added": len(qrels) - n_before,
        },
        files=files,
    )


def audit_log(run: Run, store: ReviewStore) -> pd.DataFrame:
    """Every decision row of ``run``'s dataset (all kinds, oldest first) with the run's item ids and contents.

    Returns
    -------
    pandas.DataFrame
        Columns ``AUDIT_FIELDS``; ``time`` is ISO 8601 UTC, ``time_unix`` seconds; ``anchor_id`` /
        ``candidate_id`` are None where the item is not in this run (or the key is empty).
    """
    hist = store.history(run.dataset_hash)
    item_of_key = pd.Series(run.items["item_id"].to_numpy(np.int64), index=run.items["key"].astype(str))
    item_of_key = item_of_key[~item_of_key.index.duplicated()]
    content = run.items["content"].astype(str).to_numpy()

    def ids(keys: pd.Series) -> list:
        found = item_of_key.reindex(keys.to_numpy()).to_numpy()
        return [None if np.isnan(v) else int(v) for v in found]

    a_ids, c_ids = ids(hist["anchor_key"]), ids(hist["candidate_key"])
    out = pd.DataFrame(
        {
            "id": hist["id"].astype(int).tolist(),
            "time": [datetime.fromtimestamp(float(t), tz=UTC).isoformat() for t in hist["time"]],
            "time_unix": hist["time"].astype(float).tolist(),
            "dataset_hash": hist["dataset_hash"].tolist(),
            "kind": hist["kind"].tolist(),
            "anchor_key": hist["anchor_key"].tolist(),
            "candidate_key": hist["candidate_key"].tolist(),
            "decision": hist["decision"].tolist(),
            "label": [None if v is None or pd.isna(v) else str(v) for v in hist["label"]],
            "annotator": hist["annotator"].tolist(),
            "note": hist["note"].tolist(),
            "anchor_id": a_ids,
            "candidate_id": c_ids,
            "anchor": [None if i is None else content[i] for i in a_ids],
            "candidate": [None if i is None else content[i] for i in c_ids],
        },
        columns=list(AUDIT_FIELDS),
    )
    return out


def export_decisions(run: Run, store: ReviewStore, out: str | Path) -> ExportResult:
    """Write the JSONL audit log: one JSON object per decision row (fields ``AUDIT_FIELDS``)."""
    path = Path(out)
    if path.suffix.lower() != ".jsonl":
        path = path / "decisions.jsonl" if not path.suffix else path
        if path.suffix.lower() != ".jsonl":
            raise NegScopeError(f"{out}: the audit log is a .jsonl file")
    log = audit_log(run, store)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in log.to_dict(orient="records"):
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return ExportResult(path=path, rows=len(log), counts={"decisions": len(log)}, files=[path])


def read_audit_log(path: str | Path) -> pd.DataFrame:
    """Read an audit log written by :func:`export_decisions` back into a table (``AUDIT_FIELDS``).

    Raises
    ------
    NegScopeError
        When a line is not a JSON object with the audit fields.
    """
    path = Path(path)
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise NegScopeError(f"cannot read the audit log {path}: {exc}") from exc
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


def export(run: Run, store: ReviewStore, out: str | Path, *, fmt: str, **options) -> ExportResult:
    """Dispatch to :func:`export_st`, :func:`export_beir` or :func:`export_decisions` by ``fmt``."""
    if fmt == "st":
        return export_st(run, store, out, **options)
    if fmt == "beir":
        return export_beir(run, store, out, **options)
    if fmt == "decisions":
        return export_decisions(run, store, out)
    raise NegScopeError(f"unknown export format {fmt!r}; expected one of {FORMATS}")


__all__ = [
    "AUDIT_FIELDS",
    "Corrections",
    "ExportResult",
    "audit_log",
    "corrected_rows",
    "corrections",
    "export",
    "export_beir",
    "export_decisions",
    "export_st",
    "read_audit_log",
]

"""``python -m analysis scores RUN --json [--pairs-out FILE.csv]``: score distributions and retrieval metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.choices import NEGATIVE_SOURCES
from analysis.commands._json import write_json
from analysis.errors import NegScopeError

NAME = "scores"
HELP = (
    "Positive vs negative similarities, margins, AUROC and retrieval ranks of a run folder (exact; on a large run "
    "counted in an approximate top with exact re-scoring, checked against exact ranks on a sample): "
    "a summary (JSON with --json) and optionally the per-pair table as CSV."
)


def _sources(text: str) -> tuple[str, ...]:
    """The comma-separated list (``build_candidates`` checks the names)."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("run", help="run folder (from `python -m analysis embed`)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--pairs-out", type=Path, metavar="FILE.csv", help="write the per-pair table to this CSV")
    parser.add_argument(
        "--sources",
        type=_sources,
        default=NEGATIVE_SOURCES,
        help="negative sources to include, comma-separated (default: given,in_batch,mined)",
    )


def _progress():
    if not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=1000, desc="ranking", file=sys.stderr, leave=False)

    def update(frac: float) -> None:
        bar.n = int(frac * 1000)
        bar.refresh()

    return update, bar


def run(args: argparse.Namespace) -> int:
    """Compute the scores, print the summary, optionally write the per-pair CSV."""

    from analysis.metrics.scores import compute_scores
    from analysis.runs.folder import load_run

    loaded = load_run(args.run)
    update, bar = _progress()
    try:
        report = compute_scores(loaded, sources=tuple(args.sources), progress=update)
    finally:
        if bar is not None:
            bar.close()
    if args.pairs_out is not None:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        try:
            args.pairs_out.parent.mkdir(parents=True, exist_ok=True)
            # pyarrow's writer: ~10x pandas' to_csv on 100k wide rows; nulls are written as empty fields
            table = pa.Table.from_pandas(report.pairs, preserve_index=False)
            pa_csv.write_csv(table, args.pairs_out, pa_csv.WriteOptions(quoting_style="needed"))
        except OSError as exc:
            raise NegScopeError(f"cannot write {args.pairs_out}: {exc}") from exc
    from analysis.metrics.retrieval import rank_info

    # how the ranks were computed (exact, or estimated above the search rule's budget), the measured recall and,
    # when estimated, their check against exact ranks on a random sample of queries (max_error bounds the metrics)
    searches = {"forward": rank_info(loaded)}
    if rank_info(loaded, reverse=True):
        searches["reverse"] = rank_info(loaded, reverse=True)
    if args.json:
        write_json({**report.summary, "rank_search": searches})
        return 0
    s = report.summary

    def fmt(v: object) -> str:
        return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    print(f"run {loaded.run_id}: {s['pairs']} pairs")
    for key in ("pos_sim_mean", "neg_sim_mean", "auroc", "frac_hardest_neg_above_pos"):
        print(f"  {key:28s} {fmt(s[key])}")
    print("  anchor -> positive:  " + "  ".join(f"{k} {fmt(s[k])}" for k in s if k.startswith(("recall", "mrr"))))
    if s["reverse"] is not None:
        print("  positive -> anchor:  " + "  ".join(f"{k} {fmt(v)}" for k, v in s["reverse"].items()))
    for direction, info in searches.items():
        if info:
            print(f"  ranks ({direction}): {info['rank_kind']}; {info['search']}")
            if "check" in info:
                print(
                    f"    recall@k (k <= {info['check']['within']}) and MRR@10 within "
                    f"+-{info['check']['max_error']:.4f} of exact (95%)"
                )
    if args.pairs_out is not None:
        print(f"per-pair table: {args.pairs_out}")
    return 0

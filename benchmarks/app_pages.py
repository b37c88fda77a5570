"""Speed a user feels: every page of the app driven with Streamlit's AppTest, on the sample and on a 100k-pair run.

    .venv/bin/python benchmarks/app_pages.py                       # sample, then the generated 100k-pair run
    .venv/bin/python benchmarks/app_pages.py --only sample         # the sample only (about a minute)
    .venv/bin/python benchmarks/app_pages.py --save after.json --compare before.json

Each page runs in a fresh Python process (so one page's caches and memory do not help or hurt the next),
after the libraries and the page's own modules are imported (once per server process; timed apart as
``imports_s``) and the run folder has been read once (the OS file cache is warm), so "first render" is what a
user waits for when opening the page with the run already loaded. Per page it
records: the first render (seconds), one control change (seconds, a widget that page owns), and the
process's peak resident memory (MiB, ``ru_maxrss``). The Embedding Map's first render is the time until a
map is on the screen (PCA at once; UMAP replaces it when the background job has finished).

The 100k-pair run is generated here, seeded: 100,000 image anchors and 100,000 text positives whose
embeddings (D = 64) sit in 40 clusters of low intrinsic dimension, three given negatives per pair from the
positive's cluster, and a learned temperature of 0.05. It is written once under ``--cache`` and reused.

Goals on the development machine (2 cores): sample: first render < 3 s, control change < 1 s, the teaching
toy < 0.3 s, the map shown < 5 s; 100k pairs: first render < 10 s apart from the detectors' first computation.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: page file name -> (widget kind, key, new value) for the control change; None: first render only.
CONTROLS: dict[str, tuple[str, str, object] | None] = {
    "app.py": None,
    "1_Score_Distributions.py": ("slider", "scores_bins", 80),
    "2_Temperature.py": ("select_slider", "temp_tau", "first"),
    "3_Modality_Gap.py": ("slider", "gap_pairs", 60),
    "4_False_Negatives.py": ("toggle", "fn_flagged_only", True),
    "5_Label_Noise.py": ("toggle", "ln_flagged_only", True),
    "6_Embedding_Map.py": ("selectbox", "map_colour", "Label"),
    "7_Teaching.py": ("select_slider", "teach_tau", "first"),
    "8_Compare.py": None,
}
GOALS = {"sample": (3.0, 1.0), "100k": (10.0, None)}


def load() -> str:
    """The load average, as the benchmark saw it (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def clustered(n: int, d: int, *, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 unit rows in ``n_clusters`` clusters of intrinsic dimension 12, and (n,) cluster ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = rng.normal(size=(n_clusters, 12, d)) / np.sqrt(d)
    label = rng.integers(0, n_clusters, n)
    x = centres[label] + 0.5 * np.einsum("ni,nid->nd", rng.normal(size=(n, 12)), basis[label])
    x += 0.3 * rng.normal(size=(n, d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), label


def make_large_run(path: Path, *, n_pairs: int = 100_000, dim: int = 64, seed: int = 0) -> Path:
    """Write (once) a seeded two-modality run of ``n_pairs`` pairs with precomputed clustered embeddings.

    Parameters
    ----------
    path : Path
        Run folder; reused when its manifest exists.
    n_pairs, dim : int
        P pairs (2P items: P image anchors, P text positives) and the embedding dimension D.
    seed : int
        Random seed.

    Returns
    -------
    Path
        The run folder.
    """
    from analysis.runs.folder import write_run

    if (path / "manifest.json").is_file():
        return path
    rng = np.random.default_rng(seed)
    base, cluster = clustered(n_pairs, dim, n_clusters=40, seed=seed)
    noise = rng.normal(size=(2, n_pairs, dim)).astype(np.float32) * 0.35 / np.sqrt(dim)
    anchors = base + noise[0] + 0.25 * np.eye(dim, dtype=np.float32)[0]  # a modality gap along axis 0
    positives = base + noise[1] - 0.25 * np.eye(dim, dtype=np.float32)[0]
    emb = np.vstack([anchors, positives])
    items = pd.DataFrame(
        {
            "item_id": np.arange(2 * n_pairs),
            "modality": ["image"] * n_pairs + ["text"] * n_pairs,
            "content": [f"images/{i:06d}.png" for i in range(n_pairs)]
            + [f"a photo of thing {i} of kind {c}" for i, c in enumerate(cluster)],
            "label": pd.array([f"kind {c}" for c in np.concatenate([cluster, cluster])], dtype="string"),
        }
    )
    items["key"] = [f"k{i}" for i in range(2 * n_pairs)]
    pairs = pd.DataFrame(
        {"pair_id": np.arange(n_pairs), "anchor_id": np.arange(n_pairs), "positive_id": n_pairs + np.arange(n_pairs)}
    )
    order = np.argsort(cluster, kind="stable")
    start = np.searchsorted(cluster[order], np.arange(40))
    size = np.bincount(cluster, minlength=40)
    rows = []
    for _ in range(3):
        pick = start[cluster] + rng.integers(0, size[cluster])
        neg = order[pick]
        neg = np.where(neg == np.arange(n_pairs), order[(pick + 1 - start[cluster]) % size[cluster] + start[cluster]], neg)
        rows.append(pd.DataFrame({"pair_id": np.arange(n_pairs), "negative_id": n_pairs + neg, "source": "given"}))
    negatives = pd.concat(rows, ignore_index=True).drop_duplicates(["pair_id", "negative_id"])
    write_run(
        path,
        manifest={
            "dataset_hash": f"bench-100k-{seed}",
            "dataset_root": str(path),
            "model_kind": "precomputed",
            "logit_scale": 20.0,
        },
        items=items,
        embeddings=emb,
        pairs=pairs,
        negatives=negatives,
    )
    return path


def one_page(page: str, run_path: str) -> dict[str, object]:
    """Time one page in this process: first render, one control change, peak memory (prints JSON)."""
    import plotly.graph_objects  # noqa: F401 - libraries imported before timing, as in a running server
    import streamlit  # noqa: F401
    from streamlit.testing.v1 import AppTest

    import analysis.runs.folder as folder
    from ui.state import RUN_KEY

    folder.load_run(run_path)  # warm the OS file cache
    # the page's own modules (torch, sklearn, faiss behind them) are imported once per server process: timed apart
    start = time.perf_counter()
    source = (REPO / page).read_text(encoding="utf-8")
    home = (REPO / page).with_name("home.py")
    if (REPO / page).name == "app.py" and home.is_file():  # app.py runs home.py as its first page
        source += home.read_text(encoding="utf-8")
    for module in re.findall(r"^from ((?:analysis|ui)[\w.]*) import", source, flags=re.M):
        importlib.import_module(module)
    imports = time.perf_counter() - start
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    at = AppTest.from_file(str(REPO / page), default_timeout=900)
    at.session_state[RUN_KEY] = run_path
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    out: dict[str, object] = {
        "page": page,
        "first_render_s": round(first, 3),
        "control_s": None,
        "imports_s": round(imports, 3),
    }
    out["errors"] = [str(e.value)[:200] for e in at.exception] + [str(e.value)[:200] for e in at.error]
    control = CONTROLS.get(Path(page).name)
    if control is not None and not at.exception:
        kind, key, value = control
        widgets = [w for w in getattr(at, kind) if w.key == key]
        if widgets:
            widget = widgets[0]
            if value == "first":  # options come back formatted: the numeric stops are floats
                value = float(widget.options[0])
            widget.set_value(value)
            start = time.perf_counter()
            at.run()
            out["control_s"] = round(time.perf_counter() - start, 3)
            out["control"] = f"{key} = {value}"
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["base_rss_mib"] = round(base_rss, 1)
    return out


def run_pages(run_path: str, *, home: str, pages: list[str], timeout: float) -> list[dict[str, object]]:
    """Every page in its own process (stopped after ``timeout`` seconds)."""
    results = []
    for page in pages:
        env = {**os.environ, "NEGSCOPE_HOME": home, "PYTHONPATH": str(REPO)}
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", page, run_path],
                env=env,
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            results.append({"page": page, "failed": f"more than {timeout:.0f} s"})
            print("  ", json.dumps(results[-1]), flush=True)
            continue
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            results.append({"page": page, "failed": proc.stderr[-600:]})
        else:
            results.append(json.loads(lines[-1]))
        print("  ", json.dumps(results[-1]), flush=True)
    return results


def best(tries: list[dict[str, object]]) -> dict[str, object]:
    """The try with the shortest first render (a failed try only when all failed); control: the shortest too."""
    ok = [t for t in tries if "first_render_s" in t]
    if not ok:
        return tries[-1]
    out = dict(min(ok, key=lambda t: float(t["first_render_s"])))
    controls = [float(t["control_s"]) for t in ok if t.get("control_s") is not None]
    out["control_s"] = min(controls) if controls else None
    out["peak_rss_mib"] = max(float(t["peak_rss_mib"]) for t in ok)
    out["tries"] = len(tries)
    return out


def table(name: str, results: list[dict[str, object]], before: dict[str, dict] | None) -> str:
    """A markdown table of one dataset's results (with before/after ratios when ``before`` is given)."""
    first_goal, control_goal = GOALS[name]
    head = "| page | first render (s) | control change (s) | peak RSS (MiB) |"
    rule = "| --- | --- | --- | --- |"
    if before:
        head += " before: first / control (s) | speed-up first / control |"
        rule += " --- | --- |"
    lines = [head, rule]
    for r in results:
        if "failed" in r:
            lines.append(f"| {Path(str(r['page'])).stem} | failed: {str(r['failed'])[-80:]!r} | | |")
            continue
        first, ctrl = r["first_render_s"], r["control_s"]
        mark = "" if first < first_goal else " ✗"
        ctrl_txt = "–" if ctrl is None else f"{ctrl:.2f}" + ("" if control_goal is None or ctrl < control_goal else " ✗")
        line = f"| {Path(str(r['page'])).stem} | {first:.2f}{mark} | {ctrl_txt} | {r['peak_rss_mib']:.0f} |"
        if before:
            b = before.get(f"{name}:{Path(str(r['page'])).name}")
            if b and "first_render_s" in b:
                bc = b.get("control_s")
                line += f" {b['first_render_s']:.2f} / {'–' if bc is None else f'{bc:.2f}'} |"
                ratio_c = "–" if not (bc and ctrl) else f"{bc / ctrl:.1f}x"
                line += f" {b['first_render_s'] / first:.1f}x / {ratio_c} |"
            else:
                line += " – | – |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", nargs=2, metavar=("PAGE", "RUN"), help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["sample", "100k"], help="one dataset only")
    parser.add_argument("--pages", nargs="*", help="page files (default: app.py and every pages/*.py)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "negscope_bench_pages"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per page at most")
    parser.add_argument("--save", help="write the results as JSON")
    parser.add_argument("--compare", help="JSON of an earlier --save: print before/after ratios")
    parser.add_argument(
        "--baseline",
        help="a folder with an earlier app.py and pages/ (e.g. `git archive HEAD app.py pages | tar -x -C DIR`): "
        "each page runs alternately from there and from this tree, --repeats times, the best of each kept",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per page (the best is kept)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_page(*args.one)), flush=True)
        os._exit(0)  # background jobs the page started (a UMAP map) end with the process, unjoined
    cache = Path(args.cache)
    home = cache / "home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["NEGSCOPE_HOME"] = str(home)
    pages = args.pages or ["app.py", *sorted(str(p.relative_to(REPO)) for p in (REPO / "pages").glob("*.py"))]
    datasets = []
    if args.only in (None, "sample"):
        from analysis.embedding.engine import embed_to_run
        from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA

        sample = cache / "sample_run"
        if not (sample / "manifest.json").is_file():
            embed_to_run(SAMPLE_DATA, SAMPLE_CHECKPOINT, out=sample)
        datasets.append(("sample", str(sample)))
    if args.only in (None, "100k"):
        start = time.perf_counter()
        path = make_large_run(cache / "run_100k")
        print(f"100k-pair run ready in {time.perf_counter() - start:.1f} s: {path}")
        datasets.append(("100k", str(path)))
    before = None
    if args.compare:
        before = {f"{r['dataset']}:{Path(r['page']).name}": r for r in json.loads(Path(args.compare).read_text())}
    print(load())
    saved = []
    for name, run_path in datasets:
        print(f"{name}: {run_path}")
        results, baseline = [], []
        for page in pages:
            old = str(Path(args.baseline) / page) if args.baseline else None
            if old and not Path(old).is_file():
                old = None
            tries_new, tries_old = [], []
            for _ in range(max(1, args.repeats)):  # interleaved: the machine's load falls on both alike
                if old:
                    tries_old += run_pages(run_path, home=str(home), pages=[old], timeout=args.timeout)
                tries_new += run_pages(run_path, home=str(home), pages=[page], timeout=args.timeout)
            results.append(best(tries_new))
            if old:
                baseline.append({"dataset": name, **best(tries_old)})
        if baseline:
            before = {f"{r['dataset']}:{Path(str(r['page'])).name}": r for r in baseline}
        saved += [{"dataset": name, **r} for r in results] + [{**r, "baseline": True} for r in baseline]
        print(table(name, results, before))
        print(load())
    if args.save:
        Path(args.save).write_text(json.dumps(saved, indent=1))


if __name__ == "__main__":
    main()

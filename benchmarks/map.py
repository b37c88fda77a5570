"""Embedding-map speed: NegScope's UMAP path against umap-learn's default ``fit_transform``, same process.

    .venv/bin/python benchmarks/map.py                # 20k x 64 comparison, then 100k x 384 (several minutes)
    .venv/bin/python benchmarks/map.py --quick        # 5k x 32 and 20k x 64 only: a smoke run

Data: L2-normalised clustered synthetic embeddings (clusters of low intrinsic dimension plus isotropic
noise, like a trained encoder's). Both paths are warmed up first (numba compiled or loaded from its disk
cache), so the timed calls measure the algorithms; the compile cost is measured separately, in fresh
processes with an empty and then a warm numba cache. Quality is trustworthiness (k = 10) averaged over the
same random sample of points for both maps (each point ranked against all N).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from analysis.maps.embedding_map import auto_schedule, import_umap, trustworthiness, umap_2d  # noqa: E402


def clustered(
    n: int, d: int, *, n_clusters: int = 30, intrinsic: int = 12, spread: float = 0.5, seed: int = 0
) -> np.ndarray:
    """(n, d) float32 unit rows in ``n_clusters`` clusters, each a Gaussian in a random ``intrinsic``-dim subspace."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = rng.normal(size=(n_clusters, intrinsic, d)) / np.sqrt(d)
    label = rng.integers(0, n_clusters, n)
    x = centres[label] + spread * np.einsum("ni,nid->nd", rng.normal(size=(n, intrinsic)), basis[label])
    x += 0.3 * rng.normal(size=(n, d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def compile_costs() -> tuple[float, float]:
    """Seconds for a tiny UMAP in a fresh process with an empty numba cache, then with the warm cache."""
    code = (
        "import time, numpy as np\n"
        "t = time.perf_counter()\n"
        "from analysis.maps.embedding_map import umap_2d\n"
        "x = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)\n"
        "umap_2d(x / np.linalg.norm(x, axis=1, keepdims=True), n_epochs=20)\n"
        "print(time.perf_counter() - t)\n"
    )
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
        env.update(NEGSCOPE_HOME=home, PYTHONPATH=str(REPO))
        out = []
        for _ in range(2):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out.append(float(res.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def compare(n: int, d: int, *, repeats: int, sample: int) -> None:
    umap = import_umap()
    x = clustered(n, d)
    epochs, rate = auto_schedule(n)
    print(
        f"\n== {n} x {d}: our path ({epochs} epochs at rate {rate}, PCA start, faiss kNN) vs umap.UMAP().fit_transform"
    )
    ours_t, default_t = [], []
    ours = default = None
    for _ in range(repeats):  # alternate, so that a burst of load on the shared machine hits both
        ours, t = timed(umap_2d, x)
        ours_t.append(t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default, t = timed(umap.UMAP().fit_transform, x)
        default_t.append(t)
    t_ours = trustworthiness(x, ours, k=10, sample=sample, seed=1)
    t_default = trustworthiness(x, default, k=10, sample=sample, seed=1)
    print(
        f"  ours    : best {min(ours_t):6.1f} s  (runs: {', '.join(f'{t:.1f}' for t in ours_t)})  T(10) = {t_ours:.4f}"
    )
    print(
        f"  default : best {min(default_t):6.1f} s  (runs: {', '.join(f'{t:.1f}' for t in default_t)})"
        f"  T(10) = {t_default:.4f}"
    )
    print(
        f"  speed-up (best / best): {min(default_t) / min(ours_t):.1f}x   trustworthiness change: {t_ours - t_default:+.4f}"
    )
    print(f"  {load()}")


def quality(*, sample: int) -> None:
    """Trustworthiness of both paths on differently shaped clustered data (15k points each)."""
    umap = import_umap()
    sets = {
        "30 clusters, 12-dim, 15k x 64": clustered(15_000, 64, seed=2),
        "100 clusters, 20-dim, 15k x 128": clustered(15_000, 128, n_clusters=100, intrinsic=20, seed=3),
        "8 wide blobs, 40-dim, 15k x 64": clustered(15_000, 64, n_clusters=8, intrinsic=40, spread=1.2, seed=5),
    }
    print("\n== trustworthiness T(10) on other data: ours vs default (same sample of points)")
    for name, x in sets.items():
        ours = umap_2d(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default = umap.UMAP().fit_transform(x)
        t_ours = trustworthiness(x, ours, k=10, sample=sample, seed=1)
        t_default = trustworthiness(x, default, k=10, sample=sample, seed=1)
        print(f"  {name:34s} ours {t_ours:.4f}  default {t_default:.4f}  change {t_ours - t_default:+.4f}")


def large(n: int, d: int, *, sample: int) -> None:
    x = clustered(n, d, seed=1)
    epochs, rate = auto_schedule(n)
    print(f"\n== {n} x {d}: our path only ({epochs} epochs at rate {rate})")
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        marks.setdefault(message.split(" (")[0], time.perf_counter() - start)

    coords, total = timed(umap_2d, x, progress=progress)
    layout_start = marks.get("optimising the layout", total)
    print(f"  total {total:.1f} s  (neighbours + PCA start {layout_start:.1f} s, layout {total - layout_start:.1f} s)")
    print(f"  T(10) = {trustworthiness(x, coords, k=10, sample=sample, seed=1):.4f} (estimated on {sample} points)")
    print(f"  {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (best is reported)")
    parser.add_argument("--skip-compile", action="store_true", help="skip the fresh-process compile measurement")
    args = parser.parse_args()
    print(load())
    if not args.skip_compile:
        cold, warm = compile_costs()
        print(f"tiny UMAP in a new process: {cold:.1f} s with an empty numba cache, {warm:.1f} s with it warm")
    _, t = timed(import_umap)
    print(f"import umap-learn: {t:.1f} s")
    umap = import_umap()
    warm_x = clustered(5000, 16, seed=9)
    _, t_ours = timed(umap_2d, warm_x, n_epochs=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, t_def = timed(umap.UMAP(n_epochs=10).fit_transform, warm_x)
    print(f"warm-up (compile or load from cache): ours {t_ours:.1f} s, default {t_def:.1f} s")
    if args.quick:
        compare(5000, 32, repeats=1, sample=2000)
        compare(20000, 64, repeats=1, sample=3000)
        return
    compare(20000, 64, repeats=args.repeats, sample=5000)
    large(100_000, 384, sample=2000)
    quality(sample=4000)


if __name__ == "__main__":
    main()

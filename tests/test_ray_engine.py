"""The Ray engine (``embed --engine ray``): on a local Ray (``ray.init(num_cpus=2)``) it writes a sharded run
folder equal to the single-process engine's run, and without Ray it says what to install."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.errors import NegScopeError
from analysis.runs.folder import Run, load_run
from tests.tiny_models import make_dual_encoder, make_text_dataset

HAS_RAY = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='ray[data] is not installed (pip install "ray[data]"; CI has it)')


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the module's tests, shut down after them."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _assert_same_run(ray_run: Run, local_run: Run) -> None:
    assert ray_run.sharded and not local_run.sharded
    pd.testing.assert_frame_equal(ray_run.items, local_run.items)
    pd.testing.assert_frame_equal(ray_run.pairs, local_run.pairs)
    pd.testing.assert_frame_equal(ray_run.negatives, local_run.negatives)
    assert ray_run.embeddings.shape == local_run.embeddings.shape
    diff = np.abs(ray_run.embeddings.astype(np.float64) - local_run.embeddings.astype(np.float64)).max(axis=1)
    assert diff.max() < 1e-5, f"item {int(diff.argmax())} differs by {diff.max():.3g}"
    for key in ("dataset_hash", "dataset_content_hash", "checkpoint_hash", "model_kind", "logit_scale", "dim"):
        assert ray_run.manifest[key] == local_run.manifest[key], key


@needs_ray
@pytest.mark.slow
def test_ray_run_of_the_sample_equals_the_single_process_run(local_ray, sample_run: Run, tmp_path: Path) -> None:
    from analysis.embedding.ray_engine import embed_to_run_ray
    from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA

    seen: list[tuple[int, int, str]] = []
    path = embed_to_run_ray(
        SAMPLE_DATA,
        SAMPLE_CHECKPOINT,
        out=tmp_path / "ray_run",
        device="cpu",
        actors=2,
        shard_rows=1000,
        progress=lambda done, total, message: seen.append((done, total, message)),
    )
    run = load_run(path)
    n = len(sample_run.items)
    assert run.manifest["shards"]["rows"] == [min(1000, n - s) for s in range(0, n, 1000)]
    assert run.manifest["engine"]["name"] == "ray" and run.manifest["engine"]["actors"] == 2
    assert run.manifest["run_key"] == sample_run.manifest["run_key"]  # same content and options, same cache key
    assert set(run.items["modality"]) == {"text", "image"}
    _assert_same_run(run, sample_run)
    assert (n, n, "embedding on Ray") in seen
    # embedding it again reuses the folder without running anything
    again: list[str] = []
    assert embed_to_run_ray(
        SAMPLE_DATA, SAMPLE_CHECKPOINT, out=path, device="cpu", progress=lambda d, t, m: again.append(m)
    ) == path
    assert again[-1] == "reused the cached run"


@needs_ray
@pytest.mark.slow
def test_cli_engine_ray_writes_a_sharded_run(local_ray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.embedding.engine import embed_to_run

    make_dual_encoder(tmp_path / "model")
    data = make_text_dataset(tmp_path / "data", n_pairs=40)
    code = main(
        ["embed", "--data", str(data), "--checkpoint", str(tmp_path / "model"), "--device", "cpu", "--quiet"]
        + ["--engine", "ray", "--shard-rows", "16", "--actors", "1", "--batch-size", "8", "--out", str(tmp_path / "r")]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert Path(out[-1]) == (tmp_path / "r").resolve()
    run = load_run(out[-1])
    assert run.manifest["shards"]["rows"] == [16, 16, 16, 16, 16]  # 80 distinct texts
    local = load_run(embed_to_run(data, tmp_path / "model", out=tmp_path / "local", device="cpu", batch_size=8))
    _assert_same_run(run, local)


@needs_ray
@pytest.mark.slow
def test_precomputed_embeddings_are_aligned_on_the_driver(local_ray, tmp_path: Path) -> None:
    from analysis.embedding.engine import embed_to_run
    from analysis.embedding.ray_engine import embed_to_run_ray

    data = make_text_dataset(tmp_path / "data", n_pairs=12)
    n_items = 24
    vectors = np.random.default_rng(1).normal(size=(n_items, 7)).astype(np.float32)
    np.save(tmp_path / "emb.npy", vectors)
    ray_run = load_run(embed_to_run_ray(data, tmp_path / "emb.npy", out=tmp_path / "ray", shard_rows=10))
    local = load_run(embed_to_run(data, tmp_path / "emb.npy", out=tmp_path / "local"))
    assert ray_run.manifest["shards"]["rows"] == [10, 10, 4]
    _assert_same_run(ray_run, local)
    reference = vectors.astype(np.float64) / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(ray_run.embeddings, reference, atol=1e-6)


def test_missing_ray_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.embedding.ray_engine import embed_to_run_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    data = make_text_dataset(tmp_path / "data", n_pairs=3)
    with pytest.raises(NegScopeError, match=r'pip install "ray\[data\]"'):
        embed_to_run_ray(data, tmp_path / "model", out=tmp_path / "r")


def test_cli_reports_missing_ray_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    data = make_text_dataset(tmp_path / "data", n_pairs=3)
    make_dual_encoder(tmp_path / "model")
    code = main(["embed", "--data", str(data), "--checkpoint", str(tmp_path / "model"), "--engine", "ray", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "ray[data]" in err and "\n" not in err


def test_ray_options_need_engine_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_text_dataset(tmp_path / "data", n_pairs=3)
    code = main(["embed", "--data", str(data), "--checkpoint", str(tmp_path / "m"), "--address", "auto", "--quiet"])
    assert code == 2
    assert "only with --engine ray" in capsys.readouterr().err


def test_ray_stays_unimported_by_the_cli_and_the_analyses() -> None:
    import subprocess

    code = (
        "import sys, analysis.cli, analysis.embedding.ray_engine, analysis.runs.folder, analysis.runs.shards\n"
        "analysis.cli.build_parser()\n"
        "assert 'ray' not in sys.modules, 'ray imported eagerly'\n"
    )
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


class _FakeRay:
    def __init__(self, **resources: float) -> None:
        self.resources = resources

    def cluster_resources(self) -> dict[str, float]:
        return self.resources


def test_actor_pool_follows_the_cluster() -> None:
    from analysis.embedding.ray_engine import _pool

    assert _pool(_FakeRay(CPU=16.0, GPU=4.0), actors=None, device="auto") == (4, 1.0, 1.0)
    assert _pool(_FakeRay(CPU=16.0, GPU=4.0), actors=8, device="auto") == (4, 1.0, 1.0)  # one GPU per actor
    assert _pool(_FakeRay(CPU=16.0, GPU=4.0), actors=None, device="cpu") == (16, 0.0, 1.0)
    assert _pool(_FakeRay(CPU=8.0), actors=None, device="auto") == (8, 0.0, 1.0)
    assert _pool(_FakeRay(CPU=8.0), actors=2, device="auto") == (2, 0.0, 4.0)
    assert _pool(_FakeRay(CPU=2.0), actors=4, device="auto") == (4, 0.0, 0.5)  # all four can be scheduled
    with pytest.raises(NegScopeError, match="has none"):
        _pool(_FakeRay(CPU=8.0), actors=None, device="cuda")
    with pytest.raises(NegScopeError, match="positive integer"):
        _pool(_FakeRay(CPU=8.0), actors=0, device="auto")

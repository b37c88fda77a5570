"""The embedding engine: run folder format, equality with direct model calls, length sorting, caching by content,
progress, one batch of decoded images at a time, modality checks, precomputed embeddings, memory."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import analysis.embedding.engine as engine
from analysis.embedding.checkpoints import load_checkpoint
from analysis.embedding.dual_encoder import DualEncoder
from analysis.embedding.encoders_hf import SentenceTransformerEncoder
from analysis.embedding.engine import RUN_FILES, embed_items, embed_to_run, length_batches
from analysis.errors import CheckpointError, RunError
from analysis.runs.folder import NEGATIVE_SOURCES, load_run
from analysis.runs.workspace import runs_dir
from tests.tiny_models import make_dual_encoder, make_image_dataset, make_sentence_transformer, make_text_dataset

REPO = Path(__file__).resolve().parent.parent
MANIFEST_KEYS = {
    "dataset_path",
    "dataset_root",
    "dataset_format",
    "dataset_hash",
    "checkpoint_path",
    "checkpoint_hash",
    "model_kind",
    "dim",
    "device",
    "dtype",
    "logit_scale",
    "batch_size",
    "options",
    "created",
    "negscope_version",
    "run_key",
    "n_items",
}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    make_dual_encoder(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def image_data(tmp_path: Path) -> Path:
    return make_image_dataset(tmp_path / "data", n_pairs=12, k=2)


def _direct(model: DualEncoder, items: pd.DataFrame, root: Path) -> np.ndarray:
    """Slow reference: each item through the model alone, normalised in float64."""
    rows = []
    with torch.no_grad():
        for modality, content in zip(items["modality"], items["content"], strict=True):
            if modality == "text":
                v = model.encode_text(model.tokenize([content]))
            else:
                with Image.open(root / content) as img:
                    v = model.encode_image(model.preprocess_images([img]))
            v = v[0].double().numpy()
            rows.append(v / np.linalg.norm(v))
    return np.array(rows)


def _live_images() -> int:
    """Number of PIL images alive in this process."""
    gc.collect()
    return sum(issubclass(type(o), Image.Image) for o in gc.get_objects())


class Spy:
    """Wraps a real encoder and records what the engine hands it."""

    def __init__(self, inner, *, fail_after: int | None = None) -> None:
        self.inner = inner
        self.text_batches: list[list[str]] = []
        self.image_batches: list[int] = []
        self.live_images: list[int] = []
        self.fail_after = fail_after

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def text_lengths(self, texts):
        return self.inner.text_lengths(texts)

    def encode_texts(self, texts):
        if self.fail_after is not None and len(self.text_batches) >= self.fail_after:
            raise CheckpointError("planted failure")
        self.text_batches.append(list(texts))
        return self.inner.encode_texts(texts)

    def encode_images(self, images):
        self.live_images.append(_live_images())
        self.image_batches.append(len(images))
        return self.inner.encode_images(images)


def _spy_builds(monkeypatch: pytest.MonkeyPatch, **kwargs) -> list[Spy]:
    built: list[Spy] = []
    real = engine.build_encoder

    def build(info, **kw):
        spy = Spy(real(info, **kw), **kwargs)
        built.append(spy)
        return spy

    monkeypatch.setattr(engine, "build_encoder", build)
    return built


# ---------------------------------------------------------------------------------------------------------------------


def test_run_folder_matches_design(model_dir: Path, image_data: Path) -> None:
    run_path = embed_to_run(image_data, model_dir, device="cpu", batch_size=5)
    assert run_path.parent == runs_dir()
    assert sorted(os.listdir(run_path)) == sorted(RUN_FILES)
    manifest = json.loads((run_path / "manifest.json").read_text())
    assert set(manifest) >= MANIFEST_KEYS
    assert manifest["model_kind"] == "negscope-dual-encoder"
    assert manifest["device"] == "cpu" and manifest["dtype"] == "float32"
    assert manifest["dataset_format"] == "csv"
    assert Path(manifest["dataset_root"]) == image_data.parent.resolve()
    model = DualEncoder.from_folder(model_dir)
    assert manifest["logit_scale"] == pytest.approx(model.logit_scale_value)

    items = pd.read_parquet(run_path / "items.parquet")
    assert list(items.columns) == ["item_id", "modality", "content", "label", "key"]
    assert items["item_id"].tolist() == list(range(len(items)))
    assert set(items["modality"]) == {"text", "image"}
    emb = np.load(run_path / "embeddings.npy", allow_pickle=False)
    assert emb.dtype == np.float32 and emb.shape == (len(items), manifest["dim"]) == (len(items), 6)
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float64), axis=1), 1.0, atol=1e-6)
    pairs = pd.read_parquet(run_path / "pairs.parquet")
    assert list(pairs.columns) == ["pair_id", "anchor_id", "positive_id"]
    assert len(pairs) == 12 and pairs["pair_id"].tolist() == list(range(12))
    negatives = pd.read_parquet(run_path / "negatives.parquet")
    assert list(negatives.columns[:3]) == ["pair_id", "negative_id", "source"]
    assert set(negatives["source"]) <= set(NEGATIVE_SOURCES) and len(negatives) == 24
    for table, cols in ((pairs, ["anchor_id", "positive_id"]), (negatives, ["negative_id"])):
        for col in cols:
            assert pd.api.types.is_integer_dtype(table[col]), col
            assert table[col].between(0, len(items) - 1).all()
    assert pd.api.types.is_integer_dtype(items["item_id"])
    assert all(isinstance(v, str) for v in items["content"]) and all(isinstance(v, str) for v in items["key"])
    anchors = items.iloc[pairs["anchor_id"]]
    assert (anchors["modality"] == "image").all() and set(anchors["label"]) == {"0", "1", "2"}

    run = load_run(run_path)
    assert run.logit_scale == pytest.approx(model.logit_scale_value)
    assert run.anchor_modality() == "image" and run.positive_modality() == "text"


def test_embeddings_equal_a_direct_model_call(model_dir: Path, image_data: Path) -> None:
    run = load_run(embed_to_run(image_data, model_dir, device="cpu", batch_size=4))
    reference = _direct(DualEncoder.from_folder(model_dir), run.items, run.dataset_root)
    np.testing.assert_allclose(run.embeddings, reference, atol=1e-6)


def test_texts_are_length_sorted_and_order_restored(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    data = make_text_dataset(tmp_path / "texts", n_pairs=15, low=1, high=25)
    built = _spy_builds(monkeypatch)
    run = load_run(embed_to_run(data, model_dir, device="cpu", batch_size=4))
    (spy,) = built
    fed = [t for batch in spy.text_batches for t in batch]
    assert len(spy.text_batches) == -(-len(run.items) // 4) and all(len(b) <= 4 for b in spy.text_batches)
    lengths = spy.text_lengths(fed)
    assert (np.diff(lengths) <= 0).all()  # longest first, so batches pad little
    assert sorted(fed) == sorted(run.items["content"])
    assert fed != run.items["content"].tolist()  # the sort really reordered them
    reference = _direct(DualEncoder.from_folder(model_dir), run.items, tmp_path)
    np.testing.assert_allclose(run.embeddings, reference, atol=1e-6)


def test_cache_hit_reuses_the_run_without_recomputing(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    data = make_image_dataset(tmp_path / "data", n_pairs=8, k=1)
    built = _spy_builds(monkeypatch)
    first = embed_to_run(data, model_dir, device="cpu")
    mtime = (first / "embeddings.npy").stat().st_mtime_ns
    calls: list[tuple[int, int, str]] = []
    again = embed_to_run(
        data, model_dir, device="cpu", batch_size=3, precision="fp32", progress=lambda *a: calls.append(a)
    )
    assert again == first and len(built) == 1  # the model was not even loaded
    assert (first / "embeddings.npy").stat().st_mtime_ns == mtime
    assert calls[-1][0] == calls[-1][1]
    # same content under other names and folders: still the same run (content hashes, not file names)
    shutil.copytree(data.parent, tmp_path / "copy" / "renamed")
    (tmp_path / "copy" / "renamed" / "pairs.csv").rename(tmp_path / "copy" / "renamed" / "other.csv")
    shutil.copytree(model_dir, tmp_path / "copy" / "model2")
    same = embed_to_run(tmp_path / "copy" / "renamed" / "other.csv", tmp_path / "copy" / "model2", device="cpu")
    assert same == first and len(built) == 1
    # a change in the data content makes a new run
    table = pd.read_csv(data)
    table.loc[0, "positive"] = "a brand new caption"
    table.to_csv(data, index=False)
    changed = embed_to_run(data, model_dir, device="cpu")
    assert changed != first and len(built) == 2
    # so does a change of precision or of the checkpoint
    assert embed_to_run(data, model_dir, device="cpu", precision="bf16") not in (first, changed)
    make_dual_encoder(tmp_path / "model3", seed=5)
    assert embed_to_run(data, tmp_path / "model3", device="cpu") not in (first, changed)
    assert len(built) == 4


def test_progress_callback(model_dir: Path, image_data: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    run = load_run(embed_to_run(image_data, model_dir, device="cpu", batch_size=5, progress=lambda *a: calls.append(a)))
    n = len(run.items)
    embedding = [(d, t) for d, t, m in calls if m.startswith("embedding")]
    assert embedding[0] == (0, n) and embedding[-1] == (n, n)
    done = [d for d, _ in embedding]
    assert done == sorted(done) and len(embedding) >= 1 + -(-n // 5)
    assert any(m == "reading the dataset" for *_, m in calls)
    assert all(0 <= d <= t for d, t, _ in calls)


def test_only_one_batch_of_images_is_decoded_at_a_time(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    data = make_image_dataset(tmp_path / "data", n_pairs=13, k=1)
    built = _spy_builds(monkeypatch)
    baseline = _live_images()
    embed_to_run(data, model_dir, device="cpu", batch_size=4)
    (spy,) = built
    assert spy.image_batches == [4, 4, 4, 1]
    assert max(spy.live_images) - baseline <= 4  # decoding all 13 first would show 13


def test_text_only_checkpoint_on_image_column_names_the_column(tmp_path: Path, image_data: Path) -> None:
    st = make_sentence_transformer(tmp_path / "st")
    with pytest.raises(CheckpointError, match="column 'anchor'") as info:
        embed_to_run(image_data, st, device="cpu")
    assert "image" in str(info.value)
    assert not list(runs_dir().iterdir())


def test_sentence_transformer_run_equals_encode(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    st = make_sentence_transformer(tmp_path / "st")
    data = make_text_dataset(tmp_path / "texts", n_pairs=20, low=1, high=30)
    run = load_run(embed_to_run(data, st, device="cpu", batch_size=7))
    reference = SentenceTransformer(str(st), device="cpu").encode(
        run.items["content"].tolist(), batch_size=1, normalize_embeddings=True
    )
    np.testing.assert_allclose(run.embeddings, reference, atol=1e-5)
    assert run.manifest["model_kind"] == "sentence-transformers" and run.logit_scale is None


def test_precomputed_embeddings(tmp_path: Path) -> None:
    data = make_text_dataset(tmp_path / "texts", n_pairs=5)
    vectors = np.random.default_rng(0).normal(size=(10, 3))
    np.save(tmp_path / "emb.npy", vectors.astype(np.float32))
    run = load_run(embed_to_run(data, tmp_path / "emb.npy"))
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(run.embeddings, expected, atol=1e-6)
    assert run.manifest["model_kind"] == "precomputed" and run.manifest["logit_scale"] is None
    np.save(tmp_path / "short.npy", vectors[:9].astype(np.float32))
    with pytest.raises(CheckpointError, match="9 rows but the dataset has 10 items"):
        embed_to_run(data, tmp_path / "short.npy")


def test_out_folder(tmp_path: Path, model_dir: Path, image_data: Path) -> None:
    out = tmp_path / "my_run"
    assert embed_to_run(image_data, model_dir, out=out, device="cpu") == out.resolve()
    assert sorted(os.listdir(out)) == sorted(RUN_FILES)
    assert embed_to_run(image_data, model_dir, out=out, device="cpu") == out.resolve()  # cached
    make_dual_encoder(tmp_path / "other", seed=3)
    with pytest.raises(RunError, match="another run"):
        embed_to_run(image_data, tmp_path / "other", out=out, device="cpu")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match="not an empty folder"):
        embed_to_run(image_data, model_dir, out=tmp_path / "busy", device="cpu")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(RunError, match="cannot create"):
        embed_to_run(image_data, model_dir, out=tmp_path / "a_file" / "run", device="cpu")
    (tmp_path / "empty").mkdir()
    assert (embed_to_run(image_data, model_dir, out=tmp_path / "empty", device="cpu") / "manifest.json").is_file()


def test_a_failure_leaves_no_partial_run(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    data = make_text_dataset(tmp_path / "texts", n_pairs=10)
    _spy_builds(monkeypatch, fail_after=1)
    with pytest.raises(CheckpointError, match="planted failure"):
        embed_to_run(data, model_dir, device="cpu", batch_size=4)
    assert list(runs_dir().iterdir()) == []


def test_memmap_output_gives_the_same_run(tmp_path: Path, model_dir: Path, image_data: Path, monkeypatch) -> None:
    plain = load_run(embed_to_run(image_data, model_dir, out=tmp_path / "plain", device="cpu", batch_size=5))
    monkeypatch.setattr(engine, "MEMMAP_BYTES", 0)
    mapped = load_run(embed_to_run(image_data, model_dir, out=tmp_path / "mapped", device="cpu", batch_size=5))
    np.testing.assert_array_equal(plain.embeddings, mapped.embeddings)
    assert sorted(os.listdir(mapped.path)) == sorted(RUN_FILES)


def test_embed_items_refuses_a_modality_the_encoder_lacks(tmp_path: Path) -> None:
    make_sentence_transformer(tmp_path / "st")
    enc = load_checkpoint(tmp_path / "st", device="cpu")
    items = pd.DataFrame({"modality": ["text", "image"], "content": ["a cat", "x.png"]})
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(CheckpointError, match="cannot embed images"):
        embed_items(enc, items, root=tmp_path)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import numpy as np, pandas as pd

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    data, model, n_pairs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    from analysis.embedding.checkpoints import load_checkpoint
    from analysis.embedding.engine import embed_to_run
    import torch
    enc = load_checkpoint(model, device="cpu")   # the model, loaded once: part of the baseline
    with torch.inference_mode():
        enc.encode_texts(["warm up the model"] * 8)
    del enc
    base = rss_mib()
    run = embed_to_run(data, model, device="cpu", batch_size=256)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emb = np.load(run / "embeddings.npy", mmap_mode="r")
    out_mib = emb.size * 4 / 2**20
    print(json.dumps({"items": int(emb.shape[0]), "dim": int(emb.shape[1]), "baseline_mib": base,
                      "peak_mib": peak, "output_mib": out_mib, "beyond_mib": peak - base - out_mib}))
    """
)


@pytest.mark.slow
def test_100k_texts_embed_within_2gb_beyond_model_and_output(tmp_path: Path) -> None:
    n_pairs = 50_000
    rng = np.random.default_rng(0)
    words = np.array(
        [
            "a",
            "the",
            "photo",
            "of",
            "cat",
            "dog",
            "digit",
            "one",
            "two",
            "three",
            "thick",
            "thin",
            "small",
            "large",
            "drawing",
        ]
    )
    lengths = rng.integers(3, 30, size=2 * n_pairs)
    texts = [" ".join(rng.choice(words, size=k)) + f" q{i}" for i, k in enumerate(lengths)]
    (tmp_path / "data").mkdir()
    pd.DataFrame({"anchor": texts[:n_pairs], "positive": texts[n_pairs:]}).to_csv(tmp_path / "data" / "pairs.csv")
    st = make_sentence_transformer(tmp_path / "st")
    script = tmp_path / "measure.py"
    script.write_text(MEMORY_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data" / "pairs.csv"), str(st), str(n_pairs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("memory:", result)
    assert result["items"] == 2 * n_pairs
    assert result["beyond_mib"] < 2048, result


def test_length_batches_respect_size_and_token_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(1, 120, size=500))[::-1]
    for batch_size, budget in ((32, None), (256, 2048), (7, 50), (64, 10)):
        slices = list(length_batches(lengths, batch_size=batch_size, token_budget=budget))
        assert slices[0][0] == 0 and slices[-1][1] == len(lengths)
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))
        for start, stop in slices:
            size = stop - start
            assert 1 <= size <= batch_size
            cap = batch_size if budget is None else max(1, min(batch_size, budget // int(lengths[start])))
            assert size == min(cap, len(lengths) - start)  # as large as allowed
            if budget is not None and size > 1:
                assert size * int(lengths[start:stop].max()) <= budget


def test_cpu_token_budget_shapes_the_text_batches(tmp_path: Path, monkeypatch) -> None:
    st_dir = make_sentence_transformer(tmp_path / "st")
    data = make_text_dataset(tmp_path / "texts", n_pairs=20, low=1, high=30)
    built = _spy_builds(monkeypatch)
    monkeypatch.setattr(SentenceTransformerEncoder, "cpu_token_budget", 60)
    run = load_run(embed_to_run(data, st_dir, device="cpu", batch_size=256))
    (spy,) = built
    for batch in spy.text_batches:
        longest = int(spy.text_lengths(batch).max())
        assert len(batch) == 1 or len(batch) * longest <= 60
    assert len(spy.text_batches) > 1 and sum(map(len, spy.text_batches)) == len(run.items)

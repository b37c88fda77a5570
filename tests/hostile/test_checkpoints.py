"""Checkpoints: files named inside a folder stay inside it; hostile configs, texts, images and files end in
clear errors before any large allocation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.data.images import MAX_IMAGE_PIXELS
from analysis.data.load import load_dataset
from analysis.embedding.checkpoints import inspect_checkpoint, load_checkpoint
from analysis.embedding.dual_encoder import MAX_TEXT_TOKENS, DualEncoder
from analysis.embedding.encoders_native import PrecomputedEmbeddings
from analysis.embedding.engine import _open_image
from analysis.errors import CheckpointError, DatasetError
from analysis.runs.workspace import SAMPLE_CHECKPOINT
from tests.hostile import checkpoints as hostile


def test_index_json_cannot_name_shards_outside(tmp_path: Path) -> None:
    folder = hostile.clip_with_escaping_index(tmp_path / "allowed" / "clip", tmp_path / "allowed" / "elsewhere")
    with pytest.raises(CheckpointError, match="leads outside the checkpoint folder"):
        inspect_checkpoint(folder)


def test_linked_weights_outside_the_folder_are_refused(tmp_path: Path) -> None:
    folder = hostile.sample_with_linked_weights(tmp_path / "model", tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="leads outside the checkpoint folder"):
        inspect_checkpoint(folder)


def test_hugging_face_cache_snapshot_links_are_allowed(tmp_path: Path) -> None:
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (repo / "blobs" / name).write_bytes((SAMPLE_CHECKPOINT / name).read_bytes())
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / name)
    assert inspect_checkpoint(snapshot).kind == "negscope-dual-encoder"


def test_deeply_nested_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nested too deeply"):
        inspect_checkpoint(hostile.deep_config(tmp_path / "deep"))


def test_config_sizes_are_checked_against_the_weights_first(tmp_path: Path) -> None:
    folder = hostile.sample_with_huge_config(tmp_path / "huge")
    with pytest.raises(CheckpointError, match="does not match config.json: .*wrong shapes"):
        load_checkpoint(folder, device="cpu")


def test_native_text_model_truncates_long_texts() -> None:
    model = DualEncoder.from_folder(SAMPLE_CHECKPOINT)
    huge = "seven thin " * 1_000_000  # 11 MB, 2 million words
    tokens = model.tokenize(["one", huge])
    assert tokens.shape == (2, MAX_TEXT_TOKENS)
    assert (tokens[1] != 0).all() and (tokens[0, 1:] == 0).all()
    short = model.tokenize(["seven thin " * (MAX_TEXT_TOKENS // 2)])
    assert np.array_equal(short.numpy(), tokens[1:].numpy())


def test_huge_images_are_refused_on_their_header(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(hostile.huge_png())
    with Image.open(tmp_path / "big.png") as image:
        assert image.size[0] * image.size[1] > MAX_IMAGE_PIXELS
    with pytest.raises(DatasetError, match="12000 x 12000 pixels"):
        _open_image(tmp_path, "big.png")
    (tmp_path / "pairs.csv").write_text("anchor,positive\nbig.png,a caption\n")
    with pytest.raises(DatasetError, match="12000 x 12000 pixels"):
        load_dataset(tmp_path / "pairs.csv")


@pytest.mark.parametrize("name", sorted(hostile.BAD_NPZ))
def test_npz_that_is_not_a_zip(name: str, tmp_path: Path) -> None:
    path = tmp_path / "emb.npz"
    path.write_bytes(hostile.BAD_NPZ[name])
    with pytest.raises(CheckpointError, match="emb.npz") as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_precomputed_zero_rows_are_refused(tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": [0, 1, 2], "modality": ["text"] * 3, "content": ["a", "b", "c"], "key": ["x", "y", "z"]})
    vectors = np.ones((3, 4), dtype=np.float32)
    vectors[1] = 0
    encoder = PrecomputedEmbeddings(path=tmp_path / "e.npy", content_hash="0", vectors=vectors)
    with pytest.raises(CheckpointError, match="item 1 is all zeros"):
        encoder.aligned(items)


def test_nan_logit_scale_never_reaches_the_manifest(tmp_path: Path) -> None:
    import math

    import torch

    from analysis.embedding.engine import embed_to_run
    from analysis.runs.folder import load_run
    from tests.hostile.datasets import markup_dataset

    model = DualEncoder.from_folder(SAMPLE_CHECKPOINT)
    with torch.no_grad():
        model.logit_scale.fill_(math.nan)
    model.save(tmp_path / "nan_model")
    table = markup_dataset(tmp_path / "data", n_pairs=6)
    run_path = embed_to_run(table, tmp_path / "nan_model", out=tmp_path / "run", device="cpu")
    text = (Path(run_path) / "manifest.json").read_text()
    assert "NaN" not in text and json.loads(text)["logit_scale"] is None
    assert load_run(run_path).logit_scale is None


def test_clip_config_larger_than_its_weights_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.tiny_models import make_clip

    folder = make_clip(tmp_path / "clip")
    assert load_checkpoint(folder, device="cpu").kind == "hf-clip"
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["vocab_size"] = 50_000_000  # 800 M parameters of embeddings the weights do not hold
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match the weights"):
        load_checkpoint(folder, device="cpu")

"""NegScope's dual encoder: tokenizer, preprocessing, save/load round trip, and errors on bad folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.embedding.dual_encoder import (
    MODEL_TYPE,
    DualEncoder,
    DualEncoderConfig,
    is_dual_encoder_folder,
    split_words,
)
from analysis.errors import CheckpointError


def _model(seed: int = 0, channels: int = 1) -> DualEncoder:
    torch.manual_seed(seed)
    cfg = DualEncoderConfig(
        image_size=(8, 6),
        channels=channels,
        image_hidden=16,
        vocab=["a", "handwritten", "seven", "digit", "7"],
        text_hidden=8,
        embed_dim=5,
        logit_scale_init=10.0,
    )
    return DualEncoder(cfg)


def test_split_words_lowercases_and_drops_punctuation() -> None:
    assert split_words("The Digit SEVEN, written-thick!") == ["the", "digit", "seven", "written", "thick"]
    assert split_words("  ") == []


def test_tokenize_pads_with_zero_and_maps_unknown_to_one() -> None:
    model = _model()
    ids = model.tokenize(["A handwritten seven", "Digit 7 zebra", ""])
    assert ids.dtype == torch.long
    assert tuple(ids.shape) == (3, 3)
    # word vocab[i] -> i + 2
    assert ids[0].tolist() == [2, 3, 4]
    assert ids[1].tolist() == [5, 6, 1]
    assert ids[2].tolist() == [0, 0, 0]
    assert tuple(model.tokenize([""]).shape) == (1, 1)


def test_encode_text_is_mean_of_word_embeddings_then_mlp() -> None:
    model = _model()
    ids = model.tokenize(["seven digit", "seven digit seven digit a"])
    with torch.no_grad():
        out = model.encode_text(ids)
        emb = model.word_embeddings.weight.double().numpy()
        # slow reference: mean over the non-padding tokens, then the MLP
        ref_rows = []
        for row in ids.tolist():
            words = [t for t in row if t != 0]
            ref_rows.append(emb[words].mean(axis=0))
        ref = model.text_tower(torch.tensor(np.array(ref_rows), dtype=torch.float32))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    # padding does not change the result
    padded = torch.cat([ids[:1], torch.zeros((1, ids.shape[1] - ids[:1].shape[1]), dtype=torch.long)], dim=1)
    with torch.no_grad():
        np.testing.assert_allclose(model.encode_text(padded).numpy(), out[:1].numpy(), rtol=1e-6)


def test_preprocess_images_grayscale_and_rgb() -> None:
    img = Image.fromarray(np.full((16, 12, 3), 255, dtype=np.uint8))  # white, 12 wide x 16 high
    gray = _model(channels=1).preprocess_images([img, img.convert("L")])
    assert tuple(gray.shape) == (2, 1, 8, 6)
    assert gray.dtype == torch.float32
    np.testing.assert_allclose(gray.numpy(), 1.0)
    rgb = _model(channels=3).preprocess_images([img.convert("L")])
    assert tuple(rgb.shape) == (1, 3, 8, 6)
    small = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(8, 6))
    exact = _model().preprocess_images([small])
    np.testing.assert_allclose(exact[0, 0].numpy(), np.arange(48).reshape(8, 6) / 255.0, rtol=1e-6)


def test_encode_image_checks_shape() -> None:
    model = _model()
    assert model.encode_image(torch.rand(4, 1, 8, 6)).shape == (4, 5)
    with pytest.raises(ValueError, match="shape"):
        model.encode_image(torch.rand(4, 3, 8, 6))


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = _model(seed=3)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(21.5))
    folder = model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE
    assert is_dual_encoder_folder(folder)
    # the weights file is safetensors, not a pickle: an 8-byte little-endian header length then JSON
    raw = (folder / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_len])["__metadata__"]["model_type"] == MODEL_TYPE

    loaded = DualEncoder.from_folder(folder)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.logit_scale_value == pytest.approx(21.5, rel=1e-6)
    assert loaded.tau == pytest.approx(1 / 21.5, rel=1e-6)
    pixels = torch.rand(7, 1, 8, 6)
    texts = ["a handwritten seven", "digit 7", "something unknown", ""]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), loaded.encode_image(pixels))
        assert torch.equal(model.encode_text(model.tokenize(texts)), loaded.encode_text(loaded.tokenize(texts)))


def test_outputs_are_not_normalised() -> None:
    with torch.no_grad():
        out = _model().encode_image(torch.rand(6, 1, 8, 6))
    norms = out.norm(dim=1).numpy()
    assert not np.allclose(norms, 1.0)


def _write_good(tmp_path: Path) -> Path:
    return _model().save(tmp_path / "ckpt")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no_folder", "does not exist"),
        ("no_config", "no config.json"),
        ("bad_json", "cannot read"),
        ("wrong_type", "model_type"),
        ("missing_field", "missing config fields"),
        ("bad_value", "channels"),
        ("no_weights", "model.safetensors is missing"),
        ("garbage_weights", "safetensors"),
        ("wrong_shapes", "wrong shapes"),
        ("missing_tensor", "missing tensors"),
    ],
)
def test_bad_folders_raise_checkpoint_error(tmp_path: Path, damage: str, message: str) -> None:
    folder = _write_good(tmp_path)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if damage == "no_folder":
        folder = tmp_path / "nowhere"
    elif damage == "no_config":
        config_path.unlink()
    elif damage == "bad_json":
        config_path.write_text("{not json")
    elif damage == "wrong_type":
        config_path.write_text(json.dumps({**config, "model_type": "bert"}))
    elif damage == "missing_field":
        del config["embed_dim"]
        config_path.write_text(json.dumps(config))
    elif damage == "bad_value":
        config_path.write_text(json.dumps({**config, "channels": 2}))
    elif damage == "no_weights":
        (folder / "model.safetensors").unlink()
    elif damage == "garbage_weights":
        (folder / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file at all")
    elif damage == "wrong_shapes":
        config_path.write_text(json.dumps({**config, "embed_dim": 7}))
    elif damage == "missing_tensor":
        from safetensors.torch import load_file, save_file

        state = load_file(str(folder / "model.safetensors"))
        del state["logit_scale"]
        save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message):
        DualEncoder.from_folder(folder)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        DualEncoderConfig(vocab=["a", "a"])
    with pytest.raises(ValueError, match="single lower-case"):
        DualEncoderConfig(vocab=["Two words"])
    with pytest.raises(ValueError, match="embed_dim"):
        DualEncoderConfig(embed_dim=0)

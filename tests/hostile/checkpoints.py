"""Hostile checkpoints and images, written into a folder the test gives."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

from analysis.runs.workspace import SAMPLE_CHECKPOINT


def clip_with_escaping_index(folder: Path, outside: Path) -> Path:
    """A CLIP folder whose ``model.safetensors.index.json`` names a shard outside the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "weights.safetensors").write_bytes(b"\0" * 16)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    index = {"metadata": {}, "weight_map": {"logit_scale": f"../{outside.name}/weights.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def sample_with_linked_weights(folder: Path, outside: Path) -> Path:
    """The sample dual encoder, with ``model.safetensors`` a symbolic link to a copy outside the folder."""
    outside.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE_CHECKPOINT / "model.safetensors", outside / "model.safetensors")
    shutil.copy(SAMPLE_CHECKPOINT / "config.json", folder / "config.json")
    (folder / "model.safetensors").symlink_to(outside / "model.safetensors")
    return folder


def deep_config(folder: Path, depth: int = 100_000) -> Path:
    """A folder whose ``config.json`` is an array nested ``depth`` levels deep."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("[" * depth + "]" * depth)
    return folder


def sample_with_huge_config(folder: Path) -> Path:
    """The sample's weights with a config.json asking for an image tower of 2**36 units (16 TB of weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE_CHECKPOINT / "model.safetensors", folder / "model.safetensors")
    config = json.loads((SAMPLE_CHECKPOINT / "config.json").read_text())
    config["image_hidden"] = 2**36
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int = 12_000, height: int = 12_000) -> bytes:
    """A PNG of a few dozen bytes whose header says ``width`` x ``height`` (grayscale)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


#: Files named ``.npz`` that are not valid zip archives.
BAD_NPZ: dict[str, bytes] = {
    "text": b"just some text, not a zip\n",
    "zip-header-only": b"PK\x03\x04" + b"\0" * 40,
    "empty": b"",
}

"""NegScope's own tiny CLIP-style dual encoder (the bundled sample's model).

An image tower (a small MLP over the flattened pixels), a bag-of-words text tower (mean of word embeddings
over the non-padding tokens, then an MLP) and a learned logit scale stored as its logarithm, as in CLIP.

On disk a checkpoint is a folder::

    FOLDER/config.json         {"model_type": "negscope-dual-encoder", "format_version": 1, ...config fields}
    FOLDER/model.safetensors   the state dict (never a pickle)

The towers return raw (un-normalised) vectors; the embedding engine L2-normalises them.

Token ids: 0 is padding, 1 is an unknown word, and word ``vocab[i]`` has id ``i + 2``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from analysis.errors import CheckpointError

MODEL_TYPE = "negscope-dual-encoder"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PAD_ID = 0
UNK_ID = 1
N_SPECIAL = 2
MAX_LOGIT_SCALE = 100.0

_WORD = re.compile(r"[a-z0-9]+")
#: Words of a text the bag-of-words tower reads; the rest is cut off, so one huge text cannot make a batch
#: allocate (B, L, hidden) for an enormous L.
MAX_TEXT_TOKENS = 512


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words (runs of ASCII letters and digits; the rest separates)."""
    return _WORD.findall(str(text).lower())


@dataclass
class DualEncoderConfig:
    """Shape of a :class:`DualEncoder`.

    Attributes
    ----------
    image_size : tuple of int
        (H, W) the images are resized to.
    channels : int
        1 (grayscale) or 3 (RGB).
    image_hidden : int
        Width of the image tower's hidden layer.
    vocab : list of str
        Words of the bag-of-words text tower (lower case, unique); word ``vocab[i]`` has token id ``i + 2``.
    text_hidden : int
        Width of the word embeddings and of the text tower's hidden layer.
    embed_dim : int
        D, the shared embedding dimension.
    logit_scale_init : float
        Initial logit scale (1 / tau); stored as its logarithm.
    """

    image_size: tuple[int, int] = (8, 8)
    channels: int = 1
    image_hidden: int = 256
    vocab: list[str] = field(default_factory=list)
    text_hidden: int = 64
    embed_dim: int = 64
    logit_scale_init: float = 1.0 / 0.07

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.vocab = [str(w) for w in self.vocab]
        self.validate()

    def validate(self) -> None:
        """Check every field.

        Raises
        ------
        ValueError
            When a field is out of range.
        """
        h, w = self.image_size
        if h < 1 or w < 1:
            raise ValueError(f"image_size must be two positive integers, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("image_hidden", "text_hidden", "embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab has duplicate words")
        bad = [w for w in self.vocab if split_words(w) != [w]]
        if bad:
            raise ValueError(f"vocab words must be single lower-case words, got {bad[:3]}")
        if not (isinstance(self.logit_scale_init, int | float) and self.logit_scale_init > 0):
            raise ValueError(f"logit_scale_init must be a positive number, got {self.logit_scale_init!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with ``model_type`` and ``format_version``."""
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualEncoderConfig:
        """Build a config from :meth:`to_dict`'s output.

        Raises
        ------
        ValueError
            When ``model_type`` is wrong, a field is missing or unknown, or a value is out of range.
        """
        if not isinstance(data, dict):
            raise ValueError("the config is not a JSON object")
        if data.get("model_type") != MODEL_TYPE:
            raise ValueError(f"model_type is {data.get('model_type')!r}, expected {MODEL_TYPE!r}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version {version!r} is not supported (this NegScope reads {FORMAT_VERSION})")
        fields = {k: v for k, v in data.items() if k not in ("model_type", "format_version")}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        missing = sorted(known - set(fields))
        if missing:
            raise ValueError(f"missing config fields {missing}")
        size = fields["image_size"]
        if not (isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise ValueError(f"image_size must be [H, W], got {size!r}")
        if not (isinstance(fields["vocab"], list) and all(isinstance(w, str) for w in fields["vocab"])):
            raise ValueError("vocab must be a list of strings")
        return cls(**fields)


class DualEncoder(nn.Module):
    """Tiny CLIP-style dual encoder: MLP image tower, bag-of-words text tower, learned logit scale.

    Parameters
    ----------
    config : DualEncoderConfig
        Sizes and vocabulary.
    """

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        h, w = config.image_size
        n_pixels = config.channels * h * w
        self.image_tower = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_pixels, config.image_hidden),
            nn.GELU(),
            nn.Linear(config.image_hidden, config.embed_dim),
        )
        self.word_embeddings = nn.Embedding(len(config.vocab) + N_SPECIAL, config.text_hidden, padding_idx=PAD_ID)
        self.text_tower = nn.Sequential(
            nn.Linear(config.text_hidden, config.text_hidden),
            nn.GELU(),
            nn.Linear(config.text_hidden, config.embed_dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init), dtype=torch.float32))
        self._word_ids = {word: i + N_SPECIAL for i, word in enumerate(config.vocab)}

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.logit_scale.device

    @property
    def logit_scale_value(self) -> float:
        """The learned logit scale exp(log_scale), clamped to [1, 100] as used in training (= 1 / tau)."""
        return float(self.logit_scale.detach().exp().clamp(1.0, MAX_LOGIT_SCALE).item())

    @property
    def tau(self) -> float:
        """The learned temperature 1 / logit_scale."""
        return 1.0 / self.logit_scale_value

    # ------------------------------------------------------------------ encoders
    def encode_image(self, pixels: Tensor) -> Tensor:
        """Embed images.

        Parameters
        ----------
        pixels : Tensor
            (B, C, H, W) float in [0, 1], as made by :meth:`preprocess_images`.

        Returns
        -------
        Tensor
            (B, D) un-normalised embeddings.
        """
        c = self.config.channels
        h, w = self.config.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (c, h, w):
            raise ValueError(f"pixels must have shape (B, {c}, {h}, {w}), got {tuple(pixels.shape)}")
        return self.image_tower(pixels.to(self.logit_scale.dtype))

    def encode_text(self, token_ids: Tensor) -> Tensor:
        """Embed tokenised texts: mean of the word embeddings over non-padding tokens, then an MLP.

        Parameters
        ----------
        token_ids : LongTensor
            (B, L) token ids from :meth:`tokenize`, 0 = padding.

        Returns
        -------
        Tensor
            (B, D) un-normalised embeddings.
        """
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must have shape (B, L), got {tuple(token_ids.shape)}")
        mask = (token_ids != PAD_ID).unsqueeze(-1).to(self.word_embeddings.weight.dtype)
        summed = (self.word_embeddings(token_ids) * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp_min(1.0)
        return self.text_tower(mean)

    def forward(self, pixels: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Embed a batch of images and a batch of texts; returns ((B, D), (B', D)) un-normalised."""
        return self.encode_image(pixels), self.encode_text(token_ids)

    # ------------------------------------------------------------------ preprocessing
    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Turn texts into padded token ids.

        Parameters
        ----------
        texts : sequence of str
            B texts; each is lower-cased and split into words, unknown words get id 1.

        Returns
        -------
        LongTensor
            (B, L) with L the longest text in the batch (at least 1, at most :data:`MAX_TEXT_TOKENS`: longer
            texts are truncated, as sentence-transformers truncates to a model's maximum length); 0 pads the
            shorter ones.
        """
        rows = [
            [self._word_ids.get(m.group(), UNK_ID) for m in islice(_WORD.finditer(str(text).lower()), MAX_TEXT_TOKENS)]
            for text in texts
        ]
        length = max([len(r) for r in rows] + [1])
        out = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def preprocess_images(self, images: Sequence[Image.Image]) -> Tensor:
        """Convert PIL images to the tower's input.

        Parameters
        ----------
        images : sequence of PIL.Image.Image
            B images of any size and mode; converted to grayscale or RGB per the config and resized
            (bilinear) to ``image_size``.

        Returns
        -------
        Tensor
            (B, C, H, W) float32 in [0, 1].
        """
        h, w = self.config.image_size
        mode = "L" if self.config.channels == 1 else "RGB"
        out = np.empty((len(images), self.config.channels, h, w), dtype=np.float32)
        for i, image in enumerate(images):
            img = image.convert(mode)
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
            out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(out)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created if missing).

        Returns
        -------
        Path
            The folder.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=1) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"model_type": MODEL_TYPE})
        return folder

    @classmethod
    def from_folder(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> DualEncoder:
        """Load a checkpoint folder written by :meth:`save`, in eval mode.

        Parameters
        ----------
        folder : str or Path
            Folder holding ``config.json`` and ``model.safetensors``.
        device : str or torch.device
            Where to put the weights.

        Raises
        ------
        CheckpointError
            When the folder, the config or the weights are missing, unreadable or do not match.
        """
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"checkpoint folder {folder} does not exist")
        config_path = folder / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{folder} is not a NegScope dual-encoder checkpoint: no {CONFIG_NAME}")
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
        except RecursionError:
            raise CheckpointError(f"cannot read {config_path}: the JSON is nested too deeply") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read {config_path}: {exc}") from exc
        try:
            config = DualEncoderConfig.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{config_path}: {exc}") from exc
        weights_path = folder / WEIGHTS_NAME
        if not weights_path.is_file():
            raise CheckpointError(f"{folder}: {WEIGHTS_NAME} is missing")
        # Compare the shapes the config asks for with the file's header before allocating anything: a hostile
        # config.json could otherwise make the model allocate gigabytes that the weights never fill.
        expected = expected_shapes(config)
        try:
            with safe_open(str(weights_path), framework="pt", device="cpu") as handle:
                got = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read {weights_path} as safetensors: {exc}") from exc
        _check_shapes(expected, got, weights_path)
        try:
            state = load_file(str(weights_path), device="cpu")
        except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read {weights_path} as safetensors: {exc}") from exc
        if not all(torch.is_floating_point(v) for v in state.values()):
            raise CheckpointError(f"{weights_path}: every tensor must be floating point")
        model = cls(config)
        model.load_state_dict(state)
        return model.to(device).eval()


def expected_shapes(config: DualEncoderConfig) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a :class:`DualEncoder` with this config, computed without allocating weights.

    Raises
    ------
    CheckpointError
        When the config is invalid.
    """
    try:
        with torch.device("meta"):
            model = DualEncoder(config)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"the dual-encoder config is invalid: {exc}") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_shapes(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]], source: Path | str) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match {CONFIG_NAME}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
        )
    wrong = [f"{k} {got[k]} (expected {expected[k]})" for k in expected if got[k] != expected[k]]
    if wrong:
        raise CheckpointError(f"{source} does not match {CONFIG_NAME}: wrong shapes {wrong[:3]}")


def check_state_dict_shapes(config: DualEncoderConfig, state: dict[str, Tensor], source: Path | str) -> None:
    """Refuse a state dict whose tensor names or shapes differ from what ``config`` builds (before building it)."""
    _check_shapes(expected_shapes(config), {k: tuple(v.shape) for k, v in state.items()}, source)


def is_dual_encoder_folder(folder: str | Path) -> bool:
    """True when ``folder/config.json`` exists and declares ``model_type`` = ``negscope-dual-encoder``."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("model_type") == MODEL_TYPE

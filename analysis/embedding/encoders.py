"""The ``Encoder`` abstraction: one interface over every kind of checkpoint NegScope can run.

An encoder turns a batch of texts or a batch of PIL images into a (B, D) tensor of raw (not yet
normalised) embeddings; the embedding engine (:mod:`analysis.embedding.engine`) batches, normalises and stores them.
Concrete encoders live in :mod:`analysis.embedding.encoders_native` (NegScope's dual encoder, precomputed embeddings)
and :mod:`analysis.embedding.encoders_hf` (sentence-transformers, Hugging Face CLIP / SigLIP); pick one with
:func:`analysis.embedding.checkpoints.load_checkpoint`.

Device and precision:

- ``device="auto"``: CUDA, then Apple MPS, then CPU. Any torch device string overrides it.
- ``precision="auto"``: on CUDA, bf16 autocast where the GPU supports it, fp16 autocast otherwise; fp32
  elsewhere. ``"fp32"``, ``"fp16"`` and ``"bf16"`` force one.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from analysis.choices import PRECISIONS as PRECISIONS
from analysis.errors import CheckpointError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(exc: BaseException | str, *, limit: int = 300) -> str:
    """Collapse an exception's message (or a string) to one line of at most ``limit`` characters."""
    text = " ".join(_ANSI.sub("", str(exc)).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Largest JSON file (config.json, an index, modules.json) read from a checkpoint.
MAX_JSON_BYTES = 64 * 1024 * 1024


def read_json(path: Path) -> Any:
    """Parse a checkpoint's JSON file, turning every failure into a one-line CheckpointError.

    Refused: a file over :data:`MAX_JSON_BYTES`, bytes that are not UTF-8, invalid JSON, JSON nested too deeply
    for the parser (a ``RecursionError``).
    """
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path} is {size:,} bytes; a checkpoint's JSON file may hold {MAX_JSON_BYTES:,}")
        return json.loads(path.read_bytes().decode("utf-8"))
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path} is not valid JSON (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path} as JSON: {one_line(exc)}") from None


def pickle_refusal_reason(exc: BaseException) -> str | None:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words; None when ``exc`` is no such refusal."""
    text = str(exc)
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match:
        return f"it references the Python object {match.group(1)}"
    if re.search(r"invalid load key|Unsupported operand|could not find MARK|pickle data was truncated", text):
        return "it is not a torch or pickle file"
    if "Weights only load failed" in text:
        return "it holds more than tensors"
    return None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Pick the torch device to run on.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU) or any torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"``).

    Returns
    -------
    torch.device

    Raises
    ------
    CheckpointError
        When the string is not a device, or names one this machine does not have.
    """
    if isinstance(device, torch.device):
        resolved = device
    else:
        name = str(device or "auto").strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            resolved = torch.device(name)
        except RuntimeError as exc:
            raise CheckpointError(f"unknown device {device!r}: use auto, cpu, cuda or mps") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise CheckpointError(f"device {str(device)!r} was asked for, but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise CheckpointError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} GPU(s) here")
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise CheckpointError(f"device {str(device)!r} was asked for, but MPS is not available on this machine")
    elif resolved.type != "cpu":
        raise CheckpointError(f"device {str(device)!r} is not supported: use auto, cpu, cuda or mps")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Pick the compute dtype for ``device``.

    Parameters
    ----------
    precision : {"auto", "fp32", "fp16", "bf16"}
        ``"auto"`` is bf16 autocast on a CUDA GPU that supports it, fp16 autocast on other CUDA GPUs, and fp32
        on CPU and MPS.
    device : torch.device

    Returns
    -------
    torch.dtype
        ``torch.float32``, ``torch.float16`` or ``torch.bfloat16``.

    Raises
    ------
    CheckpointError
        For an unknown precision name.
    """
    name = str(precision or "auto").strip().lower()
    if name not in PRECISIONS:
        raise CheckpointError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"``, ``"float16"`` or ``"bfloat16"``."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


class Encoder:
    """A loaded checkpoint that embeds texts and/or images.

    Attributes
    ----------
    kind : str
        ``"negscope-dual-encoder"``, ``"sentence-transformers"``, ``"hf-clip"`` or ``"precomputed"``.
    modalities : frozenset of str
        What it can embed: a subset of {"text", "image"} (empty for precomputed embeddings).
    logit_scale : float or None
        The learned logit scale (1 / tau) where the checkpoint has one.
    device : torch.device
        Where the model runs.
    dtype : torch.dtype
        Compute precision (fp32, or the fp16 / bf16 autocast type).
    content_hash : str
        sha256 over the checkpoint's files' bytes (see :func:`analysis.embedding.checkpoints.checkpoint_hash`).
    path : Path
        The checkpoint file or folder.
    cpu_token_budget : int or None
        On CPU, the most padded tokens per text batch, or None.
    """

    kind: str = "encoder"
    #: On CPU, the most padded tokens per text batch (None: only ``batch_size`` limits a batch). Set by
    #: encoders whose :meth:`text_lengths` count tokens; see :func:`analysis.embedding.engine.length_batches`.
    cpu_token_budget: int | None = None

    def __init__(
        self,
        *,
        path: Path,
        content_hash: str,
        modalities: frozenset[str],
        device: torch.device,
        dtype: torch.dtype,
        logit_scale: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.content_hash = content_hash
        self.modalities = frozenset(modalities)
        self.device = device
        self.dtype = dtype
        self.logit_scale = logit_scale

    def __repr__(self) -> str:
        mods = "+".join(sorted(self.modalities)) or "none"
        return f"{type(self).__name__}(kind={self.kind!r}, path={str(self.path)!r}, modalities={mods}, device={self.device})"

    @property
    def dtype_name(self) -> str:
        """The compute dtype as a string (``"float32"``, ``"float16"``, ``"bfloat16"``)."""
        return dtype_name(self.dtype)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to :attr:`dtype` on :attr:`device` when it is not fp32; a no-op otherwise."""
        if self.dtype == torch.float32:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield

    def text_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Lengths used to sort texts before batching, so that each batch pads little.

        Parameters
        ----------
        texts : sequence of str
            N texts.

        Returns
        -------
        numpy.ndarray
            int64 (N,); here the number of characters (tokenizer-based encoders count tokens).
        """
        return np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Embed a batch of texts.

        Parameters
        ----------
        texts : sequence of str
            B texts.

        Returns
        -------
        Tensor
            (B, D) raw embeddings (any float dtype, on :attr:`device`).

        Raises
        ------
        CheckpointError
            When this checkpoint cannot embed text.
        """
        raise CheckpointError(f"the {self.kind} checkpoint {self.path} cannot embed text")

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """Embed a batch of decoded images.

        Parameters
        ----------
        images : sequence of PIL.Image.Image
            B images (any size; the encoder resizes and converts as its model needs).

        Returns
        -------
        Tensor
            (B, D) raw embeddings (any float dtype, on :attr:`device`).

        Raises
        ------
        CheckpointError
            When this checkpoint cannot embed images.
        """
        raise CheckpointError(f"the {self.kind} checkpoint {self.path} cannot embed images")

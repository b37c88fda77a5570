"""Encoders over optional packages: sentence-transformers (text) and Hugging Face CLIP / SigLIP (text + image).

Both are imported only when such a checkpoint is loaded; when the package is missing, loading raises a
``CheckpointError`` that says what to install. Models are read from the local folder only
(``local_files_only=True``, never remote code), so nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from analysis.embedding.encoders import Encoder, one_line, pickle_refusal_reason
from analysis.errors import CheckpointError

ST_MARKERS = ("modules.json", "config_sentence_transformers.json")
HF_DUAL_MODEL_TYPES = ("clip", "siglip", "siglip2", "chinese_clip")
#: Padded tokens per text batch on CPU (measured on all-MiniLM-L6-v2: batches of about 2k tokens run fastest).
CPU_TOKEN_BUDGET = 2048


def _load_error(folder: Path, what: str, exc: BaseException) -> CheckpointError:
    """A one-line CheckpointError for a failed third-party load; unsafe pickles get the 'not unpickled' message."""
    cause: BaseException | None = exc
    while cause is not None:
        reason = pickle_refusal_reason(cause)
        if reason is not None:
            return CheckpointError(
                f"{folder} holds a weights file that is not a safe checkpoint: torch.load(weights_only=True) "
                f"refused it ({reason}), so it was not unpickled; use model.safetensors"
            )
        cause = cause.__cause__ or cause.__context__
    return CheckpointError(f"cannot load the {what} {folder}: {one_line(exc)}")


def _import_error(package: str) -> CheckpointError:
    return CheckpointError(
        f"this checkpoint needs the optional package {package}: install {package}: pip install {package}"
    )


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model folder (text only).

    Texts are preprocessed per batch with the model's own tokenizer (and its default prompt, when the model
    declares one), then run through the full module pipeline (transformer, pooling, dense, normalise ...).
    The engine sorts texts by length first, so each batch pads little.
    """

    kind = "sentence-transformers"
    cpu_token_budget = CPU_TOKEN_BUDGET

    def __init__(self, folder: Path, *, content_hash: str, device: torch.device, dtype: torch.dtype) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise _import_error("sentence-transformers") from exc
        try:
            model = SentenceTransformer(str(folder), device=str(device), local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # third-party loader: any failure is a bad checkpoint for the user
            raise _load_error(folder, "sentence-transformers model", exc) from exc
        if not isinstance(getattr(model, "max_seq_length", None), int) or not 0 < model.max_seq_length < 1_000_000:
            model.max_seq_length = 512  # no (sane) limit in the folder: never pad a batch to a huge text
        self.model = model.eval()
        name = getattr(model, "default_prompt_name", None)
        self.prompt: str | None = (getattr(model, "prompts", None) or {}).get(name) if name else None
        super().__init__(
            path=folder,
            content_hash=content_hash,
            modalities=frozenset({"text"}),
            device=device,
            dtype=dtype,
            logit_scale=None,
        )

    def text_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts (after truncation) of ``texts``: sorting by them makes most batches pad-free."""
        lengths = _token_lengths(getattr(self.model, "tokenizer", None), texts, self.model.max_seq_length)
        return lengths if lengths is not None else super().text_lengths(texts)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """(B, D) text embeddings; see :meth:`Encoder.encode_texts`."""
        features = self.model.preprocess(list(texts), prompt=self.prompt)
        features = {
            k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in features.items()
        }
        with self.autocast():
            return self.model(features)["sentence_embedding"]


class HFDualEncoder(Encoder):
    """A Hugging Face CLIP or SigLIP folder (``save_pretrained`` output) through ``transformers``.

    Texts go through the folder's tokenizer (padded to the batch's longest text for CLIP, to ``max_length``
    for SigLIP, which was trained that way), images through its image processor; the embeddings are
    ``get_text_features`` / ``get_image_features``. The logit scale is ``exp(model.logit_scale)``.
    """

    kind = "hf-clip"
    cpu_token_budget = CPU_TOKEN_BUDGET

    def __init__(self, folder: Path, *, content_hash: str, device: torch.device, dtype: torch.dtype) -> None:
        try:
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
        except ImportError as exc:
            raise _import_error("transformers") from exc
        check_config_size(folder)
        try:
            model = AutoModel.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # third-party loader: any failure is a bad checkpoint for the user
            raise _load_error(folder, "Hugging Face model", exc) from exc
        try:
            image_processor = AutoImageProcessor.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            )
        except Exception:  # a text-only export: images are then refused with a clear message
            image_processor = None
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        model_type = str(getattr(model.config, "model_type", ""))
        self.pad_to_max = model_type.startswith("siglip")
        self.max_length = _text_max_length(model, tokenizer)
        scale = getattr(model, "logit_scale", None)
        logit_scale = float(scale.detach().float().exp().item()) if isinstance(scale, Tensor) else None
        super().__init__(
            path=folder,
            content_hash=content_hash,
            modalities=frozenset({"text", "image"} if image_processor is not None else {"text"}),
            device=device,
            dtype=dtype,
            logit_scale=logit_scale,
        )

    def text_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts (after truncation) of ``texts``; see :meth:`Encoder.text_lengths`."""
        lengths = _token_lengths(self.tokenizer, texts, self.max_length)
        return lengths if lengths is not None else super().text_lengths(texts)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """(B, D) text embeddings; see :meth:`Encoder.encode_texts`."""
        inputs = self.tokenizer(
            list(texts),
            padding="max_length" if self.pad_to_max else True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items() if k != "token_type_ids"}
        with self.autocast():
            return _features(self.model.get_text_features(**inputs))

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """(B, D) image embeddings; see :meth:`Encoder.encode_images`."""
        if self.image_processor is None:
            return super().encode_images(images)
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        inputs = self.image_processor(images=rgb, return_tensors="pt")
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items() if isinstance(v, Tensor)}
        with self.autocast():
            return _features(self.model.get_image_features(**inputs))


def _token_lengths(
    tokenizer: Any, texts: Sequence[str], max_length: int | None, *, chunk: int = 4096
) -> np.ndarray | None:
    """Token counts of ``texts`` with special tokens, truncated to ``max_length``; None if the tokenizer balks.

    Returns
    -------
    numpy.ndarray or None
        int64 (N,).
    """
    if tokenizer is None or not callable(tokenizer):
        return None
    out = np.empty(len(texts), dtype=np.int64)
    try:
        for start in range(0, len(texts), chunk):
            part = list(texts[start : start + chunk])
            enc = tokenizer(
                part,
                add_special_tokens=True,
                truncation=max_length is not None,
                max_length=max_length,
                return_length=True,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            out[start : start + len(part)] = np.asarray(enc["length"], dtype=np.int64)
    except Exception:  # a tokenizer without return_length: fall back to character counts
        return None
    return out


def _features(output: Any) -> Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose ``pooler_output`` it is (5)."""
    if isinstance(output, Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    return output[0]


def _text_max_length(model: Any, tokenizer: Any) -> int:
    config = getattr(model.config, "text_config", None)
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    tok = int(getattr(tokenizer, "model_max_length", 0) or 0)
    candidates = [v for v in (limit, tok) if 0 < v < 1_000_000]
    return min(candidates) if candidates else 77


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def check_config_size(folder: Path) -> None:
    """Refuse a ``config.json`` that asks for more parameters than the folder's weight files can hold.

    The model is built on PyTorch's ``meta`` device (shapes only, no memory) and its parameter count compared
    with the bytes of the weight files (at least one byte per parameter): a hostile config cannot make
    ``from_pretrained`` allocate (and randomly initialise) gigabytes the weights never fill.

    Raises
    ------
    CheckpointError
        When the config cannot be read or asks for more parameters than the weights hold.
    """
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        with torch.device("meta"):
            meta = AutoModel.from_config(config, trust_remote_code=False)
    except RecursionError:
        raise CheckpointError(f"{folder}/config.json is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - third-party loader: any failure is a bad config for the user
        raise _load_error(folder, "Hugging Face config", exc) from exc
    params = sum(p.numel() for p in meta.parameters())
    stored = sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and f.suffix.lower() in _WEIGHT_SUFFIXES)
    if params > stored * 1.05 + 1_000_000:
        raise CheckpointError(
            f"{folder}/config.json describes a model of {params:,} parameters, but the folder's weight files hold "
            f"{stored:,} bytes; the config does not match the weights (refused before allocating anything)"
        )


def hf_model_type(folder: Path) -> str | None:
    """``model_type`` from ``folder/config.json``, or None when there is none or it cannot be read."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise CheckpointError(f"{path} is not valid JSON (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    value = data.get("model_type") if isinstance(data, dict) else None
    return str(value) if value is not None else None

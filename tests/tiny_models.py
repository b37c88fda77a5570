"""Tiny real checkpoints and datasets built inside the tests (random weights, no download).

Used by ``test_checkpoints.py``, ``test_engine.py``, ``test_cli_embed.py`` and ``test_fn_one_to_many.py``.
"""

from __future__ import annotations

import builtins
import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from analysis.embedding.dual_encoder import DualEncoder, DualEncoderConfig

WORDS = [
    "a",
    "the",
    "photo",
    "of",
    "cat",
    "dog",
    "digit",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "thick",
    "thin",
    "slanted",
    "small",
    "large",
    "drawing",
    "handwritten",
    "image",
    "picture",
    "with",
    "and",
]


def caption(rng: random.Random, *, low: int = 2, high: int = 14) -> str:
    """A caption of ``low``..``high`` words from :data:`WORDS`."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def make_dual_encoder(folder: Path, *, seed: int = 0, logit_scale: float = 12.5) -> DualEncoder:
    """Save a tiny random NegScope dual encoder (8x8 grayscale images, :data:`WORDS` vocabulary) to ``folder``."""
    torch.manual_seed(seed)
    config = DualEncoderConfig(
        image_size=(8, 8),
        channels=1,
        image_hidden=16,
        vocab=sorted(set(WORDS)),
        text_hidden=8,
        embed_dim=6,
        logit_scale_init=logit_scale,
    )
    model = DualEncoder(config).eval()
    model.save(folder)
    return model


def make_image_dataset(folder: Path, *, n_pairs: int = 12, k: int = 2, seed: int = 0, size: int = 8) -> Path:
    """Write ``pairs.csv`` with image anchors (PNG files under ``images/``), caption positives and ``k`` negatives.

    Returns
    -------
    Path
        The CSV file.
    """
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    captions = [f"{caption(rng)} {i}" for i in range(n_pairs)]
    for i in range(n_pairs):
        pixels = (nrng.random((size, size)) * 255).astype(np.uint8)
        Image.fromarray(pixels).convert("RGB" if i % 2 else "L").save(folder / "images" / f"img_{i}.png")
        row = {"id": i, "anchor": f"images/img_{i}.png", "positive": captions[i], "label": str(i % 3)}
        for j in range(k):
            row[f"negative_{j + 1}"] = captions[(i + j + 1) % n_pairs]
        rows.append(row)
    path = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def make_text_dataset(folder: Path, *, n_pairs: int = 10, seed: int = 0, low: int = 1, high: int = 20) -> Path:
    """Write ``pairs.csv`` with text anchors and positives of varied lengths (every text distinct)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"anchor": f"{caption(rng, low=low, high=high)} q{i}", "positive": f"{caption(rng, low=low, high=high)} d{i}"}
        for i in range(n_pairs)
    ]
    path = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _bert_vocab() -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), *[f"##{c}" for c in "0123456789"], *"qd"]


def _tiny_bert(folder: Path, **config: float) -> tuple:
    """Write the tiny vocabulary into ``folder``; return its BERT tokenizer and a 1-layer, 16-wide ``BertConfig``
    (``config`` adds or overrides fields, e.g. ``num_labels=1``)."""
    from transformers import BertConfig, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    fields = {
        "vocab_size": len(vocab),
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 64,
        **config,
    }
    return tokenizer, BertConfig(**fields)


def make_cross_encoder(folder: Path, *, seed: int = 0) -> Path:
    """A tiny randomly initialised BERT sequence classifier with one output, saved with safetensors."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer, config = _tiny_bert(folder, num_labels=1, initializer_range=0.5)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_sentence_transformer(folder: Path, *, seed: int = 0) -> Path:
    """Save a tiny randomly initialised sentence-transformers model (BERT, 1 layer, mean pooling) to ``folder``."""
    from transformers import BertModel

    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Pooling, Transformer

    torch.manual_seed(seed)
    base = folder.parent / f".{folder.name}-bert"
    tokenizer, config = _tiny_bert(base)
    BertModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    transformer = Transformer(str(base), max_seq_length=48)
    pooling = Pooling(16, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder))
    return folder


def make_clip(folder: Path, *, seed: int = 0, logit_scale: float = 20.0) -> Path:
    """Save a tiny random Hugging Face CLIP model, a word-level tokenizer and an image processor to ``folder``."""
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers import models as tok_models
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    special = ["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"]
    words = [*special, *sorted(set(WORDS)), *[str(i) for i in range(100)]]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 2), ("<|endoftext|>", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=24,
    )
    config = CLIPConfig(
        text_config={
            "vocab_size": len(words),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 24,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    model = CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


class PlantedPayload:
    """Unpickling this calls ``open(marker, "w")``: a file appears if anything ever unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def plant_pickle(path: Path, marker: Path) -> Path:
    """Write a torch checkpoint whose unpickling would create ``marker`` (next to a real-looking state dict)."""
    torch.save({"weight": torch.zeros(2, 2), "payload": PlantedPayload(marker)}, path)
    return path


def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as JSON to ``path``."""
    path.write_text(json.dumps(data))
    return path

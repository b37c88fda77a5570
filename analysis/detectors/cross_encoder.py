"""A cross-encoder judge for false-negative candidates (as sentence-transformers' ``mine_hard_negatives(
cross_encoder=...)`` and RocketQA's denoising use one).

A cross-encoder reads the anchor and the candidate together and gives one relevance score, usually far more
accurate than the dot product of two separate embeddings. NegScope scores (anchor, candidate) and (anchor,
positive) with it for the highest-ranked candidates (``Settings.judge_top``) and adds

    ``judge_diff`` = judge(a, c) - judge(a, p)

to the evidence (a robust z-score against the listed negatives, weight ``Weights.judge``). As a filter,
:func:`judge_flags` marks candidates the judge scores at least as high as the positive, less a margin:
``judge(a, c) >= judge(a, p) - margin``, the rule with which RocketQA drops denoised negatives.

The folder is a sentence-transformers CrossEncoder or a Hugging Face sequence-classification model folder
with one output (``config.json`` and ``model.safetensors``); it is loaded from local files only, without
remote code, and a folder without safetensors weights is refused (no pickle is ever loaded).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import NegScopeError


class CrossEncoderJudge:
    """Scores (anchor text, candidate text) pairs with a local CrossEncoder folder.

    Parameters
    ----------
    folder : str or Path
        The model folder (see the module docstring).
    batch_size : int
        Pairs per forward pass.
    device : str
        'cpu', 'cuda', ...
    max_length : int, optional
        Tokens per pair (default: the model's).

    Raises
    ------
    NegScopeError
        When the folder is missing, holds no ``config.json`` or no safetensors weights, or does not load.
    """

    def __init__(
        self, folder: str | Path, *, batch_size: int = 32, device: str = "cpu", max_length: int | None = None
    ) -> None:
        path = Path(folder)
        if not path.is_dir() or not (path / "config.json").is_file():
            raise NegScopeError(f"{path} is not a cross-encoder folder (a folder with config.json)")
        if not any(path.glob("*.safetensors")):
            raise NegScopeError(f"{path} holds no .safetensors weights; other weight files are not loaded (pickle)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import CrossEncoder

            self.model = CrossEncoder(
                str(path),
                device=device,
                max_length=max_length,
                local_files_only=True,
                trust_remote_code=False,
                num_labels=1,
                model_kwargs={"use_safetensors": True},
            )
        except Exception as exc:  # noqa: BLE001 - any loading failure is the user's folder
            raise NegScopeError(
                f"the cross-encoder in {path} does not load: {str(exc).splitlines()[0][:300]}"
            ) from None
        self.batch_size = int(batch_size)
        self.folder = path

    def __call__(self, anchors: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """(M,) float64 raw scores (logits, no activation) of each (anchors[m], candidates[m])."""
        if len(anchors) != len(candidates):
            raise NegScopeError(f"{len(anchors)} anchors but {len(candidates)} candidates")
        if not len(anchors):
            return np.zeros(0)
        import torch

        pairs = [(str(x), str(y)) for x, y in zip(anchors, candidates, strict=True)]
        scores = self.model.predict(
            pairs,
            batch_size=self.batch_size,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(scores, dtype=np.float64).reshape(len(pairs))


def judge_flags(table: pd.DataFrame, *, margin: float = 0.0) -> np.ndarray:
    """(M,) bool: ``judge_candidate >= judge_positive - margin`` (False where either was not judged).

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`analysis.detectors.false_negatives.find_false_negatives` table run with a judge.
    margin : float
        In the judge's score units.
    """
    if "judge_candidate" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    cand = table["judge_candidate"].to_numpy(np.float64)
    pos = table["judge_positive"].to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(cand) & np.isfinite(pos) & (cand >= pos - float(margin))

"""Synthetic run folders for tests: clustered embeddings with planted ground truth.

``make_synthetic_run`` builds a two-modality (image anchors, text positives) or one-modality run whose
items come in ``n_classes`` clusters, with a known set of mismatched pairs and false negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs.folder import Run, load_run, write_run


@dataclass(frozen=True)
class SyntheticTruth:
    """Planted ground truth of a synthetic run.

    Attributes
    ----------
    pair_class : numpy.ndarray
        (P,) class of each pair's anchor.
    mismatched : numpy.ndarray
        (P,) bool, True where the positive belongs to another class.
    false_negative : pandas.DataFrame
        ``pair_id``, ``negative_id``, ``is_false_negative`` for every given negative.
    """

    pair_class: np.ndarray
    mismatched: np.ndarray
    false_negative: pd.DataFrame


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_unit_vectors(
    rng: np.random.Generator, n: int, d: int, *, n_clusters: int = 40, spread: float = 0.3
) -> np.ndarray:
    """(n, d) float32 unit rows clustered like real embeddings: ``n_clusters`` Gaussian centres drawn from
    ``rng``, each row a random centre plus ``spread`` Gaussian noise, normalised (``rng`` is advanced, so a
    caller's later draws stay seeded)."""
    centres = rng.normal(size=(n_clusters, d))
    return _unit(centres[rng.integers(0, n_clusters, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def make_synthetic_run(
    path: Path,
    *,
    n_pairs: int = 200,
    dim: int = 16,
    n_classes: int = 10,
    k: int = 4,
    two_modalities: bool = True,
    gap: float = 0.5,
    noise: float = 0.3,
    mismatch_rate: float = 0.05,
    seed: int = 0,
) -> tuple[Run, SyntheticTruth]:
    """Write and load a synthetic run folder.

    Parameters
    ----------
    path : Path
        Folder to write.
    n_pairs, dim, n_classes, k : int
        P pairs, D dims, classes, K given negatives per pair (captions of other pairs' positives).
    two_modalities : bool
        Image anchors and text positives (True) or text on both sides.
    gap : float
        Size of the offset between the modalities (before normalisation).
    noise : float
        Within-class spread.
    mismatch_rate : float
        Share of pairs whose positive is swapped for one of another class.
    seed : int
        Random seed.
    """
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(n_classes, dim)))
    cls = rng.integers(0, n_classes, size=n_pairs)
    offset = _unit(rng.normal(size=(1, dim))) * gap if two_modalities else np.zeros((1, dim))
    anchors = _unit(centres[cls] + noise * rng.normal(size=(n_pairs, dim)) + offset / 2)
    positives = _unit(centres[cls] + noise * rng.normal(size=(n_pairs, dim)) - offset / 2)
    pos_class = cls.copy()
    mismatched = rng.random(n_pairs) < mismatch_rate
    for i in np.flatnonzero(mismatched):
        other = (cls[i] + rng.integers(1, n_classes)) % n_classes
        positives[i] = _unit(centres[other][None] + noise * rng.normal(size=(1, dim)) - offset / 2)[0]
        pos_class[i] = other
    anchor_mod = "image" if two_modalities else "text"
    items = pd.DataFrame(
        {
            "item_id": np.arange(2 * n_pairs),
            "modality": [anchor_mod] * n_pairs + ["text"] * n_pairs,
            "content": [f"img/{i:05d}.png" if two_modalities else f"query {i}" for i in range(n_pairs)]
            + [f"a caption of class {pos_class[i]} number {i}" for i in range(n_pairs)],
            "label": pd.array(list(cls) + list(cls), dtype="Int64").astype(str),
        }
    )
    items["key"] = [f"k{i}" for i in range(2 * n_pairs)]
    emb = np.vstack([anchors, positives]).astype(np.float32)
    pairs = pd.DataFrame(
        {"pair_id": np.arange(n_pairs), "anchor_id": np.arange(n_pairs), "positive_id": n_pairs + np.arange(n_pairs)}
    )
    neg_rows = []
    for i in range(n_pairs):
        others = rng.choice(np.delete(np.arange(n_pairs), i), size=k, replace=False)
        for j in others:
            neg_rows.append((i, n_pairs + int(j), "given", bool(pos_class[j] == cls[i])))
    neg = pd.DataFrame(neg_rows, columns=["pair_id", "negative_id", "source", "is_false_negative"])
    write_run(
        path,
        manifest={
            "dataset_hash": f"synthetic-{seed}",
            "dataset_root": str(path),
            "model_kind": "synthetic",
            "logit_scale": 1 / 0.07,
            "device": "cpu",
            "dtype": "float32",
        },
        items=items,
        embeddings=emb,
        pairs=pairs,
        negatives=neg[["pair_id", "negative_id", "source"]],
    )
    truth = SyntheticTruth(pair_class=cls, mismatched=mismatched, false_negative=neg.drop(columns="source"))
    return load_run(path), truth


def make_random_run(
    path: Path,
    *,
    n_items: int = 120,
    dim: int = 8,
    n_pairs: int = 80,
    k_max: int = 5,
    two_modalities: bool = True,
    quantised: bool = False,
    string_ids: bool = False,
    seed: int = 0,
) -> Run:
    """Write and load an unstructured run for metric tests (no planted truth).

    Random unit embeddings; anchors and positives are drawn with repetition (several pairs share an anchor
    or a positive), each pair lists 0 .. ``k_max`` negatives of the positive's modality from mixed sources.

    Parameters
    ----------
    path : Path
        Folder to write.
    n_items, dim, n_pairs, k_max : int
        N items (half image, half text when ``two_modalities``), D dims, P pairs, most negatives per pair.
    two_modalities : bool
        Image anchors and text positives (True) or text everywhere.
    quantised : bool
        Embeddings with exactly four entries of +-0.5 each (``dim >= 4``): every dot product is exact in
        float32, and many are tied.
    string_ids : bool
        ``pair_id`` values are strings ("p0", "p1", ...) instead of integers.
    seed : int
        Random seed.
    """
    rng = np.random.default_rng(seed)
    if quantised:
        emb = np.zeros((n_items, dim), dtype=np.float32)
        for i in range(n_items):
            emb[i, rng.choice(dim, size=4, replace=False)] = rng.choice([-0.5, 0.5], size=4)
    else:
        emb = _unit(rng.normal(size=(n_items, dim))).astype(np.float32)
    half = n_items // 2
    if two_modalities:
        modality = ["image"] * half + ["text"] * (n_items - half)
        anchor_pool, positive_pool = np.arange(half), np.arange(half, n_items)
    else:
        modality = ["text"] * n_items
        anchor_pool = positive_pool = np.arange(n_items)
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items),
            "modality": modality,
            "content": [f"img/{i:04d}.png" if m == "image" else f"text {i}" for i, m in enumerate(modality)],
            "label": pd.array([None] * n_items, dtype="string"),
        }
    )
    items["key"] = [f"r{i}" for i in range(n_items)]
    anchors = rng.choice(anchor_pool, size=n_pairs)
    positives = rng.choice(positive_pool, size=n_pairs)
    if not two_modalities:
        same = anchors == positives
        positives[same] = (positives[same] + 1) % n_items
    pair_ids = [f"p{i}" for i in range(n_pairs)] if string_ids else list(range(n_pairs))
    pairs = pd.DataFrame({"pair_id": pair_ids, "anchor_id": anchors, "positive_id": positives})
    neg_rows = []
    sources = ("given", "in_batch", "mined")
    for i in range(n_pairs):
        k = int(rng.integers(0, k_max + 1))
        for j in rng.choice(positive_pool, size=min(k, len(positive_pool)), replace=False):
            neg_rows.append((pair_ids[i], int(j), sources[int(rng.integers(0, 3))]))
    negatives = pd.DataFrame(neg_rows, columns=["pair_id", "negative_id", "source"])
    write_run(
        path,
        manifest={"dataset_hash": f"random-{seed}", "dataset_root": str(path), "model_kind": "random"},
        items=items,
        embeddings=emb,
        pairs=pairs,
        negatives=negatives,
    )
    return load_run(path)


def write_image_files(run: Run, *, seed: int = 0) -> Run:
    """Write a random 8x8 PNG for every image item of a synthetic run (so pages can draw them)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for content in run.items.loc[run.items["modality"] == "image", "content"]:
        image = run.dataset_root / content
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(8, 8), dtype=np.uint8)).save(image)
    return run

"""Build NegScope's bundled sample ``sample_data/digits/`` from scikit-learn's handwritten digits.

Seeded and deterministic; no download (``sklearn.datasets.load_digits`` ships with scikit-learn).

What it writes into the output folder::

    images/0000.png ...     the 1,797 real 8x8 scans, grayscale PNG, ink 0..16 scaled to 0..255
    pairs.csv               id, anchor (= images/0000.png), positive (a caption), negative_1..negative_8, label
    truth.csv               id, image_digit, caption_digit, label_flipped, mismatched
    negatives_truth.csv     id, column, negative_digit, is_false_negative
    model/                  the trained dual encoder (config.json + model.safetensors)

Captions name the digit (as a numeral or a word) inside one of several templates, with words computed from
the pixels: stroke thickness (ink mass, ranked within the digit's class), slant (from the image moments),
width (horizontal spread) and position (centre of mass). Planted truth: about 5% of pairs get a caption of
another digit (``mismatched``), about 3% of ``label`` values are flipped to another digit (disjoint from the
mismatched pairs). The K = 8 given negatives of each pair are captions of other pairs mined with the trained
model: taken from the captions it ranks highest for the anchor image, with about a quarter of them captions
of the image's own digit (real false negatives: a negative is a false negative when the digit its caption
names equals the image's digit).

Usage::

    python sample_data/build_digits.py                    # rebuild everything, training included
    python sample_data/build_digits.py --reuse-model DIR  # skip training, mine with an existing model
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from analysis.embedding.dual_encoder import DualEncoder  # noqa: E402
from sample_data.train_digits_model import SEED, train_model  # noqa: E402

K = 8
POOL = 30
MISMATCH_RATE = 0.05
FLIP_RATE = 0.03
FALSE_NEGATIVE_SHARE = 0.25
DEFAULT_OUT = Path(__file__).resolve().parent / "digits"

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("very thin", "thin", "regular", "thick", "very thick")
SLANT = (
    "leaning far to the left",
    "leaning slightly left",
    "upright",
    "leaning slightly right",
    "leaning far to the right",
)
WIDTH = ("narrow", "medium-width", "wide")
POSITION = ("sitting left of centre", "centred", "sitting right of centre")
TEMPLATES = (
    "a handwritten {d} with {thick} strokes, {slant}",
    "the digit {d}, written with {thick} strokes, {width} and {pos}",
    "handwritten {d}, {width}, drawn in {thick} strokes, {slant}, {pos}",
    "scan of a {width} handwritten {d}, {slant}, {thick} strokes",
    "{thick} strokes forming the number {d}, {slant} and {pos}",
    "number {d} in {thick} strokes, {width}, {slant}",
    "{width} digit {d}, {pos}, with {thick} strokes and {slant}",
    "handwritten digit {d}: {thick} strokes, {slant}, {width}, {pos}",
    "{pos}, a {width} {d} written {slant} with {thick} strokes",
    "pen sketch of the numeral {d}, {thick} strokes, {width}, {slant}, {pos}",
    "a {width} {d} in {thick} strokes, {pos} and {slant}",
    "a lone handwritten {d}, {slant}, {pos}",
)


@dataclass(frozen=True)
class Descriptors:
    """Per-image description levels computed from the pixels.

    Attributes
    ----------
    thickness, slant, width, position : numpy.ndarray
        (N,) int level indices into ``THICKNESS``, ``SLANT``, ``WIDTH``, ``POSITION``.
    """

    thickness: np.ndarray
    slant: np.ndarray
    width: np.ndarray
    position: np.ndarray


def _levels(values: np.ndarray, n_levels: int) -> np.ndarray:
    """Quantile level (0 .. n_levels - 1) of each value; ties broken by order, so levels are balanced."""
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return (ranks * n_levels // len(values)).astype(np.int64)


def describe(images: np.ndarray, digits: np.ndarray) -> Descriptors:
    """Compute the caption words' levels from the pixels.

    Parameters
    ----------
    images : numpy.ndarray
        (N, 8, 8) ink values.
    digits : numpy.ndarray
        (N,) digit of each image.

    Returns
    -------
    Descriptors
        Thickness: ink mass, in quintiles within the image's digit class (a thick 1 has less ink than a thin
        8). Slant: the shear -mu11 / mu02 of the central image moments (rows grow downwards), in quintiles.
        Width: horizontal spread sqrt(mu20 / m00), in tertiles within the class. Position: the centre of
        mass's column, in tertiles.
    """
    x = images.astype(np.float64)
    yy, xx = np.mgrid[0 : x.shape[1], 0 : x.shape[2]]
    mass = x.sum(axis=(1, 2))
    xbar = (x * xx).sum(axis=(1, 2)) / mass
    ybar = (x * yy).sum(axis=(1, 2)) / mass
    dx = xx[None] - xbar[:, None, None]
    dy = yy[None] - ybar[:, None, None]
    mu11 = (x * dx * dy).sum(axis=(1, 2))
    mu02 = (x * dy**2).sum(axis=(1, 2))
    mu20 = (x * dx**2).sum(axis=(1, 2))
    thickness = np.zeros(len(x), dtype=np.int64)
    width = np.zeros(len(x), dtype=np.int64)
    for digit in np.unique(digits):
        sel = digits == digit
        thickness[sel] = _levels(mass[sel], len(THICKNESS))
        width[sel] = _levels(np.sqrt(mu20[sel] / mass[sel]), len(WIDTH))
    return Descriptors(
        thickness=thickness,
        slant=_levels(-mu11 / mu02, len(SLANT)),
        width=width,
        position=_levels(xbar, len(POSITION)),
    )


def caption(digit: int, source: int, desc: Descriptors, rng: np.random.Generator) -> str:
    """One caption naming ``digit`` and describing image ``source`` (a random template, numeral or word)."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    name = str(digit) if rng.random() < 0.5 else NUMBER_WORDS[digit]
    return template.format(
        d=name,
        thick=THICKNESS[desc.thickness[source]],
        slant=SLANT[desc.slant[source]],
        width=WIDTH[desc.width[source]],
        pos=POSITION[desc.position[source]],
    )


def png_bytes(image: np.ndarray) -> bytes:
    """Encode one (8, 8) ink image (0..16) as a grayscale PNG scaled to 0..255."""
    pixels = np.rint(image.astype(np.float64) * 255.0 / 16.0).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def make_pairs(seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Captions, labels and planted pair truth (no negatives yet).

    Returns
    -------
    (pairs, truth, images)
        ``pairs``: id, anchor, positive, label; ``truth``: id, image_digit, caption_digit, label_flipped,
        mismatched; ``images``: (N, 8, 8) ink values.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.asarray(data.images)
    digits = np.asarray(data.target, dtype=np.int64)
    n = len(digits)
    caption_rng, mismatch_rng, flip_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    desc = describe(images, digits)

    n_mismatch = round(MISMATCH_RATE * n)
    n_flip = round(FLIP_RATE * n)
    order = mismatch_rng.permutation(n)
    mismatched = np.zeros(n, dtype=bool)
    mismatched[order[:n_mismatch]] = True
    flipped = np.zeros(n, dtype=bool)
    flipped[flip_rng.choice(order[n_mismatch:], size=n_flip, replace=False)] = True

    caption_digit = digits.copy()
    source = np.arange(n)
    for i in np.flatnonzero(mismatched):
        wrong = int((digits[i] + mismatch_rng.integers(1, 10)) % 10)
        caption_digit[i] = wrong
        source[i] = int(mismatch_rng.choice(np.flatnonzero(digits == wrong)))
    labels = digits.copy()
    for i in np.flatnonzero(flipped):
        labels[i] = int((digits[i] + flip_rng.integers(1, 10)) % 10)

    captions = [caption(int(caption_digit[i]), int(source[i]), desc, caption_rng) for i in range(n)]
    ids = np.arange(n)
    pairs = pd.DataFrame(
        {"id": ids, "anchor": [f"images/{i:04d}.png" for i in ids], "positive": captions, "label": labels}
    )
    truth = pd.DataFrame(
        {
            "id": ids,
            "image_digit": digits,
            "caption_digit": caption_digit,
            "label_flipped": flipped,
            "mismatched": mismatched,
        }
    )
    return pairs, truth, images


def load_pixels(folder: Path, anchors: Sequence[str]) -> torch.Tensor:
    """(N, 1, 8, 8) float32 pixels in [0, 1], read back from the written PNGs (what the engine will see)."""
    out = []
    for rel in anchors:
        with Image.open(folder / rel) as img:
            out.append(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(out)[:, None])


def _caption_embeddings(model: DualEncoder, captions: list[str]) -> np.ndarray:
    """L2-normalised text embeddings, identical (bit for bit) for captions with the same bag of words.

    The text tower averages word embeddings, so two captions with the same words in another order have the
    same embedding in exact arithmetic; in float32 the sum order (and the batch's padding) makes them differ
    in the last bits, differently on different BLAS builds. Each distinct bag of words is embedded once, on
    its sorted token ids, so such captions tie exactly and the ranking breaks the tie by caption order.

    Returns
    -------
    numpy.ndarray
        (len(captions), D) float64.
    """
    tokens = model.tokenize(captions)
    bags: dict[tuple[int, ...], int] = {}
    which = np.empty(len(captions), dtype=np.int64)
    for i, row in enumerate(tokens.tolist()):
        bag = tuple(sorted(t for t in row if t != 0))
        which[i] = bags.setdefault(bag, len(bags))
    width = max([len(b) for b in bags] + [1])
    canonical = torch.zeros((len(bags), width), dtype=torch.long)
    for bag, j in bags.items():
        if bag:
            canonical[j, : len(bag)] = torch.tensor(bag, dtype=torch.long)
    with torch.inference_mode():
        vectors = F.normalize(model.encode_text(canonical), dim=1).double().numpy()
    return vectors[which]


def mine_negatives(
    model: DualEncoder,
    pixels: torch.Tensor,
    captions: Sequence[str],
    caption_digit: np.ndarray,
    image_digit: np.ndarray,
    *,
    k: int = K,
    pool: int = POOL,
    false_negative_share: float = FALSE_NEGATIVE_SHARE,
    seed: int = SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Mine ``k`` negative captions per pair with the trained model.

    For each anchor image the distinct captions (its own caption's text excluded) are ranked by cosine
    similarity. A Binomial(k, ``false_negative_share``) number of slots take captions of the image's own
    digit from the ``pool`` highest ranked (the false negatives a naive miner lets through); the others take
    captions of other digits from their ``pool`` highest ranked. The slots are then shuffled.

    Returns
    -------
    (texts, digits)
        (P, k) object array of negative captions and (P, k) int array of the digit each one names.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    unique = list(dict.fromkeys(captions))
    index = {c: j for j, c in enumerate(unique)}
    unique_digit = np.zeros(len(unique), dtype=np.int64)
    for c, d in zip(captions, caption_digit, strict=True):
        unique_digit[index[c]] = d
    with torch.inference_mode():
        img = F.normalize(model.encode_image(pixels), dim=1).double().numpy()
        txt = _caption_embeddings(model, unique)
    sims = img @ txt.T
    texts = np.empty((len(captions), k), dtype=object)
    neg_digits = np.zeros((len(captions), k), dtype=np.int64)
    for i, own in enumerate(captions):
        row = sims[i].copy()
        row[index[own]] = -np.inf
        # ties (captions with the same bag of words have the same embedding) go to the earlier caption
        ranked = np.lexsort((np.arange(len(row)), -row))[:-1]
        same = ranked[unique_digit[ranked] == image_digit[i]][:pool]
        other = ranked[unique_digit[ranked] != image_digit[i]][:pool]
        n_fn = min(int(rng.binomial(k, false_negative_share)), len(same))
        chosen = np.concatenate(
            [rng.choice(same, size=n_fn, replace=False), rng.choice(other, size=k - n_fn, replace=False)]
        )
        chosen = chosen[rng.permutation(k)]
        texts[i] = [unique[j] for j in chosen]
        neg_digits[i] = unique_digit[chosen]
    return texts, neg_digits


def build(
    out: Path = DEFAULT_OUT,
    *,
    reuse_model: Path | None = None,
    seed: int = SEED,
    threads: int = 1,
    log: bool = True,
) -> dict:
    """Write the whole sample into ``out``; returns summary numbers.

    Parameters
    ----------
    out : Path
        Output folder (``images/`` and the CSVs are replaced).
    reuse_model : Path, optional
        A trained model folder to mine with instead of training (it is copied to ``out/model`` unless it
        already is that folder).
    seed : int
        Seeds everything.
    threads : int
        torch CPU threads for training and mining.
    log : bool
        Print progress.
    """
    out = Path(out)
    pairs, truth, images = make_pairs(seed)
    image_dir = out / "images"
    if image_dir.exists():
        shutil.rmtree(image_dir)
    image_dir.mkdir(parents=True)
    for rel, image in zip(pairs["anchor"], images, strict=True):
        (out / rel).write_bytes(png_bytes(image))
    pixels = load_pixels(out, pairs["anchor"])
    captions = pairs["positive"].tolist()

    model_dir = out / "model"
    stats: dict[str, float] = {}
    if reuse_model is None:
        model, stats = train_model(pixels, captions, seed=seed, threads=threads, log=log)
        model.save(model_dir)
    else:
        model = DualEncoder.from_folder(reuse_model)
        if Path(reuse_model).resolve() != model_dir.resolve():
            model.save(model_dir)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        texts, neg_digits = mine_negatives(
            model, pixels, captions, truth["caption_digit"].to_numpy(), truth["image_digit"].to_numpy(), seed=seed
        )
    finally:
        torch.set_num_threads(previous_threads)
    columns = [f"negative_{j + 1}" for j in range(K)]
    table = pairs[["id", "anchor", "positive"]].copy()
    for j, col in enumerate(columns):
        table[col] = texts[:, j]
    table["label"] = pairs["label"]
    table.to_csv(out / "pairs.csv", index=False)
    truth.to_csv(out / "truth.csv", index=False)
    neg_truth = pd.DataFrame(
        {
            "id": np.repeat(pairs["id"].to_numpy(), K),
            "column": np.tile(columns, len(pairs)),
            "negative_digit": neg_digits.reshape(-1),
        }
    )
    neg_truth["is_false_negative"] = neg_truth["negative_digit"].to_numpy() == np.repeat(
        truth["image_digit"].to_numpy(), K
    )
    neg_truth.to_csv(out / "negatives_truth.csv", index=False)

    summary = {
        "pairs": len(table),
        "distinct_captions": int(pairs["positive"].nunique()),
        "mismatched": int(truth["mismatched"].sum()),
        "label_flipped": int(truth["label_flipped"].sum()),
        "false_negative_share": float(neg_truth["is_false_negative"].mean()),
        "pairs_with_a_false_negative": int(neg_truth.groupby("id")["is_false_negative"].any().sum()),
        **stats,
    }
    if log:
        for key, value in summary.items():
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: sample_data/digits)")
    parser.add_argument("--reuse-model", type=Path, default=None, help="mine with this model folder, skip training")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    build(args.out, reuse_model=args.reuse_model, seed=args.seed, threads=args.threads)
    print(f"built {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

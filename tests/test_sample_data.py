"""The bundled digits sample on disk: shape, planted truth, images, model, and a deterministic rebuild."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from analysis.embedding.dual_encoder import DualEncoder, split_words
from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA, SAMPLE_DIR
from sample_data.build_digits import NUMBER_WORDS, THICKNESS, K, build, load_pixels
from sample_data.train_digits_model import evaluate, train_model

NEGATIVE_COLUMNS = [f"negative_{j}" for j in range(1, K + 1)]
DIGIT_WORDS = {**{str(d): d for d in range(10)}, **{w: d for d, w in enumerate(NUMBER_WORDS)}}


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    return pd.read_csv(SAMPLE_DATA, dtype={"id": int, "label": int}, keep_default_na=False)


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    return pd.read_csv(SAMPLE_DIR / "truth.csv")


@pytest.fixture(scope="module")
def neg_truth() -> pd.DataFrame:
    return pd.read_csv(SAMPLE_DIR / "negatives_truth.csv")


def named_digit(text: str) -> int:
    """The one digit a caption names (as a numeral or a word)."""
    named = [DIGIT_WORDS[w] for w in split_words(text) if w in DIGIT_WORDS]
    assert len(named) == 1, text
    return named[0]


def test_pairs_table_shape(pairs: pd.DataFrame) -> None:
    assert list(pairs.columns) == ["id", "anchor", "positive", *NEGATIVE_COLUMNS, "label"]
    assert len(pairs) == 1797
    assert pairs["id"].tolist() == list(range(1797))
    assert pairs["anchor"].tolist() == [f"images/{i:04d}.png" for i in range(1797)]
    assert pairs["label"].between(0, 9).all()
    # most captions are distinct
    assert pairs["positive"].nunique() / len(pairs) > 0.8


def test_images_are_the_real_scans(pairs: pd.DataFrame, truth: pd.DataFrame) -> None:
    digits = load_digits()
    for i, rel in enumerate(pairs["anchor"]):
        with Image.open(SAMPLE_DIR / rel) as img:
            assert img.mode == "L"
            assert img.size == (8, 8)
            pixels = np.asarray(img, dtype=np.float64)
        np.testing.assert_array_equal(pixels, np.rint(digits.images[i] * 255 / 16))
    assert truth["image_digit"].tolist() == digits.target.tolist()


def test_planted_pair_truth_matches_captions_and_labels(pairs: pd.DataFrame, truth: pd.DataFrame) -> None:
    assert list(truth.columns) == ["id", "image_digit", "caption_digit", "label_flipped", "mismatched"]
    assert truth["id"].tolist() == pairs["id"].tolist()
    assert truth["mismatched"].dtype == bool and truth["label_flipped"].dtype == bool
    caption_digit = np.array([named_digit(c) for c in pairs["positive"]])
    np.testing.assert_array_equal(caption_digit, truth["caption_digit"].to_numpy())
    mismatched = truth["mismatched"].to_numpy()
    np.testing.assert_array_equal(mismatched, truth["caption_digit"] != truth["image_digit"])
    assert 0.04 <= mismatched.mean() <= 0.06
    flipped = truth["label_flipped"].to_numpy()
    np.testing.assert_array_equal(flipped, pairs["label"].to_numpy() != truth["image_digit"].to_numpy())
    assert 0.02 <= flipped.mean() <= 0.04
    assert not (flipped & mismatched).any()


def test_caption_words_describe_the_pixels(pairs: pd.DataFrame, truth: pd.DataFrame) -> None:
    """Thickness words follow the ink mass within a digit class (for the pairs whose caption is their own)."""
    images = load_digits().images
    ok = ~truth["mismatched"].to_numpy()
    ink = images.sum(axis=(1, 2))
    digit = truth["image_digit"].to_numpy()
    relative_ink = ink / np.array([ink[digit == d].mean() for d in digit])
    pattern = r"\b(very thin|very thick|thin|regular|thick) strokes"
    phrases = pairs["positive"].str.extract(pattern)[0]
    assert phrases.notna().mean() > 0.8  # one template leaves the thickness out
    level = phrases.map({phrase: j for j, phrase in enumerate(THICKNESS)}).fillna(-1).to_numpy()
    means = [relative_ink[ok & (level == j)].mean() for j in range(len(THICKNESS))]
    assert all(np.diff(means) > 0), means


def test_given_negatives_and_their_truth(pairs: pd.DataFrame, truth: pd.DataFrame, neg_truth: pd.DataFrame) -> None:
    assert list(neg_truth.columns) == ["id", "column", "negative_digit", "is_false_negative"]
    assert len(neg_truth) == K * len(pairs)
    assert (neg_truth.groupby("id")["column"].apply(list) == pd.Series([NEGATIVE_COLUMNS] * len(pairs))).all()
    positives = set(pairs["positive"])
    caption_digit = dict(zip(pairs["positive"], truth["caption_digit"], strict=True))
    image_digit = truth["image_digit"].to_numpy()
    for row in pairs.itertuples(index=False):
        negatives = [getattr(row, c) for c in NEGATIVE_COLUMNS]
        assert len(set(negatives)) == K
        assert row.positive not in negatives
    long = pairs.melt(id_vars=["id"], value_vars=NEGATIVE_COLUMNS, var_name="column", value_name="text")
    merged = long.merge(neg_truth, on=["id", "column"], how="inner", validate="one_to_one")
    assert len(merged) == len(neg_truth)
    assert merged["text"].isin(positives).all()  # every negative is a caption of another pair
    named = merged["text"].map(named_digit)
    np.testing.assert_array_equal(merged["negative_digit"], merged["text"].map(caption_digit))
    np.testing.assert_array_equal(merged["negative_digit"], named)
    np.testing.assert_array_equal(merged["is_false_negative"], named.to_numpy() == image_digit[merged["id"]])
    share = neg_truth["is_false_negative"].mean()
    assert 0.15 <= share <= 0.35


def test_model_loads_is_small_and_separates_positives(pairs: pd.DataFrame, neg_truth: pd.DataFrame) -> None:
    size = sum(p.stat().st_size for p in SAMPLE_CHECKPOINT.iterdir())
    assert size < 2 * 1024 * 1024
    # the dataset and the final model; checkpoints/ (earlier epochs, for the Compare page) is checked in test_compare_sample
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    assert total < 3 * 1024 * 1024
    model = DualEncoder.from_folder(SAMPLE_CHECKPOINT)
    assert 0.005 < model.tau < 0.1
    pixels = load_pixels(SAMPLE_DIR, pairs["anchor"])
    stats = evaluate(model, pixels, pairs["positive"].tolist())
    assert 0.3 < stats["recall_at_1_i2t"] < 0.95  # good, not perfect
    assert stats["gap_norm"] > 0.1  # a visible modality gap
    with torch.inference_mode():
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=1).numpy()
        pos = torch.nn.functional.normalize(model.encode_text(model.tokenize(pairs["positive"].tolist())), dim=1)
        pos_sim = (img * pos.numpy()).sum(axis=1)
        first = torch.nn.functional.normalize(model.encode_text(model.tokenize(pairs["negative_1"].tolist())), dim=1)
        neg_sim = (img * first.numpy()).sum(axis=1)
    fn = neg_truth[neg_truth["column"] == "negative_1"]["is_false_negative"].to_numpy()
    # positives score above the given negatives, and false negatives above true negatives
    assert pos_sim.mean() > neg_sim.mean()
    assert neg_sim[fn].mean() > neg_sim[~fn].mean()


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "model" not in p.parts and "checkpoints" not in p.parts
    }


def test_build_is_deterministic(tmp_path: Path) -> None:
    """Rebuilding with the committed model reproduces every committed file byte for byte."""
    summary = build(tmp_path / "digits", reuse_model=SAMPLE_CHECKPOINT, log=False)
    assert summary["pairs"] == 1797
    assert _digest(tmp_path / "digits") == _digest(SAMPLE_DIR)
    rebuilt = DualEncoder.from_folder(tmp_path / "digits" / "model")
    original = DualEncoder.from_folder(SAMPLE_CHECKPOINT)
    for (name, a), (_, b) in zip(rebuilt.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_evaluate_recall_against_a_slow_reference() -> None:
    rng = np.random.default_rng(1)
    captions = [f"digit {w} {rng.choice(['thin', 'thick', 'wide'])}" for w in rng.choice(NUMBER_WORDS, size=30)]
    pixels = torch.rand(30, 1, 8, 8)
    model, stats = train_model(pixels, captions, epochs=2, batch_size=8, log=False, seed=3)
    assert np.isfinite(stats["train_seconds"])
    with torch.inference_mode():
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=1).double().numpy()
        txt = torch.nn.functional.normalize(model.encode_text(model.tokenize(captions)), dim=1).double().numpy()
    hits_i2t = 0
    hits_t2i = 0
    for i in range(30):
        own = float(img[i] @ txt[i])
        if all(float(img[i] @ txt[j]) <= own or captions[j] == captions[i] for j in range(30)):
            hits_i2t += 1
        if all(float(img[j] @ txt[i]) <= own or j == i for j in range(30)):
            hits_t2i += 1
    assert stats["recall_at_1_i2t"] == pytest.approx(hits_i2t / 30)
    assert stats["recall_at_1_t2i"] == pytest.approx(hits_t2i / 30)
    assert stats["gap_norm"] == pytest.approx(np.linalg.norm(img.mean(0) - txt.mean(0)), rel=1e-9)

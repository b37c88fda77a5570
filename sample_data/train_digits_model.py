"""Train the bundled sample's tiny CLIP-style dual encoder on the digits (image, caption) pairs.

Symmetric InfoNCE (image -> text and text -> image cross-entropy over the batch) with a learned temperature,
seeded, on one CPU thread (the tensors are too small to gain from more), in well under 2 minutes. Every pair is used, the mismatched ones too (as in real
training data). Nothing is done to close the modality gap.

Usage (retrains from the images and captions already in ``sample_data/digits/pairs.csv``)::

    python sample_data/train_digits_model.py [--folder sample_data/digits] [--seed 20240601] [--threads 1]
        [--save-epochs 5 20] [--checkpoints-only]

``--save-epochs`` also writes snapshots of the same training run after those epochs into
``FOLDER/checkpoints/epoch_NN/`` (the sample ships epochs 5 and 20; the final model, epoch 80, is
``FOLDER/model``). Saving a snapshot draws no random numbers, so the final weights are the same with or
without it. ``--checkpoints-only`` writes the snapshots and leaves ``FOLDER/model`` as it is.

``sample_data/build_digits.py`` calls :func:`train_model` itself when it rebuilds the whole sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from analysis.embedding.dual_encoder import MAX_LOGIT_SCALE, DualEncoder, DualEncoderConfig, split_words  # noqa: E402

SEED = 20240601
# Chosen for a model that is good but not perfect: longer training or wider towers raise recall@1 but also
# memorise the 5% mismatched pairs (their positive similarity climbs towards the clean pairs').
DEFAULTS = {
    "image_hidden": 512,
    "text_hidden": 64,
    "embed_dim": 128,
    "logit_scale_init": 1.0 / 0.07,
    "epochs": 80,
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 1e-4,
}


def build_vocab(captions: Sequence[str]) -> list[str]:
    """Sorted list of the distinct words of ``captions`` (the text tower's vocabulary)."""
    return sorted({word for caption in captions for word in split_words(caption)})


def _encode_all(model: DualEncoder, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised image (N, D) and text (M, D) embeddings, float64."""
    with torch.inference_mode():
        img = F.normalize(model.encode_image(pixels), dim=1).double().numpy()
        txt = F.normalize(model.encode_text(tokens), dim=1).double().numpy()
    return img, txt


def evaluate(model: DualEncoder, pixels: torch.Tensor, captions: Sequence[str]) -> dict[str, float]:
    """Retrieval and geometry of a trained model on its own pairs.

    Parameters
    ----------
    model : DualEncoder
    pixels : Tensor
        (N, C, H, W) images in [0, 1].
    captions : sequence of str
        N captions, ``captions[i]`` paired with image ``i``.

    Returns
    -------
    dict
        ``recall_at_1_i2t`` (the image's own caption ranks first among the N captions; an identical caption
        text counts as a hit), ``recall_at_1_t2i``, ``recall_at_10_i2t``, ``mean_pos_sim``, ``mean_neg_sim``
        (over all non-paired image-caption pairs), ``gap_norm`` (‖mean image − mean text‖ of the unit
        vectors), ``tau`` and ``logit_scale``.
    """
    img, txt = _encode_all(model, pixels, model.tokenize(list(captions)))
    sims = img @ txt.T
    n = len(captions)
    text_ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    same_text = np.array([text_ids[c] for c in captions])
    own = sims[np.arange(n), np.arange(n)]
    # rank of the own caption = captions with a strictly higher similarity and a different text
    higher = (sims > own[:, None]) & (same_text[None, :] != same_text[:, None])
    rank_i2t = higher.sum(axis=1)
    higher_t = (sims > own[None, :]) & (np.arange(n)[:, None] != np.arange(n)[None, :])
    rank_t2i = higher_t.sum(axis=0)
    off = ~np.eye(n, dtype=bool)
    return {
        "recall_at_1_i2t": float((rank_i2t == 0).mean()),
        "recall_at_10_i2t": float((rank_i2t < 10).mean()),
        "recall_at_1_t2i": float((rank_t2i == 0).mean()),
        "mean_pos_sim": float(own.mean()),
        "mean_neg_sim": float(sims[off].mean()),
        "gap_norm": float(np.linalg.norm(img.mean(axis=0) - txt.mean(axis=0))),
        "logit_scale": model.logit_scale_value,
        "tau": model.tau,
    }


def train_model(
    pixels: torch.Tensor,
    captions: Sequence[str],
    *,
    seed: int = SEED,
    threads: int = 1,
    log: bool = True,
    on_epoch: Callable[[int, DualEncoder], None] | None = None,
    **overrides: float,
) -> tuple[DualEncoder, dict[str, float]]:
    """Train a :class:`DualEncoder` with symmetric InfoNCE and a learned temperature.

    Parameters
    ----------
    pixels : Tensor
        (N, C, H, W) float images in [0, 1].
    captions : sequence of str
        N captions; ``captions[i]`` is image ``i``'s positive.
    seed : int
        Seeds the initialisation and the batch order.
    threads : int
        torch CPU threads. One is the default: these tensors are so small that a second thread only adds
        synchronisation (measured on the 2-core reference machine under load: 5 epochs took 7 s with one
        thread, 22 s with two).
    log : bool
        Print progress lines.
    on_epoch : callable, optional
        Called as ``on_epoch(epoch, model)`` after each epoch (1-based), for example to save a snapshot. It
        must not change the model or draw random numbers.
    **overrides
        Replace any of ``DEFAULTS`` (sizes, epochs, batch_size, lr, weight_decay, logit_scale_init).

    Returns
    -------
    (DualEncoder, dict)
        The trained model in eval mode, and :func:`evaluate`'s numbers plus ``train_seconds``.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(pixels, captions, seed=seed, log=log, on_epoch=on_epoch, opts={**DEFAULTS, **overrides})
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    pixels: torch.Tensor,
    captions: Sequence[str],
    *,
    seed: int,
    log: bool,
    opts: dict[str, float],
    on_epoch: Callable[[int, DualEncoder], None] | None = None,
) -> tuple[DualEncoder, dict[str, float]]:
    torch.manual_seed(seed)
    n = len(captions)
    if pixels.shape[0] != n:
        raise ValueError(f"{pixels.shape[0]} images but {n} captions")
    config = DualEncoderConfig(
        image_size=(int(pixels.shape[2]), int(pixels.shape[3])),
        channels=int(pixels.shape[1]),
        image_hidden=int(opts["image_hidden"]),
        vocab=build_vocab(captions),
        text_hidden=int(opts["text_hidden"]),
        embed_dim=int(opts["embed_dim"]),
        logit_scale_init=float(opts["logit_scale_init"]),
    )
    model = DualEncoder(config)
    tokens = model.tokenize(list(captions))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(opts["lr"]), weight_decay=float(opts["weight_decay"]))
    epochs = int(opts["epochs"])
    batch_size = int(opts["batch_size"])
    steps = epochs * ((n + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=float(opts["lr"]), total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            img = F.normalize(model.encode_image(pixels[idx]), dim=1)
            txt = F.normalize(model.encode_text(tokens[idx]), dim=1)
            scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
            logits = scale * img @ txt.T
            target = torch.arange(len(idx))
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, float(np.log(MAX_LOGIT_SCALE)))
            total += loss.item() * len(idx)
        if log and (epoch % 10 == 0 or epoch == epochs - 1):
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {total / n:.4f}  tau {model.tau:.4f}", flush=True)
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
    seconds = time.perf_counter() - start
    model.eval()
    stats = evaluate(model, pixels, captions)
    stats["train_seconds"] = seconds
    return model, stats


def _load_folder(folder: Path) -> tuple[torch.Tensor, list[str]]:
    import pandas as pd
    from PIL import Image

    table = pd.read_csv(folder / "pairs.csv", dtype=str, keep_default_na=False)
    images = []
    for rel in table["anchor"]:
        with Image.open(folder / rel) as img:
            images.append(img.convert("L"))
    pixels = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])[:, None])
    return pixels, table["positive"].tolist()


def snapshot_saver(folder: Path, epochs: Sequence[int]) -> Callable[[int, DualEncoder], None] | None:
    """An ``on_epoch`` callback that saves the model after each epoch in ``epochs`` to ``folder/epoch_EE``.

    Returns None when ``epochs`` is empty. Saving only reads the weights (no random numbers are drawn).
    """
    wanted = {int(e) for e in epochs}
    if not wanted:
        return None

    def save(epoch: int, model: DualEncoder) -> None:
        if epoch in wanted:
            path = model.save(Path(folder) / f"epoch_{epoch:02d}")
            print(f"saved {path}", flush=True)

    return save


def main(argv: Sequence[str] | None = None) -> int:
    """Retrain the model from the images and captions of an existing sample folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path(__file__).resolve().parent / "digits")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--save-epochs",
        type=int,
        nargs="*",
        default=[],
        metavar="E",
        help="also save snapshots after these epochs into FOLDER/checkpoints/epoch_EE/",
    )
    parser.add_argument(
        "--checkpoints-only", action="store_true", help="write the snapshots only, leave FOLDER/model as it is"
    )
    args = parser.parse_args(argv)
    pixels, captions = _load_folder(args.folder)
    model, stats = train_model(
        pixels,
        captions,
        seed=args.seed,
        threads=args.threads,
        on_epoch=snapshot_saver(args.folder / "checkpoints", args.save_epochs),
    )
    if not args.checkpoints_only:
        model.save(args.folder / "model")
    for key, value in stats.items():
        print(f"{key}: {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

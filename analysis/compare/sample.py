"""The bundled sample's checkpoints along training, so the Compare page opens on something to compare.

``sample_data/train_digits_model.py --save-epochs 5 20`` saved snapshots of the seeded training run after
epochs 5 and 20 into ``sample_data/digits/checkpoints/``; the final model (epoch 80) is
``sample_data/digits/model``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA, SAMPLE_DIR

SAMPLE_CHECKPOINTS: tuple[tuple[str, Path], ...] = (
    ("epoch 5", SAMPLE_DIR / "checkpoints" / "epoch_05"),
    ("epoch 20", SAMPLE_DIR / "checkpoints" / "epoch_20"),
    ("epoch 80", SAMPLE_CHECKPOINT),
)


def sample_available() -> bool:
    """True when the sample's dataset and all three checkpoints are on disk."""
    return SAMPLE_DATA.is_file() and all((path / "config.json").is_file() for _, path in SAMPLE_CHECKPOINTS)


def embed_sample_checkpoints(
    *, device: str = "cpu", progress: Callable[[int, int], None] | None = None
) -> list[tuple[str, Path]]:
    """Embed the sample with each of its checkpoints (reusing the workspace's run folders when they exist).

    Parameters
    ----------
    device : str
        Where to embed (the model is tiny; the CPU is quick).
    progress : callable, optional
        Called as ``progress(done, total)`` after each checkpoint.

    Returns
    -------
    list of (str, Path)
        (label, run folder) per checkpoint, in training order.
    """
    from analysis.embedding.engine import embed_to_run

    out = []
    for i, (label, checkpoint) in enumerate(SAMPLE_CHECKPOINTS):
        out.append((label, Path(embed_to_run(SAMPLE_DATA, checkpoint, device=device))))
        if progress is not None:
            progress(i + 1, len(SAMPLE_CHECKPOINTS))
    return out

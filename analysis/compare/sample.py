"""The bundled sample's checkpoints along training, so the Compare page opens on something to compare.

``sample_data/train_digits_model.py --save-epochs 5 20`` saved snapshots of the seeded training run after
epochs 5 and 20 into ``sample_data/digits/checkpoints/``; the final model (epoch 80) is
``sample_data/digits/model``.

Finding the workspace's run folders of the three checkpoints means reading and hashing the dataset (about a
second). The answer is remembered in ``<workspace>/cache/sample_checkpoints.json`` (JSON), keyed by a
fingerprint of every file under the sample's folder (path, size, modification time), the engine's source
and the device, so a later server process opens the Compare page without reading the dataset again; any change to
the sample's files, or a removed run folder, embeds (or finds) the runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from analysis.runs.workspace import SAMPLE_CHECKPOINT, SAMPLE_DATA, SAMPLE_DIR, workspace_dir

SAMPLE_CHECKPOINTS: tuple[tuple[str, Path], ...] = (
    ("epoch 5", SAMPLE_DIR / "checkpoints" / "epoch_05"),
    ("epoch 20", SAMPLE_DIR / "checkpoints" / "epoch_20"),
    ("epoch 80", SAMPLE_CHECKPOINT),
)
MEMO_NAME = "sample_checkpoints.json"
ENGINE_SOURCE = Path(__file__).resolve().parents[1] / "embedding" / "engine.py"


def sample_available() -> bool:
    """True when the sample's dataset and all three checkpoints are on disk."""
    return SAMPLE_DATA.is_file() and all((path / "config.json").is_file() for _, path in SAMPLE_CHECKPOINTS)


def memo_path() -> Path:
    """Where the workspace remembers the sample's checkpoint runs (``<workspace>/cache/sample_checkpoints.json``)."""
    return workspace_dir() / "cache" / MEMO_NAME


def sample_fingerprint(*, device: str, root: Path = SAMPLE_DIR) -> str:
    """sha256 over every file under ``root`` (relative path, size, modification time), the engine and the device.

    The engine enters by its source's content (any change to it, such as a new ``ENGINE_VERSION``, is a new
    fingerprint), so that a remembered answer is found without importing the engine (and torch's model code).

    Parameters
    ----------
    device : str
        The device the runs are embedded on (it can change the compute precision, hence the run).
    root : Path
        The sample's folder (dataset, images and checkpoints).

    Returns
    -------
    str
        64 hex characters.
    """
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            stat = path.stat()
            entries.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    engine = hashlib.sha256(ENGINE_SOURCE.read_bytes()).hexdigest()
    payload = {"files": entries, "engine": engine, "device": device, "root": str(root)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_memo(fingerprint: str) -> list[tuple[str, Path]] | None:
    """The remembered (label, run folder) list for ``fingerprint``, or None when absent, stale or unreadable."""
    try:
        memo = json.loads(memo_path().read_text(encoding="utf-8"))
        runs = [(str(label), Path(str(path))) for label, path in memo["runs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if memo.get("fingerprint") != fingerprint or [label for label, _ in runs] != [
        label for label, _ in SAMPLE_CHECKPOINTS
    ]:
        return None
    if not all((path / "manifest.json").is_file() for _, path in runs):
        return None
    return runs


def _write_memo(fingerprint: str, runs: list[tuple[str, Path]]) -> None:
    """Remember ``runs`` for ``fingerprint`` (written atomically; a failure to write is not an error)."""
    path = memo_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"fingerprint": fingerprint, "runs": [[label, str(p)] for label, p in runs]}), encoding="utf-8"
        )
        os.replace(tmp, path)
    except OSError:
        pass


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
    fingerprint = sample_fingerprint(device=device)
    remembered = _read_memo(fingerprint)
    if remembered is not None:
        if progress is not None:
            progress(len(SAMPLE_CHECKPOINTS), len(SAMPLE_CHECKPOINTS))
        return remembered
    from analysis.embedding.engine import embed_to_run

    out = []
    for i, (label, checkpoint) in enumerate(SAMPLE_CHECKPOINTS):
        out.append((label, Path(embed_to_run(SAMPLE_DATA, checkpoint, device=device))))
        if progress is not None:
            progress(i + 1, len(SAMPLE_CHECKPOINTS))
    _write_memo(fingerprint, out)
    return out

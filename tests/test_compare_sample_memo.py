"""The remembered sample checkpoint runs: read back equal, and forgotten when the sample or a run folder changes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from analysis.compare import sample
from analysis.compare.sample import (
    SAMPLE_CHECKPOINTS,
    _read_memo,
    _write_memo,
    embed_sample_checkpoints,
    memo_path,
    sample_fingerprint,
)
from analysis.runs.workspace import runs_dir


def _fake_runs(root: Path) -> list[tuple[str, Path]]:
    """One folder with a manifest per sample checkpoint label (what the memo checks before trusting a path)."""
    out = []
    for i, (label, _) in enumerate(SAMPLE_CHECKPOINTS):
        folder = root / f"run-{i}"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text("{}", encoding="utf-8")
        out.append((label, folder))
    return out


def test_memo_is_read_back_equal_and_only_for_its_fingerprint() -> None:
    runs = _fake_runs(runs_dir())
    _write_memo("a" * 64, runs)
    assert memo_path().parent.name == "cache"
    stored = json.loads(memo_path().read_text(encoding="utf-8"))  # plain JSON, nothing unpickled
    assert stored == {"fingerprint": "a" * 64, "runs": [[label, str(path)] for label, path in runs]}
    assert _read_memo("a" * 64) == runs
    assert _read_memo("b" * 64) is None


def test_memo_is_forgotten_when_a_run_folder_is_gone_or_the_file_is_bad() -> None:
    runs = _fake_runs(runs_dir())
    _write_memo("a" * 64, runs)
    shutil.rmtree(runs[1][1])
    assert _read_memo("a" * 64) is None
    memo_path().write_text("not json", encoding="utf-8")
    assert _read_memo("a" * 64) is None
    memo_path().write_text(json.dumps({"fingerprint": "a" * 64, "runs": [["epoch 5", str(runs[0][1])]]}))
    assert _read_memo("a" * 64) is None  # not the three checkpoints


def test_fingerprint_changes_with_any_file_of_the_sample_and_the_device(tmp_path: Path) -> None:
    root = tmp_path / "digits"
    (root / "model").mkdir(parents=True)
    (root / "pairs.csv").write_text("anchor,positive\na,b\n", encoding="utf-8")
    (root / "model" / "config.json").write_text("{}", encoding="utf-8")
    first = sample_fingerprint(device="cpu", root=root)
    assert sample_fingerprint(device="cpu", root=root) == first
    assert sample_fingerprint(device="cuda", root=root) != first
    (root / "pairs.csv").write_text("anchor,positive\na,c\n", encoding="utf-8")
    stat = (root / "pairs.csv").stat()
    os.utime(root / "pairs.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = sample_fingerprint(device="cpu", root=root)
    assert second != first
    (root / "model" / "weights.bin").write_bytes(b"\0")
    assert sample_fingerprint(device="cpu", root=root) != second


@pytest.mark.slow
def test_a_later_call_reads_the_remembered_runs_and_a_stale_memo_embeds_again(monkeypatch: pytest.MonkeyPatch) -> None:
    first = embed_sample_checkpoints()
    assert [label for label, _ in first] == [label for label, _ in SAMPLE_CHECKPOINTS]
    assert all(path.parent == runs_dir() for _, path in first)
    assert _read_memo(sample_fingerprint(device="cpu")) == first
    assert embed_sample_checkpoints() == first
    # a changed engine is a new fingerprint: the memo is not trusted, the runs are looked up (and found) again
    engine_copy = Path(str(memo_path()) + ".engine.py")
    engine_copy.write_text(sample.ENGINE_SOURCE.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    monkeypatch.setattr(sample, "ENGINE_SOURCE", engine_copy)
    assert _read_memo(sample_fingerprint(device="cpu")) is None
    assert embed_sample_checkpoints() == first
    assert _read_memo(sample_fingerprint(device="cpu")) == first

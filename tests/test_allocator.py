"""The CLI's allocator settings: freed large blocks are reused (far fewer page faults), the CLI turns them on,
and where the C library is not glibc nothing changes."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import analysis.allocator as allocator
import analysis.cli as cli

REPO = Path(__file__).resolve().parent.parent

_CHILD = """
import json, resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from analysis.allocator import keep_freed_memory
    assert keep_freed_memory()
base = np.ones(48 * 2**20 // 8)  # 48 MB: above glibc's largest dynamic mmap threshold (32 MB)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(20):
    tmp = base * float(i)
    del tmp
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


@glibc_only
def test_freed_large_blocks_are_reused_instead_of_faulted_in_again() -> None:
    default, kept = _faults("default"), _faults("keep")
    # by default each 48 MB temporary is a fresh mapping, faulted in page by page; kept, the first one's
    # memory serves the other nineteen
    assert default > 0
    assert kept * 4 < default, (kept, default)


def test_the_cli_turns_it_on_before_running_a_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.synthetic import make_synthetic_run

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=20, k=2)
    calls: list[bool] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True) or True)
    assert cli.main(["summary", str(run.path)]) == 0
    assert calls == [True]


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False

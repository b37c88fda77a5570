"""The run summary counts what the run holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from analysis.runs.summary import run_summary

REPO = Path(__file__).resolve().parent.parent


def test_summary_counts(synthetic_run) -> None:
    run, _ = synthetic_run
    s = run_summary(run)
    assert s["pairs"] == len(run.pairs) == 200
    assert s["items_per_modality"] == {"image": 200, "text": 200}
    assert s["negatives_per_pair"] == {"given": 4.0, "in_batch": 0.0, "mined": 0.0}
    assert abs(s["tau"] - 0.07) < 1e-9 and s["dim"] == 16


def test_summary_cli(synthetic_run) -> None:
    run, _ = synthetic_run
    out = subprocess.run(
        [sys.executable, "-m", "analysis", "summary", str(run.path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pairs"] == 200
    bad = subprocess.run(
        [sys.executable, "-m", "analysis", "summary", str(run.path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no manifest.json" in bad.stderr

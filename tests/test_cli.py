"""The CLI is a thin face: ``--help`` and argument errors load no heavy package; commands only call the library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "faiss", "sklearn", "umap", "pandas", "numba", "cleanlab", "scipy", "streamlit")

# Runs the real dispatcher with the given argv, then reports which heavy packages it imported (whatever the
# exit path: help, an argument error, or a normal return), as one JSON line on stderr's last line.
_PROBE = """
import json, sys
heavy = {heavy!r}
try:
    from analysis.cli import main
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({{"code": code, "loaded": loaded}}), file=sys.stderr)
"""


def _probe(*argv: str) -> dict:
    code = _PROBE.format(heavy=HEAVY, argv=list(argv))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("false-negatives", "--help"),
        ("temperature",),  # missing RUN: an argument error
        ("map", "RUN", "--method", "tsne", "--out", "m.parquet"),  # a bad choice
    ],
)
def test_help_and_argument_errors_import_no_heavy_package(argv: tuple[str, ...]) -> None:
    result = _probe(*argv)
    assert result["code"] in (0, 2)
    assert result["loaded"] == [], f"`python -m analysis {' '.join(argv)}` imported {result['loaded']}"


def test_every_command_module_is_light_at_import() -> None:
    """Each command module imports only argparse, the standard library and ``analysis.choices``/``errors``."""
    names = sorted(p.stem for p in (REPO / "analysis" / "commands").glob("[!_]*.py"))
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}: importlib.import_module('analysis.commands.' + name)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []


def test_a_command_that_runs_does_load_its_dependencies(tmp_path: Path) -> None:
    """The probe can see imports: a real command run loads pandas (so the checks above can fail)."""
    from tests.synthetic import make_synthetic_run

    run, _ = make_synthetic_run(tmp_path / "run", n_pairs=20, k=2)
    result = _probe("summary", str(run.path))
    assert result["code"] == 0 and "pandas" in result["loaded"]


def test_parser_lists_every_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {
        "embed",
        "summary",
        "scores",
        "temperature",
        "gap",
        "false-negatives",
        "label-noise",
        "map",
        "export",
    }

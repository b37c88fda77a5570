"""The analysis layer never imports streamlit (it must stay usable from notebooks and the CLI)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"


def test_no_module_in_analysis_imports_streamlit() -> None:
    offenders = []
    for path in sorted(ANALYSIS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []


def test_importing_every_analysis_module_leaves_streamlit_unloaded() -> None:
    code = (
        "import importlib, pkgutil, sys, analysis, analysis.commands\n"
        "for m in pkgutil.walk_packages(analysis.__path__, 'analysis.'):\n"
        "    if m.name != 'analysis.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "assert 'streamlit' not in sys.modules, 'streamlit was imported'\n"
        "print('ok')\n"
    )
    root = ANALYSIS.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_cli_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "analysis", "--help"], cwd=ANALYSIS.parent, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    commands = [p.stem.replace("_", "-") for p in (ANALYSIS / "commands").glob("*.py") if not p.stem.startswith("_")]
    for name in commands:
        assert name in out.stdout, f"{name} missing from --help"

"""The README's code map stays true: every analysis module is listed, every function it names exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_every_analysis_module_is_in_the_code_map() -> None:
    code_map = _section("Code map")
    missing = []
    for path in sorted((REPO / "analysis").rglob("*.py")):
        rel = path.relative_to(REPO / "analysis").as_posix()
        if path.name == "__init__.py" or path.name.startswith("_") and path.name != "__main__.py":
            continue
        if rel.startswith("commands/"):
            name = path.stem.replace("_", "-")
            if f"`{name}`" not in code_map:
                missing.append(rel)
            continue
        if f"`{rel}`" not in code_map and f"`{path.name}`" not in code_map:
            missing.append(rel)
    assert not missing, f"README's code map does not list {missing}"


def test_every_function_the_number_table_names_exists() -> None:
    table = _section("Code map").split("### Which number comes from which function", 1)[1]
    names = re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", table)
    assert len(names) > 15
    for name in names:
        parts = name.split(".")
        try:  # a module
            importlib.import_module("analysis." + name)
            continue
        except ModuleNotFoundError:
            pass
        module = importlib.import_module("analysis." + ".".join(parts[:-1]))
        assert hasattr(module, parts[-1]), f"README names analysis.{name}, which does not exist"

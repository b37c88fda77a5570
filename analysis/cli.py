"""``python -m analysis COMMAND ...``: the command-line face of NegScope.

Each sub-command lives in its own module under ``analysis/commands/`` and exposes ``NAME`` (str), ``HELP``
(str), ``add_arguments(parser)`` and ``run(args) -> int``. Errors meant for the user (``NegScopeError``)
exit with code 2 and one line on stderr, never a traceback.

The CLI is a thin face over the library. A command module imports only the standard library,
:mod:`analysis.choices` (the option sets its parser lists) and :mod:`analysis.errors` at its top; everything
heavy (numpy, pandas, torch, faiss, scikit-learn, umap) is imported inside ``run``, so that ``--help`` and
argument errors answer at once (``tests/test_cli.py`` checks that they load none of it). Options are checked
by the library functions the command calls, so the app gets the same checks and messages.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import analysis.commands
from analysis.allocator import keep_freed_memory
from analysis.errors import NegScopeError


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-parser per module in ``analysis.commands``."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="NegScope: inspect what a contrastive embedding model does with pairs and negatives.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(analysis.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"analysis.commands.{info.name}")
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    keep_freed_memory()  # large temporary arrays reuse freed memory instead of page-faulting anew
    try:
        return int(args._run(args) or 0)
    except NegScopeError as exc:
        # one line, whatever the message quotes (a path or a cell with a line break)
        message = str(exc).replace("\r", "\\r").replace("\n", "\\n")
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``python -m analysis summary RUN``: what a run folder holds, as JSON."""

from __future__ import annotations

import argparse

from analysis.commands._json import write_json

NAME = "summary"
HELP = "Print a run folder's summary (items per modality, pairs, negatives per pair, dim, tau) as JSON."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("run", help="run folder")


def run(args: argparse.Namespace) -> int:
    """Print the summary."""

    from analysis.runs.folder import load_run
    from analysis.runs.summary import run_summary

    write_json(run_summary(load_run(args.run)), indent=2)
    return 0

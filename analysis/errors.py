"""Exceptions that carry a message meant for the user (shown in the app and printed by the CLI)."""

from __future__ import annotations

from pathlib import Path


class NegScopeError(Exception):
    """Base class of every error whose message is written for the user, not the developer."""


class DatasetError(NegScopeError):
    """Bad dataset input; the message names the file, and where known the row and column.

    Parameters
    ----------
    message : str
        What is wrong, in words a user understands.
    file : str or Path, optional
        The file (or folder) that holds the problem.
    row : int, optional
        1-based data row (the header is not counted) where the problem is.
    column : str, optional
        Column name where the problem is.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.row = row
        self.column = column
        self.reason = message
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)


class CheckpointError(NegScopeError):
    """A checkpoint that cannot be loaded safely or at all (unsafe pickle, missing package, bad files)."""


class RunError(NegScopeError):
    """A run folder that is missing, incomplete or inconsistent."""

"""JSON output of the commands: strict JSON, never ``NaN`` or ``Infinity`` (which most parsers refuse)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf; Python or NumPy) replaced by None, recursively.

    NumPy scalars and arrays become Python numbers and lists; tuples become lists.
    """
    if isinstance(value, dict):
        return {key: finite_json(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if type(value).__module__ == "numpy":  # an array or a scalar; numpy is not imported just for this check
        return finite_json(value.tolist() if hasattr(value, "shape") and value.shape else value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(value: Any, stream: TextIO | None = None, *, indent: int | None = None) -> None:
    """Write ``value`` as strict JSON (non-finite numbers as null) and a newline to ``stream`` (stdout)."""
    out = sys.stdout if stream is None else stream
    out.write(json.dumps(finite_json(value), indent=indent, allow_nan=False, default=str) + "\n")

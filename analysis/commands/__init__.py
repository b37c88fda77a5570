"""CLI sub-commands, one module each (discovered by ``analysis.cli``)."""

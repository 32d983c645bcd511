"""Bad input and failed output: the CLI prints the message as a single line and exits 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (file, model, layer, pair); the message names the culprit in one line."""


class OutputError(InputError):
    """An output could not be written (disk full, read-only, folder in use); earlier outputs are left intact."""

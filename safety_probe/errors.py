"""One exception type for bad user input: the CLI prints its message as a single line and exits 2."""


class InputError(ValueError):
    """Bad input (file, model, layer, pair); the message names the culprit in one line."""

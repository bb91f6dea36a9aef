"""The base class of every error a user can act on; the CLI prints it as one line, no traceback."""


class GristmillError(Exception):
    """Its message names the file, the record or the setting at fault, and what to change."""

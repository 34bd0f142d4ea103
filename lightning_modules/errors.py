"""Errors that reach the user as one sentence."""


class UserInputError(ValueError):
    """Bad input from the user: reported as one sentence and a non-zero exit, no traceback."""

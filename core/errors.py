"""Errors caused by the user's input (files, folders, recipes), which the command lines report in one
message and exit code 2, instead of a traceback. Each message names the culprit and the fix."""


class CuratorError(Exception):
    """Base of every input error. Single-argument, so DataLoader workers can re-raise them."""


class RecipeError(CuratorError, ValueError):
    """A recipe or override that cannot be used."""


class ImageDecodeError(CuratorError, ValueError):
    """An image file that cannot be decoded."""


class MissingInputError(CuratorError, FileNotFoundError):
    """A folder, file or weights file that is not there, or holds nothing usable."""

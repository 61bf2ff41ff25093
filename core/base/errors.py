"""Errors caused by the user's input (files, folders, recipes), which the command lines report in one
message and exit code 2, instead of a traceback. Each message names the culprit and the fix."""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable

# How torch's DataLoader re-raises an error from a worker process: the same class, built from a
# message that holds the worker's whole traceback before the original message.
_WORKER_PREFIX = "Caught "
_WORKER_MARK = "\nOriginal Traceback"


class CuratorError(Exception):
    """Base of every input error. Single-argument, so DataLoader workers can re-raise them.

    A re-raised error keeps only its original message: the worker's traceback says nothing a user
    can act on, and would bury the message under twenty lines.

    >>> str(CuratorError("Caught CuratorError in DataLoader worker process 0.\\nOriginal Traceback "
    ...                  "(most recent call last):\\n  File x\\ncore.errors.CuratorError: bad file\\n"))
    'bad file'
    """

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if text.startswith(_WORKER_PREFIX) and _WORKER_MARK in text:
            marker = f"{type(self).__name__}: "
            if marker in text:
                text = text[text.rindex(marker) + len(marker):].strip()
        super().__init__(text)


class RecipeError(CuratorError, ValueError):
    """A recipe or override that cannot be used."""


class ImageDecodeError(CuratorError, ValueError):
    """An image file that cannot be decoded."""


class MissingInputError(CuratorError, FileNotFoundError):
    """A folder, file or weights file that is not there, or holds nothing usable."""


class OutputError(CuratorError, OSError):
    """An output location (run folder, submission file) that cannot be written."""


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (a scheduler, `kill`, a closed terminal) otherwise ends the process without unwinding,
    # leaving temporary files behind; as KeyboardInterrupt, every `finally` and cleanup runs.
    raise KeyboardInterrupt(f"signal {signum}")


def command_line(main: Callable[[list[str]], int]) -> Callable[[list[str] | None], int]:
    """Wrap a command's ``main(argv)``: a user error prints one ``error: ...`` paragraph and returns 2.

    SIGTERM unwinds like Ctrl-C (exit 130 either way), so interrupted writes clean up after themselves.
    """

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        # Handlers can only be installed from the main thread (a command run from a thread keeps its own).
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
        try:
            return main(sys.argv[1:] if argv is None else list(argv))
        except CuratorError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    return wrapper

"""What the command line says besides data: one-line errors, their exit status, notes.

Problems are raised as :class:`UsageError` (exit status 2) or :class:`DataError` (exit
status 1), each with a one-line message; :func:`exit_status` maps any error to its status
and line. Notes and warnings go to stderr, one line each (stdout is kept for data).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

from sklearn.utils._param_validation import InvalidParameterError

__all__ = [
    "EXIT_DATA",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "PROG",
    "DataError",
    "UsageError",
    "WrongKindError",
    "exit_status",
    "first_line",
    "info",
    "short_warnings",
]

#: The program's name in usage lines and hints.
PROG = "python -m skebflow"
EXIT_USAGE, EXIT_DATA, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """A mistake in the command line itself (exit status 2)."""


class DataError(Exception):
    """A file that cannot be used, or data the estimator rejects (exit status 1)."""


class WrongKindError(DataError):
    """A file of another kind than expected: a model given as data, or data as a model."""


def first_line(error: BaseException | str) -> str:
    r"""Return the first non-empty line of a message (the class name when it has none).

    Parameters
    ----------
    error : BaseException or str
        An exception or a message.

    Returns
    -------
    str
        One line.

    Examples
    --------
    >>> first_line(ValueError("Input X contains NaN.\nMore advice."))
    'Input X contains NaN.'
    """
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0].strip()


def info(message: str) -> None:
    """Print an informational line to stderr (stdout is kept for data).

    Parameters
    ----------
    message : str
        The line.
    """
    print(message, file=sys.stderr)


def exit_status(error: BaseException) -> tuple[int, str]:
    """Return the exit status and the one-line message of an error.

    Parameters
    ----------
    error : BaseException
        The error that ended the command.

    Returns
    -------
    status : int
        2 for a mistake in the command line, 130 for an interrupt, 1 otherwise.
    message : str
        One line (an unexpected error is named and points to ``--debug``).
    """
    if isinstance(error, (UsageError, InvalidParameterError)):
        return EXIT_USAGE, first_line(error)
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, (DataError, ValueError, TypeError, OSError)):
        return EXIT_DATA, first_line(error)
    name = type(error).__name__
    return EXIT_DATA, f"unexpected {name}: {first_line(error)} (rerun with --debug to see where)"


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """Print a warning as one line ``warning: ...`` (a ``warnings.showwarning``)."""
    info(f"warning: {first_line(message)}")


@contextlib.contextmanager
def short_warnings(debug: bool) -> Iterator[None]:
    """Show each warning as one line (in Python's full form with ``--debug``).

    Parameters
    ----------
    debug : bool
        Whether ``--debug`` was given (then warnings keep Python's full form).

    Yields
    ------
    None
        While the command runs.
    """
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        yield

"""Where a warning should point: the first frame outside skebflow and scikit-learn."""

from __future__ import annotations

import os
import sys

__all__ = ["user_stacklevel"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKLEARN = f"{os.sep}sklearn{os.sep}"


def _inside(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE + os.sep) or _SKLEARN in filename


def user_stacklevel() -> int:
    """Return the ``stacklevel`` that points a warning at the user's line.

    Called by the function that then calls :func:`warnings.warn`, it counts the frames up
    to the first one whose file lies outside skebflow and scikit-learn (whose wrappers,
    such as ``fit``'s parameter validation, sit between the user and skebflow). Python
    3.12's ``skip_file_prefixes`` does the same; this works on 3.10 and 3.11 too.

    Examples
    --------
    >>> def warn_here() -> int:
    ...     return user_stacklevel()
    >>> warn_here()  # a function outside skebflow: its own line
    1
    """
    frame = sys._getframe(1)  # the function that will call warnings.warn
    level = 1
    while frame is not None and _inside(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level

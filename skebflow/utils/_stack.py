"""Where a warning should point: the first frame outside skebflow and its plumbing."""

from __future__ import annotations

import os
import sys

__all__ = ["user_stacklevel"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Libraries whose frames sit between a user and skebflow (scikit-learn's wrappers and
#: meta-estimators, joblib's parallel loops): a warning skips them too.
_PLUMBING = tuple(f"{os.sep}{name}{os.sep}" for name in ("sklearn", "joblib"))


def _inside(filename: str) -> bool:
    if os.path.abspath(filename).startswith(_PACKAGE + os.sep):
        return True
    return any(part in filename for part in _PLUMBING)


def user_stacklevel() -> int:
    """Return the ``stacklevel`` that points a warning at the user's line.

    Called by the function that then calls :func:`warnings.warn`, it counts the frames up
    to the first one whose file lies outside skebflow, scikit-learn and joblib (whose
    wrappers, such as ``fit``'s parameter validation or ``cross_val_score``'s loop, sit
    between the user and skebflow). Python
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

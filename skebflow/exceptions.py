"""Every warning and error class of skebflow, in one module (as ``sklearn.exceptions``).

This module is at the bottom of the package: every layer may raise or warn with these
classes, and users filter them by importing from here (the warnings also from
``skebflow``).
"""

from __future__ import annotations

__all__ = [
    "DivergenceWarning",
    "DriftWarning",
    "GrossOutlierWarning",
    "ModelVersionWarning",
    "NotAModelFileError",
    "PointMassWarning",
    "TrainingDivergedError",
]

_GENERIC_REMEDIES = (
    "Try a lower learning_rate, a smaller max_grad_norm, objective='dsm' with a larger "
    "noise_scale, or preprocessing='standardize'."
)


class DivergenceWarning(UserWarning):
    """A fit ended with a model worse than the untrained flow, or far off the data."""


class ModelVersionWarning(UserWarning):
    """The model file was written by another version of skebflow or torch."""


class DriftWarning(UserWarning):
    """A warm start's new data differ from what the fitted model (and its preprocessing) saw."""


class GrossOutlierWarning(UserWarning):
    """Training rows hold values so extreme that they would set the standardization."""


class PointMassWarning(UserWarning):
    """The training data have point masses (discrete columns, repeated values or rows).

    A continuous density's likelihood can grow without bound on them; the warning names
    the columns and the remedy (``dequantize=True`` for integer data).
    """


class NotAModelFileError(ValueError):
    """The file is not a skebflow model file: unreadable, foreign, or a pickle (refused)."""


class TrainingDivergedError(FloatingPointError):
    """Training met non-finite numbers it cannot step over.

    ``seen`` says what happened; the message adds generic remedies, which a caller that
    knows the configuration (the estimator) replaces by specific ones.

    Examples
    --------
    >>> error = TrainingDivergedError("The loss became nan at epoch 3.")
    >>> error.seen
    'The loss became nan at epoch 3.'
    >>> isinstance(error, FloatingPointError)
    True
    """

    def __init__(self, seen: str) -> None:
        super().__init__(f"{seen} {_GENERIC_REMEDIES}")
        self.seen = seen

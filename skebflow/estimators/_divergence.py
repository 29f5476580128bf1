"""Training that went wrong, told to the user with the remedies for their configuration.

A run that ends with finite numbers that mean nothing (what
:func:`skebflow.training.diagnose` finds: a held-out likelihood worse than the untrained
flow's, a training loss that grew by orders of magnitude, samples orders of magnitude
outside the data) is not an error (the model is still a normalized density), so it ends
``fit`` with a :class:`~skebflow.exceptions.DivergenceWarning` that says what was seen and
what would change it for this configuration (:func:`remedies`); non-finite numbers during
training stop it with a ``FloatingPointError`` carrying the same remedies.
"""

from __future__ import annotations

import warnings

from skebflow.estimators._defaults import DEFAULT_LEARNING_RATES, auto_learning_rate
from skebflow.exceptions import DivergenceWarning
from skebflow.objectives import SCORE_OBJECTIVES
from skebflow.utils import user_stacklevel

__all__ = ["remedies", "warn_divergence"]


def remedies(
    *,
    architecture: str,
    objective: str,
    learning_rate: float,
    batch_size: int,
    max_grad_norm: float | None,
    noise_scale: float,
    preprocessing: str | None,
) -> str:
    """Return what would change a diverging fit, for this configuration.

    Examples
    --------
    >>> print(remedies(architecture="spline", objective="ml", learning_rate=0.3, batch_size=64,
    ...                max_grad_norm=10.0, noise_scale=0.05, preprocessing="standardize"))
    Try learning_rate=0.003 (the default for architecture='spline' with this objective; this fit used 0.3), or max_grad_norm=1.0 (this fit used 10.0).
    """  # noqa: E501
    default = None
    if architecture in DEFAULT_LEARNING_RATES:
        default = auto_learning_rate(architecture, objective, batch_size)
    if default is not None and learning_rate > default:
        tips = [
            f"learning_rate={default:g} (the default for architecture={architecture!r} "
            f"with this objective; this fit used {learning_rate:g})"
        ]
    else:
        tips = [
            f"a lower learning_rate (e.g. {learning_rate / 3:.2g}; this fit used {learning_rate:g})"
        ]
    if max_grad_norm is None or max_grad_norm > 1.0:
        tips.append(f"max_grad_norm=1.0 (this fit used {max_grad_norm})")
    if objective in SCORE_OBJECTIVES:
        if objective == "dsm":
            tips.append(f"a larger noise_scale (this fit used {noise_scale:g})")
        tips.append(
            f"objective='ml' instead of {objective!r} (maximum likelihood cannot leak "
            "mass through a nearly singular layer)"
        )
    if preprocessing is None:
        tips.append("preprocessing='standardize'")
    return "Try " + ", or ".join(tips) + "."


def warn_divergence(findings: list[str], advice: str) -> None:
    """Warn with a :class:`~skebflow.exceptions.DivergenceWarning` naming ``findings``.

    ``findings`` are the lines of :func:`skebflow.training.diagnose` (nothing is said
    when it is empty); ``advice`` is :func:`remedies` for the fit's configuration.
    """
    if findings:
        warnings.warn(
            "The fit diverged: " + "; ".join(findings) + f". {advice}",
            DivergenceWarning,
            stacklevel=user_stacklevel(),
        )

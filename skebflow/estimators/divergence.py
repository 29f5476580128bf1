"""Training that went wrong without a NaN: detected after ``fit``, reported with remedies.

A learning rate far too high, or score matching leaking mass through a nearly singular
layer, can end a fit with finite numbers that mean nothing: a held-out likelihood worse
than the untrained flow's, a training loss that grew by orders of magnitude, samples
orders of magnitude outside the data. None of these is an error (the model is still a
normalized density), so each ends ``fit`` with a :class:`DivergenceWarning` that says what
was seen and what would change it for this configuration (:func:`remedies`); non-finite
numbers during training stop it with a ``FloatingPointError`` carrying the same remedies.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from skebflow.estimators.defaults import DEFAULT_LEARNING_RATES
from skebflow.nn.flow import EnergyFlow
from skebflow.objectives.registry import SCORE_OBJECTIVES
from skebflow.training.config import TrainResult

__all__ = [
    "LOSS_GROWTH",
    "SAMPLE_RANGE_FACTOR",
    "DivergenceWarning",
    "check_divergence",
    "remedies",
]

#: The training loss "grew by orders of magnitude" when its last epoch exceeds its best by
#: this many times ``max(1, |best|)``.
LOSS_GROWTH = 10.0
#: Samples "leave the data's range" when their largest magnitude, in preprocessed units,
#: exceeds this many times the training data's (at least 1).
SAMPLE_RANGE_FACTOR = 100.0
#: Samples drawn for that check.
N_CHECK_SAMPLES = 1000


class DivergenceWarning(UserWarning):
    """A fit ended with a model worse than the untrained flow, or far off the data."""


def remedies(
    *,
    architecture: str,
    objective: str,
    learning_rate: float,
    max_grad_norm: float | None,
    noise_scale: float,
    preprocessing: str | None,
) -> str:
    """Return what would change a diverging fit, for this configuration.

    Examples
    --------
    >>> print(remedies(architecture="spline", objective="ml", learning_rate=0.3,
    ...                max_grad_norm=10.0, noise_scale=0.05, preprocessing="standardize"))
    Try learning_rate=0.003 (the default for architecture='spline'; this fit used 0.3), or max_grad_norm=1.0 (this fit used 10.0).
    """  # noqa: E501
    default = DEFAULT_LEARNING_RATES.get(architecture)
    if default is not None and learning_rate > default:
        tips = [
            f"learning_rate={default:g} (the default for architecture={architecture!r}; "
            f"this fit used {learning_rate:g})"
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


def check_divergence(
    result: TrainResult,
    *,
    initial_score: float | None,
    flow: EnergyFlow,
    y_train: Tensor,
    advice: str,
    generator: torch.Generator,
) -> list[str]:
    """Warn about a finished fit that diverged without a NaN; return what was seen.

    Parameters
    ----------
    result : TrainResult
        The training run.
    initial_score : float or None
        The validation log-likelihood of the untrained flow (``None`` without validation).
    flow : EnergyFlow
        The kept flow, in preprocessed units.
    y_train : Tensor
        The training data in preprocessed units.
    advice : str
        :func:`remedies` for this configuration.
    generator : torch.Generator
        Seeds the check's samples.

    Returns
    -------
    list of str
        One line per finding (empty for a healthy fit); a :class:`DivergenceWarning`
        carries them all.
    """
    seen = []
    if initial_score is not None and result.validation_scores:
        best = max(result.validation_scores)
        if best < initial_score:
            seen.append(
                f"the kept model's held-out log-likelihood ({best:.4g} per sample, epoch "
                f"{result.best_epoch}) is worse than the untrained flow's ({initial_score:.4g})"
            )
    curve = [v for v in result.loss_curve if math.isfinite(v)]
    if len(curve) > 1:
        low = min(curve)
        if curve[-1] - low > LOSS_GROWTH * max(1.0, abs(low)):
            seen.append(
                f"the training loss grew from {low:.4g} (epoch {curve.index(low) + 1}) to "
                f"{curve[-1]:.4g} (epoch {len(curve)})"
            )
    reach = max(1.0, float(y_train.abs().max()))
    try:
        with torch.no_grad():
            samples = flow.sample(N_CHECK_SAMPLES, generator=generator)
        largest = float(samples.abs().max())
    except FloatingPointError as exc:
        largest, failure = math.inf, str(exc)
    else:
        failure = None
    if failure is not None:
        seen.append(f"samples could not be drawn ({failure})")
    elif not largest <= SAMPLE_RANGE_FACTOR * reach:
        seen.append(
            f"samples reach {largest:.3g} in preprocessed units, where the training data "
            f"stay within {reach:.3g}"
        )
    if seen:
        warnings.warn(
            "The fit diverged: " + "; ".join(seen) + f". {advice}",
            DivergenceWarning,
            stacklevel=4,  # fit's caller, above scikit-learn's fit wrapper
        )
    return seen

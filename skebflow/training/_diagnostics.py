"""Training that went wrong without a NaN, seen in a finished run (torch only).

A learning rate far too high, or score matching leaking mass through a nearly singular
layer, can end a run with finite numbers that mean nothing: a held-out likelihood worse
than the untrained flow's, a training loss that grew by orders of magnitude, samples
orders of magnitude outside the data. :func:`diagnose` looks for each and says what it
saw; the estimator turns the findings into a warning with remedies for its configuration.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from skebflow.nn import EnergyFlow
from skebflow.training._config import TrainResult

__all__ = ["LOSS_GROWTH", "N_CHECK_SAMPLES", "SAMPLE_RANGE_FACTOR", "diagnose"]

#: The training loss "grew by orders of magnitude" when its last epoch exceeds its best by
#: this many times ``max(1, |best|)``.
LOSS_GROWTH = 10.0
#: Samples "leave the data's range" when their largest magnitude, in preprocessed units,
#: exceeds this many times the training data's (at least 1).
SAMPLE_RANGE_FACTOR = 100.0
#: Samples drawn for that check.
N_CHECK_SAMPLES = 1000


def diagnose(
    result: TrainResult,
    *,
    initial_score: float | None,
    flow: EnergyFlow,
    y_train: Tensor,
    generator: torch.Generator,
    tolerance: float = 0.0,
) -> list[str]:
    """Return what went wrong in a finished run that ended without a NaN (empty if nothing).

    Parameters
    ----------
    result : TrainResult
        The training run.
    initial_score : float or None
        The validation log-likelihood of the untrained flow (``None`` without validation).
    flow : EnergyFlow
        The kept flow, in the units it was trained in.
    y_train : Tensor
        The training data in those units.
    generator : torch.Generator
        Seeds the check's samples.
    tolerance : float, default=0.0
        Held-out differences up to this size are noise, not divergence (the estimator
        passes two standard errors of the validation score): a kept untrained flow, or a
        kept model worse than it, is reported only when the gap exceeds it.

    Returns
    -------
    list of str
        One line per finding: no epoch better on the held-out rows than the untrained
        flow (which was then kept, ``best_epoch == 0``) or a kept model worse than it, a
        training loss that grew by orders of magnitude, or samples far outside the data
        (or samples that could not be drawn).

    Examples
    --------
    >>> from skebflow.nn._architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> y = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> healthy = TrainResult(flow=flow, loss_curve=[2.0, 1.5, 1.4])
    >>> diagnose(healthy, initial_score=None, flow=flow, y_train=y,
    ...          generator=torch.Generator().manual_seed(0))
    []
    >>> grown = TrainResult(flow=flow, loss_curve=[2.0, 1.5, 80.0])
    >>> diagnose(grown, initial_score=None, flow=flow, y_train=y,
    ...          generator=torch.Generator().manual_seed(0))
    ['the training loss grew from 1.5 (epoch 2) to 80 (epoch 3)']
    """
    seen = []
    if initial_score is not None and result.validation_scores:
        best = max(result.validation_scores)
        if initial_score - best <= tolerance:
            pass  # the best epoch is as good as the untrained flow, within the noise
        elif result.best_epoch == 0:
            seen.append(
                f"no epoch improved on the untrained flow's held-out log-likelihood "
                f"({initial_score:.4g} per sample; the best epoch reached {best:.4g}), so "
                "the untrained flow was kept"
            )
        elif best < initial_score:
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
        seen.append(f"samples could not be drawn ({exc})")
    else:
        if not largest <= SAMPLE_RANGE_FACTOR * reach:
            seen.append(
                f"samples reach {largest:.3g} in preprocessed units, where the training data "
                f"stay within {reach:.3g}"
            )
    return seen

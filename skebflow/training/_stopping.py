"""When training stops: no improvement for a while, and no rising trend left in the scores.

A fixed patience stops a fit that is still learning when the monitored score rises more
slowly than it fluctuates: the best value is a high point of the noise, and a slow rise
needs many epochs to beat it. :func:`rising_trend` tests the recent scores for a
monotone rise (the Mann–Kendall test: are later values larger than earlier ones more
often than chance allows?), so a fit stops only when both hold: ``n_iter_no_change``
epochs without a new best, and no significant rise over the last ``trend_window``
epochs. The test counts orders, not sizes, so one lucky or unlucky epoch (a spike of
the validation score) does not decide it, as it would decide a least-squares slope. A
fit that has converged (no trend) or that overfits (a falling one) stops after the
patience, as before.

References
----------
.. [1] H. B. Mann, "Nonparametric tests against trend", *Econometrica* 13(3), 245–259,
   1945.
.. [2] M. G. Kendall, *Rank Correlation Methods*, Griffin, 1975.
.. [3] L. Prechelt, "Early stopping - but when?", in *Neural Networks: Tricks of the
   Trade*, Springer, 1998.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["rising_trend", "sen_slope", "trend_z_statistic"]


def trend_z_statistic(values: Sequence[float]) -> float:
    """Return the Mann–Kendall statistic of ``values`` in epoch order, as a z score.

    ``S`` counts the pairs ``i < j`` with ``values[j] > values[i]`` minus those with
    ``values[j] < values[i]``; without a trend its variance is
    ``n (n - 1) (2n + 5) / 18`` (ties make it smaller; ignored here, which makes the test
    conservative), and ``z = (S - sign(S)) / sqrt(var)`` with the continuity correction.

    Parameters
    ----------
    values : sequence of float
        Scores in epoch order.

    Returns
    -------
    float
        About standard normal without a trend; positive when the values rise. 0 for
        fewer than three values.

    Examples
    --------
    >>> round(trend_z_statistic([0.0, 0.2, 0.1, 0.3, 0.2, 0.4]), 2)
    1.69
    >>> trend_z_statistic([1.0, 1.0, 1.0])
    0.0
    """
    n = len(values)
    if n < 3:
        return 0.0
    s = 0
    for i in range(n - 1):
        first = values[i]
        for later in values[i + 1 :]:
            s += (later > first) - (later < first)
    if s == 0:
        return 0.0
    variance = n * (n - 1) * (2 * n + 5) / 18
    return (s - math.copysign(1, s)) / math.sqrt(variance)


def sen_slope(values: Sequence[float]) -> float:
    """Return the Theil–Sen slope of ``values`` against their index.

    The median of the slopes between every pair of values: a robust rise per epoch (one
    spike barely moves it).

    Parameters
    ----------
    values : sequence of float
        Scores in epoch order.

    Returns
    -------
    float
        The median pairwise slope; 0 for fewer than two values.

    Examples
    --------
    >>> sen_slope([0.0, 0.1, 5.0, 0.3, 0.4])
    0.1
    """
    slopes = sorted(
        (values[j] - values[i]) / (j - i)
        for i in range(len(values) - 1)
        for j in range(i + 1, len(values))
    )
    if not slopes:
        return 0.0
    middle = len(slopes) // 2
    return slopes[middle] if len(slopes) % 2 else 0.5 * (slopes[middle - 1] + slopes[middle])


def rising_trend(
    values: Sequence[float], window: int, threshold: float, *, min_slope: float = 0.0
) -> bool:
    """Whether the last ``window`` values still rise significantly, and by enough.

    Parameters
    ----------
    values : sequence of float
        Scores in epoch order (larger is better).
    window : int
        How many of the last values are tested; fewer values than that (the start of
        a fit) are no evidence of a trend.
    threshold : float
        The z score (:func:`trend_z_statistic`) above which the rise counts (2: a
        one-sided test at about the 2 % level).
    min_slope : float, default=0.0
        The rise per epoch (:func:`sen_slope`) it must also exceed: a trend too slow to
        matter (the trainer passes ``tol / n_iter_no_change``) does not keep training.

    Returns
    -------
    bool
        True when the trend's z score over the window exceeds ``threshold`` and its
        slope exceeds ``min_slope``.

    Examples
    --------
    >>> slow = [0.01 * i + 0.05 * (-1) ** i for i in range(40)]
    >>> rising_trend(slow, window=36, threshold=2.0)
    True
    >>> rising_trend(slow, window=36, threshold=2.0, min_slope=0.02)  # too slow
    False
    >>> rising_trend([0.05 * (-1) ** i for i in range(40)], window=36, threshold=2.0)
    False
    """
    if window < 3 or len(values) < window:
        return False
    recent = values[-window:]
    return trend_z_statistic(recent) > threshold and sen_slope(recent) > min_slope

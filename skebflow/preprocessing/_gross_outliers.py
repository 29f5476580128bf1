r"""Gross outliers in training data: values so far out that they set the standardization.

The default preprocessing standardizes each column by its mean and standard deviation. One
value of 1e10 among 1,000 standard normal rows makes that column's standard deviation
about 3e8: the other 999 rows are squeezed into a sliver a billionth of a unit wide, the
flow cannot resolve them, and the held-out log-likelihood falls from −2.83 to −21.96
(at 1e15 the training meets non-finite numbers). :func:`find_gross_outliers` finds such
values on the raw training rows by a robust z-score, the distance from the column's
median in units of its median absolute deviation (MAD, scaled to a standard deviation
for Gaussian data); the estimator warns with
:class:`~skebflow.exceptions.GrossOutlierWarning`, naming the rows, before it trains.
Heavy tails are not gross outliers: a value must lie at least
:data:`GROSS_OUTLIER_ROBUST_Z` robust standard deviations out (1e4 among 1,000 standard
normal rows, harmless to the fit, is not reported).

References
----------
.. [1] P. J. Rousseeuw, C. Croux, "Alternatives to the Median Absolute Deviation",
   Journal of the American Statistical Association 88(424), 1273–1283, 1993.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["GROSS_OUTLIER_ROBUST_Z", "GrossOutliers", "find_gross_outliers"]

#: A value at least this many robust standard deviations (1.4826 MAD) from its column's
#: median is a gross outlier.
GROSS_OUTLIER_ROBUST_Z = 1e5
#: The median and MAD are taken on at most this many rows (the first ones); every row is
#: checked against them.
_STATISTICS_MAX_ROWS = 100_000
_NAMED = 5


@dataclass
class GrossOutliers:
    """What :func:`find_gross_outliers` found; empty (falsy) when nothing.

    Attributes
    ----------
    cells : list of tuple
        ``(row, column, value, robust_z)`` of the most extreme values, largest first (at
        most 5).
    n_rows : int
        How many rows hold a gross outlier.
    """

    cells: list[tuple[int, int, float, float]] = field(default_factory=list)
    n_rows: int = 0

    def __bool__(self) -> bool:
        return self.n_rows > 0

    def message(self) -> str:
        """Return a warning naming the rows and what to do."""
        shown = "; ".join(
            f"row {row}, column {column}: {value:.3g} ({z:.2g} robust standard deviations "
            "from the column's median)"
            for row, column, value, z in self.cells
        )
        more = (
            f" (and {self.n_rows - len(self.cells)} more rows)"
            if self.n_rows > len(self.cells)
            else ""
        )
        return (
            f"{self.n_rows} training row(s) hold gross outliers: {shown}{more}. The "
            "standardization is set by such values, which squeezes the other rows into a "
            "sliver the flow cannot resolve (the held-out likelihood suffers, or training "
            "meets non-finite numbers). Remove or correct these rows, or transform "
            "heavy-tailed columns (e.g. log) before fitting."
        )


def find_gross_outliers(x: Tensor) -> GrossOutliers:
    """Find values far beyond their column's robust spread in the raw training rows ``x``.

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)
        The raw training data (finite).

    Returns
    -------
    GrossOutliers
        Falsy when no value lies :data:`GROSS_OUTLIER_ROBUST_Z` robust standard
        deviations or more from its column's median. Columns whose MAD is 0 (more than
        half the rows share one value) are not judged.

    Examples
    --------
    >>> x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> bool(find_gross_outliers(x))
    False
    >>> x[17, 1] = 1e10
    >>> found = find_gross_outliers(x)
    >>> found.n_rows, found.cells[0][:3]
    (1, (17, 1, 10000000000.0))
    """
    x = x.detach().to(torch.float64).flatten(1)
    found = GrossOutliers()
    if x.shape[0] < 3:
        return found
    sample = x[:_STATISTICS_MAX_ROWS]
    median = sample.median(dim=0).values
    spread = 1.4826 * (sample - median).abs().median(dim=0).values
    judged = spread > 0
    z = torch.zeros_like(x)
    z[:, judged] = (x[:, judged] - median[judged]).abs() / spread[judged]
    gross = z >= GROSS_OUTLIER_ROBUST_Z
    rows = torch.nonzero(gross.any(dim=1)).flatten()
    found.n_rows = len(rows)
    if found.n_rows:
        worst = z.amax(dim=1)[rows]
        for index in torch.argsort(worst, descending=True)[:_NAMED]:
            row = int(rows[index])
            column = int(torch.argmax(z[row]))
            found.cells.append((row, column, float(x[row, column]), float(z[row, column])))
    return found

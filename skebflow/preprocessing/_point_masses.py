r"""Point masses in training data: discrete columns, heavily repeated values, duplicate rows.

A continuous density has no finite answer on data with point masses. Where a column
takes a few values only (binary, counts, ratings) or one value over and over (a
zero-inflated column), or where whole rows repeat, maximum likelihood can put ever
narrower spikes on the repeated values: the training and held-out log-likelihoods climb
without bound (+13 nats per sample after 30 epochs on 0/1 columns), early stopping
never stops it, and ``score`` and ``GridSearchCV`` reward it. :func:`find_point_masses`
detects such data on the raw training values; the estimator warns with
:class:`~skebflow.exceptions.PointMassWarning`, naming the columns and the remedy
(``dequantize=True`` for integer data, whose ``exp(score)`` is then the probability of
the integer value), and trains with the degenerate-data jitter, which bounds the spikes
(``docs/user_guide.md``, "What skebflow does with bad or unusual data").

References
----------
.. [1] L. Theis, A. van den Oord, M. Bethge, "A note on the evaluation of generative
   models", ICLR 2016 (dequantization of discrete data before a continuous density).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from skebflow.preprocessing._degeneracy import name_columns

__all__ = [
    "DISCRETE_MAX_VALUES_FRACTION",
    "DUPLICATE_ROWS_FRACTION",
    "POINT_MASS_MAX_ROWS",
    "REPEATED_VALUE_FRACTION",
    "PointMasses",
    "find_point_masses",
]

#: A column with at most this fraction of the rows as distinct values (and at most
#: ``DISCRETE_MAX_VALUES`` of them) is discrete: 2 values in 40 rows, 50 in 1,000.
DISCRETE_MAX_VALUES_FRACTION = 0.05
#: ... but never more than this many distinct values (a 10,000-row column of 600 values
#: is continuous enough for a flow).
DISCRETE_MAX_VALUES = 500
#: A column whose most frequent value holds at least this fraction of the rows has a
#: point mass there (a zero-inflated column); continuous data hold 1 / n_samples.
REPEATED_VALUE_FRACTION = 0.2
#: Rows that exactly repeat other rows, from this fraction of the rows on.
DUPLICATE_ROWS_FRACTION = 0.05
#: The checks look at this many rows at most (the first ones).
POINT_MASS_MAX_ROWS = 10_000


@dataclass
class PointMasses:
    """What :func:`find_point_masses` found; empty (falsy) for continuous data.

    Attributes
    ----------
    discrete : list of int
        Columns with few distinct values.
    repeated : list of int
        Other columns whose most frequent value holds a large share of the rows.
    duplicate_fraction : float
        The share of rows that repeat an earlier row exactly (reported from
        :data:`DUPLICATE_ROWS_FRACTION` on).
    integer : bool
        Whether the data are integer-valued (``dequantize=True`` applies).
    """

    discrete: list[int] = field(default_factory=list)
    repeated: list[int] = field(default_factory=list)
    duplicate_fraction: float = 0.0
    integer: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.discrete or self.repeated or self.duplicate_fraction >= DUPLICATE_ROWS_FRACTION
        )

    def message(self, jitter: float) -> str:
        """Return a warning that names what was found and what to do."""
        parts = []
        if self.discrete:
            parts.append(f"column(s) {name_columns(self.discrete)} take only a few distinct values")
        if self.repeated:
            parts.append(f"column(s) {name_columns(self.repeated)} repeat one value in many rows")
        if self.duplicate_fraction >= DUPLICATE_ROWS_FRACTION:
            parts.append(f"{self.duplicate_fraction:.0%} of the rows repeat other rows exactly")
        if self.integer:
            remedy = (
                "The data are integers: use dequantize=True (with preprocessing='logit' and "
                "bounds for a known range), so that exp(score) is the probability of each "
                "integer value"
            )
        else:
            remedy = (
                "Use dequantize=True for integer-valued data; otherwise drop or encode such "
                "columns, or add noise of the data's resolution yourself"
            )
        return (
            "The training data have point masses: "
            + "; ".join(parts)
            + ". A continuous density can put ever narrower spikes on repeated values, so "
            "its log-likelihood (and score) would grow without bound and mean little. "
            f"Training adds Gaussian jitter of standard deviation {jitter:g} (in "
            f"standardized units) to bound it. {remedy}."
        )


def find_point_masses(x: Tensor) -> PointMasses:
    """Detect discrete columns, heavily repeated values and duplicate rows in ``x``.

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)
        The raw training data (before preprocessing); at most
        :data:`POINT_MASS_MAX_ROWS` rows are looked at.

    Returns
    -------
    PointMasses
        Falsy when nothing was found. Constant columns are left to
        :func:`~skebflow.preprocessing.find_degeneracy`.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> smooth = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    >>> binary = (smooth[:, :1] > 0).double()
    >>> inflated = torch.where(smooth[:, 1:] > 0, smooth[:, 1:], 0.0)
    >>> found = find_point_masses(torch.cat([smooth, binary, inflated], dim=1))
    >>> found.discrete, found.repeated, found.integer
    ([2], [3], False)
    >>> bool(find_point_masses(smooth))
    False
    """
    x = x.detach().to(torch.float64).flatten(1)[:POINT_MASS_MAX_ROWS]
    n, _ = x.shape
    found = PointMasses()
    if n < 2:
        return found
    ordered = torch.sort(x, dim=0).values
    new_value = torch.ones_like(ordered, dtype=torch.bool)
    new_value[1:] = ordered[1:] != ordered[:-1]
    distinct = new_value.sum(dim=0)
    # The longest run of equal values in each sorted column: position minus the start of
    # its run, plus one.
    position = torch.arange(n, device=x.device).unsqueeze(1).expand_as(ordered)
    start = torch.where(new_value, position, torch.zeros_like(position)).cummax(dim=0).values
    longest = (position - start + 1).amax(dim=0)
    varying = distinct > 1
    # Below 40 rows even two values are not evidence of a discrete column.
    limit = max(2.0, min(DISCRETE_MAX_VALUES, DISCRETE_MAX_VALUES_FRACTION * n))
    discrete = varying & (distinct <= limit) & (n >= 40)
    repeated = varying & ~discrete & (longest >= REPEATED_VALUE_FRACTION * n) & (longest > 1)
    found.discrete = [int(j) for j in torch.nonzero(discrete).flatten().cpu()]
    found.repeated = [int(j) for j in torch.nonzero(repeated).flatten().cpu()]
    found.duplicate_fraction = 1.0 - len(torch.unique(x, dim=0)) / n
    found.integer = bool((x == torch.round(x)).all())
    return found

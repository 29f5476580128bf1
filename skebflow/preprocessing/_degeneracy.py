r"""Degenerate training data: constant and collinear columns, fewer rows than columns.

A density estimator fitted to data that fill less than the whole space has no bounded
answer: the maximum-likelihood density concentrates on the data's subspace and grows
without limit there, while a point a little off it scores :math:`-\infty` in the limit.
:func:`find_degeneracy` detects such data in the units the flow is trained in (after the
preprocessing map): constant columns, (nearly) collinear columns, and
``n_samples <= n_features``. The estimator then warns, naming what it found, and trains
on the data with a small Gaussian jitter added to every training batch, in the flow's
units (its standard deviation is an estimator default). The density is then bounded and
meaningful, as a ``GaussianMixture``'s ``reg_covar`` bounds its covariances: a direction
without spread is learned with about the jitter's width, so each degenerate direction
adds about :math:`-\log(\sqrt{2\pi}\,\epsilon) \approx 6` nats at the data and a point
one unit off it scores about :math:`-1/(2\epsilon^2)` (``docs/user_guide.md``, "What
skebflow does with bad or unusual data").

References
----------
.. [1] C. M. Bishop, "Pattern Recognition and Machine Learning", 2006, Section 9.2.1
   (singularities of the Gaussian mixture likelihood).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Degeneracy", "find_degeneracy", "name_columns"]

#: A direction whose variance is below this fraction of the mean variance is degenerate.
COLLINEAR_RTOL = 1e-10
#: Collinearity is sought on at most this many rows and up to this many columns (an
#: eigendecomposition of the D x D covariance, O(D^3)).
COLLINEAR_MAX_ROWS = 10_000
COLLINEAR_MAX_FEATURES = 2048
#: Columns named in a message, at most.
_NAMED = 10


@dataclass
class Degeneracy:
    """What :func:`find_degeneracy` found; empty (falsy) for non-degenerate data.

    Attributes
    ----------
    constant : list of int
        Columns with a single value.
    collinear : list of list of int
        Groups of columns that are (nearly) linear combinations of each other: the
        largest entries of each degenerate direction.
    n_samples, n_features : int
        The training data's shape.
    """

    constant: list[int] = field(default_factory=list)
    collinear: list[list[int]] = field(default_factory=list)
    n_samples: int = 0
    n_features: int = 0

    @property
    def too_few_rows(self) -> bool:
        """Whether the rows cannot span the space (``n_samples <= n_features``)."""
        return 0 < self.n_samples <= self.n_features

    def __bool__(self) -> bool:
        return bool(self.constant or self.collinear or self.too_few_rows)

    def message(self, jitter: float) -> str:
        """Return a warning that names what was found and what the estimator does."""
        parts = []
        if self.too_few_rows:
            parts.append(
                f"{self.n_samples} training rows for {self.n_features} features: the rows "
                f"span at most {self.n_samples - 1} of the {self.n_features} dimensions, so "
                "the density can only learn their subspace, and nothing about the spread "
                "across it"
            )
        if self.constant:
            parts.append(f"constant column(s) {name_columns(self.constant)}")
        if self.collinear:
            groups = ", ".join(name_columns(group) for group in self.collinear[:_NAMED])
            parts.append(f"(nearly) collinear columns {groups}")
        return (
            "The training data are degenerate: "
            + "; ".join(parts)
            + f". Without help the density would grow without bound on the data. Training "
            f"adds Gaussian jitter of standard deviation {jitter:g} (in standardized "
            "units) to bound it; drop or combine such columns to avoid this."
        )


def name_columns(columns: list[int]) -> str:
    """Return ``"[0, 3, ...]"``: the first columns of a list, for a warning."""
    shown = ", ".join(str(c) for c in columns[:_NAMED])
    return f"[{shown}{', ...' if len(columns) > _NAMED else ''}]"


def find_degeneracy(y: Tensor) -> Degeneracy:
    """Detect constant and collinear columns and too few rows in training data ``y``.

    Parameters
    ----------
    y : Tensor of shape (n_samples, n_features)
        The training data in the units the flow sees (after the preprocessing map).

    Returns
    -------
    Degeneracy
        Falsy when nothing was found. Collinearity is looked for on at most
        :data:`COLLINEAR_MAX_ROWS` rows and only up to :data:`COLLINEAR_MAX_FEATURES`
        columns.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.randn(100, 2, generator=g, dtype=torch.float64)
    >>> y = torch.cat([a, a[:, :1], torch.zeros(100, 1, dtype=torch.float64)], dim=1)
    >>> found = find_degeneracy(y)
    >>> found.constant, found.collinear
    ([3], [[0, 2]])
    >>> bool(find_degeneracy(a))
    False
    """
    y = y.detach().to(torch.float64).flatten(1)
    n, d = y.shape
    found = Degeneracy(n_samples=n, n_features=d)
    constant = (y.amax(dim=0) == y.amin(dim=0)).cpu()
    found.constant = [int(j) for j in torch.nonzero(constant).flatten()]
    varying = torch.nonzero(~constant).flatten()
    if found.too_few_rows or len(varying) < 2 or d > COLLINEAR_MAX_FEATURES:
        return found
    rows = y[:COLLINEAR_MAX_ROWS, varying.to(y.device)]
    rows = rows - rows.mean(dim=0)
    rows = rows / rows.std(dim=0, correction=0).clamp_min(torch.finfo(rows.dtype).tiny)
    values, vectors = torch.linalg.eigh(rows.mT @ rows / rows.shape[0])
    for k in torch.nonzero(values.cpu() < COLLINEAR_RTOL * values.mean().cpu()).flatten():
        weights = vectors[:, k].abs().cpu()
        members = torch.nonzero(weights > 0.1 * weights.max()).flatten()
        found.collinear.append(sorted(int(varying[m]) for m in members))
    return found

"""The logit map of bounded data: ``[low, high]`` onto the real line (MaP, [1]_).

References
----------
.. [1] L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP",
   ICLR 2017 (logit preprocessing of bounded data).
.. [2] G. Papamakarios, T. Pavlakou, I. Murray, "Masked Autoregressive Flow for
   Density Estimation", NeurIPS 2017 (logit preprocessing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from skebflow.preprocessing._base import Transform, check_data

__all__ = ["Logit", "as_bounds"]


def as_bounds(bounds: object) -> tuple[Tensor, Tensor]:
    """Validate ``bounds=(low, high)`` and return float64 tensors."""
    try:
        low, high = bounds
        low_t = torch.as_tensor(low, dtype=torch.float64)
        high_t = torch.as_tensor(high, dtype=torch.float64)
        torch.broadcast_shapes(low_t.shape, high_t.shape)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"bounds must be a pair (low, high) of numbers or arrays, got {bounds!r}."
        ) from exc
    if not bool(torch.isfinite(low_t).all() & torch.isfinite(high_t).all()):
        raise ValueError(f"bounds must be finite, got {bounds!r}.")
    if bool((low_t >= high_t).any()):
        raise ValueError(f"bounds=(low, high) needs low < high for every feature, got {bounds!r}.")
    return low_t, high_t


def _fmt_bounds(low: Tensor, high: Tensor) -> str:
    lo, hi = low.flatten(), high.flatten()
    if bool((lo == lo[0]).all() & (hi == hi[0]).all()):
        return f"bounds=({lo[0].item():g}, {hi[0].item():g})"
    return (
        f"the per-feature bounds (low in [{lo.min().item():g}, {lo.max().item():g}], "
        f"high in [{hi.min().item():g}, {hi.max().item():g}])"
    )


class Logit(Transform):
    r"""Logit of data in a box: ``y = logit(λ + (1 - 2λ)(x - low) / (high - low))``.

    Parameters
    ----------
    bounds : tuple (low, high) or None, default=None
        Scalars or per-feature arrays with ``low < high``. ``None`` infers them in
        :meth:`fit` from the per-feature training minimum and maximum, each widened by
        ``margin * (max - min)`` (by ``margin * max(|min|, 1)`` for a constant feature),
        so that test values slightly beyond the training range still score.
    eps : float, default=1e-6
        The squeeze λ in ``[0, 0.5)`` that keeps the logit finite at the box edges.
    margin : float, default=0.05
        Relative widening of inferred bounds (unused when ``bounds`` is given).

    Notes
    -----
    Per sample, ``log|det J| = Σ_j [-log(high_j - low_j) + log(1 - 2λ) - log u'_j
    - log(1 - u'_j)]`` with ``u' = λ + (1 - 2λ)u``. Use :meth:`check_bounds` before
    scoring: values outside the box give NaN, which is never masked. :meth:`inverse`
    projects ``y`` beyond the image of the squeezed box (``|y| > logit(1 - λ)``, which a
    flow can sample) onto the half-open box ``[low, high)``, so that samples stay in the
    box and, in a dequantized chain (box ``(low, high + 1)``), floor into ``[low, high]``.

    Examples
    --------
    >>> t = Logit(bounds=(0.0, 16.0))
    >>> x = torch.tensor([[8.0, 4.0]], dtype=torch.float64)
    >>> y, ladj = t.fit(x)(x)
    >>> y
    tensor([[ 0.0000, -1.0986]], dtype=torch.float64)
    >>> torch.allclose(t.inverse(y), x)
    True
    >>> t.check_bounds(torch.tensor([[17.0, -1.0]]))
    Traceback (most recent call last):
    ...
    ValueError: X has 2 value(s) outside bounds=(0, 16) of the logit preprocessing ...

    References
    ----------
    .. [1] Dinh et al., "Density estimation using Real NVP", ICLR 2017.
    .. [2] Papamakarios et al., "Masked Autoregressive Flow for Density Estimation",
       NeurIPS 2017.
    .. [3] Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
       Objectives", NeurIPS 2023.
    """

    def __init__(
        self,
        bounds: tuple[object, object] | None = None,
        *,
        eps: float = 1e-6,
        margin: float = 0.05,
    ) -> None:
        super().__init__()
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"eps must lie in [0, 0.5), got {eps!r}.")
        if not margin > 0.0:
            raise ValueError(f"margin must be positive, got {margin!r}.")
        self.bounds, self.eps, self.margin = bounds, float(eps), float(margin)
        low, high = (None, None) if bounds is None else as_bounds(bounds)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def extra_repr(self) -> str:
        """Return the constructor arguments shown by ``repr``."""
        return f"bounds={self.bounds!r}, eps={self.eps:g}"

    def fit(self, x: Tensor) -> Logit:
        """Infer the bounds (``bounds=None``) or check that ``x`` lies inside them."""
        check_data(x, "Logit")
        x64 = x.detach().to(torch.float64)
        if self.bounds is None:
            lo, hi = x64.amin(dim=0), x64.amax(dim=0)
            width = hi - lo
            pad = torch.where(width > 0, width, lo.abs().clamp(min=1.0)) * self.margin
            self.low, self.high = lo - pad, hi + pad
            return self
        low, high = as_bounds(self.bounds)
        try:
            self.low = torch.broadcast_to(low, x.shape[1:]).clone()
            self.high = torch.broadcast_to(high, x.shape[1:]).clone()
        except RuntimeError as exc:
            raise ValueError(
                f"bounds of shape {tuple(low.shape)} do not fit data with features "
                f"of shape {tuple(x.shape[1:])}."
            ) from exc
        self.check_bounds(x)
        return self

    def _box(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.low is None:
            raise RuntimeError("Logit with bounds=None is not fitted; call fit(x) first.")
        return self.low.to(x), self.high.to(x)

    def check_bounds(self, x: Tensor) -> None:
        """Raise ``ValueError`` saying how many values of ``x`` lie outside the box."""
        low, high = self._box(x)
        outside = (x < low) | (x > high)
        n_out = int(outside.sum())
        if n_out:
            bad = x[outside]
            raise ValueError(
                f"X has {n_out} value(s) outside {_fmt_bounds(low, high)} of the "
                f"logit preprocessing (the offending values range from {bad.min().item():g} "
                f"to {bad.max().item():g}). Pass wider bounds, or bounds=None to infer them "
                "from the training data."
            )

    check = check_bounds

    def support(self, x: Tensor) -> Tensor:
        """Return a boolean per row of ``x``: every value inside the (closed) box."""
        low, high = self._box(x)
        return ((x >= low) & (x <= high)).flatten(1).all(dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(logit(u'), log|det J|)``."""
        low, high = self._box(x)
        lam = self.eps
        u = lam + (1.0 - 2.0 * lam) * ((x - low) / (high - low))
        log_u, log_1mu = torch.log(u), torch.log1p(-u)
        terms = math.log1p(-2.0 * lam) - torch.log(high - low) - log_u - log_1mu
        return log_u - log_1mu, terms.flatten(1).sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """Return ``low + (high - low) (sigmoid(y) - λ) / (1 - 2λ)``, within ``[low, high)``."""
        low, high = self._box(y)
        u = (torch.sigmoid(y) - self.eps) / (1.0 - 2.0 * self.eps)
        return torch.clamp(low + (high - low) * u, min=low, max=torch.nextafter(high, low))

"""Match-after-Preprocessing (MaP) transforms applied outside the flow.

The flow is trained on ``y = T(x)`` and every objective is computed in y-space; the
data-space log-density adds the log-Jacobian of the preprocessing,
``log p_X(x) = log p_Y(T(x)) + log|det J_T(x)|``. Each transform is a
:class:`torch.nn.Module` whose fitted state lives in registered buffers (so it moves
with ``.to(device)`` and pickles) and offers

- ``fit(x)`` (fit on training data, return self), ``check(x)`` (raise ``ValueError``
  on data the transform cannot score);
- ``forward(x) -> (y, ladj)`` with the per-sample ``log|det J_T(x)|`` (differentiable
  with respect to ``x``) and ``inverse(y)``;
- ``augment(x, generator)``: training-time randomization (dequantization noise).

A training batch is ``chain.forward(chain.augment(x, generator))[0]``; scoring uses
``chain.forward(x)`` directly. Statistics are computed in float64; ``forward`` casts
the buffers to the dtype and device of its input.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267
   (Match after Preprocessing).
.. [2] L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP",
   ICLR 2017 (logit preprocessing of bounded data, uniform dequantization).
.. [3] G. Papamakarios, T. Pavlakou, I. Murray, "Masked Autoregressive Flow for
   Density Estimation", NeurIPS 2017 (logit preprocessing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["Chain", "Dequantize", "Logit", "Standardize", "Transform", "make_preprocessing"]

PREPROCESSING = ("standardize", "logit", None)


def _check_data(x: Tensor, name: str) -> None:
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"{name}.fit needs a non-empty (n_samples, ...) tensor, got {tuple(x.shape)}."
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}.fit got non-finite values (NaN or inf) in the training data.")


def _as_bounds(bounds: object) -> tuple[Tensor, Tensor]:
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
    return f"the per-feature bounds (low in [{lo.min().item():g}, {lo.max().item():g}])"


class Transform(nn.Module):
    """Base of the preprocessing transforms: the interface, with identity defaults.

    ``stochastic`` marks transforms with a training-time ``augment``; such stages must
    come first in a :class:`Chain`.
    """

    stochastic: bool = False

    def fit(self, x: Tensor) -> Transform:
        """Fit on training data ``x`` of shape ``(n_samples, ...)``; return ``self``."""
        return self

    def check(self, x: Tensor) -> None:
        """Raise ``ValueError`` if ``x`` cannot be scored (default: accept everything)."""

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return the training-time version of ``x`` (default: ``x`` unchanged)."""
        return x

    def _augment_input(self, x: Tensor, generator: torch.Generator) -> Tensor:
        # Input-space batch whose ``forward`` is the training-time output.
        return x

    def _fit_output(self, x: Tensor) -> Tensor:
        # Data on which the next stage of a chain is fitted.
        return self.forward(x)[0]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(T(x), log|det J_T(x)|)``, the latter of shape ``(n_samples,)``."""
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """Return ``T^{-1}(y)``."""
        return y


class Standardize(Transform):
    """Per-feature standardization ``y = (x - mean) / scale``.

    ``mean`` and ``scale`` (the population standard deviation) are fitted in float64.
    Constant (zero-variance) features get ``scale = 1`` so they are only centred,
    never divided by zero. The log-Jacobian is ``-Σ_j log scale_j`` for every sample.

    Examples
    --------
    >>> x = torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    >>> t = Standardize().fit(x)
    >>> t.scale
    tensor([1., 1.], dtype=torch.float64)
    >>> y, ladj = t(x)
    >>> y
    tensor([[-1.,  0.],
            [ 1.,  0.]], dtype=torch.float64)

    References
    ----------
    .. [1] Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
       Objectives", NeurIPS 2023 (Match after Preprocessing).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", None)
        self.register_buffer("scale", None)

    def fit(self, x: Tensor) -> Standardize:
        """Fit the per-feature mean and scale on ``x``; return ``self``."""
        _check_data(x, "Standardize")
        x64 = x.detach().to(torch.float64)
        scale = x64.std(dim=0, correction=0)
        constant = x64.amax(dim=0) == x64.amin(dim=0)
        self.mean = x64.mean(dim=0)
        self.scale = torch.where(constant, torch.ones_like(scale), scale)
        return self

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.mean is None:
            raise RuntimeError("Standardize is not fitted; call fit(x) first.")
        return self.mean.to(x), self.scale.to(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``((x - mean) / scale, -Σ log scale)``."""
        mean, scale = self._stats(x)
        ladj = -torch.log(scale).sum()
        return (x - mean) / scale, ladj.expand(x.shape[0]).clone()

    def inverse(self, y: Tensor) -> Tensor:
        """Return ``y * scale + mean``."""
        mean, scale = self._stats(y)
        return y * scale + mean


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
        low, high = (None, None) if bounds is None else _as_bounds(bounds)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def extra_repr(self) -> str:
        """Return the constructor arguments shown by ``repr``."""
        return f"bounds={self.bounds!r}, eps={self.eps:g}"

    def fit(self, x: Tensor) -> Logit:
        """Infer the bounds (``bounds=None``) or check that ``x`` lies inside them."""
        _check_data(x, "Logit")
        x64 = x.detach().to(torch.float64)
        if self.bounds is None:
            lo, hi = x64.amin(dim=0), x64.amax(dim=0)
            width = hi - lo
            pad = torch.where(width > 0, width, lo.abs().clamp(min=1.0)) * self.margin
            self.low, self.high = lo - pad, hi + pad
            return self
        low, high = _as_bounds(self.bounds)
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


class Dequantize(Transform):
    """Uniform dequantization of integer-valued data (e.g. pixels).

    Training draws ``x + U[0, 1)`` (:meth:`augment`); scoring uses the deterministic
    cell centre ``x + 0.5`` (:meth:`forward`, log-Jacobian 0), so ``exp(score)`` is
    approximately the probability of the integer value (the density integrated over
    its unit cell). :meth:`inverse` is ``floor``: sampling returns integers.

    In a :class:`Chain`, ``Chain.augment`` returns ``x + U - 0.5`` so that the chain's
    ``forward`` (which adds the 0.5) hands ``x + U`` to the next stage, and later stages
    are fitted on both ends ``x`` and ``x + 1`` of every cell so that inferred bounds
    cover all training values.

    Examples
    --------
    >>> x = torch.tensor([[0.0, 3.0]], dtype=torch.float64)
    >>> t = Dequantize().fit(x)
    >>> t(x)[0]
    tensor([[0.5000, 3.5000]], dtype=torch.float64)
    >>> noisy = t.augment(x, torch.Generator().manual_seed(0))
    >>> bool(((noisy >= x) & (noisy < x + 1)).all())
    True
    >>> t.inverse(noisy)
    tensor([[0., 3.]], dtype=torch.float64)

    References
    ----------
    .. [1] Dinh et al., "Density estimation using Real NVP", ICLR 2017.
    .. [2] Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
       Objectives", NeurIPS 2023.
    """

    stochastic = True
    offset = 0.5

    def fit(self, x: Tensor) -> Dequantize:
        """Check that ``x`` is integer-valued (``ValueError`` otherwise); return ``self``."""
        _check_data(x, "Dequantize")
        n_bad = int((x != torch.round(x)).sum())
        if n_bad:
            raise ValueError(
                f"dequantize=True needs integer-valued data, but X has {n_bad} non-integer "
                "value(s); use dequantize=False for continuous data."
            )
        return self

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return ``x + U[0, 1)`` with the noise drawn from ``generator`` (any device)."""
        noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return x + noise.to(x.device)

    def _augment_input(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.augment(x, generator) - self.offset

    def _fit_output(self, x: Tensor) -> Tensor:
        return torch.cat([x, x + 1.0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(x + 0.5, 0)``: the centre of the unit cell of ``x``."""
        return x + self.offset, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """Return ``floor(y)``, the integer whose cell contains ``y``."""
        return torch.floor(y)


class Chain(Transform):
    """Ordered composition of transforms; log-Jacobians add up.

    Parameters
    ----------
    *transforms : Transform
        Stages applied left to right. Stochastic stages (:class:`Dequantize`) must come
        first, and at most one may be used.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [5.0], [16.0]], dtype=torch.float64)
    >>> chain = Chain(Dequantize(), Logit((0.0, 17.0))).fit(x)
    >>> y, ladj = chain(chain.augment(x, torch.Generator().manual_seed(0)))
    >>> chain.inverse(y).flatten()
    tensor([ 0.,  5., 16.], dtype=torch.float64)
    >>> Chain()(x)[1]
    tensor([0., 0., 0.], dtype=torch.float64)
    """

    def __init__(self, *transforms: Transform) -> None:
        super().__init__()
        flags = [t.stochastic for t in transforms]
        if any(flags[1:]):
            raise ValueError(
                "a stochastic transform (Dequantize) must be the first stage of a Chain; "
                f"got stages {[type(t).__name__ for t in transforms]}."
            )
        self.transforms = nn.ModuleList(transforms)
        self.stochastic = any(flags)

    def fit(self, x: Tensor) -> Chain:
        """Fit each stage on the output of the previous ones; return ``self``."""
        h = x.detach()
        with torch.no_grad():
            for t in self.transforms:
                h = t.fit(h)._fit_output(h)
        return self

    def check(self, x: Tensor) -> None:
        """Run every stage's check on that stage's input (``ValueError`` on failure)."""
        h = x
        with torch.no_grad():
            for k, t in enumerate(self.transforms):
                try:
                    t.check(h)
                except ValueError as exc:
                    if k == 0:
                        raise
                    before = ", ".join(repr(s) for s in self.transforms[:k])
                    raise ValueError(
                        f"{exc} (checked after the preceding stage(s) {before})"
                    ) from exc
                h = t(h)[0]

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Return the data-space batch ``x̃`` whose ``forward`` is the training batch."""
        return self.transforms[0]._augment_input(x, generator) if self.stochastic else x

    _augment_input = augment

    def _fit_output(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t._fit_output(x)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(T_K ∘ … ∘ T_1(x), Σ_k log|det J_k|)``."""
        ladj = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, term = t(x)
            ladj = ladj + term
        return x, ladj

    def inverse(self, y: Tensor) -> Tensor:
        """Apply the stages' inverses in reverse order."""
        for t in reversed(self.transforms):
            y = t.inverse(y)
        return y


def make_preprocessing(
    preprocessing: str | None,
    *,
    bounds: tuple[object, object] | None = None,
    dequantize: bool = False,
) -> Chain:
    """Build the preprocessing chain of an estimator from its parameters.

    Parameters
    ----------
    preprocessing : {"standardize", "logit"} or None
        The map applied before the flow; ``None`` is the identity.
    bounds : tuple (low, high) or None, default=None
        Box of the data for ``"logit"`` (``None`` infers it at fit, see :class:`Logit`);
        validated always, ignored by the other options.
    dequantize : bool, default=False
        Prepend :class:`Dequantize` for integer data. Integers in ``[low, high]``
        dequantize into ``[low, high + 1)``, so the logit box becomes
        ``(low, high + 1)``.

    Returns
    -------
    Chain
        The unfitted chain.

    Raises
    ------
    ValueError
        For an unknown ``preprocessing`` or malformed ``bounds`` (``low >= high``).

    Examples
    --------
    >>> make_preprocessing("logit", bounds=(0, 16), dequantize=True)
    Chain(
      (transforms): ModuleList(
        (0): Dequantize()
        (1): Logit(bounds=(0.0, 17.0), eps=1e-06)
      )
    )
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing={preprocessing!r} is not one of {list(PREPROCESSING)}.")
    if bounds is not None:
        low, high = _as_bounds(bounds)
        if dequantize:
            high = high + 1.0
        bounds = (low.tolist(), high.tolist())
    stages: list[Transform] = [Dequantize()] if dequantize else []
    if preprocessing == "standardize":
        stages.append(Standardize())
    elif preprocessing == "logit":
        stages.append(Logit(bounds))
    return Chain(*stages)

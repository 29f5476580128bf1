"""The standardizing and dequantizing transforms, their chain, and the factory.

The contract every transform follows is in :mod:`skebflow.preprocessing._base`; the logit
map of bounded data is in :mod:`skebflow.preprocessing._logit`.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267
   (Match after Preprocessing).
.. [2] L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP",
   ICLR 2017 (uniform dequantization).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skebflow.preprocessing._base import Transform, check_data
from skebflow.preprocessing._logit import Logit, as_bounds

__all__ = [
    "Chain",
    "Dequantize",
    "Logit",
    "Standardize",
    "Transform",
    "make_preprocessing",
]

PREPROCESSING = ("standardize", "logit", None)


class Standardize(Transform):
    """Per-feature standardization ``y = (x - mean) / scale``.

    ``mean`` and ``scale`` (the population standard deviation) are fitted in float64,
    from each column divided by its largest magnitude, so that data of any finite scale
    (1e-300 to 1e300) are standardized without underflow or overflow. Constant
    (zero-variance) features get ``scale = 1`` so they are only centred, never divided
    by zero. The log-Jacobian is ``-Σ_j log scale_j`` for every sample.

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
        check_data(x, "Standardize")
        x64 = x.detach().to(torch.float64)
        # Moments of x / max|x| per column: neither the squares of data of scale 1e-300
        # underflow nor those (or the sum) of data of scale 1e300 overflow.
        size = x64.abs().amax(dim=0)
        size = torch.where(size > 0, size, torch.ones_like(size))
        z = x64 / size
        scale = size * z.std(dim=0, correction=0)
        constant = x64.amax(dim=0) == x64.amin(dim=0)
        self.mean = size * z.mean(dim=0)
        self.scale = torch.where(constant | (scale == 0), torch.ones_like(scale), scale)
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


class Dequantize(Transform):
    """Uniform dequantization of integer-valued data (e.g. pixels).

    Training draws ``x + U[0, 1)`` (``augment``); scoring uses the deterministic
    cell centre ``x + 0.5`` (``forward``, log-Jacobian 0), so ``exp(score)`` is
    approximately the probability of the integer value (the density integrated over
    its unit cell). ``inverse`` is ``floor``: sampling returns integers.

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
        check_data(x, "Dequantize")
        n_bad = int((x != torch.round(x)).sum())
        if n_bad:
            raise ValueError(
                f"dequantize=True needs integer-valued data, but X has {n_bad} non-integer "
                "value(s); use dequantize=False for continuous data."
            )
        return self

    def check_training(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is integer-valued (what :meth:`fit` checks).

        A warm start and ``partial_fit`` train on new data with the fitted chain: the
        data must be integers there too.
        """
        self.fit(x)

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

    def check(self, x: Tensor, *, training: bool = False) -> None:
        """Run every stage's check on that stage's input (``ValueError`` on failure).

        With ``training``, each stage's :meth:`Transform.check_training` (for data to
        train on: e.g. integers for :class:`Dequantize`).
        """
        h = x
        with torch.no_grad():
            for k, t in enumerate(self.transforms):
                try:
                    if training:
                        t.check_training(h)
                    else:
                        t.check(h)
                except ValueError as exc:
                    if k == 0:
                        raise
                    before = ", ".join(repr(s) for s in self.transforms[:k])
                    raise ValueError(
                        f"{exc} (checked after the preceding stage(s) {before})"
                    ) from exc
                h = t(h)[0]

    def support(self, x: Tensor) -> Tensor:
        """Return a boolean per row of ``x``: inside every stage's support."""
        inside = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        h = x
        with torch.no_grad():
            for t in self.transforms:
                inside = inside & t.support(h)
                h = t(h)[0]
        return inside

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
    eps: float | None = None,
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
    eps : float or None, default=None
        The logit's squeeze λ (:class:`Logit`); ``None`` is :class:`Logit`'s default.

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
    >>> make_preprocessing("logit", bounds=(0, 16), dequantize=True, eps=0.05)
    Chain(
      (transforms): ModuleList(
        (0): Dequantize()
        (1): Logit(bounds=(0.0, 17.0), eps=0.05)
      )
    )
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing={preprocessing!r} is not one of {list(PREPROCESSING)}.")
    if bounds is not None:
        low, high = as_bounds(bounds)
        if dequantize:
            high = high + 1.0
        bounds = (low.tolist(), high.tolist())
    stages: list[Transform] = [Dequantize()] if dequantize else []
    if preprocessing == "standardize":
        stages.append(Standardize())
    elif preprocessing == "logit":
        stages.append(Logit(bounds) if eps is None else Logit(bounds, eps=eps))
    return Chain(*stages)

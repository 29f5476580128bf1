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

import torch
from torch import Tensor, nn

__all__ = ["Transform", "check_data"]


def check_data(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a non-empty, finite batch (``name``: the caller)."""
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"{name}.fit needs a non-empty (n_samples, ...) tensor, got {tuple(x.shape)}."
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}.fit got non-finite values (NaN or inf) in the training data.")


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

    def check_training(self, x: Tensor) -> None:
        """Raise ``ValueError`` if ``x`` cannot be trained on (default: :meth:`check`)."""
        self.check(x)

    def support(self, x: Tensor) -> Tensor:
        """Return a boolean per row of ``x``: inside the support (default: every row)."""
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)

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

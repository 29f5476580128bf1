"""What a fitted flow answers: log-densities, scores and samples, in bounded memory.

:class:`FittedFlow` is the inference side of ``EBFlowDensity``: the float64 flow, the
fitted preprocessing chain, the cached ``log Z`` and the device, answering on numpy
arrays that the estimator has validated. Only one batch of rows lives in torch at a
time, so the memory that inference adds to ``X`` and its result is bounded (``X`` may be
a memory map).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from skebflow.nn import EnergyFlow
from skebflow.preprocessing import Chain
from skebflow.utils import as_tensor, to_numpy

__all__ = ["GRADIENT_BATCH", "INFERENCE_BATCH", "FittedFlow"]

#: Rows per batch at inference (bounded memory for large X).
INFERENCE_BATCH = 8192
#: Rows per batch of ``score_gradient``, whose backward pass keeps every intermediate of
#: the batch: a quarter of :data:`INFERENCE_BATCH` bounds its memory at the same
#: throughput (``docs/scaling.md``).
GRADIENT_BATCH = 2048
#: A row whose preprocessed values exceed this magnitude lies so far from the data that
#: a NaN in its log-density can only come from overflow (its density is below float64's
#: range), so it scores -inf.
OVERFLOW_SCALE = 1e100
#: Where a score overflows it is evaluated this far from the data's centre along the ray
#: (in the units of X, shortened by 1e-25 up to ``_RAY_TRIES`` times) and scaled up.
RAY_SCALE = 1e50
_RAY_TRIES = 4


@dataclass(frozen=True)
class FittedFlow:
    """A fitted flow and its preprocessing, answering in the units of ``X``.

    Attributes
    ----------
    flow : EnergyFlow
        The trained flow, float64, frozen, in eval mode.
    chain : Chain
        The fitted preprocessing.
    log_normalizer : float
        The cached ``log Z`` of ``flow``.
    device : torch.device
        Where both live.
    """

    flow: EnergyFlow
    chain: Chain
    log_normalizer: float
    device: torch.device

    def chunks(
        self, X: np.ndarray, *, check_support: bool = True, batch: int | None = None
    ) -> Iterator[tuple[slice, Tensor]]:
        """Yield ``(rows, x)``: float64 tensors of at most ``batch`` rows of ``X``.

        ``batch`` defaults to :data:`INFERENCE_BATCH`. With ``check_support`` each batch
        is checked against the preprocessing's support (a ``ValueError`` naming the rows).
        """
        batch = INFERENCE_BATCH if batch is None else batch
        for start in range(0, X.shape[0], batch):
            rows = slice(start, min(start + batch, X.shape[0]))
            x = as_tensor(X[rows], dtype=torch.float64, device=self.device)
            if check_support:
                try:
                    self.chain.check(x)
                except ValueError as exc:
                    if X.shape[0] <= batch:
                        raise
                    raise ValueError(f"{exc} (in rows {rows.start} to {rows.stop - 1})") from exc
            yield rows, x

    def log_prob(self, x: Tensor) -> Tensor:
        """Return the normalized log-density of rows ``x`` (float64), in the units of ``X``."""
        y, ladj = self.chain.forward(x)
        log_z = torch.as_tensor(self.log_normalizer, dtype=torch.float64, device=x.device)
        return self.flow.log_prob(y, log_z) + ladj

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Log-density of each row: ``-inf`` outside the support or where it overflows.

        Raises ``FloatingPointError`` if the flow gives NaN for a row that neither leaves
        the support nor overflows (a broken model; never silently).
        """
        out = np.empty(X.shape[0], dtype=np.float64)
        for rows, x in self.chunks(X, check_support=False):
            inside = self.chain.support(x)
            values = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
            with torch.no_grad():
                if bool(inside.any()):
                    values[inside] = self._overflow_to_minus_inf(
                        x[inside], self.log_prob(x[inside])
                    )
            out[rows] = to_numpy(values)
        return out

    def _overflow_to_minus_inf(self, x: Tensor, values: Tensor) -> Tensor:
        """Map NaN log-densities of rows whose computation overflowed to ``-inf``."""
        nan = torch.isnan(values)
        if not bool(nan.any()):
            return values
        y = self.chain.forward(x[nan])[0].flatten(1)
        overflow = (~torch.isfinite(y) | (y.abs() > OVERFLOW_SCALE)).any(dim=1)
        if not bool(overflow.all()):
            raise FloatingPointError(
                f"The flow gave NaN log-densities for {int((~overflow).sum())} row(s) of "
                "moderate size; the fitted model is broken (refit it, e.g. with a lower "
                "learning_rate)."
            )
        return values.masked_fill(nan, -math.inf)

    def score_gradient(self, X: np.ndarray) -> np.ndarray:
        """Return the score of each row (along the ray from the centre where it overflows).

        Raises ``ValueError`` outside the support and ``FloatingPointError`` for NaN at a
        row of moderate size.
        """
        out = np.empty(X.shape, dtype=np.float64)
        for rows, x in self.chunks(X, batch=min(GRADIENT_BATCH, INFERENCE_BATCH)):
            grads = self._gradient(x)
            bad = (~torch.isfinite(grads)).any(dim=1)
            if bool(bad.any()):
                grads[bad] = self._gradient_along_rays(x[bad])
            out[rows] = to_numpy(grads)
        return out

    def _gradient(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(x).sum(), x)
        return grad

    def _gradient_along_rays(self, x: Tensor) -> Tensor:
        """Score of rows whose computation overflowed, from a nearer point of each ray.

        Non-finite entries of the direct computation are overflow only where the row is
        extreme; the ray's scaled score replaces them all, so an entry is ``±inf`` only
        where the linear growth along the ray exceeds float64's range.
        """
        with torch.no_grad():
            y = self.chain.forward(x)[0].flatten(1)
            centre = self.chain.inverse(torch.zeros_like(y[:1]))
        overflow = (~torch.isfinite(y) | (y.abs() > OVERFLOW_SCALE)).any(dim=1)
        if not bool(overflow.all()):
            raise FloatingPointError(
                f"The flow gave non-finite scores for {int((~overflow).sum())} row(s) of moderate "
                "size; the fitted model is broken (refit it, e.g. with a lower learning_rate)."
            )
        offset = x - centre
        reach = offset.abs().amax(dim=1, keepdim=True)
        factor = RAY_SCALE / reach
        for _ in range(_RAY_TRIES):
            near = centre + offset * factor
            grad = self._gradient(near)
            if not bool(torch.isnan(grad).any()):
                return grad / factor  # finite grad, positive factor: ±inf only on overflow
            factor = factor * 1e-25
        raise FloatingPointError("The flow gave NaN scores even near the data's centre.")

    def sample(
        self,
        n_samples: int,
        n_features: int,
        generator: torch.Generator,
        *,
        refine: Callable[[Tensor], Tensor] | None = None,
    ) -> np.ndarray:
        """Exact samples in the units of ``X``, drawn in batches; ``refine`` maps each batch."""
        out = np.empty((n_samples, n_features), dtype=np.float64)
        for start in range(0, n_samples, INFERENCE_BATCH):
            rows = slice(start, min(start + INFERENCE_BATCH, n_samples))
            with torch.no_grad():
                y = self.flow.sample(rows.stop - rows.start, generator=generator)
                x = self.chain.inverse(y)
            if refine is not None:
                x = refine(x)
            out[rows] = to_numpy(x)
        return out

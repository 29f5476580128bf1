"""What a fitted flow answers: log-densities, scores, samples, and its pickling.

:class:`FittedFlowMixin` holds the inference side of the flow estimators; a class using it
sets ``flow_`` (a float64 :class:`~skebflow.nn.flow.EnergyFlow`), ``preprocessing_`` (the
fitted :class:`~skebflow.preprocessing.transforms.Chain`), ``log_normalizer_`` (the cached
``log Z``) and ``device_`` in ``fit``, and validates input with scikit-learn's
``validate_data``.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator
from numbers import Integral

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from skebflow.utils.tensors import as_tensor, make_generator, to_numpy

__all__ = ["GRADIENT_BATCH", "INFERENCE_BATCH", "FittedFlowMixin"]

#: Rows per batch at inference (bounded memory for large X).
INFERENCE_BATCH = 8192
#: Rows per batch of ``score_gradient``, whose backward pass keeps every intermediate of
#: the batch: about 1.4 GB at 8192 rows for the default spline flow at 64 features
#: (``docs/scaling.md``), a quarter of that at this size, for the same throughput.
GRADIENT_BATCH = 2048
#: A row whose preprocessed values exceed this magnitude lies so far from the data that
#: a NaN in its log-density can only come from overflow (its density is below float64's
#: range), so it scores -inf.
OVERFLOW_SCALE = 1e100
#: Where a score overflows it is evaluated this far from the data's centre along the ray
#: (in the units of X, shortened by 1e-25 up to ``_RAY_TRIES`` times) and scaled up.
RAY_SCALE = 1e50
_RAY_TRIES = 4


class FittedFlowMixin:
    """Inference and persistence for an estimator that holds a fitted flow."""

    def _check_input(self, X: object) -> np.ndarray:
        """Validate ``X`` as scikit-learn does, without copying it into torch."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def _chunks(
        self, X: np.ndarray, *, check_support: bool = True, batch: int | None = None
    ) -> Iterator[tuple[slice, Tensor]]:
        """Yield ``(rows, x)``: float64 tensors of at most ``batch`` rows.

        ``batch`` defaults to :data:`INFERENCE_BATCH`. Only one batch lives in torch at
        a time, so the memory that inference adds to ``X`` and its result is bounded
        (``X`` may be a memory map).
        """
        batch = INFERENCE_BATCH if batch is None else batch
        for start in range(0, X.shape[0], batch):
            rows = slice(start, min(start + batch, X.shape[0]))
            x = as_tensor(X[rows], dtype=torch.float64, device=self.device_)
            if check_support:
                try:
                    self.preprocessing_.check(x)
                except ValueError as exc:
                    if X.shape[0] <= batch:
                        raise
                    raise ValueError(f"{exc} (in rows {rows.start} to {rows.stop - 1})") from exc
            yield rows, x

    def _log_prob(self, x: Tensor) -> Tensor:
        y, ladj = self.preprocessing_.forward(x)
        log_z = torch.as_tensor(self.log_normalizer_, dtype=torch.float64, device=x.device)
        return self.flow_.log_prob(y, log_z) + ladj

    def score_samples(self, X: object) -> np.ndarray:
        r"""Return the log-density of each sample, in the units of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        ndarray of shape (n_samples,)
            :math:`\log p(x)`, float64; exactly normalized over the space of ``X``.
            It is ``-inf`` where the density is zero (outside the bounds of
            ``preprocessing="logit"``, as ``KernelDensity(kernel="tophat")`` outside
            its kernels) and where it is too small for float64 (points so far from the
            data that the computation overflows); it is never NaN for finite input.

        Raises
        ------
        FloatingPointError
            If the flow gives NaN for a row that neither leaves the support nor
            overflows (a broken model; never silently).
        """
        X = self._check_input(X)
        out = np.empty(X.shape[0], dtype=np.float64)
        for rows, x in self._chunks(X, check_support=False):
            inside = self.preprocessing_.support(x)
            values = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
            with torch.no_grad():
                if bool(inside.any()):
                    values[inside] = self._overflow_to_minus_inf(
                        x[inside], self._log_prob(x[inside])
                    )
            out[rows] = to_numpy(values)
        return out

    def _overflow_to_minus_inf(self, x: Tensor, values: Tensor) -> Tensor:
        """Map NaN log-densities of rows whose computation overflowed to ``-inf``."""
        nan = torch.isnan(values)
        if not bool(nan.any()):
            return values
        y = self.preprocessing_.forward(x[nan])[0].flatten(1)
        overflow = (~torch.isfinite(y) | (y.abs() > OVERFLOW_SCALE)).any(dim=1)
        if not bool(overflow.all()):
            raise FloatingPointError(
                f"The flow gave NaN log-densities for {int((~overflow).sum())} row(s) of "
                "moderate size; the fitted model is broken (refit it, e.g. with a lower "
                "learning_rate)."
            )
        return values.masked_fill(nan, -math.inf)

    def score(self, X: object, y: object = None) -> float:
        """Return the mean log-likelihood per sample (GaussianMixture's convention).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.
        y : None
            Ignored.

        Returns
        -------
        float
            Mean of :meth:`score_samples`.
        """
        return float(np.mean(self.score_samples(X)))

    def score_gradient(self, X: object) -> np.ndarray:
        r"""Return :math:`\nabla_x \log p(x)` in the units of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The score function; never NaN for finite input. Where its computation
            overflows (points astronomically far from the data), it is taken along the
            ray from the data's centre: every layer of a flow is asymptotically linear
            (smooth leaky ReLU, splines beyond their box, affine couplings with bounded
            scales), so the score grows linearly along a ray; it is evaluated at a point
            of the ray where nothing overflows and scaled by the ratio of distances,
            which gives ``±inf`` entries where the true value exceeds float64's range.

        Raises
        ------
        ValueError
            Outside the bounds of ``preprocessing="logit"``, where the density is zero.
        FloatingPointError
            If the flow gives NaN for a row of moderate size (a broken model).
        """
        X = self._check_input(X)
        out = np.empty(X.shape, dtype=np.float64)
        for rows, x in self._chunks(X, batch=min(GRADIENT_BATCH, INFERENCE_BATCH)):
            grads = self._gradient(x)
            bad = (~torch.isfinite(grads)).any(dim=1)
            if bool(bad.any()):
                grads[bad] = self._gradient_along_rays(x[bad])
            out[rows] = to_numpy(grads)
        return out

    def _gradient(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self._log_prob(x).sum(), x)
        return grad

    def _gradient_along_rays(self, x: Tensor) -> Tensor:
        """Score of rows whose computation overflowed, from a nearer point of each ray.

        Non-finite entries of the direct computation are overflow only where the row is
        extreme; the ray's scaled score replaces them all, so an entry is ``±inf`` only
        where the linear growth along the ray exceeds float64's range.
        """
        with torch.no_grad():
            y = self.preprocessing_.forward(x)[0].flatten(1)
            centre = self.preprocessing_.inverse(torch.zeros_like(y[:1]))
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
        n_samples: int = 1,
        random_state: object = None,
        *,
        method: str = "exact",
        n_steps: int | None = None,
    ) -> np.ndarray:
        """Draw exact samples by inverting the flow (optionally refined by MCMC).

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator; the global RNGs are never touched.
        method : {"exact", "langevin"}, default="exact"
            ``"langevin"`` refines each exact sample with ``n_steps`` steps of the
            imputation sampler (preconditioned MALA on the energy,
            ``docs/imputation.md``). The flow's inverse is exact, so this does not
            improve the samples' distribution (measured there); it checks the sampler,
            and helps only where an inverse is numerically inexact.
        n_steps : int or None, default=None
            MCMC steps of ``"langevin"`` (``None``:
            :data:`~skebflow.estimators.imputation.REFINE_STEPS`).

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The samples (only ``X``, as :meth:`KernelDensity.sample`).
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if method not in ("exact", "langevin"):
            raise ValueError(f"method must be 'exact' or 'langevin', got {method!r}.")
        if n_steps is not None and method != "langevin":
            raise ValueError("n_steps applies to method='langevin' only.")
        generator = make_generator(random_state, self.device_)
        out = np.empty((int(n_samples), self.n_features_in_), dtype=np.float64)
        for start in range(0, out.shape[0], INFERENCE_BATCH):
            rows = slice(start, min(start + INFERENCE_BATCH, out.shape[0]))
            with torch.no_grad():
                y = self.flow_.sample(rows.stop - rows.start, generator=generator)
                x = self.preprocessing_.inverse(y)
            if method == "langevin":
                steps = {} if n_steps is None else {"n_steps": n_steps}
                x = self._refine_samples(x, generator=generator, **steps)
            out[rows] = to_numpy(x)
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save the fitted model to a file that ``skebflow.load`` reads without running code.

        Parameters
        ----------
        path : str or path-like
            The output file (the format: ``docs/persistence.md``).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> import skebflow
        >>> from skebflow import EBFlowDensity
        >>> X = np.random.default_rng(0).normal(size=(100, 2))
        >>> est = EBFlowDensity(max_iter=2, n_blocks=1, hidden_features=8).fit(X)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     est.save(os.path.join(folder, "model.skebflow"))
        ...     loaded = skebflow.load(os.path.join(folder, "model.skebflow"))
        >>> bool(np.array_equal(loaded.score_samples(X), est.score_samples(X)))
        True
        """
        from skebflow.estimators.persistence import save  # persistence imports this module

        save(self, path)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if "flow_" in state:
            state = dict(state)
            state["flow_"] = copy.deepcopy(self.flow_).cpu()
            state["preprocessing_"] = copy.deepcopy(self.preprocessing_).cpu()
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "flow_" in state:
            device = self.device_
            if device.type == "cuda" and not torch.cuda.is_available():
                device = torch.device("cpu")
            self.device_ = device
            self.flow_ = self.flow_.to(device)
            self.preprocessing_ = self.preprocessing_.to(device)

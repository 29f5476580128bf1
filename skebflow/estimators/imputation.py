"""Imputation and conditional sampling by MCMC on a fitted flow's energy.

:class:`ImputationMixin` gives :class:`~skebflow.EBFlowDensity` ``impute`` (NaN entries
filled with the conditional mean, or one conditional draw) and ``sample_conditional``
(draws of the missing entries given the observed ones), and ``_refine_samples``, the
Langevin refinement behind ``sample(method="langevin")``.

Every preprocessing stage (standardize, logit, dequantize) acts on each feature alone,
so conditioning ``x`` on its observed entries is conditioning ``y = T(x)`` on the
corresponding entries of ``y``; the chains run in ``y`` on ``exp(-E(y))`` (the flow's
energy) and are mapped back by ``T⁻¹``, and the conditional mean is averaged in the units
of ``X``. The kernel is in :mod:`skebflow.estimators.mcmc`; the measurements behind its
defaults are in ``docs/imputation.md``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from skebflow.estimators.mcmc import (
    MAX_PRECONDITIONER_ENTRIES,
    N_CHAINS,
    N_GAUSSIAN_SAMPLES,
    N_STEPS,
    ChainRun,
    run_chains,
)
from skebflow.utils.tensors import as_tensor, make_generator, to_numpy

__all__ = [
    "MIN_ACCEPTANCE",
    "REFINE_STEPS",
    "RHAT_THRESHOLD",
    "ImputationMixin",
    "ImputationReport",
]

#: A row's chains have not mixed when their split-R̂ exceeds this (Vehtari et al. 2021
#: recommend 1.01 for inference from long chains; a few hundred steps on 4 chains give
#: R̂ up to about 1.1 by chance, so a higher bar flags only clear failures).
RHAT_THRESHOLD = 1.2
#: ...or when their mean MALA acceptance falls below this (a stuck chain).
MIN_ACCEPTANCE = 0.05
#: The warning is raised when more than this fraction of the imputed rows fails.
WARN_FRACTION = 0.1
#: Steps of ``sample(method="langevin")``'s refinement.
REFINE_STEPS = 20


@dataclass
class ImputationReport:
    """Diagnostics of the chains of :meth:`ImputationMixin.impute` (one entry per row).

    Rows without missing entries (no chain) hold NaN.

    Attributes
    ----------
    acceptance : ndarray of shape (n_samples,)
        Mean acceptance probability of the Langevin (MALA) moves after burn-in; the
        step size is adapted towards 0.574.
    independence_acceptance : ndarray of shape (n_samples,)
        Mean acceptance probability of the Gaussian independence moves (high where the
        conditional is close to Gaussian; near 0 in high dimension, harmlessly).
    rhat : ndarray of shape (n_samples,)
        The largest split-R̂ over the row's missing entries (1 for a mixed chain).
    step_size : ndarray of shape (n_samples,)
        The MALA step after adaptation (whitened units).
    n_steps : int
        Steps per chain, burn-in included.
    n_chains : int
        Chains per row.
    """

    acceptance: np.ndarray
    independence_acceptance: np.ndarray
    rhat: np.ndarray
    step_size: np.ndarray
    n_steps: int
    n_chains: int

    @property
    def not_mixed(self) -> np.ndarray:
        """Boolean per row: a chain that clearly did not mix (False for complete rows)."""
        with np.errstate(invalid="ignore"):
            return (self.rhat > RHAT_THRESHOLD) | (self.acceptance < MIN_ACCEPTANCE)

    def summary(self) -> str:
        """One line: rows imputed, median acceptance and R̂, rows that did not mix."""
        imputed = ~np.isnan(self.rhat)
        if not imputed.any():
            return "no missing entries"
        return (
            f"{int(imputed.sum())} rows imputed with {self.n_chains} chains of "
            f"{self.n_steps} steps: median acceptance {np.median(self.acceptance[imputed]):.2f}, "
            f"median split-R̂ {np.median(self.rhat[imputed]):.3f}, "
            f"{int(self.not_mixed.sum())} rows not mixed"
        )


def _positive_int(value: object, name: str) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_step_size(step_size: object) -> float | None:
    if step_size is None or step_size == "auto":
        return None
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or step_size <= 0:
        raise ValueError(f"step_size must be 'auto' or a positive float, got {step_size!r}.")
    return float(step_size)


class ImputationMixin:
    """``impute``, ``sample_conditional`` and the Langevin refinement of ``sample``."""

    def impute(
        self,
        X: object,
        *,
        sample_posterior: bool = False,
        n_steps: int = N_STEPS,
        n_chains: int = N_CHAINS,
        step_size: float | str = "auto",
        return_report: bool = False,
        random_state: object = None,
    ) -> np.ndarray | tuple[np.ndarray, ImputationReport]:
        """Fill the NaN entries of ``X`` from the fitted density, the others clamped.

        For each row with missing entries, ``n_chains`` Markov chains sample the
        conditional density of the missing entries given the observed ones
        (preconditioned MALA with Gaussian independence moves, on the flow's energy in
        the preprocessed space; ``docs/imputation.md``). All rows run as one batch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data with NaN for the missing entries (``inf`` is an error).
        sample_posterior : bool, default=False
            ``False`` fills the conditional mean, estimated from all chains after
            burn-in (the fill with the least expected squared error, as
            ``IterativeImputer``'s default); ``True`` fills one draw from the
            conditional (the last state of the first chain).
        n_steps : int, default=200
            Steps per chain, the first quarter burn-in (step-size adaptation).
        n_chains : int, default=4
            Chains per row.
        step_size : float or "auto", default="auto"
            MALA's step in whitened units; ``"auto"`` adapts it per row during burn-in
            towards an acceptance rate of 0.574.
        return_report : bool, default=False
            Also return the chains' :class:`ImputationReport`.
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator; the global RNGs are never touched.

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
            ``X`` with its NaN entries filled; the other entries and the rows without
            NaN are returned bit for bit. A row with every entry missing is filled with
            the model's mean (an exact joint sample with ``sample_posterior=True``).
        report : ImputationReport
            Only with ``return_report=True``.

        Warns
        -----
        ConvergenceWarning
            When more than 10 % of the imputed rows have chains that clearly did not mix
            (split-R̂ above 1.2 or acceptance below 0.05); more steps usually help.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> rng = np.random.default_rng(0)
        >>> X = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=500)
        >>> est = EBFlowDensity(max_iter=5, n_blocks=1, random_state=0).fit(X)
        >>> filled = est.impute([[1.0, np.nan], [np.nan, -1.0]], random_state=0)
        >>> filled.shape
        (2, 2)
        >>> bool(filled[0, 1] > 0.3 and filled[1, 0] < -0.3)
        True
        """
        n_steps = _positive_int(n_steps, "n_steps")
        n_chains = _positive_int(n_chains, "n_chains")
        x, missing = self._check_missing(X)
        generator = make_generator(random_state, self.device_)
        mean, draw, report = self._conditional(
            x, missing, n_steps, n_chains, _check_step_size(step_size), generator
        )
        filled = torch.where(missing, draw if sample_posterior else mean, x)
        n_imputed = int(missing.any(dim=1).sum())
        if n_imputed and report.not_mixed.sum() > WARN_FRACTION * n_imputed:
            warnings.warn(
                f"The chains of {int(report.not_mixed.sum())} of {n_imputed} imputed rows "
                f"did not mix (split-R̂ > {RHAT_THRESHOLD} or acceptance < {MIN_ACCEPTANCE}); "
                f"{report.summary()}. Increase n_steps.",
                ConvergenceWarning,
                stacklevel=2,
            )
        out = to_numpy(filled)
        return (out, report) if return_report else out

    def sample_conditional(
        self,
        X_partial: object,
        n_samples: int = 1,
        *,
        n_steps: int = N_STEPS,
        random_state: object = None,
    ) -> np.ndarray:
        """Draw the missing (NaN) entries of each row given its observed entries.

        Each draw is the final state of its own chain, started by importance
        resampling and run ``n_steps`` steps (:meth:`impute`'s sampler), so draws are
        nearly independent and modes of the conditional keep their weights.

        Parameters
        ----------
        X_partial : array-like of shape (n_rows, n_features)
            Rows with NaN for the entries to draw.
        n_samples : int, default=1
            Draws per row.
        n_steps : int, default=200
            Steps per chain.
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator; the global RNGs are never touched.

        Returns
        -------
        ndarray of shape (n_rows, n_samples, n_features)
            Complete rows: the observed entries as given, the missing ones drawn.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> X = np.random.default_rng(0).normal(size=(300, 2))
        >>> est = EBFlowDensity(max_iter=3, n_blocks=1, random_state=0).fit(X)
        >>> draws = est.sample_conditional([[0.5, np.nan]], n_samples=5, random_state=0)
        >>> draws.shape
        (1, 5, 2)
        >>> bool(np.all(draws[0, :, 0] == 0.5))
        True
        """
        n_samples = _positive_int(n_samples, "n_samples")
        n_steps = _positive_int(n_steps, "n_steps")
        x, missing = self._check_missing(X_partial)
        generator = make_generator(random_state, self.device_)
        runs = self._chains(x, missing, n_steps, n_samples, None, generator)
        draws = x[:, None, :].repeat(1, n_samples, 1)
        for rows, run, joint in runs:
            draws[rows] = self._to_x(run.last) if run is not None else joint
        return to_numpy(torch.where(missing[:, None, :], draws, x[:, None, :]))

    def _refine_samples(
        self,
        x: Tensor,
        *,
        n_steps: int = REFINE_STEPS,
        step_size: float | None = None,
        generator: torch.Generator,
    ) -> Tensor:
        """Refine rows ``x`` (units of X, float64) by ``n_steps`` MCMC steps on the joint.

        One chain per row, started at the row; the step size is adapted during the
        first quarter of the steps (``None``) or fixed. Returns the rows after the
        chain, in the units of X.
        """
        check_is_fitted(self)
        n_steps = _positive_int(n_steps, "n_steps")
        with torch.no_grad():
            y = self.preprocessing_.forward(x.to(self.device_, torch.float64))[0]
            samples = self.flow_.sample(N_GAUSSIAN_SAMPLES, generator=generator)
        free = torch.ones_like(y, dtype=torch.bool)
        run = run_chains(
            self.flow_.energy,
            y,
            free,
            samples,
            statistic=self._to_x,
            n_steps=n_steps,
            n_chains=1,
            step_size=step_size,
            initial=y[:, None, :],
            pooled=True,
            generator=generator,
        )
        return self._to_x(run.last[:, 0])

    # ------------------------------------------------------------ internals
    def _to_x(self, y: Tensor) -> Tensor:
        """Map states of any leading shape (..., D) back to the units of X."""
        with torch.no_grad():
            flat = y.reshape(-1, y.shape[-1])
            return self.preprocessing_.inverse(flat).reshape(y.shape)

    def _check_missing(self, X: object) -> tuple[Tensor, Tensor]:
        """Validate ``X`` (NaN allowed, inf not); return it and its NaN mask."""
        check_is_fitted(self)
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], reset=False, ensure_all_finite="allow-nan"
        )
        x = as_tensor(X, dtype=torch.float64, device=self.device_)
        missing = torch.isnan(x)
        with torch.no_grad():  # observed entries must lie in the preprocessing's support
            centre = self.preprocessing_.inverse(torch.zeros_like(x[:1]))
            self.preprocessing_.check(torch.where(missing, centre, x))
        return x, missing

    def _chains(
        self,
        x: Tensor,
        missing: Tensor,
        n_steps: int,
        n_chains: int,
        step_size: float | None,
        generator: torch.Generator,
    ) -> list[tuple[Tensor, ChainRun | None, Tensor | None]]:
        """Run the chains of the rows with missing entries, in batches of rows.

        Returns ``(row indices, run, None)`` per batch of partly observed rows and
        ``(row indices, None, exact joint draws (rows, n_chains, D))`` for the rows
        with nothing observed.
        """
        d = x.shape[1]
        partial = missing.any(dim=1) & ~missing.all(dim=1)
        empty = missing.all(dim=1)
        out: list[tuple[Tensor, ChainRun | None, Tensor | None]] = []
        with torch.no_grad():
            samples = self.flow_.sample(N_GAUSSIAN_SAMPLES, generator=generator)
            centre = self.preprocessing_.inverse(torch.zeros_like(x[:1]))
            y = self.preprocessing_.forward(torch.where(missing, centre, x))[0]
        rows = torch.nonzero(partial).flatten()
        batch = max(1, MAX_PRECONDITIONER_ENTRIES // (d * d))
        for chunk in rows.split(batch) if len(rows) else ():
            run = run_chains(
                self.flow_.energy,
                y[chunk],
                missing[chunk],
                samples,
                statistic=self._to_x,
                n_steps=n_steps,
                n_chains=n_chains,
                step_size=step_size,
                generator=generator,
            )
            out.append((chunk, run, None))
        empty_rows = torch.nonzero(empty).flatten()
        if len(empty_rows):
            with torch.no_grad():
                joint = self.flow_.sample(len(empty_rows) * n_chains, generator=generator)
            out.append((empty_rows, None, self._to_x(joint).reshape(-1, n_chains, d)))
        return out

    def _conditional(
        self,
        x: Tensor,
        missing: Tensor,
        n_steps: int,
        n_chains: int,
        step_size: float | None,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor, ImputationReport]:
        """Conditional means, one draw per row, and the report (rows of ``x``)."""
        n = x.shape[0]
        mean, draw = x.clone(), x.clone()
        fields = {name: np.full(n, np.nan) for name in ("acc", "ind", "rhat", "step")}
        model_mean = None
        for rows, run, joint in self._chains(x, missing, n_steps, n_chains, step_size, generator):
            idx = to_numpy(rows).astype(int)
            if run is None:
                if model_mean is None:
                    with torch.no_grad():
                        sample = self.flow_.sample(N_GAUSSIAN_SAMPLES, generator=generator)
                    model_mean = self._to_x(sample).mean(dim=0)
                mean[rows] = model_mean.expand(len(rows), -1)
                draw[rows] = joint[:, 0]
                continue
            mean[rows] = run.mean
            draw[rows] = self._to_x(run.last[:, 0])
            fields["acc"][idx] = to_numpy(run.acceptance)
            fields["ind"][idx] = to_numpy(run.independence_acceptance)
            fields["rhat"][idx] = to_numpy(run.rhat)
            fields["step"][idx] = to_numpy(run.step_size)
        report = ImputationReport(
            acceptance=fields["acc"],
            independence_acceptance=fields["ind"],
            rhat=fields["rhat"],
            step_size=fields["step"],
            n_steps=n_steps,
            n_chains=n_chains,
        )
        return mean, draw, report

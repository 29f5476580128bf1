"""Conditional means, draws and refinement by MCMC on a flow's energy.

Every preprocessing stage (standardize, logit, dequantize) acts on each feature alone,
so conditioning ``x`` on its observed entries is conditioning ``y = T(x)`` on the
corresponding entries of ``y``; the chains run in ``y`` on ``exp(-E(y))`` (the flow's
energy) and are mapped back by ``T⁻¹``, and the conditional mean is averaged in the units
of ``X``. The rows with missing entries run in batches (:data:`MAX_PRECONDITIONER_ENTRIES`
bounds the preconditioners' memory, :data:`MAX_CHAIN_ROWS` the chains'); a
row with nothing observed gets exact joint draws
of the flow instead of chains.

The functions take the torch objects themselves: ``flow``, an
:class:`~skebflow.nn._flow.EnergyFlow` (``energy`` and ``sample``), and ``chain``, the
fitted :class:`~skebflow.preprocessing._transforms.Chain` of its preprocessing
(``forward``, ``inverse``, ``check``). The kernel is in :mod:`skebflow.sampling._mcmc`;
the measurements behind its defaults are in ``docs/imputation.md``.

References
----------
.. [1] G. O. Roberts, R. L. Tweedie, "Exponential convergence of Langevin distributions
   and their discrete approximations", Bernoulli 2(4), 1996 (MALA).
.. [2] A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner, "Rank-normalization,
   folding, and localization: an improved R̂", Bayesian Analysis 16(2), 2021 (split-R̂).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from skebflow.nn import EnergyFlow
from skebflow.preprocessing import Chain
from skebflow.sampling._mcmc import (
    MAX_CHAIN_ROWS,
    MAX_PRECONDITIONER_ENTRIES,
    N_CHAINS,
    N_GAUSSIAN_SAMPLES,
    N_STEPS,
    ChainOptions,
    ChainRun,
    run_chains,
)
from skebflow.utils import to_numpy

__all__ = [
    "MIN_ACCEPTANCE",
    "REFINE_STEPS",
    "RHAT_THRESHOLD",
    "WARN_FRACTION",
    "ImputationReport",
    "check_observed",
    "conditional_draws",
    "conditional_fill",
    "refine",
    "to_x",
]

#: A row's chains have not mixed when their split-R̂ exceeds this (Vehtari et al. 2021
#: recommend 1.01 for inference from long chains; short chains exceed that by chance, so
#: a higher bar flags only clear failures; the figures are in ``docs/imputation.md``).
RHAT_THRESHOLD = 1.2
#: ...or when their mean MALA acceptance falls below this (a stuck chain).
MIN_ACCEPTANCE = 0.05
#: The warning is raised when more than this fraction of the imputed rows fails.
WARN_FRACTION = 0.1
#: Steps of ``sample(method="langevin")``'s refinement.
REFINE_STEPS = 20


@dataclass
class ImputationReport:
    """Diagnostics of the chains of ``skebflow.sampling.conditional_fill`` (one entry per row).

    ``EBFlowDensity.impute(..., return_report=True)`` returns it. Rows without missing
    entries (no chain) hold NaN.

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

    Examples
    --------
    >>> report = ImputationReport(
    ...     acceptance=np.array([0.6, 0.01, np.nan]),
    ...     independence_acceptance=np.array([0.3, 0.0, np.nan]),
    ...     rhat=np.array([1.01, 1.02, np.nan]),
    ...     step_size=np.array([1.4, 0.1, np.nan]),
    ...     n_steps=200,
    ...     n_chains=4,
    ... )
    >>> report.not_mixed
    array([False,  True, False])
    >>> report.summary().endswith("median split-R̂ 1.015, 1 rows not mixed")
    True
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


def to_x(chain: Chain, y: Tensor) -> Tensor:
    """Map states of any leading shape (..., D) back to the units of X by ``chain.inverse``.

    Examples
    --------
    >>> to_x(Chain(), torch.zeros(2, 3, 4)).shape
    torch.Size([2, 3, 4])
    """
    with torch.no_grad():
        flat = y.reshape(-1, y.shape[-1])
        return chain.inverse(flat).reshape(y.shape)


def _centre(chain: Chain, x: Tensor) -> Tensor:
    """Return the row of X at ``y = 0``: a placeholder for missing entries, in the support."""
    return chain.inverse(torch.zeros_like(x[:1]))


def check_observed(chain: Chain, x: Tensor, missing: Tensor) -> None:
    """Raise ``ValueError`` when an observed entry of ``x`` is outside the preprocessing's support.

    Examples
    --------
    >>> x = torch.tensor([[1.0, float("nan")]], dtype=torch.float64)
    >>> check_observed(Chain(), x, torch.isnan(x))
    """
    with torch.no_grad():
        chain.check(torch.where(missing, _centre(chain, x), x))


_Batch = tuple[Tensor, ChainRun | None, Tensor | None]


def _run_batches(
    flow: EnergyFlow,
    chain: Chain,
    x: Tensor,
    missing: Tensor,
    options: ChainOptions,
    generator: torch.Generator,
    *,
    progress: bool = False,
) -> list[_Batch]:
    """Run the chains of the rows with missing entries, in batches of rows.

    Returns ``(row indices, run, None)`` per batch of partly observed rows and
    ``(row indices, None, exact joint draws (rows, n_chains, D))`` for the rows
    with nothing observed. With ``progress``, a bar counts the steps of every batch
    (with its time estimate) on stderr.
    """
    d = x.shape[1]
    partial_rows = missing.any(dim=1) & ~missing.all(dim=1)
    out: list[_Batch] = []
    with torch.no_grad():
        samples = flow.sample(N_GAUSSIAN_SAMPLES, generator=generator)
        y = chain.forward(torch.where(missing, _centre(chain, x), x))[0]
    rows = torch.nonzero(partial_rows).flatten()
    # Rows per batch: bounded by the preconditioners' memory and by the chains' (their
    # initial proposals and states take about 0.3 MB per row at D = 10: 20,000 rows in one
    # batch peaked at 5 GB).
    batch = max(1, min(MAX_PRECONDITIONER_ENTRIES // (d * d), MAX_CHAIN_ROWS))
    chunks = list(rows.split(batch)) if len(rows) else []
    bar = tqdm(
        total=max(options.n_steps, 1) * len(chunks),
        desc="MCMC steps",
        leave=False,
        disable=not (progress and chunks),
    )
    options = replace(options, on_step=partial(bar.update, 1))
    try:
        for chunk in chunks:
            run = run_chains(
                flow.energy,
                y[chunk],
                missing[chunk],
                samples,
                statistic=partial(to_x, chain),
                options=options,
                generator=generator,
            )
            out.append((chunk, run, None))
    finally:
        bar.close()
    empty_rows = torch.nonzero(missing.all(dim=1)).flatten()
    if len(empty_rows):
        with torch.no_grad():
            joint = flow.sample(len(empty_rows) * options.n_chains, generator=generator)
        out.append((empty_rows, None, to_x(chain, joint).reshape(-1, options.n_chains, d)))
    return out


def conditional_fill(
    flow: EnergyFlow,
    chain: Chain,
    x: Tensor,
    missing: Tensor,
    *,
    n_steps: int = N_STEPS,
    n_chains: int = N_CHAINS,
    step_size: float | None = None,
    generator: torch.Generator,
    progress: bool = False,
) -> tuple[Tensor, Tensor, ImputationReport]:
    """Conditional means, one conditional draw per row, and the chains' report.

    Parameters
    ----------
    flow : EnergyFlow
        The flow on the preprocessed space.
    chain : Chain
        Its fitted preprocessing.
    x : Tensor of shape (n, D)
        Rows in the units of X (float64, on the flow's device); the missing entries'
        values are ignored.
    missing : Tensor of bool, shape (n, D)
        The entries to fill.
    n_steps, n_chains : int
        Steps per chain (a quarter burn-in) and chains per row.
    step_size : float or None, default=None
        A fixed MALA step (whitened units); ``None`` adapts it per row.
    generator : torch.Generator
        The source of every random number.
    progress : bool, default=False
        Show a progress bar of the MCMC steps, with a time estimate, on stderr.

    Returns
    -------
    mean : Tensor of shape (n, D)
        ``x`` with its missing entries replaced by the conditional mean (all chains,
        after burn-in, in the units of X); a row with nothing observed gets the flow's
        mean. The other entries are those of ``x``, bit for bit.
    draw : Tensor of shape (n, D)
        ``x`` with its missing entries replaced by the last state of the first chain
        (an exact joint draw for a row with nothing observed).
    report : ImputationReport

    Examples
    --------
    A Gaussian with correlation 0.8, as a one-layer flow; the conditional mean of the
    second entry given the first is ``0.8 x1``:

    >>> from skebflow.nn._linear import Dense
    >>> cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    >>> flow = EnergyFlow([Dense(2)], features=2).double().requires_grad_(False)
    >>> _ = flow.layers[0].weight.copy_(torch.linalg.inv(torch.linalg.cholesky(cov)))
    >>> x = torch.tensor([[1.0, float("nan")], [0.5, 0.5]], dtype=torch.float64)
    >>> gen = torch.Generator().manual_seed(0)
    >>> mean, draw, report = conditional_fill(flow, Chain(), x, torch.isnan(x), generator=gen)
    >>> round(float(mean[0, 1]), 1), mean[1].tolist()
    (0.8, [0.5, 0.5])
    >>> report.summary()[:42]
    '1 rows imputed with 4 chains of 200 steps:'
    """
    options = ChainOptions(n_steps=n_steps, n_chains=n_chains, step_size=step_size)
    mean, draw = x.clone(), x.clone()
    report = _blank_report(x.shape[0], n_steps, n_chains)
    for rows, run, joint in _run_batches(
        flow, chain, x, missing, options, generator, progress=progress
    ):
        if run is None:  # rows with nothing observed (one batch, the last)
            mean[rows] = _model_mean(flow, chain, generator).expand(len(rows), -1)
            draw[rows] = joint[:, 0]
            continue
        mean[rows] = run.mean
        draw[rows] = to_x(chain, run.last[:, 0])
        idx = to_numpy(rows).astype(int)
        report.acceptance[idx] = to_numpy(run.acceptance)
        report.independence_acceptance[idx] = to_numpy(run.independence_acceptance)
        report.rhat[idx] = to_numpy(run.rhat)
        report.step_size[idx] = to_numpy(run.step_size)
    return torch.where(missing, mean, x), torch.where(missing, draw, x), report


def _blank_report(n: int, n_steps: int, n_chains: int) -> ImputationReport:
    """Return a report of ``n`` rows without chains (NaN everywhere)."""
    return ImputationReport(
        acceptance=np.full(n, np.nan),
        independence_acceptance=np.full(n, np.nan),
        rhat=np.full(n, np.nan),
        step_size=np.full(n, np.nan),
        n_steps=n_steps,
        n_chains=n_chains,
    )


def _model_mean(flow: EnergyFlow, chain: Chain, generator: torch.Generator) -> Tensor:
    """Return the flow's mean in the units of X, from its exact samples."""
    with torch.no_grad():
        sample = flow.sample(N_GAUSSIAN_SAMPLES, generator=generator)
    return to_x(chain, sample).mean(dim=0)


def conditional_draws(
    flow: EnergyFlow,
    chain: Chain,
    x: Tensor,
    missing: Tensor,
    *,
    n_samples: int = 1,
    n_steps: int = N_STEPS,
    generator: torch.Generator,
    progress: bool = False,
) -> Tensor:
    """Draw the missing entries of each row given its observed entries.

    Each draw is the final state of its own chain, started by importance resampling
    and run ``n_steps`` steps (the sampler of :func:`conditional_fill`); a row with
    nothing observed gets exact joint draws of the flow.

    Parameters
    ----------
    flow : EnergyFlow
        The flow on the preprocessed space.
    chain : Chain
        Its fitted preprocessing.
    x : Tensor of shape (n, D)
        Rows in the units of X (float64, on the flow's device).
    missing : Tensor of bool, shape (n, D)
        The entries to draw.
    n_samples : int, default=1
        Draws (chains) per row.
    n_steps : int, default=N_STEPS
        Steps per chain.
    generator : torch.Generator
        The source of every random number.
    progress : bool, default=False
        Show a progress bar of the MCMC steps, with a time estimate, on stderr.

    Returns
    -------
    Tensor of shape (n, n_samples, D)
        Complete rows: the observed entries as given, the missing ones drawn.

    Examples
    --------
    >>> from skebflow.nn._linear import Dense
    >>> flow = EnergyFlow([Dense(2)], features=2).double().requires_grad_(False)
    >>> x = torch.tensor([[0.5, float("nan")]], dtype=torch.float64)
    >>> gen = torch.Generator().manual_seed(0)
    >>> draws = conditional_draws(flow, Chain(), x, torch.isnan(x), n_samples=5, generator=gen)
    >>> draws.shape, bool((draws[0, :, 0] == 0.5).all())
    (torch.Size([1, 5, 2]), True)
    """
    options = ChainOptions(n_steps=n_steps, n_chains=n_samples)
    draws = x[:, None, :].repeat(1, n_samples, 1)
    batches = _run_batches(flow, chain, x, missing, options, generator, progress=progress)
    for rows, run, joint in batches:
        draws[rows] = to_x(chain, run.last) if run is not None else joint
    return torch.where(missing[:, None, :], draws, x[:, None, :])


def refine(
    flow: EnergyFlow,
    chain: Chain,
    x: Tensor,
    *,
    n_steps: int = REFINE_STEPS,
    step_size: float | None = None,
    generator: torch.Generator,
) -> Tensor:
    """Refine rows ``x`` (units of X, float64) by ``n_steps`` MCMC steps on the joint.

    One chain per row, started at the row; one step size, pooled over all rows, is
    adapted during the first quarter of the steps (``None``) or fixed.

    Parameters
    ----------
    flow : EnergyFlow
        The flow on the preprocessed space.
    chain : Chain
        Its fitted preprocessing.
    x : Tensor of shape (n, D)
        Rows in the units of X (float64, on the flow's device), e.g. exact samples.
    n_steps : int, default=REFINE_STEPS
        Steps per chain.
    step_size : float or None, default=None
        A fixed MALA step (whitened units); ``None`` adapts it.
    generator : torch.Generator
        The source of every random number.

    Returns
    -------
    Tensor of shape (n, D)
        The rows after the chain, in the units of X.

    Examples
    --------
    >>> from skebflow.nn._linear import Dense
    >>> flow = EnergyFlow([Dense(2)], features=2).double().requires_grad_(False)
    >>> x = flow.sample(100, generator=torch.Generator().manual_seed(0))
    >>> refined = refine(flow, Chain(), x, generator=torch.Generator().manual_seed(1))
    >>> refined.shape, bool((refined != x).any())
    (torch.Size([100, 2]), True)
    """
    with torch.no_grad():
        y = chain.forward(x)[0]
        samples = flow.sample(N_GAUSSIAN_SAMPLES, generator=generator)
    free = torch.ones_like(y, dtype=torch.bool)
    options = ChainOptions(n_steps=n_steps, n_chains=1, step_size=step_size, pooled=True)
    run = run_chains(
        flow.energy,
        y,
        free,
        samples,
        statistic=partial(to_x, chain),
        options=options,
        initial=y[:, None, :],
        generator=generator,
    )
    return to_x(chain, run.last[:, 0])

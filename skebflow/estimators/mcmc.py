"""Conditional MCMC on a flow's energy: preconditioned MALA with independence moves.

Every chain lives in the preprocessed space ``y`` of the estimator, where the target is
``exp(-E(y))`` (the flow's energy; the normalizer is a constant) with the observed
coordinates clamped. The chains of all rows run as one batch of shape
``(n_rows, n_chains, D)``; a boolean ``free`` mask of shape ``(n_rows, D)`` says which
coordinates move.

The kernel, per step:

1. a Metropolis-adjusted Langevin (MALA) move preconditioned by the conditional
   covariance of a Gaussian fitted to the flow (``L Lᵀ`` per row), with a step size
   adapted per row during burn-in towards :data:`TARGET_ACCEPTANCE`, then frozen;
2. a Metropolis independence move proposing from that Gaussian conditional, its
   covariance scaled by :data:`INDEPENDENCE_SCALE` (one energy evaluation, no
   gradient). It lets chains jump between separated modes, which Langevin moves cannot.

Both moves leave the conditional invariant, so the mixture does. Chains start from a
sampling-importance-resampling draw from the same Gaussian conditional, so that modes
get their weights from the start. The measurements behind the constants are in
``docs/imputation.md``.

References
----------
.. [1] G. O. Roberts, R. L. Tweedie, "Exponential convergence of Langevin distributions
   and their discrete approximations", Bernoulli 2(4), 1996 (MALA).
.. [2] G. O. Roberts, J. S. Rosenthal, "Optimal scaling of discrete approximations to
   Langevin diffusions", JRSS B 60(1), 1998 (the 0.574 acceptance rate).
.. [3] A. Vehtari, A. Gelman, D. Simpson, B. Carpenter, P.-C. Bürkner, "Rank-normalization,
   folding, and localization: an improved R̂", Bayesian Analysis 16(2), 2021 (split-R̂).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BURN_IN_FRACTION",
    "INDEPENDENCE_SCALE",
    "N_CHAINS",
    "N_PROPOSALS",
    "N_STEPS",
    "TARGET_ACCEPTANCE",
    "ChainRun",
    "GaussianConditional",
    "run_chains",
    "split_rhat",
]

#: Steps per chain (burn-in included); the measurements are in ``docs/imputation.md``.
N_STEPS = 200
#: Fraction of the steps spent on burn-in (step-size adaptation; not averaged).
BURN_IN_FRACTION = 0.25
#: Chains per row: the conditional mean averages all of them, split-R̂ compares them.
N_CHAINS = 4
#: Importance-resampling proposals per chain for the initial state.
N_PROPOSALS = 16
#: MALA's asymptotically optimal acceptance rate (Roberts and Rosenthal 1998).
TARGET_ACCEPTANCE = 0.574
#: Standard-deviation factor of the Gaussian independence proposal and of the
#: importance-resampling proposal. 1.5 (heavier tails) started chains of digits in
#: regions of low density they did not leave (``docs/imputation.md``); 1.0 is measured.
INDEPENDENCE_SCALE = 1.0
#: Exact samples of the flow from which the Gaussian approximation is fitted.
N_GAUSSIAN_SAMPLES = 4096
#: Ridge added to the Gaussian's covariance (in preprocessed units).
COVARIANCE_RIDGE = 1e-6
#: Rows × D² per batch of preconditioners (bounded memory: 2**23 float64 = 64 MiB).
MAX_PRECONDITIONER_ENTRIES = 2**23

Energy = Callable[[Tensor], Tensor]


@dataclass
class GaussianConditional:
    """A Gaussian fitted to the flow, conditioned on each row's observed coordinates.

    ``mean`` is the conditional mean (observed coordinates as given), ``chol`` a factor
    ``L`` with ``L Lᵀ`` the conditional covariance on the free block (identity on the
    observed block, which the masks keep still) and ``chol_inv`` its inverse ``Rᵀ``.
    """

    mean: Tensor  # (n, D)
    chol: Tensor  # (n, D, D), upper triangular
    chol_inv: Tensor  # (n, D, D)

    @classmethod
    def fit(cls, samples: Tensor, y: Tensor, free: Tensor) -> GaussianConditional:
        """Fit to exact ``samples`` of the flow; condition each row of ``y`` on ``~free``."""
        mu = samples.mean(dim=0)
        centred = samples - mu
        cov = centred.T @ centred / max(len(samples) - 1, 1)
        eye = torch.eye(y.shape[1], dtype=y.dtype, device=y.device)
        cov = cov + COVARIANCE_RIDGE * eye * cov.diagonal().mean().clamp(min=1.0)
        precision = torch.linalg.inv(cov)
        precision = 0.5 * (precision + precision.T)
        f = free.to(y.dtype)
        # Precision of the free block, identity on the observed one: its inverse is the
        # conditional covariance there (the Schur complement) and the identity elsewhere.
        block = precision * (f[:, :, None] * f[:, None, :]) + torch.diag_embed(1.0 - f)
        lower = torch.linalg.cholesky(block)  # R with R Rᵀ = block
        chol = torch.linalg.solve_triangular(lower.mT, eye.expand_as(block), upper=True)
        shift = -(((y - mu) * (1.0 - f)) @ precision) * f
        delta = torch.cholesky_solve(shift[:, :, None], lower)[:, :, 0]
        mean = torch.where(free, mu + delta, y)
        return cls(mean=mean, chol=chol, chol_inv=lower.mT)


def _mv(matrix: Tensor, v: Tensor) -> Tensor:
    """Per-row matrix (n, D, D) times vectors (n, K, D)."""
    return torch.einsum("nij,nkj->nki", matrix, v)


def _mtv(matrix: Tensor, v: Tensor) -> Tensor:
    """Per-row transposed matrix (n, D, D) times vectors (n, K, D)."""
    return torch.einsum("nji,nkj->nki", matrix, v)


def _apply(statistic: Callable[[Tensor], Tensor], states: Tensor) -> Tensor:
    """``statistic`` of states (n, K, D), row by row."""
    n, k, d = states.shape
    return statistic(states.reshape(n * k, d)).reshape(n, k, d)


def _log_target(energy: Energy, y: Tensor, *, grad: bool) -> tuple[Tensor, Tensor | None]:
    """Return ``-E(y)`` of shape (n, K) and, with ``grad``, its gradient (n, K, D)."""
    n, k, d = y.shape
    if not grad:
        with torch.no_grad():
            return -energy(y.reshape(n * k, d)).reshape(n, k), None
    with torch.enable_grad():
        leaf = y.detach().reshape(n * k, d).requires_grad_(True)
        value = -energy(leaf)
        (g,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach().reshape(n, k), g.reshape(n, k, d)


def _finite(value: Tensor) -> Tensor:
    """Map NaN log-targets (overflow far from the data) to -inf: such moves are rejected."""
    return torch.nan_to_num(value, nan=-math.inf, posinf=-math.inf)


def _usable(value: Tensor, grad: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Reject (log-target -inf) the states whose target or gradient is not finite.

    Their gradient is set to zero only so that arithmetic on it stays finite: a state
    with log-target -inf is never accepted, and a chain standing on one accepts its
    first finite proposal.
    """
    value = _finite(value)
    bad = ~torch.isfinite(grad).all(dim=-1)
    value = value.masked_fill(bad, -math.inf)
    return value, torch.where(bad[..., None], torch.zeros_like(grad), grad) * m


def _normal(shape: tuple[int, ...], like: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _uniform_log(shape: tuple[int, ...], like: Tensor, generator: torch.Generator) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.log(u)


def initial_states(
    energy: Energy,
    gauss: GaussianConditional,
    free: Tensor,
    n_chains: int,
    generator: torch.Generator,
) -> Tensor:
    """Sampling-importance-resampling from the (scaled) Gaussian conditional, per row."""
    n, d = gauss.mean.shape
    m = free.to(gauss.mean.dtype)[:, None, :]
    p = n_chains * N_PROPOSALS
    xi = _normal((n, p, d), gauss.mean, generator) * m
    proposals = gauss.mean[:, None, :] + INDEPENDENCE_SCALE * _mv(gauss.chol, xi)
    log_target = _finite(_log_target(energy, proposals, grad=False)[0])
    log_weight = log_target + 0.5 * xi.pow(2).sum(dim=2)
    # Rows whose proposals all have zero density keep uniform weights.
    log_weight = torch.where(torch.isfinite(log_weight), log_weight, -1e300)
    weights = torch.softmax(log_weight, dim=1)
    picks = torch.multinomial(weights, n_chains, replacement=True, generator=generator)
    return torch.gather(proposals, 1, picks[:, :, None].expand(n, n_chains, d))


@dataclass
class ChainRun:
    """What :func:`run_chains` returns (all per row unless said otherwise)."""

    mean: Tensor  # (n, D): average of ``statistic`` over chains and kept steps
    last: Tensor  # (n, K, D): the final states, in y
    acceptance: Tensor  # (n,): mean MALA acceptance probability after burn-in
    independence_acceptance: Tensor  # (n,): the same for the independence moves
    rhat: Tensor  # (n,): the largest split-R̂ over the free coordinates (1.0 if none)
    step_size: Tensor  # (n,): the frozen MALA step size (whitened units)


def run_chains(
    energy: Energy,
    y: Tensor,
    free: Tensor,
    samples: Tensor,
    *,
    statistic: Callable[[Tensor], Tensor],
    n_steps: int = N_STEPS,
    n_chains: int = N_CHAINS,
    step_size: float | None = None,
    metropolis: bool = True,
    independence: bool = True,
    initial: Tensor | None = None,
    pooled: bool = False,
    generator: torch.Generator,
) -> ChainRun:
    """Run ``n_chains`` chains per row of ``y`` on ``exp(-energy)`` with ``~free`` clamped.

    Parameters
    ----------
    energy : callable
        ``E(y)`` of shape (m,) for ``y`` of shape (m, D), differentiable.
    y : Tensor of shape (n, D)
        Rows in the preprocessed space; the free entries' values are ignored.
    free : Tensor of bool, shape (n, D)
        The coordinates the chains move.
    samples : Tensor of shape (s, D)
        Exact samples of the flow (the Gaussian approximation is fitted to them).
    statistic : callable
        Maps states (m, D) to what is averaged (the inverse preprocessing: the
        conditional mean is averaged in the units of ``X``).
    n_steps : int
        Steps per chain, burn-in (:data:`BURN_IN_FRACTION`) included.
    n_chains : int
        Chains per row.
    step_size : float or None
        A fixed MALA step (whitened units); ``None`` adapts it per row in burn-in.
    metropolis : bool
        Accept or reject the Langevin moves (MALA); ``False`` is the unadjusted
        Langevin algorithm, kept for the measurements.
    independence : bool
        Interleave the Gaussian independence moves.
    initial : Tensor of shape (n, n_chains, D) or None
        Initial states; ``None`` draws them by importance resampling
        (:func:`initial_states`).
    pooled : bool
        Adapt one step size from the acceptance of all rows (for rows that share one
        target, as in the refinement of joint samples) instead of one per row. A step
        adapted from a single chain's own path biases that chain's state at the end of
        burn-in (measured in ``docs/imputation.md``); pooling many chains removes that.
    generator : torch.Generator
        The source of every random number.

    Returns
    -------
    ChainRun
    """
    n, d = y.shape
    gauss = GaussianConditional.fit(samples, y, free)
    m = free.to(y.dtype)[:, None, :]
    if initial is None:
        state = initial_states(energy, gauss, free, n_chains, generator)
    else:
        state = initial.clone()
    value, grad = _usable(*_log_target(energy, state, grad=True), m)
    n_free = free.sum(dim=1).clamp(min=1).to(y.dtype)
    adapt = step_size is None
    log_h = torch.log(n_free.pow(-1.0 / 6.0) if adapt else torch.full_like(n_free, step_size))
    n_burn = round(BURN_IN_FRACTION * n_steps)
    n_keep = max(n_steps - n_burn, 1)
    total = torch.zeros(n, d, dtype=y.dtype, device=y.device)
    accept_sum = torch.zeros(n, dtype=y.dtype, device=y.device)
    indep_sum = torch.zeros_like(accept_sum)
    moments = _HalfMoments(n_keep, state)
    for step in range(max(n_steps, 1)):
        h = torch.exp(log_h)[:, None, None]
        xi = _normal((n, n_chains, d), y, generator) * m
        lt_g = _mtv(gauss.chol, grad)
        proposal = state + 0.5 * h**2 * _mv(gauss.chol, lt_g) + h * _mv(gauss.chol, xi)
        value_p, grad_p = _usable(*_log_target(energy, proposal, grad=True), m)
        if metropolis:
            back = xi + 0.5 * h * (lt_g + _mtv(gauss.chol, grad_p))
            log_alpha = value_p - value - 0.5 * back.pow(2).sum(2) + 0.5 * xi.pow(2).sum(2)
            # A proposal whose target is undefined (-inf) is rejected; never NaN - NaN.
            log_alpha = torch.where(torch.isfinite(value_p), log_alpha, -math.inf)
            log_alpha = log_alpha.clamp(max=0.0)
            accept = _uniform_log((n, n_chains), y, generator) < log_alpha
        else:
            log_alpha = torch.zeros_like(value)
            accept = torch.isfinite(value_p)
        alpha = torch.exp(log_alpha)
        if step >= n_burn:  # waste recycling: E[f(next) | state, proposal], less variance
            f_state, f_prop = (_apply(statistic, v) for v in (state, proposal))
            a = alpha[:, :, None]  # a rejected proposal (a = 0) may map to a non-finite f
            blend = torch.where(a > 0, a * f_prop + (1.0 - a) * f_state, f_state)
            total += blend.sum(1)
        state = torch.where(accept[:, :, None], proposal, state)
        value = torch.where(accept, value_p, value)
        grad = torch.where(accept[:, :, None], grad_p, grad)
        if independence:
            eta = _normal((n, n_chains, d), y, generator) * m
            jump = gauss.mean[:, None, :] + INDEPENDENCE_SCALE * _mv(gauss.chol, eta)
            value_j = _finite(_log_target(energy, jump, grad=False)[0])
            log_q_j = -0.5 * eta.pow(2).sum(dim=2)
            whitened = _mv(gauss.chol_inv, (state - gauss.mean[:, None, :]) * m)
            log_q = -0.5 * (whitened / INDEPENDENCE_SCALE).pow(2).sum(dim=2)  # current state
            log_beta = value_j - log_q_j - value + log_q
            log_beta = torch.where(torch.isfinite(value_j), log_beta, -math.inf)
            log_beta = log_beta.clamp(max=0.0)
            take = _uniform_log((n, n_chains), y, generator) < log_beta
            if bool(take.any()):  # the gradient is needed only where a chain jumped
                value_t, grad_t = _log_target(energy, jump[take][None], grad=True)
                value_t, grad_t = _usable(value_t, grad_t, m.expand_as(grad)[take][None])
                take = take.clone()
                take[take.clone()] = torch.isfinite(value_t[0])  # a jump needs its gradient
                grad = grad.clone()
                grad[take] = grad_t[0][torch.isfinite(value_t[0])]
            state = torch.where(take[:, :, None], jump, state)
            value = torch.where(take, value_j, value)
        if step < n_burn:
            if adapt:
                rate = (step + 1.0) ** -0.6
                rate_of_acceptance = alpha.mean() if pooled else alpha.mean(dim=1)
                log_h = log_h + rate * (rate_of_acceptance - TARGET_ACCEPTANCE)
            continue
        kept = step - n_burn
        if kept < n_keep:
            moments.add(kept, state)
            accept_sum += alpha.mean(dim=1)
            if independence:
                indep_sum += torch.exp(log_beta).mean(dim=1)
    rhat = moments.rhat()
    rhat = torch.where(free, rhat, torch.ones_like(rhat)).amax(dim=1)
    stuck = ~torch.isfinite(value)
    if bool(stuck.any()):
        raise FloatingPointError(
            f"The energy was not finite at any state that {int(stuck.any(dim=1).sum())} "
            "row(s)' chains reached (the model overflows near these rows); the fill "
            "would be meaningless."
        )
    return ChainRun(
        mean=total / (n_keep * n_chains),
        last=state,
        acceptance=accept_sum / n_keep,
        independence_acceptance=indep_sum / n_keep,
        rhat=rhat,
        step_size=torch.exp(log_h),
    )


class _HalfMoments:
    """Running sums of each half of each chain's kept states, for split-R̂ (no trace)."""

    def __init__(self, n_keep: int, state: Tensor) -> None:
        self.t = n_keep // 2
        n, k, d = state.shape
        self.ref = state.clone()
        self.sums = state.new_zeros(2, n, k, d)
        self.squares = state.new_zeros(2, n, k, d)

    def add(self, kept: int, state: Tensor) -> None:
        half = kept // self.t if self.t >= 2 else 2
        if half < 2:
            delta = state - self.ref  # centred on the first kept state: no cancellation
            self.sums[half] += delta
            self.squares[half] += delta * delta

    def rhat(self) -> Tensor:
        n, d = self.ref.shape[0], self.ref.shape[2]
        if self.t < 2:
            return self.ref.new_ones(n, d)
        t = self.t
        sums = torch.cat([self.sums[0], self.sums[1]], dim=1)  # (n, 2K, D)
        squares = torch.cat([self.squares[0], self.squares[1]], dim=1)
        shifts = sums / t
        variances = (squares - t * shifts * shifts).clamp(min=0.0) / (t - 1)
        return split_rhat(shifts + torch.cat([self.ref, self.ref], dim=1), variances, t)


def split_rhat(means: Tensor, variances: Tensor, length: int) -> Tensor:
    """Split-R̂ from the means and variances of the half-chains (n, 2K, D), each ``length`` long.

    Each chain is cut into halves, which makes ``2K`` chains; R̂ compares their between-
    and within-chain variances and tends to 1 as the chains mix. Coordinates that do not
    move (zero variance) get 1.
    """
    within = variances.mean(dim=1)
    between = length * means.var(dim=1, correction=1)
    pooled = (length - 1) / length * within + between / length
    ratio = torch.sqrt(pooled / within.clamp(min=torch.finfo(within.dtype).tiny))
    return torch.where(within > 0, ratio, torch.ones_like(ratio))

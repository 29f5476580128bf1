"""Conditional MCMC on a flow's energy: preconditioned MALA with independence moves.

Every chain lives in the preprocessed space ``y`` of a flow, where the target is
``exp(-E(y))`` (the flow's energy; the normalizer is a constant) with the observed
coordinates clamped. The chains of all rows run as one batch of shape
``(n_rows, n_chains, D)``; a boolean ``free`` mask of shape ``(n_rows, D)`` says which
coordinates move.

The kernel, per step:

1. a Metropolis-adjusted Langevin (MALA) move (:func:`mala_move`) preconditioned by the
   conditional covariance of a Gaussian fitted to the flow (``L Lᵀ`` per row), with a
   step size adapted per row during burn-in towards :data:`TARGET_ACCEPTANCE`
   (:func:`adapt_step`), then frozen;
2. a Metropolis independence move (:func:`independence_move`) proposing from that
   Gaussian conditional, its covariance scaled by :data:`INDEPENDENCE_SCALE` (one energy
   evaluation, no gradient). It lets chains jump between separated modes, which Langevin
   moves cannot.

Both moves leave the conditional invariant, so the mixture does. Chains start from a
sampling-importance-resampling draw from the same Gaussian conditional
(:func:`initial_states`), so that modes get their weights from the start. After burn-in
the average of a statistic recycles the rejected proposals (:func:`recycle`).
:func:`run_chains` is the driver. The measurements behind the constants are in
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
    "COVARIANCE_RIDGE",
    "INDEPENDENCE_SCALE",
    "MAX_CHAIN_ROWS",
    "MAX_PRECONDITIONER_ENTRIES",
    "N_CHAINS",
    "N_GAUSSIAN_SAMPLES",
    "N_PROPOSALS",
    "N_STEPS",
    "TARGET_ACCEPTANCE",
    "ChainOptions",
    "ChainRun",
    "ChainState",
    "GaussianConditional",
    "adapt_step",
    "independence_move",
    "initial_states",
    "mala_move",
    "recycle",
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
#: importance-resampling proposal. Heavier tails start chains in regions of low density
#: that they do not leave; the measurements are in ``docs/imputation.md``.
INDEPENDENCE_SCALE = 1.0
#: Exact samples of the flow from which the Gaussian approximation is fitted.
N_GAUSSIAN_SAMPLES = 4096
#: Ridge added to the Gaussian's covariance (in preprocessed units).
COVARIANCE_RIDGE = 1e-6
#: Rows × D² per batch of preconditioners (bounded memory: 2**23 float64 = 64 MiB).
MAX_PRECONDITIONER_ENTRIES = 2**23
#: Rows whose chains run at once, at most: imputation's memory stays bounded whatever the
#: number of rows (about 0.3 MB per row at D = 10, so some 150 MB per batch).
MAX_CHAIN_ROWS = 512

Energy = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ChainOptions:
    """How :func:`run_chains` runs its chains.

    Parameters
    ----------
    n_steps : int, default=N_STEPS
        Steps per chain, burn-in (:data:`BURN_IN_FRACTION`) included.
    n_chains : int, default=N_CHAINS
        Chains per row.
    step_size : float or None, default=None
        A fixed MALA step (whitened units); ``None`` adapts it per row in burn-in.
    metropolis : bool, default=True
        Accept or reject the Langevin moves (MALA); ``False`` is the unadjusted
        Langevin algorithm, kept for the measurements.
    independence : bool, default=True
        Interleave the Gaussian independence moves.
    pooled : bool, default=False
        Adapt one step size from the acceptance of all rows (for rows that share one
        target, as in the refinement of joint samples) instead of one per row. A step
        adapted from a single chain's own path biases that chain's state at the end of
        burn-in (measured in ``docs/imputation.md``); pooling many chains removes that.
    on_step : callable or None, default=None
        Called with no argument after every step (a progress bar's update).

    Examples
    --------
    >>> ChainOptions(n_steps=50, n_chains=2).metropolis
    True
    """

    n_steps: int = N_STEPS
    n_chains: int = N_CHAINS
    step_size: float | None = None
    metropolis: bool = True
    independence: bool = True
    pooled: bool = False
    on_step: Callable[[], None] | None = None


@dataclass
class GaussianConditional:
    """A Gaussian fitted to the flow, conditioned on each row's observed coordinates.

    ``mean`` is the conditional mean (observed coordinates as given), ``chol`` a factor
    ``L`` with ``L Lᵀ`` the conditional covariance on the free block (identity on the
    observed block, which the masks keep still) and ``chol_inv`` its inverse ``Rᵀ``.

    Examples
    --------
    >>> samples = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    >>> y = torch.tensor([[1.0, 0.0]])
    >>> gauss = GaussianConditional.fit(samples.double(), y.double(), torch.tensor([[0, 1]]) > 0)
    >>> gauss.mean.shape, gauss.chol.shape
    (torch.Size([1, 2]), torch.Size([1, 2, 2]))
    >>> float(gauss.mean[0, 0])
    1.0
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
    """Sampling-importance-resampling from the (scaled) Gaussian conditional, per row.

    Each row draws ``n_chains`` × :data:`N_PROPOSALS` proposals, weights them by
    ``exp(-E) / q`` and resamples ``n_chains`` of them (with replacement).

    Returns
    -------
    Tensor of shape (n, n_chains, D)
        The initial states; the observed coordinates are those of ``gauss.mean``.
    """
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


@dataclass(frozen=True)
class ChainState:
    """The chains' states with their log-target and its gradient (masked to the free block).

    A state whose target or gradient is not finite has log-target ``-inf`` and gradient
    zero: it is never accepted, and a chain standing on one accepts its first finite
    proposal.
    """

    state: Tensor  # (n, K, D)
    value: Tensor  # (n, K): -E(state)
    grad: Tensor  # (n, K, D): its gradient, zero on the observed coordinates

    @classmethod
    def at(cls, energy: Energy, state: Tensor, mask: Tensor) -> ChainState:
        """Evaluate ``-E`` and its gradient at ``state``; ``mask`` (n, 1, D) is the free block."""
        value, grad = _usable(*_log_target(energy, state, grad=True), mask)
        return cls(state=state, value=value, grad=grad)


def mala_move(
    energy: Energy,
    gauss: GaussianConditional,
    chains: ChainState,
    mask: Tensor,
    step: Tensor,
    *,
    metropolis: bool = True,
    generator: torch.Generator,
) -> tuple[ChainState, Tensor, Tensor]:
    """One preconditioned Langevin move, ``y' = y + h²/2 LLᵀ∇log π + h L ξ``.

    Parameters
    ----------
    energy : callable
        ``E(y)`` of shape (m,) for ``y`` of shape (m, D), differentiable.
    gauss : GaussianConditional
        The preconditioner ``L`` per row.
    chains : ChainState
        The current states (n, K, D).
    mask : Tensor of shape (n, 1, D)
        The free coordinates as 0 or 1, in the states' dtype.
    step : Tensor of shape (n,)
        The step size ``h`` per row (whitened units).
    metropolis : bool, default=True
        Accept or reject (MALA). ``False`` accepts every proposal whose target is finite
        (the unadjusted Langevin algorithm) and reports ``alpha = 1``.
    generator : torch.Generator
        The source of the noise ``ξ`` and, with ``metropolis``, of the acceptance draws.

    Returns
    -------
    moved : ChainState
        The states after acceptance or rejection.
    proposal : Tensor of shape (n, K, D)
        The proposed states.
    alpha : Tensor of shape (n, K)
        The acceptance probabilities.
    """
    n, k, d = chains.state.shape
    chol = gauss.chol
    h = step[:, None, None]
    xi = _normal((n, k, d), mask, generator) * mask
    lt_g = _mtv(chol, chains.grad)
    proposal = chains.state + 0.5 * h**2 * _mv(chol, lt_g) + h * _mv(chol, xi)
    at = ChainState.at(energy, proposal, mask)
    if metropolis:
        back = xi + 0.5 * h * (lt_g + _mtv(chol, at.grad))
        log_alpha = at.value - chains.value - 0.5 * back.pow(2).sum(2) + 0.5 * xi.pow(2).sum(2)
        # A proposal whose target is undefined (-inf) is rejected; never NaN - NaN.
        log_alpha = torch.where(torch.isfinite(at.value), log_alpha, -math.inf)
        log_alpha = log_alpha.clamp(max=0.0)
        accept = _uniform_log((n, k), mask, generator) < log_alpha
    else:
        log_alpha = torch.zeros_like(chains.value)
        accept = torch.isfinite(at.value)
    moved = ChainState(
        state=torch.where(accept[:, :, None], proposal, chains.state),
        value=torch.where(accept, at.value, chains.value),
        grad=torch.where(accept[:, :, None], at.grad, chains.grad),
    )
    return moved, proposal, torch.exp(log_alpha)


def independence_move(
    energy: Energy,
    gauss: GaussianConditional,
    chains: ChainState,
    mask: Tensor,
    *,
    generator: torch.Generator,
) -> tuple[ChainState, Tensor]:
    """One Metropolis independence move proposing from the (scaled) Gaussian conditional.

    Parameters
    ----------
    energy : callable
        ``E(y)`` of shape (m,) for ``y`` of shape (m, D), differentiable.
    gauss : GaussianConditional
        The proposal: mean and factor per row, scaled by :data:`INDEPENDENCE_SCALE`.
    chains : ChainState
        The current states (n, K, D).
    mask : Tensor of shape (n, 1, D)
        The free coordinates as 0 or 1, in the states' dtype.
    generator : torch.Generator
        The source of the proposals and of the acceptance draws.

    Returns
    -------
    moved : ChainState
        The states after acceptance or rejection (the gradient is evaluated only where
        a chain jumped; a jump whose gradient is not finite is rejected).
    beta : Tensor of shape (n, K)
        The acceptance probabilities.
    """
    n, k, d = chains.state.shape
    centre = gauss.mean[:, None, :]
    eta = _normal((n, k, d), mask, generator) * mask
    jump = centre + INDEPENDENCE_SCALE * _mv(gauss.chol, eta)
    value_j = _finite(_log_target(energy, jump, grad=False)[0])
    log_q_j = -0.5 * eta.pow(2).sum(dim=2)
    whitened = _mv(gauss.chol_inv, (chains.state - centre) * mask)
    log_q = -0.5 * (whitened / INDEPENDENCE_SCALE).pow(2).sum(dim=2)  # current state
    log_beta = value_j - log_q_j - chains.value + log_q
    log_beta = torch.where(torch.isfinite(value_j), log_beta, -math.inf)
    log_beta = log_beta.clamp(max=0.0)
    take = _uniform_log((n, k), mask, generator) < log_beta
    grad = chains.grad
    if bool(take.any()):  # the gradient is needed only where a chain jumped
        take, grad = _jump_gradients(energy, jump, take, grad, mask)
    moved = ChainState(
        state=torch.where(take[:, :, None], jump, chains.state),
        value=torch.where(take, value_j, chains.value),
        grad=grad,
    )
    return moved, torch.exp(log_beta)


def _jump_gradients(
    energy: Energy, jump: Tensor, take: Tensor, grad: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Gradients at the accepted jumps; a jump whose gradient is not finite is dropped."""
    value_t, grad_t = _log_target(energy, jump[take][None], grad=True)
    value_t, grad_t = _usable(value_t, grad_t, mask.expand_as(grad)[take][None])
    take = take.clone()
    take[take.clone()] = torch.isfinite(value_t[0])  # a jump needs its gradient
    grad = grad.clone()
    grad[take] = grad_t[0][torch.isfinite(value_t[0])]
    return take, grad


def adapt_step(log_step: Tensor, alpha: Tensor, step: int, *, pooled: bool = False) -> Tensor:
    """One Robbins–Monro update of the log step size towards :data:`TARGET_ACCEPTANCE`.

    ``log h ← log h + (step + 1)^-0.6 (ᾱ - 0.574)``, with ``ᾱ`` the mean acceptance
    probability of each row's chains, or of all chains with ``pooled``.

    Parameters
    ----------
    log_step : Tensor of shape (n,)
        The current log step size per row.
    alpha : Tensor of shape (n, K)
        The acceptance probabilities of the last MALA move.
    step : int
        The index of the step (from 0), which sets the decreasing gain.
    pooled : bool, default=False
        Use one acceptance rate for all rows.

    Returns
    -------
    Tensor of shape (n,)
        The updated log step size.

    Examples
    --------
    >>> log_h = torch.zeros(2, dtype=torch.float64)
    >>> alpha = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    >>> adapt_step(log_h, alpha, 0)
    tensor([ 0.4260, -0.5740], dtype=torch.float64)
    """
    rate = (step + 1.0) ** -0.6
    rate_of_acceptance = alpha.mean() if pooled else alpha.mean(dim=1)
    return log_step + rate * (rate_of_acceptance - TARGET_ACCEPTANCE)


def recycle(
    statistic: Callable[[Tensor], Tensor], state: Tensor, proposal: Tensor, alpha: Tensor
) -> Tensor:
    """Waste recycling: ``E[f(next) | state, proposal]`` summed over each row's chains.

    ``α f(proposal) + (1 − α) f(state)`` has the expectation of ``f`` at the next state
    and less variance. A rejected proposal (``α = 0``) contributes nothing, even if its
    statistic is not finite.

    Parameters
    ----------
    statistic : callable
        Maps states (m, D) to values (m, D).
    state, proposal : Tensor of shape (n, K, D)
        The states before the move and the proposals.
    alpha : Tensor of shape (n, K)
        The acceptance probabilities.

    Returns
    -------
    Tensor of shape (n, D)

    Examples
    --------
    >>> state, proposal = torch.zeros(1, 2, 1), torch.ones(1, 2, 1)
    >>> recycle(lambda t: 10 * t, state, proposal, torch.tensor([[0.25, 1.0]]))
    tensor([[12.5000]])
    """
    f_state, f_prop = (_apply(statistic, v) for v in (state, proposal))
    a = alpha[:, :, None]  # a rejected proposal (a = 0) may map to a non-finite f
    blend = torch.where(a > 0, a * f_prop + (1.0 - a) * f_state, f_state)
    return blend.sum(1)


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
    options: ChainOptions | None = None,
    initial: Tensor | None = None,
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
    options : ChainOptions or None, default=None
        Steps, chains, step size and moves; ``None`` is ``ChainOptions()``.
    initial : Tensor of shape (n, n_chains, D) or None
        Initial states; ``None`` draws them by importance resampling
        (:func:`initial_states`).
    generator : torch.Generator
        The source of every random number.

    Returns
    -------
    ChainRun

    Raises
    ------
    FloatingPointError
        When a chain ends on a state whose energy is not finite.
    """
    opts = ChainOptions() if options is None else options
    gauss = GaussianConditional.fit(samples, y, free)
    mask = free.to(y.dtype)[:, None, :]
    if initial is None:
        state = initial_states(energy, gauss, free, opts.n_chains, generator)
    else:
        state = initial.clone()
    chains = ChainState.at(energy, state, mask)
    log_h = _initial_log_step(free, opts.step_size, y.dtype)
    n_burn = round(BURN_IN_FRACTION * opts.n_steps)
    tally = _Tally(max(opts.n_steps - n_burn, 1), state, y)
    for step in range(max(opts.n_steps, 1)):
        h = torch.exp(log_h)
        moved, proposal, alpha = mala_move(
            energy, gauss, chains, mask, h, metropolis=opts.metropolis, generator=generator
        )
        if step >= n_burn:
            tally.total += recycle(statistic, chains.state, proposal, alpha)
        chains, beta = moved, None
        if opts.independence:
            chains, beta = independence_move(energy, gauss, chains, mask, generator=generator)
        if step >= n_burn:
            tally.add(step - n_burn, chains.state, alpha, beta)
        elif opts.step_size is None:
            log_h = adapt_step(log_h, alpha, step, pooled=opts.pooled)
        if opts.on_step is not None:
            opts.on_step()
    _check_finite(chains.value)
    return tally.result(chains.state, free, torch.exp(log_h))


def _initial_log_step(free: Tensor, step_size: float | None, dtype: torch.dtype) -> Tensor:
    """Log of the fixed step, or of ``d^(-1/6)`` with ``d`` the free coordinates per row."""
    n_free = free.sum(dim=1).clamp(min=1).to(dtype)
    if step_size is None:
        return torch.log(n_free.pow(-1.0 / 6.0))
    return torch.log(torch.full_like(n_free, step_size))


def _check_finite(value: Tensor) -> None:
    """Raise ``FloatingPointError`` when a chain ends on a state of non-finite energy."""
    stuck = ~torch.isfinite(value)
    if bool(stuck.any()):
        raise FloatingPointError(
            f"The energy was not finite at any state that {int(stuck.any(dim=1).sum())} "
            "row(s)' chains reached (the model overflows near these rows); the fill "
            "would be meaningless."
        )


class _Tally:
    """Sums over the kept steps: the recycled statistic, acceptances, half-chain moments."""

    def __init__(self, n_keep: int, state: Tensor, like: Tensor) -> None:
        n, _, d = state.shape
        self.n_keep = n_keep
        self.total = torch.zeros(n, d, dtype=like.dtype, device=like.device)
        self.accept_sum = torch.zeros(n, dtype=like.dtype, device=like.device)
        self.indep_sum = torch.zeros_like(self.accept_sum)
        self.moments = _HalfMoments(n_keep, state)

    def add(self, kept: int, state: Tensor, alpha: Tensor, beta: Tensor | None) -> None:
        """Add the ``kept``-th kept step: its states and acceptance probabilities."""
        if kept < self.n_keep:
            self.moments.add(kept, state)
            self.accept_sum += alpha.mean(dim=1)
            if beta is not None:
                self.indep_sum += beta.mean(dim=1)

    def result(self, last: Tensor, free: Tensor, step_size: Tensor) -> ChainRun:
        """Return the averages, the final states and the largest split-R̂ over ``free``."""
        rhat = self.moments.rhat()
        rhat = torch.where(free, rhat, torch.ones_like(rhat)).amax(dim=1)
        return ChainRun(
            mean=self.total / (self.n_keep * last.shape[1]),
            last=last,
            acceptance=self.accept_sum / self.n_keep,
            independence_acceptance=self.indep_sum / self.n_keep,
            rhat=rhat,
            step_size=step_size,
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
            delta = state - self.ref  # centred on the initial state: no cancellation
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

    Examples
    --------
    >>> means = torch.tensor([[[0.0], [0.0], [1.0], [1.0]]], dtype=torch.float64)
    >>> split_rhat(means, torch.ones_like(means), 10)
    tensor([[1.1106]], dtype=torch.float64)
    """
    within = variances.mean(dim=1)
    between = length * means.var(dim=1, correction=1)
    pooled = (length - 1) / length * within + between / length
    ratio = torch.sqrt(pooled / within.clamp(min=torch.finfo(within.dtype).tiny))
    return torch.where(within > 0, ratio, torch.ones_like(ratio))

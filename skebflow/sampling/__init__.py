"""MCMC on a flow's energy (torch only): conditional fills, conditional draws, refinement.

The kernel (``_mcmc``) is a preconditioned Metropolis-adjusted Langevin (MALA) move
interleaved with Gaussian independence moves, run in batches of chains with step-size
adaptation, waste recycling and split-R̂. The orchestration (``_conditional``) runs it
for the rows of a data set with missing entries (:func:`conditional_fill`,
:func:`conditional_draws`) and on the joint (:func:`refine`), given a flow and its
fitted preprocessing. ``EBFlowDensity.impute``, ``sample_conditional`` and
``sample(method="langevin")`` validate their inputs and call these; the measurements
behind the defaults are in ``docs/imputation.md``.
"""

from __future__ import annotations

from skebflow.sampling._conditional import (
    MIN_ACCEPTANCE,
    REFINE_STEPS,
    RHAT_THRESHOLD,
    WARN_FRACTION,
    ImputationReport,
    check_observed,
    conditional_draws,
    conditional_fill,
    refine,
    to_x,
)
from skebflow.sampling._mcmc import (
    BURN_IN_FRACTION,
    COVARIANCE_RIDGE,
    INDEPENDENCE_SCALE,
    MAX_CHAIN_ROWS,
    MAX_PRECONDITIONER_ENTRIES,
    N_CHAINS,
    N_GAUSSIAN_SAMPLES,
    N_PROPOSALS,
    N_STEPS,
    TARGET_ACCEPTANCE,
    ChainOptions,
    ChainRun,
    ChainState,
    GaussianConditional,
    adapt_step,
    independence_move,
    initial_states,
    mala_move,
    recycle,
    run_chains,
    split_rhat,
)

__all__ = [
    "BURN_IN_FRACTION",
    "COVARIANCE_RIDGE",
    "INDEPENDENCE_SCALE",
    "MAX_CHAIN_ROWS",
    "MAX_PRECONDITIONER_ENTRIES",
    "MIN_ACCEPTANCE",
    "N_CHAINS",
    "N_GAUSSIAN_SAMPLES",
    "N_PROPOSALS",
    "N_STEPS",
    "REFINE_STEPS",
    "RHAT_THRESHOLD",
    "TARGET_ACCEPTANCE",
    "WARN_FRACTION",
    "ChainOptions",
    "ChainRun",
    "ChainState",
    "GaussianConditional",
    "ImputationReport",
    "adapt_step",
    "check_observed",
    "conditional_draws",
    "conditional_fill",
    "independence_move",
    "initial_states",
    "mala_move",
    "recycle",
    "refine",
    "run_chains",
    "split_rhat",
    "to_x",
]

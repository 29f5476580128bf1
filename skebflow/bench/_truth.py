"""``bench truth``: where each objective's own optimum lies, starting from the truth.

A student flow is set to the exact parameters of a teacher (:func:`make_teacher`, the
same teacher as ``bench nll``'s) and an objective is minimized on a finite training
sample, full batch, by L-BFGS. Nothing here depends on an optimizer's path from a random
start: the run shows which models the objective itself prefers on these samples. The
excess NLL (nats per dimension) on fresh test samples is recorded along the way, with the
smallest singular value of every dense layer.

* ``ml`` converges to the maximum-likelihood estimate, whose expected excess NLL is about
  k / (2n) nats (k parameters, n samples).
* ``sm`` is exact score matching (for the FC teacher, gradient and Hessian diagonal come
  from ``D`` Taylor-mode tangents, :func:`skebflow.objectives._jets.energy_jet`): the estimator that
  ``ssm``, ``dsm`` and ``fdssm`` approximate with noise.

References
----------
.. [1] A. Hyvärinen, "Estimation of non-normalized statistical models by score matching",
   JMLR 6, 2005.
.. [2] S. S. Wilks, "The large-sample distribution of the likelihood ratio for testing
   composite hypotheses", Ann. Math. Statist. 9, 1938.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch

from skebflow.bench._tasks import _rng
from skebflow.datasets import make_teacher, sample_teacher, teacher_log_density
from skebflow.nn import Dense, EnergyFlow
from skebflow.objectives import ml, sm

__all__ = ["TRUTH_OBJECTIVES", "run_truth", "truth_markdown"]

#: Deterministic full-batch objectives that ``bench truth`` can minimize.
TRUTH_OBJECTIVES: dict[str, Callable] = {"ml": ml, "sm": sm}


def _smallest_singular_values(flow: EnergyFlow) -> list[float]:
    return [
        float(torch.linalg.svdvals(m.weight.detach().double()).min())
        for m in flow.modules()
        if isinstance(m, Dense)
    ]


def _excess(flow: EnergyFlow, test: torch.Tensor, truth: np.ndarray) -> tuple[float, float]:
    model = copy.deepcopy(flow).double().eval()
    with torch.no_grad():
        log_prob = model.log_prob(test).numpy()
    gap = (truth - log_prob) / test.shape[1]
    return float(gap.mean()), float(gap.std(ddof=1) / math.sqrt(gap.size))


def run_truth(
    *,
    features: int = 64,
    n_train: int = 4500,
    n_test: int = 20000,
    objectives: tuple[str, ...] = ("ml", "sm"),
    iterations: int = 200,
    report_every: int = 20,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Minimize each objective from the teacher's own parameters; record the excess NLL.

    Parameters
    ----------
    features : int, default=64
        Dimension of the FC teacher (``make_teacher(features, random_state=1000 +
        features)``); at most
        :data:`skebflow.objectives._score_matching.SM_MAX_FEATURES` for ``"sm"``.
    n_train, n_test : int, default=4500, 20000
        Training samples (the objective's data) and fresh test samples (the excess NLL).
    objectives : tuple of str, default=("ml", "sm")
        Keys of :data:`TRUTH_OBJECTIVES`.
    iterations : int, default=200
        L-BFGS iterations per objective.
    report_every : int, default=20
        Iterations between two records.
    seed : int, default=0
        Seed of the training and test samples.
    dtype : torch.dtype, default=torch.float32
        Precision of the minimization (the excess NLL is evaluated in float64).
    log : callable, default=print
        Receives one line per record.

    Returns
    -------
    list of dict
        One record per objective and report: ``objective``, ``iteration``, ``loss`` (the
        objective on the training sample at that point), ``evaluations`` (of the
        objective and its gradient so far), ``excess_per_dim`` and its
        standard error ``excess_se``, ``smallest_singular_values`` (one per dense layer).
        Iteration 0 is the truth.

    Examples
    --------
    >>> records = run_truth(features=3, n_train=50, n_test=50, iterations=2,
    ...                     report_every=1, log=lambda line: None)
    >>> [(r["objective"], r["iteration"]) for r in records][:3]
    [('ml', 0), ('ml', 1), ('ml', 2)]
    >>> abs(records[0]["excess_per_dim"]) < 1e-6  # the truth has no excess
    True
    """
    unknown = sorted(set(objectives) - set(TRUTH_OBJECTIVES))
    if unknown:
        raise ValueError(f"Unknown objectives {unknown}; choose from {sorted(TRUTH_OBJECTIVES)}.")
    if iterations < 1 or report_every < 1:
        raise ValueError(
            f"iterations and report_every must be >= 1, got {iterations}, {report_every}."
        )
    teacher = make_teacher(features, random_state=1000 + features)
    train = sample_teacher(teacher, n_train, random_state=_rng(4, seed))
    test = sample_teacher(teacher, n_test, random_state=_rng(5, seed))
    truth = teacher_log_density(teacher, test)
    test_tensor = torch.from_numpy(test)
    y = torch.from_numpy(train).to(dtype)
    records: list[dict] = []
    for name in objectives:
        objective = TRUTH_OBJECTIVES[name]
        student = copy.deepcopy(teacher).to(dtype).requires_grad_(True).train()
        optimizer = torch.optim.LBFGS(
            student.parameters(),
            lr=1.0,
            max_iter=report_every,
            max_eval=10**9,  # stop on iterations, not on function evaluations
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-10,
            tolerance_change=1e-14,
        )

        def closure(student: EnergyFlow = student, objective: Callable = objective) -> torch.Tensor:
            student.zero_grad()
            loss = objective(student, y)
            loss.backward()
            return loss

        done = 0
        while True:
            with torch.no_grad():
                loss = float(objective(student, y))
            excess, se = _excess(student, test_tensor, truth)
            state = next(iter(optimizer.state.values()), {})
            record = {"objective": name, "iteration": done, "loss": loss}
            record["evaluations"] = int(state.get("func_evals", 0))
            record.update(excess_per_dim=excess, excess_se=se)
            record["smallest_singular_values"] = _smallest_singular_values(student)
            records.append(record)
            log(
                f"{name} iteration {done}: loss {loss:.5f}, excess {excess:.5f} ± {se:.5f} "
                "nats/dim, smallest singular values "
                + ", ".join(f"{v:.3f}" for v in record["smallest_singular_values"])
            )
            if done >= iterations:
                break
            optimizer.param_groups[0]["max_iter"] = min(report_every, iterations - done)
            optimizer.step(closure)
            reached = next(iter(optimizer.state.values()))["n_iter"]
            if reached == done:  # converged: L-BFGS takes no further step
                break
            done = reached
    return records


def truth_markdown(records: list[dict]) -> str:
    """Markdown table: excess NLL (and training loss) of each objective per iteration.

    Parameters
    ----------
    records : list of dict
        From :func:`run_truth`.

    Returns
    -------
    str

    Examples
    --------
    >>> print(truth_markdown([{"objective": "ml", "iteration": 0, "loss": 1.0,
    ...                        "excess_per_dim": 0.0, "excess_se": 0.0,
    ...                        "smallest_singular_values": [0.5]}]))
    | iteration | ml: excess (loss, smallest σ) |
    |---|---|
    | 0 | 0.0000 ± 0.0000 (1.00000, 0.500) |
    """
    names = list(dict.fromkeys(r["objective"] for r in records))
    steps = sorted({r["iteration"] for r in records})
    cells = {(r["objective"], r["iteration"]): r for r in records}
    lines = [
        "| iteration | " + " | ".join(f"{n}: excess (loss, smallest σ)" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for step in steps:
        row = [str(step)]
        for name in names:
            r = cells.get((name, step))
            row.append(
                ""
                if r is None
                else f"{r['excess_per_dim']:.4f} ± {r['excess_se']:.4f} "
                f"({r['loss']:.5f}, {min(r['smallest_singular_values']):.3f})"
            )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)

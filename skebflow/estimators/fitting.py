"""The pieces of ``EBFlowDensity.fit`` that are not the estimator's own state.

What the trainer is handed (:func:`training_data`), the checks of the parameters that
``_parameter_constraints`` cannot express, and the warnings about a finished training run.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import torch
from sklearn.exceptions import ConvergenceWarning, DataDimensionalityWarning
from torch import Tensor

from skebflow.estimators.defaults import logit_squeeze
from skebflow.estimators.degenerate import DEGENERATE_JITTER, find_degeneracy
from skebflow.nn.flow import EnergyFlow
from skebflow.preprocessing.transforms import Chain, make_preprocessing
from skebflow.training.config import TrainResult
from skebflow.training.trainer import Trainer

__all__ = [
    "barrier_thresholds",
    "bounds_pair",
    "degenerate_jitter",
    "fit_history",
    "fresh_chain",
    "training_data",
    "untrained_score",
    "validation_split",
    "warn_about_training",
]


def training_data(
    chain: Chain,
    x_train: Tensor,
    x_val: Tensor,
    dtype: torch.dtype,
    dequantize: bool,
    match_after_preprocessing: bool,
    jitter: float = 0.0,
) -> tuple[Tensor, Callable | None, Callable | None]:
    """Return what the trainer gets: training data, ``prepare`` and the validation score.

    With Match after Preprocessing the objective sees the preprocessed data; without it
    the preprocessing is the flow's first layer (:mod:`skebflow.preprocessing.inside`) and
    only the dequantization noise stays outside. With ``dequantize`` every minibatch gets
    fresh noise (``prepare``); otherwise the data are mapped once. A positive ``jitter``
    adds fresh Gaussian noise of that standard deviation to every minibatch, in the units
    the objective sees (degenerate data, :mod:`skebflow.estimators.degenerate`). The score
    is the validation log-likelihood in the units of ``x`` (``None`` without validation
    rows).
    """
    inner = chain if match_after_preprocessing else Chain()
    prepare = None
    if dequantize:
        train_data = x_train

        def prepare(batch: Tensor, gen: torch.Generator) -> Tensor:
            return _jittered(inner.forward(chain.augment(batch, gen))[0].to(dtype), jitter, gen)

    else:
        with torch.no_grad():
            train_data = inner.forward(x_train)[0].to(dtype)
        if jitter > 0:

            def prepare(batch: Tensor, gen: torch.Generator) -> Tensor:
                return _jittered(batch, jitter, gen)

    if not len(x_val):
        return train_data, prepare, None
    with torch.no_grad():
        y_val64, ladj_val = inner.forward(x_val)
        y_val, offset = y_val64.to(dtype), float(ladj_val.mean())

    def score_fn(model: EnergyFlow) -> float:
        with torch.no_grad():
            values = model.log_prob(y_val).to(torch.float64)
            bad = ~torch.isfinite(values)
            if bool(bad.any()) and dtype != torch.float64:
                # A row far from the data can overflow the training precision (float32's
                # range ends at 3e38); score those rows again in float64.
                model64 = copy.deepcopy(model).to(torch.float64)
                values[bad] = model64.log_prob(y_val64[bad].to(torch.float64))
            return float(values.mean()) + offset

    return train_data, prepare, score_fn


def _jittered(batch: Tensor, jitter: float, generator: torch.Generator) -> Tensor:
    if jitter <= 0:
        return batch
    noise = torch.randn(batch.shape, generator=generator, dtype=batch.dtype, device=batch.device)
    return batch + jitter * noise


def validation_split(
    x: Tensor, fraction: float | None, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Return ``(x_train, x_val)``: a random ``fraction`` of the rows held out.

    ``fraction=None`` holds out nothing. So does a split that would leave fewer than 2
    rows on either side, with a ``UserWarning`` (early stopping then watches the training
    loss).
    """
    n = x.shape[0]
    n_val = math.floor(fraction * n) if fraction is not None else 0
    if n_val < 2 or n - n_val < 2:
        if fraction is not None:
            warnings.warn(
                f"{n} samples are too few for a validation split of "
                f"validation_fraction={fraction} (at least 2 rows each): training without "
                "early stopping on held-out data; the stopping rule watches the training "
                "loss and the last epoch is kept.",
                UserWarning,
                stacklevel=4,  # fit's caller, above scikit-learn's fit wrapper
            )
        n_val = 0
    order = torch.randperm(n, generator=generator)
    return x[order[n_val:]], x[order[:n_val]]


def degenerate_jitter(chain: Chain, x_train: Tensor) -> float:
    """Return the jitter for ``x_train`` in ``chain``'s units: 0, or a warned-of floor.

    See :mod:`skebflow.estimators.degenerate`.
    """
    with torch.no_grad():
        degeneracy = find_degeneracy(chain.forward(x_train)[0])
    if not degeneracy:
        return 0.0
    warnings.warn(
        degeneracy.message(DEGENERATE_JITTER),
        DataDimensionalityWarning,
        stacklevel=4,  # fit's caller, above scikit-learn's fit wrapper
    )
    return DEGENERATE_JITTER


def barrier_thresholds(regularizers: list) -> list[float | None]:
    """Return the barriers' thresholds among ``regularizers`` (to see whether they changed)."""
    return [getattr(r, "threshold", None) for r in regularizers]


def bounds_pair(bounds: object) -> tuple | None:
    """Validate the estimator's ``bounds`` parameter: ``None`` or a pair ``(low, high)``."""
    if bounds is None:
        return None
    if len(bounds) != 2:
        raise ValueError(f"bounds must be a pair (low, high), got {bounds!r}.")
    return tuple(bounds)


def warn_about_training(result: TrainResult, max_iter: int) -> None:
    """Warn about skipped (non-finite) steps and about a run that hit ``max_iter``."""
    if result.n_skipped_steps:
        warnings.warn(
            f"{result.n_skipped_steps} of {result.n_steps + result.n_skipped_steps} "
            "training steps had a non-finite loss or gradient and were skipped.",
            RuntimeWarning,
            stacklevel=4,  # fit's caller, above scikit-learn's fit wrapper
        )
    if not result.converged and not result.interrupted and result.n_iter == max_iter:
        warnings.warn(
            f"EBFlowDensity stopped after max_iter={max_iter} epochs without "
            "converging; consider increasing max_iter.",
            ConvergenceWarning,
            stacklevel=4,
        )


def estimator_chain(
    preprocessing: str | None, bounds: object, dequantize: bool, architecture: str
) -> Chain:
    """Return the unfitted preprocessing chain of an estimator's parameters.

    The one place that builds it (``fit``, ``partial_fit`` and ``load``): the logit's
    squeeze depends on the resolved architecture (:func:`logit_squeeze`).
    """
    eps = logit_squeeze(architecture, dequantize)
    return make_preprocessing(
        preprocessing, bounds=bounds_pair(bounds), dequantize=dequantize, eps=eps
    )


def fresh_chain(
    estimator: object, architecture: str, x_all: Tensor, x_train: Tensor, device: torch.device
) -> Chain:
    """Return a new preprocessing chain fitted to the training rows, on ``device``.

    ``estimator`` supplies ``preprocessing``, ``bounds`` and ``dequantize``. Inferred logit
    bounds (``bounds=None``) are fitted to all rows: the validation rows are scored and
    must lie inside the box too.
    """
    preprocessing, bounds = estimator.preprocessing, estimator.bounds
    chain = estimator_chain(preprocessing, bounds, estimator.dequantize, architecture)
    inferred_box = preprocessing == "logit" and bounds is None
    chain = chain.fit(x_all if inferred_box else x_train)
    return chain.to(device=device, dtype=torch.float64)


def untrained_score(trainer: Trainer, score_fn: Callable | None) -> float | None:
    """Return the untrained flow's validation score, scored as the trainer scores.

    In eval mode: in training mode an ActNorm would initialize itself on the validation
    rows after the log-normalizer was taken, a wrong baseline and a leak.
    """
    if score_fn is None:
        return None
    trainer.kept.eval()
    score = float(score_fn(trainer.kept))
    trainer.kept.train()
    return score


def fit_history(result: TrainResult) -> dict:
    """Return the training history that ``EBFlowDensity`` keeps as fitted attributes."""
    return {
        "n_iter": result.n_iter,
        "loss_curve": result.loss_curve,
        "validation_scores": result.validation_scores,
        "n_skipped_steps": result.n_skipped_steps,
        "best_iteration": result.best_epoch,
        "final_learning_rate": result.final_learning_rate,
    }

"""Helpers shared by the test modules.

Tiny estimators and named warning filters: ``TINY`` and ``tiny`` (the smallest
``EBFlowDensity`` the tests fit), ``fit_quietly``, ``quietly`` and ``failing_on`` (warning
filters for a block), ``ignore_short_fit`` and ``ignore_convergence`` (marks: the same for
a whole test, its fixtures included). Flows: float64 flows with random, non-trivial
parameters and the checks of their densities and derivatives against autograd.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.exceptions import DivergenceWarning
from skebflow.nn._architectures import ARCHITECTURES
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._linear import ActNorm
from skebflow.objectives import _score_matching as score_matching
from skebflow.objectives._jets import energy_jet, energy_score_curvature

Fitted = TypeVar("Fitted")

# ------------------------------------------------------------------- tiny estimators
#: The smallest estimator the tests fit: two epochs of one 8-unit block on the CPU,
#: seeded. A module that needs more passes overrides (``tiny(max_iter=3)``).
TINY = {"max_iter": 2, "n_blocks": 1, "hidden_features": 8, "device": "cpu", "random_state": 0}


def tiny(**overrides: object) -> EBFlowDensity:
    """Return ``EBFlowDensity(**TINY)`` with ``overrides`` on top."""
    return EBFlowDensity(**{**TINY, **overrides})


# ------------------------------------------------------------------ warning filters
#: What a deliberately short fit warns of: it stopped at max_iter, or it ended worse
#: than the untrained flow (two epochs can).
SHORT_FIT_WARNINGS = (ConvergenceWarning, DivergenceWarning)


@contextmanager
def quietly(*categories: type[Warning]) -> Iterator[None]:
    """Ignore warnings of ``categories`` (default: ``SHORT_FIT_WARNINGS``) in the block."""
    with warnings.catch_warnings():
        for category in categories or SHORT_FIT_WARNINGS:
            warnings.simplefilter("ignore", category)
        yield


@contextmanager
def failing_on(*categories: type[Warning]) -> Iterator[None]:
    """Turn warnings of ``categories`` into errors in the block: it must not give them."""
    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("error", category)
        yield


def fit_quietly(estimator: Fitted, X: object, *ignore: type[Warning]) -> Fitted:
    """Fit ``estimator`` to ``X`` with warnings of ``ignore`` (default: the short fit's)
    ignored; return it."""
    with quietly(*ignore):
        return estimator.fit(X)


def ignore_mark(*categories: type[Warning]) -> pytest.MarkDecorator:
    """A ``filterwarnings`` mark ignoring ``categories`` in a test, its fixtures included."""
    filters = [f"ignore::{c.__module__}.{c.__qualname__}" for c in categories]
    return pytest.mark.filterwarnings(*filters)


#: For a module of short fits: ``pytestmark = ignore_short_fit``.
ignore_short_fit = ignore_mark(*SHORT_FIT_WARNINGS)
#: ConvergenceWarning only: a DivergenceWarning of the module's fits stays in the summary.
ignore_convergence = ignore_mark(ConvergenceWarning)


# ---------------------------------------------------------------------------- flows
def perturb_(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.3) -> None:
    """Add Gaussian noise to every parameter and mark ActNorm layers as initialized."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator).to(parameter))
        for layer in module.modules():
            if isinstance(layer, ActNorm):
                layer.initialized.fill_(True)


def random_flow(
    architecture: str, features: int, seed: int = 0, scale: float = 0.3, **options: object
) -> EnergyFlow:
    """Build a float64 flow of the given architecture with random parameters."""
    generator = torch.Generator().manual_seed(seed)
    flow = ARCHITECTURES[architecture](features, generator=generator, **options).double()
    perturb_(flow, generator, scale)
    return flow


def assert_change_of_variables(flow: EnergyFlow, y: torch.Tensor) -> None:
    """``flow.log_prob`` equals log N(z) + log|det ∂z/∂y| with the Jacobian by autograd."""
    for row in y:

        def latent(t: torch.Tensor) -> torch.Tensor:
            return flow.transform(t.reshape(1, *flow.event_shape))[0].flatten()

        z = latent(row.flatten())
        jacobian = torch.autograd.functional.jacobian(latent, row.flatten())
        expected = -0.5 * (z @ z) - 0.5 * flow.features * math.log(2 * math.pi)
        expected = expected + torch.linalg.slogdet(jacobian)[1]
        torch.testing.assert_close(flow.log_prob(row.unsqueeze(0))[0], expected)


def assert_jets_match_autograd(flow: EnergyFlow, y: torch.Tensor, v: torch.Tensor) -> None:
    """The energy's jets and score-curvature path equal autograd's gradient and Hessian."""
    energy, first, second = energy_jet(flow, y, v)
    energy_2, score, second_2 = energy_score_curvature(flow, y, v)
    torch.testing.assert_close(energy, flow.energy(y))
    torch.testing.assert_close(energy_2, flow.energy(y))
    for i in range(len(y)):

        def f(t: torch.Tensor) -> torch.Tensor:
            return flow.energy(t.reshape(1, *flow.event_shape)).sum()

        point = y[i].flatten()
        grad = torch.autograd.functional.jacobian(f, point)
        hess = torch.autograd.functional.hessian(f, point)
        torch.testing.assert_close(score[i].flatten(), grad)
        for s in range(len(v)):
            direction = v[s, i].flatten()
            torch.testing.assert_close(first[s, i], direction @ grad)
            torch.testing.assert_close(second[s, i], direction @ hess @ direction)
            torch.testing.assert_close(second_2[s, i], direction @ hess @ direction)


def assert_fast_paths_match_autograd(
    monkeypatch, flow: EnergyFlow, y: torch.Tensor, loss_fn
) -> None:
    """An objective's fast derivative paths and plain autograd give the same loss and grads."""

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        flow.zero_grad()
        loss = loss_fn(flow, y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in flow.parameters()]

    fast_loss, fast_grads = loss_and_grads()
    monkeypatch.setattr(score_matching, "supports_jet", lambda model: False)
    plain_loss, plain_grads = loss_and_grads()
    torch.testing.assert_close(fast_loss, plain_loss)
    for fast, plain in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(fast, plain)

"""The registry of training objectives: names, options and the bound loss the trainer calls.

:data:`OBJECTIVES` maps the values of ``EBFlowDensity(objective=...)`` to the objective
functions (:mod:`skebflow.objectives._likelihood`, :mod:`skebflow.objectives._score_matching`);
:func:`bind_objective` binds each one's own options and, for the score-matching objectives,
the singular-value barrier (:mod:`skebflow.objectives._regularizers`).

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training energy-based
   normalizing flow with score-matching objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from skebflow.nn import EnergyFlow
from skebflow.objectives._likelihood import EnergyModel, mean_energy, ml, sml
from skebflow.objectives._regularizers import SingularValueBarrier
from skebflow.objectives._score_matching import dsm, fdssm, sm, ssm

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_OPTIONS",
    "OBJECTIVE_SPECS",
    "SCORE_OBJECTIVES",
    "ObjectiveSpec",
    "barrier_applies",
    "bind_objective",
    "make_regularizers",
]


@dataclass(frozen=True)
class ObjectiveSpec:
    """What the estimator, the trainer, the benchmarks and the docs know of an objective.

    Attributes
    ----------
    name : str
        The value of ``EBFlowDensity(objective=...)``.
    function : callable
        ``function(model, y, *, generator=None, **options) -> scalar Tensor``.
    options : tuple of str
        The keyword options of ``function`` that the estimator exposes; their defaults
        are read from ``function``'s signature (:attr:`defaults`), the one place where
        they are written.
    needs_log_normalizer : bool
        Whether every step computes ``log Z`` (the determinants of the linear layers).
    score_matching : bool
        A score-matching objective: no determinant and no model sample, so nothing in it
        keeps a dense layer away from singularity and the barrier applies.
    summary : str
        One line for the documentation and the command line.
    """

    name: str
    function: Callable[..., Tensor]
    options: tuple[str, ...]
    needs_log_normalizer: bool
    score_matching: bool
    summary: str

    @property
    def defaults(self) -> dict[str, object]:
        """The defaults of :attr:`options`, from the signature of :attr:`function`."""
        parameters = inspect.signature(self.function).parameters
        return {option: parameters[option].default for option in self.options}


#: Every training objective, by name.
OBJECTIVE_SPECS: dict[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec("ml", ml, (), True, False, "maximum likelihood"),
        ObjectiveSpec("sml", sml, (), False, False, "sampling-based maximum likelihood"),
        ObjectiveSpec("sm", sm, (), False, True, "exact score matching (Hessian trace)"),
        ObjectiveSpec("ssm", ssm, ("n_slices",), False, True, "sliced score matching"),
        ObjectiveSpec("dsm", dsm, ("noise_scale",), False, True, "denoising score matching"),
        ObjectiveSpec("fdssm", fdssm, ("fd_epsilon",), False, True, "finite-difference sliced SM"),
    )
}
#: The training objectives' functions by name (the values of ``objective=...``).
OBJECTIVES: dict[str, Callable[..., Tensor]] = {
    name: spec.function for name, spec in OBJECTIVE_SPECS.items()
}
#: The objectives that never compute a determinant or a model sample: nothing in them
#: keeps a dense layer away from singularity (see :mod:`skebflow.objectives._regularizers`).
SCORE_OBJECTIVES: tuple[str, ...] = tuple(
    name for name, spec in OBJECTIVE_SPECS.items() if spec.score_matching
)
#: Every objective option and its default (``EBFlowDensity``'s defaults read these).
OBJECTIVE_OPTIONS: dict[str, object] = {
    option: default
    for spec in OBJECTIVE_SPECS.values()
    for option, default in spec.defaults.items()
}


def barrier_applies(name: str) -> bool:
    """Whether the singular-value barrier applies to the objective ``name``.

    Examples
    --------
    >>> barrier_applies("ssm"), barrier_applies("ml")
    (True, False)
    """
    return name in OBJECTIVE_SPECS and OBJECTIVE_SPECS[name].score_matching


def bind_objective(
    name: str,
    **options: object,
) -> Callable[[EnergyModel, Tensor, torch.Generator | None], Tensor]:
    """Return ``loss(model, y, generator)`` for an objective, with its own options bound.

    ``options`` may hold any of :data:`OBJECTIVE_OPTIONS`; each objective receives only
    its own (``n_slices`` for ``"ssm"``, ``noise_scale`` for ``"dsm"``, ``fd_epsilon``
    for ``"fdssm"``), and the ones not given keep the objective's defaults. ``"floor"``
    binds :func:`~skebflow.objectives._likelihood.mean_energy`. The loss is a pure
    function; regularizers with state (the barrier) come from :func:`make_regularizers`
    and are added by the trainer. On an :class:`~skebflow.nn.EnergyFlow` that starts with
    a fixed :class:`~skebflow.nn.Whitening`, the loss is measured in the whitened
    coordinates (:meth:`~skebflow.nn.EnergyFlow.after_whitening`).

    Parameters
    ----------
    name : str
        A key of :data:`OBJECTIVE_SPECS`, or ``"floor"``.
    **options
        Objective options (keys of :data:`OBJECTIVE_OPTIONS`).

    Returns
    -------
    callable
        ``loss(model, y, generator) -> Tensor``, the signature the trainer calls.

    Raises
    ------
    ValueError
        For an unknown objective.
    TypeError
        For an unknown option.

    Examples
    --------
    >>> import types
    >>> model = types.SimpleNamespace(energy=lambda y: 0.5 * (y**2).sum(1))
    >>> loss = bind_objective("dsm", noise_scale=0.5)
    >>> loss(model, torch.zeros(3, 2), torch.Generator().manual_seed(0)).shape
    torch.Size([])
    """
    unknown = sorted(set(options) - set(OBJECTIVE_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown objective options {unknown}; valid: {sorted(OBJECTIVE_OPTIONS)}.")
    if name == "floor":
        function, bound = mean_energy, {}
    elif name in OBJECTIVE_SPECS:
        spec = OBJECTIVE_SPECS[name]
        function = spec.function
        bound = {key: value for key, value in options.items() if key in spec.options}
    else:
        raise ValueError(f"Unknown objective {name!r}; choose from {sorted(OBJECTIVES)}.")

    def loss(model: EnergyModel, y: Tensor, generator: torch.Generator | None) -> Tensor:
        if isinstance(model, EnergyFlow):
            model, y = model.after_whitening(y)
        return function(model, y, generator=generator, **bound)

    return loss


def make_regularizers(
    name: str, min_singular_value: float | None
) -> list[Callable[[torch.nn.Module], Tensor]]:
    """Return the regularizers the trainer adds to the objective ``name``'s loss.

    A :class:`~skebflow.objectives._regularizers.SingularValueBarrier` on the dense
    layers when :func:`barrier_applies` and a threshold is given (a new one per call: it
    keeps state), else none.

    Examples
    --------
    >>> [type(r).__name__ for r in make_regularizers("ssm", 0.2)], make_regularizers("ml", 0.2)
    (['SingularValueBarrier'], [])
    """
    if min_singular_value is None or not barrier_applies(name):
        return []
    return [SingularValueBarrier(min_singular_value)]

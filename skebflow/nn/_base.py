"""The layer contract of energy-based normalizing flows.

Every layer is a :class:`torch.nn.Module` with one fused call ``layer(x) -> (y, ladj)``,
where ``ladj`` is the per-sample log-absolute-determinant of the Jacobian, an exact
``inverse(y)``, and a class attribute ``constant_jacobian``. Layers whose Jacobian does
not depend on the input (the set **C** of the EBFlow paper: dense linear maps, ActNorm,
fixed permutations; :mod:`skebflow.nn._linear`) derive from
:class:`ConstantJacobianLayer` and additionally expose

* ``map(x) -> y``: the transformation alone, with no determinant, and
* ``logabsdet() -> Tensor``: the scalar log-absolute-determinant.

An :class:`~skebflow.nn._flow.EnergyFlow` calls ``map`` on constant-Jacobian layers when it
evaluates the energy, so that training with a score-matching objective never computes a
determinant; ``logabsdet`` only enters the log-normalizer.

**Shapes.** A layer acts on a batch of shape ``(n, *event_shape)`` and returns ``ladj`` of
shape ``(n,)``, summed over the event; tabular flows are the case ``event_shape = (D,)``.
:meth:`Layer.output_shape` says what a layer does to the event shape (the identity unless
a layer reshapes, as a squeeze does). :class:`Split` is the one structural layer: it
factors part of the tensor out to the base distribution (a multi-scale split); the flow's
loop handles it.

**Derivative rules.** A layer may bring the rules of the fast score paths
(:mod:`skebflow.objectives._jets`) as methods:

* ``jet(x, dx, ddx)`` pushes a 2-jet ``(x, dx, ddx)`` (primal ``(n, *event)``, ``S``
  tangents ``(S, n, *event)``, second-order tangents or ``None`` while they are zero)
  through the layer and returns the output jet and the jet of its log-determinant;
* ``tangent(x, dx, tape)`` pushes the primal and first-order tangents only, recording on a
  :class:`TangentTape` what the score's reverse pass needs.

Constant-Jacobian layers get both from their affine ``map``; a layer without them makes
the fast paths fall back to autograd.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = [
    "HIDDEN_FEATURES",
    "ConstantJacobianLayer",
    "Jet",
    "Layer",
    "Split",
    "TangentTape",
    "event_sum",
]

#: The default width of every conditioner's hidden layers (couplings, autoregressive
#: splines, Glow's convolutional conditioners): the one place the builders and the
#: estimator read it from.
HIDDEN_FEATURES = 64

#: ``(x, dx, ddx)``: the primal of shape ``(n, *event)``, tangents of shape
#: ``(S, n, *event)``; ``ddx`` is ``None`` while it is known to be zero.
Jet = tuple[Tensor, Tensor, Tensor | None]


def event_sum(values: Tensor, batch_dims: int) -> Tensor:
    """Sum ``values`` over every dimension after the first ``batch_dims``.

    Examples
    --------
    >>> event_sum(torch.ones(2, 3, 4), 1).tolist()
    [12.0, 12.0]
    """
    return values.flatten(batch_dims).sum(-1)


class PassFlag:
    """Whether the score's reverse pass runs: what a custom backward keeps of the tape.

    A backward function's autograd context may keep this flag, never the tape itself:
    the tape holds tensors whose graph leads back to that context, a reference cycle
    through autograd's graph that Python's collector cannot free (a leak of every
    step's tape).
    """

    __slots__ = ("score_pass",)

    def __init__(self) -> None:
        self.score_pass = False


class TangentTape:
    """What the first-order tangent pass records for the score's reverse pass.

    Attributes
    ----------
    point : Tensor
        The leaf at which the score is taken (the flow's input).
    flag : PassFlag
        ``flag.score_pass`` is ``True`` while the score's reverse pass runs (custom
        backward functions read it from their autograd context, not from thread-local
        state; they keep the flag, not the tape).
    score_pass : bool
        The flag's value.
    ladj, curvature : Tensor or None
        Sums of the nonlinear layers' log-determinants ``(n,)`` and of their curvature
        terms ``(S, n)``.
    outputs, sources : list of Tensor
        Each nonlinear layer's output and its second-order source (the adjoint at the
        output, times the source, sums into the Hessian quadratic form).
    """

    def __init__(self, point: Tensor) -> None:
        self.point = point
        self.flag = PassFlag()
        self.ladj: Tensor | None = None
        self.curvature: Tensor | None = None
        self.outputs: list[Tensor] = []
        self.sources: list[Tensor] = []

    @property
    def score_pass(self) -> bool:
        """Whether the score's reverse pass runs."""
        return self.flag.score_pass

    @score_pass.setter
    def score_pass(self, value: bool) -> None:
        self.flag.score_pass = value

    def record(self, output: Tensor, ladj: Tensor, curvature: Tensor, source: Tensor) -> None:
        """Add one nonlinear layer's terms."""
        self.ladj = ladj if self.ladj is None else self.ladj + ladj
        self.curvature = curvature if self.curvature is None else self.curvature + curvature
        self.outputs.append(output)
        self.sources.append(source)


class Layer(nn.Module, abc.ABC):
    """Base class of invertible layers: ``layer(x) -> (y, ladj)`` and ``inverse(y)``."""

    constant_jacobian: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform ``x`` and return ``(y, ladj)`` with ``ladj`` of shape ``(n,)``."""

    @abc.abstractmethod
    def inverse(self, y: Tensor) -> Tensor:
        """Invert the transformation exactly."""

    def output_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the event shape this layer outputs for ``event_shape`` (the same)."""
        return tuple(event_shape)

    @classmethod
    def has_derivative_rules(cls) -> bool:
        """Whether the layer brings both rules of the fast score paths.

        The rules are optional methods (module docstring): ``jet(x, dx, ddx) -> (jet,
        ladj_jet or None)`` and ``tangent(x, dx, tape) -> (y, dy)``. A layer without them
        makes the score objectives use autograd.
        """
        return callable(getattr(cls, "jet", None)) and callable(getattr(cls, "tangent", None))


class ConstantJacobianLayer(Layer):
    """A layer whose Jacobian is independent of the input (the set **C**)."""

    constant_jacobian: ClassVar[bool] = True

    @abc.abstractmethod
    def map(self, x: Tensor) -> Tensor:
        """Apply the transformation without computing any determinant."""

    @abc.abstractmethod
    def logabsdet(self) -> Tensor:
        """Return the scalar log-absolute-determinant of the (constant) Jacobian."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform ``x`` and return ``(y, ladj)``; this computes the determinant."""
        return self.map(x), self.logabsdet().expand(x.shape[0])

    def _linear_part(self, tangents: Tensor, like: Tensor) -> Tensor:
        """``map(t) - map(0)`` for tangents of shape ``(S, n, *event)``."""
        flat = tangents.reshape(-1, *tangents.shape[2:])
        offset = self.map(torch.zeros_like(like[:1]))
        return (self.map(flat) - offset).reshape(*tangents.shape[:2], *offset.shape[1:])

    def jet(self, x: Tensor, dx: Tensor, ddx: Tensor | None) -> tuple[Jet, None]:
        """Affine rule: ``(map(x), L dx, L ddx)`` with ``L = map(·) - map(0)``."""
        # The primal goes first, so that an ActNorm initializes itself from data, never
        # from tangents.
        y = self.map(x)
        if ddx is None:
            return (y, self._linear_part(dx, x), None), None
        dy, ddy = self._linear_part(torch.cat([dx, ddx]), x).chunk(2)
        return (y, dy, ddy), None

    def tangent(self, x: Tensor, dx: Tensor, tape: TangentTape) -> tuple[Tensor, Tensor]:
        """Affine rule on the primal and the tangents (nothing to record)."""
        return self.map(x), self._linear_part(dx, x)


class Split(Layer):
    """Factor the trailing channels out to the base distribution (a multi-scale split).

    Along the first event dimension (the channels of ``(C, H, W)``, the features of
    ``(D,)``), the first ``keep`` entries continue through the flow and the rest leave it:
    the flow adds their ``½‖·‖²`` to the energy at once. The split is volume preserving,
    so it contributes nothing else. :class:`~skebflow.nn._flow.EnergyFlow` handles it in
    its loop (it is not a ``(y, ladj)`` layer).

    Parameters
    ----------
    keep : int
        Entries of the first event dimension that stay in the flow (at least 1).

    Examples
    --------
    >>> split = Split(1)
    >>> kept, out = split.split(torch.arange(6.0).reshape(2, 3), batch_dims=1)
    >>> kept.tolist(), out.tolist()
    ([[0.0], [3.0]], [[1.0, 2.0], [4.0, 5.0]])
    >>> split.join(kept, out, batch_dims=1).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """

    def __init__(self, keep: int) -> None:
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}.")
        self.keep = int(keep)

    def output_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the kept part's event shape."""
        if event_shape[0] <= self.keep:
            raise ValueError(
                f"Split(keep={self.keep}) needs more than {self.keep} entries in the first "
                f"event dimension, got event shape {tuple(event_shape)}."
            )
        return (self.keep, *event_shape[1:])

    def factored_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the factored-out part's event shape."""
        return (event_shape[0] - self.keep, *event_shape[1:])

    def split(self, x: Tensor, batch_dims: int) -> tuple[Tensor, Tensor]:
        """Return ``(kept, factored)`` of ``x`` (``batch_dims`` leading batch dimensions)."""
        return x.narrow(batch_dims, 0, self.keep), x.narrow(
            batch_dims, self.keep, x.shape[batch_dims] - self.keep
        )

    def join(self, kept: Tensor, factored: Tensor, batch_dims: int) -> Tensor:
        """Inverse of :meth:`split`."""
        return torch.cat([kept, factored], dim=batch_dims)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Not a ``(y, ladj)`` layer: the flow's loop calls :meth:`split`."""
        raise TypeError("Split is handled by EnergyFlow's loop; call split() instead.")

    def inverse(self, y: Tensor) -> Tensor:
        """Not a ``(y, ladj)`` layer: the flow's loop calls :meth:`join`."""
        raise TypeError("Split is handled by EnergyFlow's loop; call join() instead.")

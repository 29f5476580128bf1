"""The layer contract of energy-based normalizing flows.

Every layer is a :class:`torch.nn.Module` with one fused call ``layer(x) -> (y, ladj)``,
where ``ladj`` is the per-sample log-absolute-determinant of the Jacobian, an exact
``inverse(y)``, and a class attribute ``constant_jacobian``. Layers whose Jacobian does
not depend on the input (the set **C** of the EBFlow paper: dense linear maps, ActNorm,
fixed permutations; :mod:`skebflow.nn.linear`) derive from
:class:`ConstantJacobianLayer` and additionally expose

* ``map(x) -> y``: the transformation alone, with no determinant, and
* ``logabsdet() -> Tensor``: the scalar log-absolute-determinant.

An :class:`~skebflow.nn.flow.EnergyFlow` calls ``map`` on constant-Jacobian layers when it
evaluates the energy, so that training with a score-matching objective never computes a
determinant; ``logabsdet`` only enters the log-normalizer.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from torch import Tensor, nn

__all__ = ["ConstantJacobianLayer", "Layer"]


class Layer(nn.Module, abc.ABC):
    """Base class of invertible layers: ``layer(x) -> (y, ladj)`` and ``inverse(y)``."""

    constant_jacobian: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform ``x`` and return ``(y, ladj)`` with ``ladj`` of shape ``(n,)``."""

    @abc.abstractmethod
    def inverse(self, y: Tensor) -> Tensor:
        """Invert the transformation exactly."""


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

"""The flows (torch only): the layer contract, the layers, the energy flow, its builders.

:mod:`~skebflow.nn.base` defines the contract every layer follows; constant-Jacobian layers
(:mod:`~skebflow.nn.linear`) enter the log-normalizer, the others
(:mod:`~skebflow.nn.activations`, :mod:`~skebflow.nn.coupling`, :mod:`~skebflow.nn.splines`,
:mod:`~skebflow.nn.autoregressive`) the energy of an :class:`~skebflow.nn.flow.EnergyFlow`;
:mod:`~skebflow.nn.architectures` builds the named flows.
"""

from skebflow.nn.activations import SmoothLeakyReLU
from skebflow.nn.architectures import (
    ARCHITECTURES,
    build_autoregressive,
    build_coupling,
    build_fc,
    build_spline,
)
from skebflow.nn.autoregressive import MaskedAutoregressiveSpline, MaskedLinear
from skebflow.nn.base import ConstantJacobianLayer, Layer
from skebflow.nn.coupling import AffineCoupling, smooth_mlp
from skebflow.nn.flow import EnergyFlow
from skebflow.nn.linear import ActNorm, Dense, Permutation
from skebflow.nn.splines import (
    RationalQuadraticCoupling,
    check_spline_options,
    rq_spline,
    rq_spline_inverse,
)

__all__ = [
    "ARCHITECTURES",
    "ActNorm",
    "AffineCoupling",
    "ConstantJacobianLayer",
    "Dense",
    "EnergyFlow",
    "Layer",
    "MaskedAutoregressiveSpline",
    "MaskedLinear",
    "Permutation",
    "RationalQuadraticCoupling",
    "SmoothLeakyReLU",
    "build_autoregressive",
    "build_coupling",
    "build_fc",
    "build_spline",
    "check_spline_options",
    "rq_spline",
    "rq_spline_inverse",
    "smooth_mlp",
]

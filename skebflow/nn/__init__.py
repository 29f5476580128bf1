"""The flows (torch only): the layer contract, the layers, the energy flow, its builders.

:mod:`~skebflow.nn._base` defines the contract every layer follows; constant-Jacobian layers
(:mod:`~skebflow.nn._linear`) enter the log-normalizer, the others
(:mod:`~skebflow.nn._activations`, :mod:`~skebflow.nn._coupling`, :mod:`~skebflow.nn._splines`,
:mod:`~skebflow.nn._autoregressive`) the energy of an :class:`~skebflow.nn._flow.EnergyFlow`;
:mod:`~skebflow.nn._architectures` builds the named flows.
"""

from skebflow.nn._activations import SmoothLeakyReLU
from skebflow.nn._architectures import (
    ARCHITECTURES,
    IMAGE_ARCHITECTURES,
    build_autoregressive,
    build_coupling,
    build_fc,
    build_spline,
)
from skebflow.nn._autoregressive import MaskedAutoregressiveSpline, MaskedLinear
from skebflow.nn._base import (
    HIDDEN_FEATURES,
    ConstantJacobianLayer,
    Jet,
    Layer,
    Split,
    TangentTape,
    event_sum,
)
from skebflow.nn._conv import Conv1x1, Conv2d
from skebflow.nn._coupling import AffineCoupling, smooth_mlp
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._linear import ActNorm, Dense, Permutation, Whitening
from skebflow.nn._splines import (
    RationalQuadraticCoupling,
    RationalQuadraticSpline,
    check_spline_options,
    rq_spline,
    rq_spline_inverse,
)

__all__ = [
    "ARCHITECTURES",
    "HIDDEN_FEATURES",
    "IMAGE_ARCHITECTURES",
    "ActNorm",
    "AffineCoupling",
    "ConstantJacobianLayer",
    "Conv1x1",
    "Conv2d",
    "Dense",
    "EnergyFlow",
    "Jet",
    "Layer",
    "MaskedAutoregressiveSpline",
    "MaskedLinear",
    "Permutation",
    "RationalQuadraticCoupling",
    "RationalQuadraticSpline",
    "SmoothLeakyReLU",
    "Split",
    "TangentTape",
    "Whitening",
    "build_autoregressive",
    "build_coupling",
    "build_fc",
    "build_spline",
    "check_spline_options",
    "event_sum",
    "rq_spline",
    "rq_spline_inverse",
    "smooth_mlp",
]

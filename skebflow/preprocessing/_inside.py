r"""The preprocessing moved inside the flow: the paper's Match-after-Preprocessing ablation.

With Match after Preprocessing (MaP, the default) the objective is computed on
:math:`y = T(x)`. Without it, :math:`T` becomes the first, parameter-free layer of the flow,
so that the energy is :math:`E_X(x) = E_Y(T(x)) - \log|\det J_T(x)|` and every objective
(score, Hessian, noise) works in the units of ``x``. The density is the same function either
way; only the geometry in which the Fisher divergence is measured changes, and with it what
score matching learns (the paper's Table 4).

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267 (Section 4.3 and Table 4).
"""

from __future__ import annotations

from torch import Tensor

from skebflow.nn import EnergyFlow, Layer
from skebflow.preprocessing._transforms import Chain

__all__ = ["PreprocessingLayer", "with_preprocessing", "without_preprocessing"]


class PreprocessingLayer(Layer):
    r"""A fitted :class:`~skebflow.preprocessing._transforms.Chain` used as a flow layer.

    Its log-Jacobian depends on the input (for ``logit``) or is a constant of the data
    (for ``standardize``); either way it is part of the energy, never of
    :math:`\log Z`, so the flow's normalizer is unchanged. The layer has no parameters.

    Parameters
    ----------
    chain : Chain
        Fitted preprocessing.

    Examples
    --------
    >>> import torch
    >>> from skebflow.preprocessing._transforms import make_preprocessing
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=torch.float64)
    >>> layer = PreprocessingLayer(make_preprocessing("standardize").fit(x))
    >>> y, ladj = layer(x)
    >>> torch.allclose(layer.inverse(y), x)
    True
    """

    def __init__(self, chain: Chain) -> None:
        super().__init__()
        self.chain = chain

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(T(x), log|det J_T(x)|)``."""
        return self.chain.forward(x)

    def inverse(self, y: Tensor) -> Tensor:
        """Return :math:`T^{-1}(y)`."""
        return self.chain.inverse(y)


def with_preprocessing(flow: EnergyFlow, chain: Chain) -> EnergyFlow:
    r"""Return a flow on ``x`` whose first layer is ``chain`` (shares ``flow``'s layers).

    Parameters
    ----------
    flow : EnergyFlow
        Flow on the preprocessed space.
    chain : Chain
        Fitted preprocessing.

    Returns
    -------
    EnergyFlow
        :math:`E_X(x) = E_Y(T(x)) - \log|\det J_T(x)|`, with the same parameters (the
        same tensors) and the same :math:`\log Z` as ``flow``.

    See Also
    --------
    without_preprocessing : The inverse operation.

    Examples
    --------
    >>> import torch
    >>> from skebflow.nn._architectures import build_fc
    >>> from skebflow.preprocessing._transforms import make_preprocessing
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=torch.float64)
    >>> chain = make_preprocessing("standardize").fit(x)
    >>> flow = build_fc(2).double()
    >>> inside = with_preprocessing(flow, chain)
    >>> y, ladj = chain(x)
    >>> torch.allclose(inside.energy(x), flow.energy(y) - ladj)
    True
    """
    return EnergyFlow([PreprocessingLayer(chain), *flow.layers], event_shape=flow.event_shape)


def without_preprocessing(flow: EnergyFlow) -> EnergyFlow:
    """Strip the leading :class:`PreprocessingLayer` added by :func:`with_preprocessing`.

    Parameters
    ----------
    flow : EnergyFlow
        A flow built by :func:`with_preprocessing` (or a copy of one).

    Returns
    -------
    EnergyFlow
        The flow on the preprocessed space (shares the layers).

    Examples
    --------
    >>> import torch
    >>> from skebflow.nn._architectures import build_fc
    >>> from skebflow.preprocessing._transforms import make_preprocessing
    >>> chain = make_preprocessing("standardize").fit(torch.randn(5, 2))
    >>> flow = build_fc(2)
    >>> without_preprocessing(with_preprocessing(flow, chain)).layers[0] is flow.layers[0]
    True
    """
    if not flow.layers or not isinstance(flow.layers[0], PreprocessingLayer):
        raise ValueError("The flow does not start with a PreprocessingLayer.")
    return EnergyFlow(list(flow.layers)[1:], event_shape=flow.event_shape)

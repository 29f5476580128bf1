r"""Second-order directional derivatives of the energy in one forward pass (Taylor mode).

Sliced score matching needs, for slice directions :math:`v`, the Hessian quadratic form
:math:`v^\top \nabla^2 E(y)\, v`. Autograd gets it from a second backward pass through the
first, and the parameter gradient then runs through both. For flows built from layers
with a known second-order rule (dense, ActNorm, permutation, smooth leaky ReLU: the FC
architecture) it is cheaper to push the 2-jet :math:`(x, \dot x, \ddot x)` of the curve
:math:`t \mapsto f_l(\dots(y + t v))` through the layers:

* an affine layer :math:`x \mapsto Wx + b` maps the jet to :math:`(Wx + b, W\dot x,
  W\ddot x)` and has a constant log-determinant (it stays out of the energy);
* an elementwise :math:`\phi` maps it to :math:`(\phi(x), \phi'\dot x,
  \phi''\dot x^2 + \phi'\ddot x)` and adds :math:`\sum \log\phi'(x)` to the
  log-determinant, whose jet is :math:`(\sum r\dot x,\ \sum r'\dot x^2 + r\ddot x)` with
  :math:`r = \phi''/\phi'`.

With :math:`E = \tfrac12\|z\|^2 + c - \sum \log|\det J|`, the directional derivatives are
:math:`\dot E = z\cdot\dot z - \dot\ell` and :math:`\ddot E = \|\dot z\|^2 + z\cdot\ddot z -
\ddot\ell = v^\top\nabla^2E\,v`. The primal pass is shared by all slices; the tangents
of ``S`` slices travel as one ``(S, n, D)`` tensor, so each dense layer costs one product
for the primal and one for all tangents.

When the score :math:`\nabla E` is needed as well (sliced score matching), the
second-order tangents can be dropped altogether (:func:`energy_score_curvature`). The
second-order part of :math:`\ddot E` is linear in the second-order tangents, which start at
zero and are driven only by the nonlinearities' sources :math:`\phi''(h)\dot h^2`; so it
equals the sum of those sources weighted by the adjoints :math:`\bar a = \partial E /
\partial a` at the nonlinearities' outputs, which the score's reverse pass computes anyway:

.. math:: v^\top\nabla^2E\,v = \|\dot z\|^2 - \sum_l \sum_i r'(h_{l,i})\,\dot h_{l,i}^2
          + \sum_l \bar a_l \cdot \phi''(h_l)\,\dot h_l^2 .

Each dense layer then costs three products (primal, tangents, reverse) instead of four.

The rules are optional methods of the layers (``jet`` and
``tangent``, see :mod:`skebflow.nn._base`), and both functions run through the flow's one
loop (:meth:`~skebflow.nn._flow.EnergyFlow.walk`), so they work for any event shape and
for flows with a multi-scale :class:`~skebflow.nn._base.Split`.

References
----------
.. [1] A. Griewank, A. Walther, "Evaluating Derivatives", SIAM, 2008 (Taylor-mode
   propagation, Chapter 13).
.. [2] Y. Song, S. Garg, J. Shi, S. Ermon, "Sliced Score Matching: A Scalable Approach to
   Density and Score Estimation", UAI 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skebflow.nn import EnergyFlow, Jet, Layer, Split, TangentTape, event_sum

__all__ = ["energy_jet", "energy_score_curvature", "supports_jet"]


def supports_jet(model: object) -> bool:
    """Whether ``model`` is an :class:`~skebflow.nn._flow.EnergyFlow` whose layers all bring rules.

    Parameters
    ----------
    model : object
        A flow, or any energy model (which then has no rule).

    Returns
    -------
    bool

    Examples
    --------
    >>> from skebflow.nn._architectures import build_coupling, build_fc
    >>> supports_jet(build_fc(3)), supports_jet(build_coupling(2))
    (True, False)
    """
    if not isinstance(model, EnergyFlow):
        return False
    return all(
        isinstance(layer, Split) or type(layer).has_derivative_rules() for layer in model.layers
    )


def _check(model: object) -> EnergyFlow:
    if not supports_jet(model):
        raise TypeError(f"{type(model).__name__} has a layer without a second-order rule.")
    return model


def _split_jet(layer: Split, jet: Jet) -> tuple[Jet, Jet]:
    x, dx, ddx = jet
    (x_kept, x_out), (dx_kept, dx_out) = layer.split(x, 1), layer.split(dx, 2)
    if ddx is None:
        return (x_kept, dx_kept, None), (x_out, dx_out, None)
    ddx_kept, ddx_out = layer.split(ddx, 2)
    return (x_kept, dx_kept, ddx_kept), (x_out, dx_out, ddx_out)


def energy_jet(model: object, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Return :math:`E(y)`, :math:`v^\top\nabla E(y)` and :math:`v^\top\nabla^2E(y)\,v`.

    Parameters
    ----------
    model : EnergyFlow
        A flow for which :func:`supports_jet` is true.
    y : Tensor of shape (n, *event_shape)
        Points.
    v : Tensor of shape (S, n, *event_shape)
        ``S`` directions per point.

    Returns
    -------
    energy : Tensor of shape (n,)
    first : Tensor of shape (S, n)
        Directional derivatives.
    second : Tensor of shape (S, n)
        Hessian quadratic forms.

    Examples
    --------
    >>> import torch
    >>> from skebflow.nn._architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> y = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    >>> v = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    >>> energy, first, second = energy_jet(flow, y, v)
    >>> hessian = torch.autograd.functional.hessian(lambda t: flow.energy(t).sum(), y)
    >>> torch.allclose(second, hessian[0, 0, 0, 0])
    True
    """
    flow = _check(model)
    terms: list[tuple[Tensor, Tensor, Tensor]] = []

    def visit(layer: Layer, jet: Jet) -> Jet:
        jet, ladj = layer.jet(*jet)
        if ladj is not None:
            terms.append(ladj)
        return jet

    parts = flow.walk((y, v, None), visit, _split_jet)
    energy = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device) + flow.base_constant
    first = second = torch.zeros(v.shape[:2], dtype=y.dtype, device=y.device)
    for x, dx, ddx in parts:
        energy = energy + 0.5 * event_sum(x * x, 1)
        first = first + event_sum(x * dx, 2)
        second = second + event_sum(dx * dx, 2)
        if ddx is not None:
            second = second + event_sum(x * ddx, 2)
    for ladj, dladj, ddladj in terms:
        energy, first, second = energy - ladj, first - dladj, second - ddladj
    return energy, first, second


def energy_score_curvature(
    model: object, y: Tensor, v: Tensor, *, create_graph: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Return :math:`E(y)`, :math:`\nabla E(y)` and :math:`v^\top\nabla^2E(y)\,v`.

    One forward pass carries the primal and the first-order tangents of the ``S`` slices;
    one reverse pass (autograd) returns the score together with the adjoints at the
    nonlinearities' outputs, which turn the nonlinearities' second-order sources into the
    Hessian quadratic forms (module docstring). No second-order tangent is propagated.

    Parameters
    ----------
    model : EnergyFlow
        A flow for which :func:`supports_jet` is true.
    y : Tensor of shape (n, *event_shape)
        Points (detached and made a leaf internally).
    v : Tensor of shape (S, n, *event_shape)
        ``S`` directions per point.
    create_graph : bool, default=True
        Keep the graph of the reverse pass, so that the results can be differentiated
        with respect to the parameters (training).

    Returns
    -------
    energy : Tensor of shape (n,)
    grad : Tensor of shape (n, *event_shape)
        :math:`\nabla_y E`, the negative model score.
    second : Tensor of shape (S, n)
        Hessian quadratic forms.

    Examples
    --------
    >>> import torch
    >>> from skebflow.nn._architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> y = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    >>> v = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    >>> energy, grad, second = energy_score_curvature(flow, y, v)
    >>> leaf = y.clone().requires_grad_(True)
    >>> (expected,) = torch.autograd.grad(flow.energy(leaf).sum(), leaf)
    >>> torch.allclose(grad, expected)
    True
    """
    flow = _check(model)
    y = y.detach().requires_grad_(True)
    tape = TangentTape(y)

    def visit(layer: Layer, pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return layer.tangent(*pair, tape)

    def split(layer: Split, pair: tuple[Tensor, Tensor]) -> tuple[tuple, tuple]:
        (x_kept, x_out), (dx_kept, dx_out) = layer.split(pair[0], 1), layer.split(pair[1], 2)
        return (x_kept, dx_kept), (x_out, dx_out)

    parts = flow.walk((y, v), visit, split)
    energy = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device) + flow.base_constant
    second = torch.zeros(v.shape[:2], dtype=y.dtype, device=y.device)
    for x, dx in parts:
        energy = energy + 0.5 * event_sum(x * x, 1)
        second = second + event_sum(dx * dx, 2)
    if tape.ladj is not None:
        energy, second = energy - tape.ladj, second - tape.curvature
    tape.score_pass = True
    try:
        grad, *adjoints = torch.autograd.grad(
            energy.sum(), [y, *tape.outputs], create_graph=create_graph
        )
    finally:
        tape.score_pass = False
    for adjoint, source in zip(adjoints, tape.sources, strict=True):
        second = second + event_sum(adjoint * source, 2)
    return energy, grad, second

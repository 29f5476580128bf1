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

References
----------
.. [1] A. Griewank, A. Walther, "Evaluating Derivatives", SIAM, 2008 (Taylor-mode
   propagation, Chapter 13).
.. [2] Y. Song, S. Garg, J. Shi, S. Ermon, "Sliced Score Matching: A Scalable Approach to
   Density and Score Estimation", UAI 2019.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from skebflow.nn.activations import SmoothLeakyReLU
from skebflow.nn.base import ConstantJacobianLayer, Layer
from skebflow.nn.linear import ActNorm, Dense

__all__ = ["JET_RULES", "energy_jet", "energy_score_curvature", "supports_jet"]

#: ``(x, dx, ddx)``: the primal of shape ``(n, D)``, tangents of shape ``(S, n, D)``;
#: ``ddx`` is ``None`` while it is known to be zero (before the first nonlinearity).
Jet = tuple[Tensor, Tensor, Tensor | None]
#: A rule returns the output jet and the jet of the layer's log-determinant,
#: ``(ladj, dladj, ddladj)`` of shapes ``(n,)``, ``(S, n)``, ``(S, n)``, or ``None`` when
#: the Jacobian is constant (those layers stay out of the energy).
Rule = Callable[[Layer, Tensor, Tensor, Tensor | None], tuple[Jet, tuple | None]]


def _dense(layer: Dense, x: Tensor, dx: Tensor, ddx: Tensor | None) -> tuple[Jet, None]:
    # One product for the primal and every tangent: one weight-gradient product in the
    # backward pass instead of one per stream, and no D x D sum of their contributions.
    streams = [x, dx.reshape(-1, dx.shape[-1])]
    if ddx is not None:
        streams.append(ddx.reshape(-1, ddx.shape[-1]))
    out = F.linear(torch.cat(streams), layer.weight)
    parts = out.split([s.shape[0] for s in streams])
    y = parts[0] if layer.bias is None else parts[0] + layer.bias
    dy = parts[1].reshape(*dx.shape[:-1], out.shape[-1])
    ddy = None if ddx is None else parts[2].reshape(*ddx.shape[:-1], out.shape[-1])
    return (y, dy, ddy), None


def _affine(
    layer: ConstantJacobianLayer, x: Tensor, dx: Tensor, ddx: Tensor | None
) -> tuple[Jet, None]:
    # Any affine map: the linear part is map(d) - map(0). The primal goes first, so that an
    # ActNorm still initializes itself from data, never from tangents.
    y = layer.map(x)
    offset = layer.map(torch.zeros_like(x[:1]))
    tangents = dx if ddx is None else torch.cat([dx, ddx])
    shape = tangents.shape
    lin = layer.map(tangents.reshape(-1, shape[-1])).reshape(shape) - offset
    if ddx is None:
        return (y, lin, None), None
    dy, ddy = lin.chunk(2)
    return (y, dy, ddy), None


def _smooth_leaky_relu_derivatives(
    layer: SmoothLeakyReLU, x: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``phi(x)``, ``phi'``, ``phi''``, ``r = (log phi')'`` and ``r'``, elementwise."""
    y, d1, d2, d3 = layer.derivatives(x)
    r = d2 / d1
    return y, d1, d2, r, d3 / d1 - r * r


def _smooth_leaky_relu(
    layer: SmoothLeakyReLU, x: Tensor, dx: Tensor, ddx: Tensor | None
) -> tuple[Jet, tuple[Tensor, Tensor, Tensor]]:
    y, d1, d2, r, dr = _smooth_leaky_relu_derivatives(layer, x)
    dx2 = dx * dx
    dy = d1 * dx
    ddy = d2 * dx2
    ladj = torch.log(d1).sum(-1)
    dladj = (r * dx).sum(-1)
    ddladj = (dr * dx2).sum(-1)
    if ddx is not None:
        ddy = ddy + d1 * ddx
        ddladj = ddladj + (r * ddx).sum(-1)
    return (y, dy, ddy), (ladj, dladj, ddladj)


#: Second-order rules of the built-in layers; other layers make :func:`energy_jet`
#: unavailable (objectives then fall back to autograd).
JET_RULES: dict[type[Layer], Rule] = {
    Dense: _dense,
    ActNorm: _affine,
    SmoothLeakyReLU: _smooth_leaky_relu,
}


def _rule(layer: Layer) -> Rule | None:
    rule = JET_RULES.get(type(layer))
    if rule is None and isinstance(layer, ConstantJacobianLayer):
        return _affine
    return rule


def supports_jet(model: object) -> bool:
    """Whether every layer of ``model`` (an :class:`~skebflow.nn.flow.EnergyFlow`) has a rule.

    Parameters
    ----------
    model : object
        A flow, or any energy model (which then has no rule).

    Returns
    -------
    bool

    Examples
    --------
    >>> from skebflow.nn.architectures import build_coupling, build_fc
    >>> supports_jet(build_fc(3)), supports_jet(build_coupling(2))
    (True, False)
    """
    layers = getattr(model, "layers", None)
    if layers is None or not hasattr(model, "_base_constant"):
        return False
    return all(_rule(layer) is not None for layer in layers)


def energy_jet(model: object, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Return :math:`E(y)`, :math:`v^\top\nabla E(y)` and :math:`v^\top\nabla^2E(y)\,v`.

    Parameters
    ----------
    model : EnergyFlow
        A flow for which :func:`supports_jet` is true.
    y : Tensor of shape (n, D)
        Points.
    v : Tensor of shape (S, n, D)
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
    >>> from skebflow.nn.architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> y = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    >>> v = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    >>> energy, first, second = energy_jet(flow, y, v)
    >>> hessian = torch.autograd.functional.hessian(lambda t: flow.energy(t).sum(), y)
    >>> torch.allclose(second, hessian[0, 0, 0, 0])
    True
    """
    if not supports_jet(model):
        raise TypeError(f"{type(model).__name__} has a layer without a second-order rule.")
    x, dx, ddx = y, v, None
    ladj = dladj = ddladj = None
    for layer in model.layers:
        (x, dx, ddx), terms = _rule(layer)(layer, x, dx, ddx)
        if terms is not None:
            if ladj is None:
                ladj, dladj, ddladj = terms
            else:
                ladj, dladj, ddladj = ladj + terms[0], dladj + terms[1], ddladj + terms[2]
    z = x.flatten(1)
    energy = 0.5 * (z * z).sum(-1) + model._base_constant()
    first = (x * dx).sum(-1)
    second = (dx * dx).sum(-1)
    if ddx is not None:
        second = second + (x * ddx).sum(-1)
    if ladj is not None:
        energy, first, second = energy - ladj, first - dladj, second - ddladj
    return energy, first, second


class _Phase:
    """Which backward pass a group of :class:`_DenseStreams` calls is in.

    Shared by the calls of one :func:`energy_score_curvature` evaluation and carried in
    their autograd contexts (not in thread-local state: on accelerators the autograd
    engine runs backward functions on its own device threads).
    """

    def __init__(self) -> None:
        self.score_pass = False


class _DenseStreams(torch.autograd.Function):
    """``(x Wᵀ, dx Wᵀ)`` with a backward that computes only what it is asked for.

    The primal ``x`` and the tangents ``dx`` share one weight-gradient product
    ``[g; dg]ᵀ [x; dx]`` (no D × D sum of two contributions). The score's reverse pass
    differentiates the energy, which does not depend on the tangents: it gets no tangent
    gradient, so no product is spent on it, and no weight gradient (the parameters are
    differentiated later, through the whole loss). The backward is made of differentiable
    operations, so it can itself be differentiated (``create_graph=True``). With
    ``score_input=True`` ``x`` is the point at which the score is taken: its gradient is
    computed in the score's reverse pass only, never when the loss is differentiated.
    ``phase.score_pass`` tells the two apart.
    """

    @staticmethod
    def forward(
        ctx: object, weight: Tensor, x: Tensor, dx: Tensor, score_input: bool, phase: _Phase
    ) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(weight, x, dx)
        ctx.set_materialize_grads(False)
        ctx.score_input, ctx.phase = score_input, phase
        return F.linear(x, weight), F.linear(dx, weight)

    @staticmethod
    def backward(
        ctx: object, grad_y: Tensor | None, grad_dy: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        weight, x, dx = ctx.saved_tensors
        need_weight, need_x, need_dx, _, _ = ctx.needs_input_grad
        input_only = ctx.phase.score_pass
        need_x = need_x and (input_only or not ctx.score_input)
        grad_x = grad_y @ weight if need_x and grad_y is not None else None
        grad_dx = grad_dy @ weight if need_dx and grad_dy is not None else None
        grad_weight = None
        if need_weight and not input_only:
            pairs = [(g, v) for g, v in ((grad_y, x), (grad_dy, dx)) if g is not None]
            if pairs:
                grads, values = zip(*pairs, strict=True)
                grad_weight = torch.cat(grads).mT @ torch.cat(values)
        return grad_weight, grad_x, grad_dx, None, None


def _dense_first(
    layer: Dense, x: Tensor, dx: Tensor, score_input: bool, phase: _Phase
) -> tuple[Tensor, Tensor]:
    flat = dx.reshape(-1, dx.shape[-1])
    y, dy = _DenseStreams.apply(layer.weight, x, flat, score_input, phase)
    y = y if layer.bias is None else y + layer.bias
    return y, dy.reshape(*dx.shape[:-1], dy.shape[-1])


def _smooth_leaky_relu_first(
    layer: SmoothLeakyReLU, x: Tensor, dx: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Output, tangent, log-determinant, its curvature term and the second-order source."""
    y, d1, d2, _, dr = _smooth_leaky_relu_derivatives(layer, x)
    dx2 = dx * dx
    return y, d1 * dx, torch.log(d1).sum(-1), (dr * dx2).sum(-1), d2 * dx2


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
    y : Tensor of shape (n, D)
        Points (detached and made a leaf internally).
    v : Tensor of shape (S, n, D)
        ``S`` directions per point.
    create_graph : bool, default=True
        Keep the graph of the reverse pass, so that the results can be differentiated
        with respect to the parameters (training).

    Returns
    -------
    energy : Tensor of shape (n,)
    grad : Tensor of shape (n, D)
        :math:`\nabla_y E`, the negative model score.
    second : Tensor of shape (S, n)
        Hessian quadratic forms.

    Examples
    --------
    >>> import torch
    >>> from skebflow.nn.architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> y = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    >>> v = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    >>> energy, grad, second = energy_score_curvature(flow, y, v)
    >>> leaf = y.clone().requires_grad_(True)
    >>> (expected,) = torch.autograd.grad(flow.energy(leaf).sum(), leaf)
    >>> torch.allclose(grad, expected)
    True
    """
    if not supports_jet(model):
        raise TypeError(f"{type(model).__name__} has a layer without a second-order rule.")
    y = y.detach().requires_grad_(True)
    x, dx = y, v
    phase = _Phase()
    ladj = curvature = None
    outputs: list[Tensor] = []
    sources: list[Tensor] = []
    for layer in model.layers:
        rule = _rule(layer)
        if rule is _smooth_leaky_relu:
            x, dx, term, bend, source = _smooth_leaky_relu_first(layer, x, dx)
            ladj = term if ladj is None else ladj + term
            curvature = bend if curvature is None else curvature + bend
            outputs.append(x)
            sources.append(source)
        elif rule is _dense:
            x, dx = _dense_first(layer, x, dx, x is y, phase)
        else:
            (x, dx, _), _ = rule(layer, x, dx, None)
    z = x.flatten(1)
    energy = 0.5 * (z * z).sum(-1) + model._base_constant()
    second = (dx * dx).sum(-1)
    if ladj is not None:
        energy, second = energy - ladj, second - curvature
    phase.score_pass = True
    try:
        grad, *adjoints = torch.autograd.grad(
            energy.sum(), [y, *outputs], create_graph=create_graph
        )
    finally:
        phase.score_pass = False
    for adjoint, source in zip(adjoints, sources, strict=True):
        second = second + (adjoint * source).sum(-1)
    return energy, grad, second

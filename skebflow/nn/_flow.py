r"""The energy-based normalizing flow: a stack of invertible layers and a Gaussian base.

For a flow :math:`f = f_L \circ \dots \circ f_1` with base :math:`N(0, I)`,

.. math::

    \log p(y) = -E(y) - \log Z, \qquad
    E(y) = -\log N(f(y); 0, I) - \sum_{l \in N} \log|\det J_l|, \qquad
    \log Z = -\sum_{l \in C} \log|\det J_l|,

where :math:`C` holds the layers with a constant Jacobian. :meth:`EnergyFlow.energy`
never computes a determinant; :meth:`EnergyFlow.log_normalizer` is the only place where
determinants are taken.

Data are batches of shape ``(n, *event_shape)``: ``(n, D)`` for tabular flows, ``(n, C, H,
W)`` for images. A :class:`~skebflow.nn._base.Split` layer factors part of the tensor out to
the base distribution early (a multi-scale flow): the latent point is then the
concatenation of the factored-out parts and the final tensor, flattened, and
:math:`\tfrac12\|f(y)\|^2` runs over all of it. :meth:`EnergyFlow.walk` is the one loop
over the layers; the energy and the fast score paths of :mod:`skebflow.objectives._jets`
all run through it.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from skebflow.nn._base import Layer, Split
from skebflow.nn._linear import Whitening

__all__ = ["EnergyFlow"]


class EnergyFlow(nn.Module):
    """Normalizing flow whose log-density is split into an energy and a log-normalizer.

    Parameters
    ----------
    layers : sequence of Layer
        The transformations, applied in order from data to latent.
    features : int, optional
        The data dimension :math:`D` of a tabular flow (``event_shape = (features,)``).
    event_shape : tuple of int, optional
        The shape of one sample, e.g. ``(C, H, W)``; give this or ``features``.

    Attributes
    ----------
    event_shape : tuple of int
        The shape of one sample.
    features : int
        :math:`D`, the number of entries of one sample.

    Examples
    --------
    >>> from skebflow.nn._activations import SmoothLeakyReLU
    >>> from skebflow.nn._linear import Dense
    >>> flow = EnergyFlow([Dense(2), SmoothLeakyReLU(), Dense(2)], features=2).double()
    >>> y = torch.randn(5, 2, dtype=torch.float64)
    >>> lp = flow.log_prob(y)
    >>> torch.allclose(lp, -flow.energy(y) - flow.log_normalizer())
    True
    >>> x = flow.sample(3, generator=torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([3, 2])
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        features: int | None = None,
        *,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if (features is None) == (event_shape is None):
            raise ValueError("Give exactly one of features and event_shape.")
        event_shape = (int(features),) if event_shape is None else tuple(map(int, event_shape))
        if not event_shape or min(event_shape) < 1:
            raise ValueError(f"The event shape must be positive, got {event_shape}.")
        self.layers = nn.ModuleList(layers)
        self.event_shape = event_shape
        self.features = math.prod(event_shape)
        # The event shape entering every layer, and the shapes of the factored-out parts.
        self._shapes: list[tuple[int, ...]] = []
        self._factored_shapes: list[tuple[int, ...]] = []
        shape = event_shape
        for layer in self.layers:
            self._shapes.append(shape)
            if isinstance(layer, Split):
                self._factored_shapes.append(layer.factored_shape(shape))
            shape = layer.output_shape(shape)
        self.latent_event_shape = shape

    @property
    def base_constant(self) -> float:
        r""":math:`\tfrac D2 \log 2\pi`, the base density's constant."""
        return 0.5 * self.features * math.log(2.0 * math.pi)

    def walk(
        self,
        state: object,
        visit: Callable[[Layer, object], object],
        split: Callable[[Split, object], tuple[object, object]],
    ) -> list[object]:
        """Run ``state`` through the layers: the one loop of every energy evaluation.

        Parameters
        ----------
        state : object
            What travels through the flow: a tensor, or a jet (a tuple of tensors).
        visit : callable
            ``visit(layer, state) -> state`` for every layer but the splits.
        split : callable
            ``split(layer, state) -> (kept, factored)`` for a :class:`Split`.

        Returns
        -------
        list
            The latent parts: each factored-out part in order, then the final state.
        """
        parts = []
        for layer in self.layers:
            if isinstance(layer, Split):
                state, factored = split(layer, state)
                parts.append(factored)
            else:
                state = visit(layer, state)
        parts.append(state)
        return parts

    def _flatten_latent(self, parts: list[Tensor], batch_dims: int = 1) -> Tensor:
        if len(parts) == 1:
            return parts[0]
        return torch.cat([part.flatten(batch_dims) for part in parts], dim=-1)

    def transform(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Map data to latent; return ``(z, ladj)`` summed over non-constant layers only.

        Parameters
        ----------
        y : Tensor of shape (n, *event_shape)
            Data (after any preprocessing).

        Returns
        -------
        z : Tensor
            The latent point :math:`f(y)`: of shape ``(n, *latent_event_shape)``, or
            ``(n, D)`` (the factored-out parts and the final tensor, flattened and
            concatenated) for a flow with a :class:`~skebflow.nn._base.Split`.
        ladj : Tensor of shape (n,)
            :math:`\sum_{l \in N} \log|\det J_l|`; constant layers are applied through
            their determinant-free ``map``.
        """
        terms: list[Tensor] = []

        def visit(layer: Layer, x: Tensor) -> Tensor:
            if layer.constant_jacobian:
                return layer.map(x)
            x, layer_ladj = layer(x)
            terms.append(layer_ladj)
            return x

        parts = self.walk(y, visit, lambda layer, x: layer.split(x, batch_dims=1))
        ladj = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        for term in terms:
            ladj = ladj + term
        return self._flatten_latent(parts), ladj

    def energy(self, y: Tensor) -> Tensor:
        r"""Return the per-sample energy :math:`E(y)` (no determinant is computed).

        Parameters
        ----------
        y : Tensor of shape (n, *event_shape)
            Data.

        Returns
        -------
        Tensor of shape (n,)
            Energy :math:`\tfrac12\|f(y)\|^2 + \tfrac D2 \log 2\pi
            - \sum_{l\in N}\log|\det J_l|`.
        """
        z, ladj = self.transform(y)
        return 0.5 * z.flatten(1).pow(2).sum(dim=1) + self.base_constant - ladj

    def log_normalizer(self) -> Tensor:
        r"""Return :math:`\log Z = -\sum_{l \in C} \log|\det J_l|` (differentiable).

        This costs :math:`O(D^3)` per dense layer; callers outside training should cache
        it (the estimator does).

        Returns
        -------
        Tensor
            A scalar.
        """
        parameter = next(self.parameters(), None)
        total = torch.zeros(
            (),
            dtype=parameter.dtype if parameter is not None else torch.get_default_dtype(),
            device=parameter.device if parameter is not None else None,
        )
        for layer in self.layers:
            if layer.constant_jacobian:
                total = total - layer.logabsdet()
        return total

    def log_prob(self, y: Tensor, log_normalizer: Tensor | None = None) -> Tensor:
        r"""Return the normalized log-density :math:`-E(y) - \log Z`.

        Parameters
        ----------
        y : Tensor of shape (n, *event_shape)
            Data.
        log_normalizer : Tensor, optional
            A cached value of :meth:`log_normalizer`; computed when omitted.

        Returns
        -------
        Tensor of shape (n,)
            Log-densities.
        """
        if log_normalizer is None:
            log_normalizer = self.log_normalizer()
        return -self.energy(y) - log_normalizer

    @property
    def whitened(self) -> bool:
        """Whether the first layer is a fixed :class:`~skebflow.nn._linear.Whitening`."""
        return bool(self.layers) and isinstance(self.layers[0], Whitening)

    def after_whitening(self, y: Tensor) -> tuple[EnergyFlow, Tensor]:
        r"""Return the flow past a leading :class:`~skebflow.nn._linear.Whitening`, and ``y`` there.

        A flow whose first layer is a fixed whitening map is trained in the whitened
        coordinates: the objectives measure their loss on the remaining layers (a flow
        that shares them) at the whitened points. Any other flow returns itself and
        ``y``. The two log-densities differ by the constant :math:`\log|\det W|`.

        Parameters
        ----------
        y : Tensor of shape (n, *event_shape)
            Data.

        Returns
        -------
        flow : EnergyFlow
            The layers after the whitening (``self`` without one).
        y : Tensor
            The whitened data (``y`` itself without one).

        Examples
        --------
        >>> from skebflow.nn._linear import Dense
        >>> flow = EnergyFlow([Whitening(2), Dense(2)], features=2)
        >>> body, u = flow.after_whitening(torch.ones(3, 2))
        >>> len(body.layers), u.shape
        (1, torch.Size([3, 2]))
        """
        if not self.whitened:
            return self, y
        whitening, *rest = self.layers
        return EnergyFlow(rest, event_shape=self.event_shape), whitening.map(y)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The event shape of :meth:`transform`'s ``z`` (flat with a split)."""
        return (self.features,) if self._factored_shapes else self.latent_event_shape

    def inverse(self, z: Tensor) -> Tensor:
        """Map latent points back to data space, :math:`f^{-1}(z)`.

        Parameters
        ----------
        z : Tensor of shape (n, *latent_shape)
            Latent points, as :meth:`transform` returns them.

        Returns
        -------
        Tensor of shape (n, *event_shape)
            Data points.
        """
        factored: list[Tensor] = []
        if self._factored_shapes:
            sizes = [math.prod(shape) for shape in self._factored_shapes]
            pieces = z.split([*sizes, math.prod(self.latent_event_shape)], dim=1)
            factored = [
                piece.reshape(len(z), *shape)
                for piece, shape in zip(pieces, self._factored_shapes, strict=False)
            ]
            z = pieces[-1].reshape(len(z), *self.latent_event_shape)
        x = z
        for layer in reversed(self.layers):
            if isinstance(layer, Split):
                x = layer.join(x, factored.pop(), batch_dims=1)
            else:
                x = layer.inverse(x)
        return x

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` exact samples by inverting base draws :math:`u \sim N(0, I)`.

        Parameters
        ----------
        n : int
            Number of samples.
        generator : torch.Generator, optional
            Source of the base draws; the global generator is used when omitted.

        Returns
        -------
        Tensor of shape (n, *event_shape)
            Samples (no gradient).
        """
        parameter = next(self.parameters())
        with torch.no_grad():
            z = torch.randn(
                n,
                *self.latent_shape,
                generator=generator,
                dtype=parameter.dtype,
                device=parameter.device,
            )
            return self.inverse(z)

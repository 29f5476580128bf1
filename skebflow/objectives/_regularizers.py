r"""A soft barrier that keeps the linear layers of a flow away from singularity.

Maximum likelihood cannot make a dense layer singular: its loss contains
:math:`-\log|\det W|`. Score matching can, because the energy has no determinant: a
nearly singular :math:`W` makes the energy nearly flat along one direction, the density
nearly improper, and its mass leaks far from the data, where a Fisher divergence measured
at data points does not look (``docs/benchmark_history.md``, §2). :class:`SingularValueBarrier` adds

.. math:: \lambda \sum_{\text{dense } W} \sum_{i \in T(W)}
          \max\!\left(0,\ 1 - \frac{u_i^\top W v_i}{\tau}\right)^2

to the loss, where :math:`(u_i, v_i)` are the left and right singular vectors of the
singular values of :math:`W` below :math:`2\tau` (at most ``n_tracked`` per layer).
They are found by a *search*: block inverse iteration with one LU factorization of
:math:`W` (:math:`O(D^3)`) and a Rayleigh–Ritz step; in between, :math:`u_i^\top W v_i`
follows the current weights at :math:`O(k D^2)` per layer. With ``refresh=1`` and enough
tracked pairs the penalty is exact, since :math:`u_i^\top W v_i = \sigma_i` with gradient
:math:`u_i v_i^\top`.

The search is the barrier's whole cost, so it runs only as often as the singular values
call for. While some layer has a singular value below ``far`` :math:`\times\,\tau` it
runs every ``refresh`` calls, and so does the second search (score matching can halve a
singular value within a hundred steps, so a rate of fall is needed first). While none
has, the interval doubles after each search, up to ``max_refresh``, but never beyond half
the time in which the smallest singular value, falling at the rate seen between the last
two searches, would reach :math:`2\tau`. On a
flow whose layers stay well conditioned the search thus costs a few factorizations per
thousand steps; on one that score matching pushes towards singularity it is as frequent
as with a fixed ``refresh`` (``docs/benchmark_history.md``, §1, measures both).

A trainer that validates calls :meth:`SingularValueBarrier.after_validation` with the
validated weights (the EMA copy), whose dense layers cached the factorization that the
validation's log-normalizer made (:meth:`skebflow.nn._linear.Dense.factors`): that search
costs triangular solves only, and it reschedules the next one, so a fit that validates
every epoch of at most ``refresh`` steps factorizes for the barrier only once, at its
first step.

References
----------
.. [1] G. H. Golub, C. F. Van Loan, "Matrix Computations", 4th ed., 2013 (inverse
   iteration, Section 8.2; Rayleigh–Ritz, Section 10.1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skebflow.nn import Conv1x1, Conv2d, Dense

__all__ = ["BARRIER_LAYERS", "SingularValueBarrier"]

_INVERSE_ITERATIONS = 3
#: The unconstrained linear layers the barrier watches: dense layers (the weight),
#: convolutions (their D×D operator, applied by convolving, factorized for the search)
#: and 1×1 convolutions (the C×C weight; the operator is W ⊗ I, with the same singular
#: values).
BARRIER_LAYERS = (Dense, Conv2d, Conv1x1)


def _dense_layers(flow: nn.Module) -> list[Dense | Conv2d | Conv1x1]:
    return [m for m in flow.modules() if isinstance(m, BARRIER_LAYERS)]


class SingularValueBarrier:
    r"""Penalty on singular values of dense layers that fall below ``threshold``.

    Parameters
    ----------
    threshold : float
        :math:`\tau > 0`, the smallest singular value that goes unpenalized.
    strength : float, default=1.0
        :math:`\lambda`.
    refresh : int, default=50
        Calls between two searches for the small singular pairs while a singular value
        is below ``far * threshold``; the shortest interval.
    max_refresh : int, default=800
        The longest interval, reached while every singular value stays above
        ``far * threshold``. ``max_refresh=refresh`` searches at a fixed interval.
    far : float, default=4.0
        Singular values above ``far * threshold`` let the interval grow.
    n_tracked : int, default=8
        Singular pairs searched for (and at most penalized) per layer.

    Attributes
    ----------
    n_calls, n_searches : int
        Calls so far, and searches among them.
    interval : int
        Calls from the last search to the next.

    Examples
    --------
    >>> import torch
    >>> from skebflow.nn._architectures import build_fc
    >>> flow = build_fc(3, n_blocks=1).double()
    >>> with torch.no_grad():
    ...     _ = flow.layers[0].weight.copy_(torch.diag(torch.tensor([2.0, 1.0, 0.05])))
    >>> barrier = SingularValueBarrier(0.1, refresh=1)
    >>> round(float(barrier(flow)), 6)  # (1 - 0.05 / 0.1) ** 2
    0.25
    """

    def __init__(
        self,
        threshold: float,
        *,
        strength: float = 1.0,
        refresh: int = 50,
        max_refresh: int = 800,
        far: float = 4.0,
        n_tracked: int = 8,
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold!r}.")
        if not strength >= 0:
            raise ValueError(f"strength must be non-negative, got {strength!r}.")
        if refresh < 1 or n_tracked < 1:
            raise ValueError(
                f"refresh and n_tracked must be at least 1, got {refresh!r}, {n_tracked!r}."
            )
        if max_refresh < refresh:
            raise ValueError(
                f"max_refresh must be at least refresh ({refresh!r}), got {max_refresh!r}."
            )
        if not far >= 2.0:
            raise ValueError(f"far must be at least 2 (the tracking margin), got {far!r}.")
        self.threshold = float(threshold)
        self.strength = float(strength)
        self.refresh = int(refresh)
        self.max_refresh = int(max_refresh)
        self.far = float(far)
        self.n_tracked = int(n_tracked)
        self.n_calls = self.n_searches = 0
        self.interval = self.refresh
        self._next_search = 0
        self._bases: dict[int, Tensor] = {}
        self._pairs: dict[int, tuple[Tensor, Tensor]] = {}
        self._floors: dict[int, tuple[float, int]] = {}

    def _search(
        self, key: int, weight: Tensor, factors: tuple[Tensor, Tensor, Tensor] | None = None
    ) -> float:
        """Find the singular pairs of ``weight`` below ``2 * threshold``.

        ``factors`` are ``lu_factor_ex(weight)`` when known. Returns the smallest
        singular value found (0 for a singular ``weight``).
        """
        w = weight.detach()
        d = w.shape[0]
        k = min(self.n_tracked, d)
        basis = self._bases.get(key)
        if basis is None or basis.shape != (d, k) or basis.dtype != w.dtype:
            generator = torch.Generator(device=w.device).manual_seed(key)
            basis = torch.randn(d, k, generator=generator, dtype=w.dtype, device=w.device)
        lu, pivots, info = factors if factors is not None else torch.linalg.lu_factor_ex(w)
        if int(info.max()) == 0 and k < d:
            for _ in range(_INVERSE_ITERATIONS):
                # (WᵀW)⁻¹ X = W⁻¹ W⁻ᵀ X: favours the smallest singular directions.
                basis = torch.linalg.lu_solve(lu, pivots, basis, adjoint=True)
                basis = torch.linalg.lu_solve(lu, pivots, basis)
                basis = torch.linalg.qr(basis)[0]
        elif k == d:
            basis = torch.eye(d, dtype=w.dtype, device=w.device)
        self._bases[key] = basis
        # Rayleigh–Ritz: the SVD of W X gives the best pairs within span(X).
        left, values, right_h = torch.linalg.svd(w @ basis, full_matrices=False)
        keep = values < 2.0 * self.threshold
        self._pairs[key] = (left[:, keep], basis @ right_h[keep].mT)
        return 0.0 if int(info.max()) > 0 else float(values.min())

    def _schedule(self, floors: dict[int, float]) -> None:
        """Set the interval to the next search from the smallest singular values found."""
        near, call = 2.0 * self.threshold, self.n_calls
        first = not self._floors  # no rate of fall is known yet
        if first or not floors or min(floors.values()) < self.far * self.threshold:
            interval = self.refresh
        else:
            interval = min(2 * self.interval, self.max_refresh)
            for key, value in floors.items():
                previous = self._floors.get(key)
                if previous is not None and previous[0] > value and call > previous[1]:
                    rate = (previous[0] - value) / (call - previous[1])
                    interval = min(interval, int(0.5 * (value - near) / rate))
            interval = max(interval, self.refresh)
        self._floors = {key: (value, call) for key, value in floors.items()}
        self.interval, self._next_search = interval, call + interval
        self.n_searches += 1

    def search(self, flow: nn.Module) -> None:
        """Search every dense layer of ``flow`` for its small singular pairs now.

        :meth:`__call__` does this when :attr:`interval` calls have passed since the
        last search; the cost is one LU factorization per layer (``bench speed`` times
        it). The next search is scheduled from what this one found.
        """
        floors = {
            key: self._search(key, layer.barrier_matrix().detach(), layer.cached_factors())
            for key, layer in enumerate(_dense_layers(flow))
        }
        self._schedule(floors)

    def after_validation(self, kept: nn.Module) -> None:
        r"""Search the weights that were just validated, reusing their factorization.

        The trainer calls this after each validation of :attr:`Trainer.kept` (the EMA of
        the weights in a default fit). Computing the validation's log-normalizer
        factorized every dense layer of ``kept``, and :meth:`Dense.factors` cached the
        factors, so this search costs only triangular solves, :math:`O(k D^2)`, instead
        of a factorization. The pairs found for the averaged weights are then followed
        on the training weights, whose values :math:`u^\top W v` are exact Rayleigh
        quotients, and the next search of :meth:`__call__` is rescheduled from here, so a
        fit that validates every epoch of at most ``refresh`` steps never factorizes for
        the barrier at all.
        """
        self.search(kept)

    def searches_per_call(self, n_calls: int) -> float:
        """Return the searches per call over ``n_calls`` calls from a fresh start.

        The schedule is replayed with the singular values held where the last search
        found them (every ``refresh`` calls if one is below ``far * threshold``, else
        doubling intervals), so it tells what the search costs a fit of ``n_calls``
        steps in the present state; ``bench speed`` reports that share.

        Examples
        --------
        >>> barrier = SingularValueBarrier(0.2)  # no search yet: nothing known to be far
        >>> barrier.searches_per_call(1000)
        0.02
        >>> from skebflow.nn._architectures import build_fc
        >>> barrier.search(build_fc(4).double())  # identity weights: far from 0.2
        >>> barrier.searches_per_call(1000)  # searches at calls 0, 50, 150, 350 and 750
        0.005
        """
        far = bool(self._floors) and all(
            value >= self.far * self.threshold for value, _ in self._floors.values()
        )
        call, interval, searches = 0, self.refresh, 0
        while call < n_calls:
            if far and searches:
                interval = min(2 * interval, self.max_refresh)
            searches += 1
            call += interval
        return searches / n_calls

    def __call__(self, flow: nn.Module) -> Tensor:
        """Return the penalty for the current weights of ``flow``'s dense layers."""
        dense = _dense_layers(flow)
        if self.n_calls >= self._next_search or any(
            k not in self._pairs for k in range(len(dense))
        ):
            self.search(flow)
        self.n_calls += 1
        total = None
        for key, layer in enumerate(dense):
            weight = layer.weight
            left, right = self._pairs[key]
            if left.shape[1] == 0:
                continue
            values = (left.to(weight) * layer.barrier_apply(right.to(weight))).sum(0)
            term = torch.relu(1.0 - values / self.threshold).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            parameter = next(flow.parameters(), None)
            if parameter is None:
                return torch.zeros(())
            return torch.zeros((), dtype=parameter.dtype, device=parameter.device)
        return self.strength * total

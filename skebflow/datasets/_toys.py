r"""Offline two-dimensional toy data sets with exactly known densities.

Two-dimensional toys
    Every toy has a density that is known exactly, so that held-out log-likelihoods can be
    compared with the truth. All but one are an *underlying shape* convolved with an
    isotropic Gaussian of standard deviation ``smoothing`` (0.375 by default, as for the
    2-D experiments of [1]_). Two kinds of shape are used:

    * a uniform mixture over a fixed, finite set of *atoms* (points spaced evenly by arc
      length along a curve, or 8 points on a circle): the density is an equal-weight
      Gaussian mixture ("sine", "swirl", "moons", "rings", "gaussians");
    * a union of axis-aligned rectangles with the uniform distribution on it: a uniform
      rectangle convolved with a Gaussian is a product of differences of normal CDFs
      ("checkerboard").

    The atoms are spaced 0.04–0.065 apart, far below the default smoothing, so the
    mixtures are indistinguishable from a smoothed curve; for much smaller ``smoothing``
    the atoms become visible, but :func:`toy_log_density` stays exact.

    The exception is "pinwheel", a smoothed shape that is then *twisted*. Before the
    twist it is an equal-weight mixture of 5 Gaussian arms: arm :math:`k` points along
    the angle :math:`\theta_k = 2\pi k/5`, its radial coordinate is
    :math:`N(2, 0.5^2 + s^2)` and its tangential coordinate :math:`N(0, s^2)`, with
    :math:`s` = ``smoothing`` (a normal segment :math:`N(2, 0.5^2)` along the ray,
    convolved with the isotropic Gaussian of standard deviation :math:`s`; radial
    standard deviation 0.625 at the default). The twist turns every point :math:`x` by
    the angle :math:`0.6\,\lVert x\rVert` about the origin, in polar coordinates
    :math:`(r, \varphi) \mapsto (r, \varphi + 0.6 r)`. The map keeps :math:`r`, and its
    Jacobian in polar coordinates is triangular with unit diagonal; as the area element
    :math:`r\,dr\,d\varphi` is unchanged, it preserves area (Jacobian determinant 1),
    so :math:`\log p(x) = \log p_{\text{mixture}}(\text{untwist}(x))` exactly, with
    untwist the rotation by :math:`-0.6\,\lVert x\rVert`.

    All toys lie roughly in ``[-4, 4]²``. Shapes in the spirit of the toys of [2]_, [3]_
    and [4]_.

The small tables bundled with scikit-learn live in :mod:`skebflow.datasets._tables`.

Nothing is downloaded. Randomness only comes from ``random_state`` through
:func:`numpy.random.default_rng`; the global NumPy generator is never used.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.
.. [2] W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD:
   Free-form Continuous Dynamics for Scalable Reversible Generative Models", ICLR 2019.
.. [3] D. J. Rezende, S. Mohamed, "Variational Inference with Normalizing Flows",
   ICML 2015.
.. [4] M. J. Johnson, D. Duvenaud, A. B. Wiltschko, S. R. Datta, R. P. Adams, "Composing
   Graphical Models with Neural Networks for Structured Representations and Fast
   Inference", NeurIPS 2016 (the pinwheel).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["TOY_DATASETS", "make_toy", "toy_log_density"]

TOY_DATASETS: tuple[str, ...] = (
    "sine",
    "swirl",
    "checkerboard",
    "moons",
    "rings",
    "gaussians",
    "pinwheel",
)

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------
# Underlying shapes
# ---------------------------------------------------------------------------------------
def _even_on_curve(curve: np.ndarray, n_atoms: int) -> np.ndarray:
    """Resample a dense polyline ``(k, 2)`` at ``n_atoms`` points evenly spaced in arc length."""
    length = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(curve, axis=0).T))])
    s = np.linspace(0.0, length[-1], n_atoms)
    return np.column_stack([np.interp(s, length, curve[:, 0]), np.interp(s, length, curve[:, 1])])


def _sine_atoms() -> np.ndarray:
    """512 atoms on ``y = 2.5 sin(πx/2)``, ``x ∈ [-4, 4]`` (two periods)."""
    x = np.linspace(-4.0, 4.0, 20001)
    return _even_on_curve(np.column_stack([x, 2.5 * np.sin(0.5 * np.pi * x)]), 512)


def _swirl_atoms() -> np.ndarray:
    """800 atoms on a two-armed Archimedean spiral ``r = 3.8 θ/(3π)``, ``θ ∈ [π/2, 3π]``."""
    theta = np.linspace(0.5 * np.pi, 3.0 * np.pi, 20001)
    r = 3.8 * theta / (3.0 * np.pi)
    arm = _even_on_curve(np.column_stack([r * np.cos(theta), r * np.sin(theta)]), 400)
    return np.concatenate([arm, -arm])


def _moons_atoms() -> np.ndarray:
    """400 atoms on two interleaved half circles of radius 2.5, centred at the origin."""
    t = np.linspace(0.0, np.pi, 200)
    upper = np.column_stack([np.cos(t) - 0.5, np.sin(t) - 0.25])
    lower = np.column_stack([0.5 - np.cos(t), 0.25 - np.sin(t)])
    return 2.5 * np.concatenate([upper, lower])


def _rings_atoms() -> np.ndarray:
    """1,000 atoms on concentric circles of radii 1, 2, 3, 4 (100 per unit radius)."""
    rings = []
    for radius in (1, 2, 3, 4):
        t = 2.0 * np.pi * np.arange(100 * radius) / (100 * radius)
        rings.append(radius * np.column_stack([np.cos(t), np.sin(t)]))
    return np.concatenate(rings)


def _gaussians_atoms() -> np.ndarray:
    """8 atoms evenly spaced on the circle of radius 3."""
    t = 2.0 * np.pi * np.arange(8) / 8
    return 3.0 * np.column_stack([np.cos(t), np.sin(t)])


def _checkerboard_boxes() -> tuple[np.ndarray, np.ndarray]:
    """Return the 8 black squares (side 2) of a 4×4 board on ``[-4, 4]²`` as (lower, upper)."""
    lower = np.array(
        [[-4.0 + 2.0 * i, -4.0 + 2.0 * j] for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    )
    return lower, lower + 2.0


#: Pinwheel: number of arms, centre of each arm's radial normal, its standard deviation
#: before smoothing, and the twist in radians per unit of radius (module docstring).
_PINWHEEL_ARMS = 5
_PINWHEEL_RADIUS = 2.0
_PINWHEEL_RADIAL_STD = 0.5
_PINWHEEL_RATE = 0.6


def _twist(X: np.ndarray, rate: float) -> np.ndarray:
    """Turn every point ``x`` by the angle ``rate * ‖x‖`` (area-preserving)."""
    angle = rate * np.hypot(X[:, 0], X[:, 1])
    cos, sin = np.cos(angle), np.sin(angle)
    return np.column_stack([cos * X[:, 0] - sin * X[:, 1], sin * X[:, 0] + cos * X[:, 1]])


def _pinwheel_angles() -> np.ndarray:
    return 2.0 * np.pi * np.arange(_PINWHEEL_ARMS) / _PINWHEEL_ARMS


def _pinwheel_sample(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    theta = _pinwheel_angles()[rng.integers(_PINWHEEL_ARMS, size=n)]
    radial_std = math.hypot(_PINWHEEL_RADIAL_STD, sigma)
    radial = _PINWHEEL_RADIUS + radial_std * rng.standard_normal(n)
    tangential = sigma * rng.standard_normal(n)
    cos, sin = np.cos(theta), np.sin(theta)
    arms = np.column_stack([radial * cos - tangential * sin, radial * sin + tangential * cos])
    return _twist(arms, _PINWHEEL_RATE)


def _pinwheel_log_density(X: np.ndarray, sigma: float) -> np.ndarray:
    # Untwisting has Jacobian determinant 1: the density is the arms' mixture density there.
    u = _twist(X, -_PINWHEEL_RATE)
    theta = _pinwheel_angles()
    radial = u[:, :1] * np.cos(theta) + u[:, 1:] * np.sin(theta)
    tangential = u[:, 1:] * np.cos(theta) - u[:, :1] * np.sin(theta)
    radial_std = math.hypot(_PINWHEEL_RADIAL_STD, sigma)
    exponent = (
        -0.5 * ((radial - _PINWHEEL_RADIUS) / radial_std) ** 2 - 0.5 * (tangential / sigma) ** 2
    )
    log_norm = _LOG_2PI + math.log(radial_std * sigma) + math.log(_PINWHEEL_ARMS)
    return _logsumexp(exponent, axis=1) - log_norm


_ATOMS: dict[str, Callable[[], np.ndarray]] = {
    "sine": _sine_atoms,
    "swirl": _swirl_atoms,
    "moons": _moons_atoms,
    "rings": _rings_atoms,
    "gaussians": _gaussians_atoms,
}
_BOXES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "checkerboard": _checkerboard_boxes,
}


@functools.cache
def _atoms(name: str) -> np.ndarray:
    atoms = _ATOMS[name]()
    atoms.setflags(write=False)
    return atoms


@functools.cache
def _boxes(name: str) -> tuple[np.ndarray, np.ndarray]:
    lower, upper = _BOXES[name]()
    lower.setflags(write=False)
    upper.setflags(write=False)
    return lower, upper


# ---------------------------------------------------------------------------------------
# Validation and numerics
# ---------------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if name not in TOY_DATASETS:
        raise ValueError(f"Unknown toy data set {name!r}; valid names are {list(TOY_DATASETS)}.")


def _check_smoothing(smoothing: float) -> float:
    if not isinstance(smoothing, numbers.Real) or not math.isfinite(smoothing) or smoothing <= 0:
        raise ValueError(f"smoothing must be a finite number > 0, got {smoothing!r}.")
    return float(smoothing)


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """``log(1 - exp(x))`` for ``x ≤ 0``, accurate over the whole range."""
    with np.errstate(divide="ignore"):
        return np.where(
            x > -math.log(2.0),
            np.log(-np.expm1(np.minimum(x, -1e-300))),
            np.log1p(-np.exp(np.minimum(x, -math.log(2.0)))),
        )


def _log_normal_interval(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``log(Φ(hi) - Φ(lo))`` for ``lo < hi`` elementwise, stable far in either tail."""
    # Reflect intervals on the positive side so that both ends sit in the lower tail,
    # where log Φ is accurate (Φ(hi) - Φ(lo) = Φ(-lo) - Φ(-hi)).
    flip = lo > 0
    a = np.where(flip, -hi, lo)
    b = np.where(flip, -lo, hi)
    log_cdf = torch.special.log_ndtr(torch.from_numpy(np.stack([a, b])).to(torch.float64))
    log_a, log_b = log_cdf.numpy()
    return log_b + _log1mexp(log_a - log_b)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.exp(values - top).sum(axis=axis))


def _mixture_log_density(X: np.ndarray, atoms: np.ndarray, sigma: float) -> np.ndarray:
    # -‖x - a‖²/2σ² expanded so that the pairwise part is one matrix product per chunk.
    scaled_atoms = atoms / sigma
    half_sq_atoms = 0.5 * np.sum(scaled_atoms**2, axis=1)
    chunk = max(1, 2**19 // len(atoms))
    out = np.empty(len(X))
    for start in range(0, len(X), chunk):
        x = X[start : start + chunk] / sigma
        exponent = x @ scaled_atoms.T - half_sq_atoms
        out[start : start + chunk] = _logsumexp(exponent, axis=1) - 0.5 * np.sum(x**2, axis=1)
    return out - math.log(len(atoms)) - _LOG_2PI - 2.0 * math.log(sigma)


def _boxes_log_density(
    X: np.ndarray, lower: np.ndarray, upper: np.ndarray, sigma: float
) -> np.ndarray:
    # p(x) = (1 / total area) Σ_k Π_d [Φ((u_kd - x_d)/σ) - Φ((l_kd - x_d)/σ)]
    lo = (lower[None, :, :] - X[:, None, :]) / sigma
    hi = (upper[None, :, :] - X[:, None, :]) / sigma
    log_mass = _log_normal_interval(lo, hi).sum(axis=-1)
    total_area = np.prod(upper - lower, axis=1).sum()
    return _logsumexp(log_mass, axis=1) - math.log(total_area)


# ---------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------
def make_toy(
    name: str,
    n_samples: int = 1000,
    *,
    smoothing: float = 0.375,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Draw samples from a smoothed two-dimensional toy distribution.

    Parameters
    ----------
    name : str
        One of :data:`TOY_DATASETS`: ``"sine"``, ``"swirl"``, ``"checkerboard"``,
        ``"moons"``, ``"rings"``, ``"gaussians"`` or ``"pinwheel"``.
    n_samples : int, default=1000
        Number of samples, at least 1.
    smoothing : float, default=0.375
        Standard deviation of the isotropic Gaussian convolved with the underlying shape
        (the value of [1]_; for "pinwheel", before the twist, see the module docstring).
        Must be > 0.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator passed to :func:`numpy.random.default_rng`. A generator is
        used (and advanced) in place.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), dtype float64
        The samples; their exact log-density is :func:`toy_log_density`.

    Raises
    ------
    ValueError
        For an unknown name, ``smoothing <= 0`` or ``n_samples < 1``.

    See Also
    --------
    toy_log_density : The exact log-density of the same distribution.

    References
    ----------
    .. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
       Objectives", NeurIPS 2023.

    Examples
    --------
    >>> from skebflow.datasets._toys import make_toy
    >>> X = make_toy("checkerboard", 500, random_state=0)
    >>> X.shape, X.dtype
    ((500, 2), dtype('float64'))
    >>> bool(abs(X).max() < 6)
    True
    """
    _check_name(name)
    sigma = _check_smoothing(smoothing)
    if not isinstance(n_samples, numbers.Integral) or isinstance(n_samples, bool):
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}.")
    n = int(n_samples)
    rng = np.random.default_rng(random_state)
    if name == "pinwheel":
        return _pinwheel_sample(rng, n, sigma)
    if name in _BOXES:
        lower, upper = _boxes(name)
        area = np.prod(upper - lower, axis=1)
        idx = rng.choice(len(area), size=n, p=area / area.sum())
        shape = lower[idx] + (upper - lower)[idx] * rng.random((n, 2))
    else:
        atoms = _atoms(name)
        shape = atoms[rng.integers(len(atoms), size=n)]
    return shape + sigma * rng.standard_normal((n, 2))


def toy_log_density(name: str, X: np.ndarray, *, smoothing: float = 0.375) -> np.ndarray:
    """Exact log-density of a smoothed two-dimensional toy distribution.

    Parameters
    ----------
    name : str
        One of :data:`TOY_DATASETS`.
    X : array-like of shape (n_samples, 2)
        Points at which to evaluate the density.
    smoothing : float, default=0.375
        Standard deviation of the Gaussian smoothing; must match :func:`make_toy`.

    Returns
    -------
    log_density : ndarray of shape (n_samples,), dtype float64
        ``log p(x)`` in nats. Equal-weight Gaussian mixtures use a stable log-sum-exp
        (the pinwheel at the untwisted point); the checkerboard uses log-differences of
        normal CDFs evaluated in the lower tail, so that far-away points give finite,
        very negative values.

    Raises
    ------
    ValueError
        For an unknown name, ``smoothing <= 0``, or ``X`` not of shape (n, 2) or not finite.

    See Also
    --------
    make_toy : Samples from the same distribution.

    Examples
    --------
    >>> import math
    >>> from skebflow.datasets._toys import make_toy, toy_log_density
    >>> X = make_toy("gaussians", 5000, random_state=0)
    >>> logp = toy_log_density("gaussians", X)
    >>> logp.shape
    (5000,)

    The 8 modes barely overlap, so the entropy is close to ``log 8 + log(2πeσ²)``:

    >>> entropy = math.log(8) + math.log(2 * math.pi * math.e * 0.375**2)
    >>> bool(abs(-logp.mean() - entropy) < 0.05)
    True
    """
    _check_name(name)
    sigma = _check_smoothing(smoothing)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must have shape (n_samples, 2), got {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinity.")
    if name == "pinwheel":
        return _pinwheel_log_density(X, sigma)
    if name in _BOXES:
        return _boxes_log_density(X, *_boxes(name), sigma)
    return _mixture_log_density(X, _atoms(name), sigma)

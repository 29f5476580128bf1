r"""Random "teachers" whose density is known exactly, for benchmarks and tests.

:func:`make_teacher` builds a random FC energy flow (dense → smooth leaky ReLU → dense, as
the paper's FC model [1]_); :func:`sample_teacher` draws from it by exact inversion and
:func:`teacher_log_density` returns its exact log-density, so that the excess negative
log-likelihood of a model fitted to its samples is exact in any dimension.

:func:`make_mixture_teacher` builds a random Gaussian mixture with full covariances
(:class:`MixtureTeacher`), with :func:`sample_mixture_teacher` and
:func:`mixture_teacher_log_density` (Cholesky factors and a log-sum-exp): a multimodal
truth in any dimension.

Randomness only comes from ``random_state`` through :func:`numpy.random.default_rng`; the
global NumPy generator is never used.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from skebflow.nn import Dense, EnergyFlow, build_fc

__all__ = [
    "MixtureTeacher",
    "make_mixture_teacher",
    "make_teacher",
    "mixture_teacher_log_density",
    "sample_mixture_teacher",
    "sample_teacher",
    "teacher_log_density",
]


# ---------------------------------------------------------------------------------------
# Teacher flows: known densities in any dimension
# ---------------------------------------------------------------------------------------
def _random_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def make_teacher(
    n_features: int,
    *,
    n_blocks: int = 2,
    log_scale_range: float = 0.5,
    bias_scale: float = 0.5,
    random_state: int | np.random.Generator | None = None,
) -> EnergyFlow:
    r"""Build a random FC "teacher" flow whose density is known exactly.

    The flow has the architecture of the paper's FC model (``n_blocks`` dense layers
    with smooth leaky ReLUs between them, see ``skebflow.nn.build_fc``),
    so an ``EBFlowDensity(architecture="fc")`` student of the same depth can represent
    it exactly. Each dense weight is :math:`W = Q_1 \operatorname{diag}(e^{s}) Q_2^\top`
    with random orthogonal :math:`Q_1, Q_2` and :math:`s \sim U[-r, r]`
    (``r = log_scale_range``), so it is well conditioned; biases are
    :math:`N(0, b^2)` (``b = bias_scale``). The inverse of the smooth leaky ReLU stretches
    negative values by up to :math:`1/\alpha`, so samples are skewed and far from
    Gaussian.

    Parameters
    ----------
    n_features : int
        Dimension :math:`D \ge 1`.
    n_blocks : int, default=2
        Number of dense layers.
    log_scale_range : float, default=0.5
        Half-width of the uniform distribution of the log singular values.
    bias_scale : float, default=0.5
        Standard deviation of the biases.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    EnergyFlow
        A float64 flow in evaluation mode with gradients switched off. Use it with
        :func:`sample_teacher` and :func:`teacher_log_density`.

    See Also
    --------
    sample_teacher : Exact samples of a teacher.
    teacher_log_density : Its exact log-density.

    Examples
    --------
    >>> from skebflow.datasets._teachers import make_teacher, sample_teacher, teacher_log_density
    >>> teacher = make_teacher(4, random_state=0)
    >>> X = sample_teacher(teacher, 3, random_state=1)
    >>> X.shape, teacher_log_density(teacher, X).shape
    ((3, 4), (3,))
    """
    if not isinstance(n_features, numbers.Integral) or isinstance(n_features, bool):
        raise ValueError(f"n_features must be an integer >= 1, got {n_features!r}.")
    if n_features < 1:
        raise ValueError(f"n_features must be an integer >= 1, got {n_features!r}.")
    rng = np.random.default_rng(random_state)
    d = int(n_features)
    flow = build_fc(d, n_blocks=n_blocks).double()
    with torch.no_grad():
        for layer in flow.layers:
            if isinstance(layer, Dense):
                scales = np.exp(rng.uniform(-log_scale_range, log_scale_range, d))
                weight = (_random_orthogonal(rng, d) * scales) @ _random_orthogonal(rng, d).T
                layer.weight.copy_(torch.from_numpy(weight))
                layer.bias.copy_(torch.from_numpy(bias_scale * rng.standard_normal(d)))
    return flow.requires_grad_(False).eval()


def sample_teacher(
    teacher: EnergyFlow,
    n_samples: int = 1000,
    *,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Draw exact samples from a teacher flow by inverting Gaussian draws.

    Parameters
    ----------
    teacher : EnergyFlow
        A flow from :func:`make_teacher` (any float64 :class:`~skebflow.nn.EnergyFlow` works).
    n_samples : int, default=1000
        Number of samples, at least 1.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator of the base draws, passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float64
        The samples; their exact log-density is :func:`teacher_log_density`.

    Examples
    --------
    >>> from skebflow.datasets._teachers import make_teacher, sample_teacher
    >>> teacher = make_teacher(2, random_state=0)
    >>> sample_teacher(teacher, 5, random_state=0).shape
    (5, 2)
    """
    if not isinstance(n_samples, numbers.Integral) or isinstance(n_samples, bool):
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}.")
    rng = np.random.default_rng(random_state)
    parameter = next(teacher.parameters())
    z = torch.from_numpy(rng.standard_normal((int(n_samples), teacher.features)))
    with torch.no_grad():
        x = teacher.inverse(z.to(device=parameter.device, dtype=parameter.dtype))
    return x.to(torch.float64).cpu().numpy()


def teacher_log_density(teacher: EnergyFlow, X: np.ndarray) -> np.ndarray:
    """Exact log-density of a teacher flow.

    Parameters
    ----------
    teacher : EnergyFlow
        A flow from :func:`make_teacher`.
    X : array-like of shape (n_samples, n_features)
        Points at which to evaluate the density.

    Returns
    -------
    log_density : ndarray of shape (n_samples,), dtype float64
        ``log p(x)`` in nats.

    Examples
    --------
    >>> import math
    >>> from skebflow.datasets._teachers import make_teacher, teacher_log_density
    >>> teacher = make_teacher(1, n_blocks=1, random_state=0)  # a 1-D Gaussian
    >>> w, b = float(teacher.layers[0].weight), float(teacher.layers[0].bias)
    >>> expected = -0.5 * (w * 0.3 + b) ** 2 - 0.5 * math.log(2 * math.pi) + math.log(abs(w))
    >>> bool(abs(teacher_log_density(teacher, [[0.3]])[0] - expected) < 1e-12)
    True
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != teacher.features:
        raise ValueError(f"X must have shape (n_samples, {teacher.features}), got {X.shape}.")
    parameter = next(teacher.parameters())
    with torch.no_grad():
        log_prob = teacher.log_prob(torch.from_numpy(X).to(parameter))
    return log_prob.to(torch.float64).cpu().numpy()


# ---------------------------------------------------------------------------------------
# Gaussian-mixture teachers: multimodal known densities in any dimension
# ---------------------------------------------------------------------------------------
def _check_count(value: object, what: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class MixtureTeacher:
    """A Gaussian mixture with full covariances (read-only arrays, float64).

    Attributes
    ----------
    weights : ndarray of shape (n_components,)
        Mixing weights, positive, summing to 1.
    means : ndarray of shape (n_components, n_features)
        Component means.
    covariances : ndarray of shape (n_components, n_features, n_features)
        Symmetric positive-definite component covariances.

    Examples
    --------
    >>> import numpy as np
    >>> teacher = MixtureTeacher(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    >>> teacher.n_features, teacher.n_components
    (2, 1)
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    def __post_init__(self) -> None:
        for name in ("weights", "means", "covariances"):
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covariances.shape != (k, d, d):
            raise ValueError("weights, means and covariances have inconsistent shapes.")

    @property
    def n_features(self) -> int:
        """Dimension :math:`D`."""
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        """Number of components."""
        return self.means.shape[0]


def make_mixture_teacher(
    n_features: int,
    n_components: int = 5,
    *,
    separation: float = 2.5,
    random_state: int | np.random.Generator | None = None,
) -> MixtureTeacher:
    r"""Build a random Gaussian mixture with full covariances.

    Covariances are :math:`\Sigma_k = A_k A_k^\top / D + 0.05 I` with :math:`A_k` a
    :math:`D \times D` matrix of standard normals, so each component has average
    variance about 1.05 per coordinate and eigenvalues between about 0.05 and 4
    (Marchenko–Pastur): elongated, differently oriented components. Means are
    :math:`N(0, s^2 I)` with :math:`s = \text{separation} / \sqrt{2D}`, so two means lie
    about ``separation`` (2.5 by default) apart, i.e. roughly 2–3 component standard
    deviations: the components overlap somewhat. Weights are Dirichlet(4, ..., 4).

    Parameters
    ----------
    n_features : int
        Dimension :math:`D \ge 1`.
    n_components : int, default=5
        Number of components.
    separation : float, default=2.5
        Typical distance between two means.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    MixtureTeacher
        Use it with :func:`sample_mixture_teacher` and :func:`mixture_teacher_log_density`.

    Examples
    --------
    >>> from skebflow.datasets._teachers import make_mixture_teacher
    >>> teacher = make_mixture_teacher(3, random_state=0)
    >>> teacher.means.shape, teacher.covariances.shape, round(float(teacher.weights.sum()), 12)
    ((5, 3), (5, 3, 3), 1.0)
    """
    d = _check_count(n_features, "n_features")
    k = _check_count(n_components, "n_components")
    rng = np.random.default_rng(random_state)
    weights = rng.dirichlet(np.full(k, 4.0))
    means = separation / math.sqrt(2.0 * d) * rng.standard_normal((k, d))
    a = rng.standard_normal((k, d, d))
    covariances = a @ a.transpose(0, 2, 1) / d + 0.05 * np.eye(d)
    return MixtureTeacher(weights, means, covariances)


def sample_mixture_teacher(
    teacher: MixtureTeacher,
    n_samples: int = 1000,
    *,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Draw exact samples from a Gaussian-mixture teacher.

    Parameters
    ----------
    teacher : MixtureTeacher
        From :func:`make_mixture_teacher`.
    n_samples : int, default=1000
        Number of samples, at least 1.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator of the draws, passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float64
        The samples; their exact log-density is :func:`mixture_teacher_log_density`.

    Examples
    --------
    >>> from skebflow.datasets._teachers import make_mixture_teacher, sample_mixture_teacher
    >>> teacher = make_mixture_teacher(2, random_state=0)
    >>> sample_mixture_teacher(teacher, 4, random_state=0).shape
    (4, 2)
    """
    n = _check_count(n_samples, "n_samples")
    rng = np.random.default_rng(random_state)
    labels = rng.choice(teacher.n_components, size=n, p=teacher.weights)
    z = rng.standard_normal((n, teacher.n_features))
    x = np.empty_like(z)
    for k, factor in enumerate(np.linalg.cholesky(teacher.covariances)):
        chosen = labels == k
        x[chosen] = teacher.means[k] + z[chosen] @ factor.T
    return x


def mixture_teacher_log_density(teacher: MixtureTeacher, X: np.ndarray) -> np.ndarray:
    r"""Exact log-density of a Gaussian-mixture teacher.

    :math:`\log \sum_k w_k N(x; \mu_k, \Sigma_k)` with each Gaussian through the
    Cholesky factor :math:`L_k` (a triangular solve for the Mahalanobis term,
    :math:`\log\det \Sigma_k = 2 \sum \log \operatorname{diag} L_k`) and a
    log-sum-exp over components, so points far from every mode give finite values.

    Parameters
    ----------
    teacher : MixtureTeacher
        From :func:`make_mixture_teacher`.
    X : array-like of shape (n_samples, n_features)
        Points at which to evaluate the density.

    Returns
    -------
    log_density : ndarray of shape (n_samples,), dtype float64
        ``log p(x)`` in nats.

    Examples
    --------
    >>> import math
    >>> import numpy as np
    >>> from skebflow.datasets._teachers import MixtureTeacher, mixture_teacher_log_density
    >>> unit = MixtureTeacher(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    >>> float(mixture_teacher_log_density(unit, [[0.0, 0.0]])[0]) == -math.log(2 * math.pi)
    True
    """
    X = np.asarray(X, dtype=np.float64)
    d = teacher.n_features
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X must have shape (n_samples, {d}), got {X.shape}.")
    factors = torch.linalg.cholesky(torch.from_numpy(np.array(teacher.covariances)))
    diff = torch.from_numpy(X)[None] - torch.from_numpy(np.array(teacher.means))[:, None]
    solved = torch.linalg.solve_triangular(factors, diff.transpose(1, 2), upper=False)
    mahalanobis = (solved**2).sum(dim=1).numpy()  # (n_components, n_samples)
    log_det = 2.0 * torch.log(torch.diagonal(factors, dim1=1, dim2=2)).sum(dim=1).numpy()
    log_terms = np.log(teacher.weights)[:, None] - 0.5 * (
        mahalanobis + log_det[:, None] + d * math.log(2.0 * math.pi)
    )
    top = log_terms.max(axis=0)
    return top + np.log(np.exp(log_terms - top).sum(axis=0))

r"""Random FC "teacher" flows whose density is known exactly, for benchmarks and tests.

:func:`make_teacher` builds a random FC energy flow (dense → smooth leaky ReLU → dense, as
the paper's FC model [1]_); :func:`sample_teacher` draws from it by exact inversion and
:func:`teacher_log_density` returns its exact log-density, so that the excess negative
log-likelihood of a model fitted to its samples is exact in any dimension.

Randomness only comes from ``random_state`` through :func:`numpy.random.default_rng`; the
global NumPy generator is never used.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from skebflow.architectures import build_fc
from skebflow.flow import EnergyFlow
from skebflow.layers import Dense

__all__ = ["make_teacher", "sample_teacher", "teacher_log_density"]


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
    with smooth leaky ReLUs between them, see :func:`skebflow.architectures.build_fc`),
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
    >>> from skebflow.teachers import make_teacher, sample_teacher, teacher_log_density
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
        A flow from :func:`make_teacher` (any float64 :class:`EnergyFlow` works).
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
    >>> from skebflow.teachers import make_teacher, sample_teacher
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
    >>> from skebflow.teachers import make_teacher, teacher_log_density
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

"""The scikit-learn peers of the benchmarks and the demo: a tuned KDE and Gaussian mixtures.

This is the one copy of these baselines; ``bench nll``, ``bench quality``, the demo and
the learning tests all use it. Each peer is ``fit(train, seed) -> model`` with
``score_samples`` in the units of the data.

* :func:`kde_cv`: a Gaussian ``KernelDensity`` on standardized data, its bandwidth chosen
  by 3-fold cross-validation on a coarse and then a fine grid (the criterion computed
  exactly for a whole grid at once by
  :func:`skebflow.bench._peers.kde_cv_log_likelihoods`).
* :func:`gmm_bic`: a full-covariance ``GaussianMixture`` on standardized data with the
  number of components chosen by BIC.
* :func:`gmm_cv`: a full-covariance ``GaussianMixture`` with the number of components
  chosen by 3-fold cross-validation (``bench nll``'s baseline).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from skebflow.bench._peers import kde_cv_log_likelihoods, standardize

__all__ = [
    "BASELINES",
    "BIC_COMPONENTS",
    "KDE_BANDWIDTHS",
    "QUALITY_PEERS",
    "Standardized",
    "gmm_bic",
    "gmm_cv",
    "kde_cv",
]


class Standardized:
    """A density fitted to standardized data, scored in the units of the data.

    Wraps the scikit-learn peers of this module.

    Attributes
    ----------
    model : object
        The fitted scikit-learn density (``score_samples``) of ``(x - mean) / scale``.
    mean, scale : ndarray of shape (n_features,)
        Training mean and standard deviation (1 for a constant column).
    info : dict
        What the model selection chose (recorded by the benchmark).
    """

    def __init__(self, model: object, mean: np.ndarray, scale: np.ndarray, info: dict) -> None:
        self.model, self.mean, self.scale, self.info = model, mean, scale, info

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """``log p(x) = log q((x - mean) / scale) - sum(log scale)``, in nats."""
        z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return self.model.score_samples(z) - float(np.log(self.scale).sum())

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """Draw ``n_samples`` rows in the units of the data.

        A ``GaussianMixture`` draws from its own ``random_state`` (scikit-learn's API);
        a ``KernelDensity`` from ``random_state``.
        """
        if isinstance(self.model, GaussianMixture):
            z = self.model.sample(n_samples)[0]
        else:
            z = self.model.sample(n_samples, random_state=random_state)
        return self.mean + self.scale * z


#: Numbers of components tried by the cross-validated GaussianMixture of ``bench nll``.
_GMM_COMPONENTS = (1, 2, 4, 8, 16)


#: Coarse bandwidth grid of the KDE peer, in units of the standardized data.
KDE_BANDWIDTHS = np.logspace(-2.0, 0.5, 11)


def kde_cv(train: np.ndarray, seed: int) -> Standardized:
    """KernelDensity on standardized data, bandwidth by 3-fold cross-validation.

    The cross-validated log-likelihood (``GridSearchCV``'s criterion, computed exactly
    by :func:`kde_cv_log_likelihoods`) is maximized over :data:`KDE_BANDWIDTHS` (ratio
    1.78), then over 7 values from the best's lower to its upper neighbour (ratio
    1.21); the final ``KernelDensity`` is fitted to all of ``train``.
    """
    z, mean, scale = standardize(train)
    folds = list(KFold(3, shuffle=True, random_state=seed).split(z))

    def cv(bandwidths: np.ndarray) -> np.ndarray:
        return sum(kde_cv_log_likelihoods(z[a], z[b], bandwidths) for a, b in folds)

    coarse = cv(KDE_BANDWIDTHS)
    best = KDE_BANDWIDTHS[int(np.argmax(coarse))]
    fine = best * np.logspace(-0.25, 0.25, 7)
    bandwidth = float(fine[int(np.argmax(cv(fine)))])
    edge = bool(np.argmax(coarse) in (0, len(KDE_BANDWIDTHS) - 1))
    info = {"bandwidth": bandwidth, "bandwidth_at_grid_edge": edge}
    return Standardized(KernelDensity(bandwidth=bandwidth).fit(z), mean, scale, info)


def gmm_cv(train: np.ndarray, seed: int) -> GaussianMixture:
    """Full-covariance GaussianMixture, number of components by 3-fold cross-validation."""
    components = [k for k in _GMM_COMPONENTS if k * (train.shape[1] + 1) < len(train) / 2]
    model = GaussianMixture(covariance_type="full", random_state=seed, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(model, {"n_components": components or [1]}, cv=3)
        return search.fit(train).best_estimator_


#: Numbers of components tried by the BIC-selected GaussianMixture.
BIC_COMPONENTS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def gmm_bic(train: np.ndarray, seed: int) -> Standardized:
    """Full-covariance GaussianMixture on standardized data, components by BIC.

    ``k`` runs through :data:`BIC_COMPONENTS` while there are at least ``2 (D + 1)``
    samples per component (at least ``k = 1``; the cap of ``bench nll``) and stops after
    two values in a row that do not lower the BIC.
    ``max_iter=200``, ``n_init=1``, seeded; standardizing only makes the default
    ``reg_covar`` relative to each column's spread (the model is affine-equivariant).
    """
    z, mean, scale = standardize(train)
    n, d = z.shape
    grid = [k for k in BIC_COMPONENTS if k * (d + 1) < n / 2] or [1]
    best, best_bic, bics, worse = None, math.inf, {}, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in grid:
            model = GaussianMixture(k, covariance_type="full", max_iter=200, random_state=seed)
            bics[k] = float(model.fit(z).bic(z))
            if bics[k] < best_bic:
                best, best_bic, worse = model, bics[k], 0
            else:
                worse += 1
                if worse == 2:
                    break
    info = {"n_components": best.n_components, "bic": bics, "grid_max": grid[-1]}
    return Standardized(best, mean, scale, info)


#: The scikit-learn baselines of ``bench nll``.
BASELINES: dict[str, Callable[[np.ndarray, int], object]] = {
    "KernelDensity": kde_cv,
    "GaussianMixture": gmm_cv,
}
#: The scikit-learn peers of ``bench quality`` (the zuko NSF lives in :mod:`skebflow.bench._peers`).
QUALITY_PEERS: dict[str, Callable[[np.ndarray, int], object]] = {
    "KernelDensity": kde_cv,
    "GaussianMixture": gmm_bic,
}

"""``EBFlowImputer``: a scikit-learn imputer that fills NaNs from an energy-based flow.

References
----------
.. [1] M. A. Tanner, W. H. Wong, "The calculation of posterior distributions by data
   augmentation", JASA 82(398), 1987 (alternating imputation draws and refits).
.. [2] S. van Buuren, K. Groothuis-Oudshoorn, "mice: Multivariate Imputation by Chained
   Equations in R", Journal of Statistical Software 45(3), 2011.
"""

from __future__ import annotations

import warnings
from numbers import Integral
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from skebflow.estimators._density import EBFlowDensity, unchanged_on_error
from skebflow.estimators._model_file import ModelFileMixin
from skebflow.estimators._record import imputer_record
from skebflow.sampling import N_STEPS
from skebflow.utils import seed_from_random_state

__all__ = ["N_ROUNDS", "EBFlowImputer"]

#: Fits of the flow in ``fit`` (rounds of draw-and-refit). One: a second round was no
#: better in the example and cost more time (the figures: ``docs/imputation.md``).
N_ROUNDS = 1
#: Rounds of the chained-equations imputer that draws the initial fill.
_INITIAL_ITER = 10


def _initial_fill(X: np.ndarray, missing: np.ndarray, est: object, seed: int) -> np.ndarray:
    """Draws of ``IterativeImputer(sample_posterior=True)`` inside the flow's support.

    For a bounded (``preprocessing="logit"``) flow the draws are clipped to each
    column's observed range (inside the bounds, which the observed values must respect),
    and for a dequantized flow rounded to integers, so that the first fit sees data it
    accepts.
    """
    initial = IterativeImputer(sample_posterior=True, max_iter=_INITIAL_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        filled = initial.fit_transform(X)
    if getattr(est, "preprocessing", None) == "logit":
        # clipped after drawing: IterativeImputer's min_value < max_value fails on a
        # constant column
        filled = np.clip(filled, np.nanmin(X, axis=0), np.nanmax(X, axis=0))
    if getattr(est, "dequantize", False):
        filled = np.where(missing, np.round(filled), X)
    return filled


class EBFlowImputer(ModelFileMixin, OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Fill missing values (NaN) with the conditional mean under an energy-based flow.

    ``fit`` trains a density on data with missing entries: the NaNs are first filled
    with draws of scikit-learn's ``IterativeImputer`` (``sample_posterior=True``: draws,
    not means, so that the flow sees no spikes at the fill values) and the flow is
    fitted. With ``n_rounds > 1`` (data augmentation) the NaNs are then redrawn from
    the flow's conditional (:meth:`EBFlowDensity.impute` with ``sample_posterior=True``)
    and the flow is refitted with a warm start, ``n_rounds`` fits in all. Every training row is
    used, however many entries it misses. For a bounded flow (``preprocessing="logit"``)
    the initial draws are clipped to each column's observed range, and for a dequantized
    one rounded to integers, so that pixel data can be imputed. ``transform`` fills the
    NaNs of new data with the fitted flow's conditional mean (MCMC with the observed
    entries clamped).

    Parameters
    ----------
    estimator : EBFlowDensity or None, default=None
        The density (cloned; any estimator with ``fit`` and ``impute``). ``None``
        means ``EBFlowDensity()``.
    n_rounds : int, default=1
        Fits of the flow: each after the first continues the previous one
        (``warm_start=True``) on data whose NaNs were redrawn from the flow. One round
        fits the flow once, to the initial draws.
    sample_posterior : bool, default=False
        ``transform`` fills one draw from the conditional instead of its mean.
    n_steps : int, default=200
        MCMC steps per chain (``EBFlowDensity.impute``).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial fill, the flows and the chains. When not None every
        ``random_state`` parameter of the estimator's clone is set from it. A fitted
        imputer is a deterministic function: every ``transform`` uses the same seed,
        drawn once in ``fit``.

    Attributes
    ----------
    estimator_ : EBFlowDensity
        The fitted density.
    report_ : ImputationReport or None
        Diagnostics of the chains that filled the training data after the last fit
        (acceptance rates, split-R̂; ``None`` when the training data had no NaN).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit (only when ``X`` has string column names).

    See Also
    --------
    sklearn.impute.IterativeImputer : Chained regressions.
    sklearn.impute.KNNImputer : Nearest-neighbour means.
    EBFlowDensity.impute : The imputation of a fitted density.

    Notes
    -----
    A column with no observed value in ``fit`` is an error (there is nothing to learn
    its distribution from). The conditional mean of a row depends on the random
    stream, which is shared by the rows of one call: a row imputed alone and within a
    batch gets values that differ by Monte-Carlo noise (``docs/imputation.md``).

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow import EBFlowDensity, EBFlowImputer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=300)
    >>> X[::10, 1] = np.nan
    >>> flow = EBFlowDensity(max_iter=3, n_blocks=1, hidden_features=8)
    >>> imputer = EBFlowImputer(flow, n_rounds=1, n_steps=20, random_state=0).fit(X)
    >>> filled = imputer.transform([[1.0, np.nan]])
    >>> filled.shape, bool(filled[0, 1] > 0.3)
    ((1, 2), True)
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [HasMethods(["fit", "impute"]), None],
        "n_rounds": [Interval(Integral, 1, None, closed="left")],
        "sample_posterior": ["boolean"],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator: object = None,
        *,
        n_rounds: int = N_ROUNDS,
        sample_posterior: bool = False,
        n_steps: int = N_STEPS,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.estimator = estimator
        self.n_rounds = n_rounds
        self.sample_posterior = sample_posterior
        self.n_steps = n_steps
        self.random_state = random_state

    def _estimator(self, seed: int | None) -> object:
        est = clone(self.estimator) if self.estimator is not None else EBFlowDensity()
        if seed is not None:
            params = est.get_params()
            est.set_params(**{key: seed for key in params if key.endswith("random_state")})
        return est

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: object, y: object = None) -> EBFlowImputer:
        """Fit the flow to ``X`` by alternating imputation draws and warm refits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data with NaN for the missing entries; at least 2 rows.
        y : None
            Ignored.

        Returns
        -------
        self : EBFlowImputer

        Notes
        -----
        A fit that raises (an invalid parameter of the estimator, bad data, Ctrl-C)
        leaves the imputer as it was: fitted with its previous model, or not fitted
        (``transform`` then raises ``NotFittedError``).
        """
        self._fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_transform(self, X: object, y: object = None, **fit_params: object) -> np.ndarray:
        """Fit, then fill the NaNs of ``X`` (the same values as ``fit(X).transform(X)``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data with NaN for the missing entries.
        y : None
            Ignored.
        **fit_params : dict
            Unused; present for API consistency.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        return self._fit(X)

    def _fit(self, X: object) -> np.ndarray:
        """Fit (``fit`` and ``fit_transform``); a fit that raises changes nothing."""
        with unchanged_on_error(self):
            return self._fit_and_fill(X)

    def _fit_and_fill(self, X: object) -> np.ndarray:
        X = validate_data(
            self,
            X,
            dtype=[np.float64, np.float32],
            ensure_all_finite="allow-nan",
            ensure_min_samples=2,
        ).astype(np.float64)
        missing = np.isnan(X)
        empty = np.flatnonzero(missing.all(axis=0))
        if len(empty):
            raise ValueError(
                f"Column(s) {empty.tolist()} of X have no observed value; drop them before "
                "imputing."
            )
        rng = np.random.RandomState(seed_from_random_state(self.random_state) % 2**32)
        seed = None if self.random_state is None else int(rng.randint(2**31 - 1))
        self._seed = int(rng.randint(2**31 - 1))  # every transform's chains
        est = self._estimator(seed)
        filled = X
        if missing.any():
            filled = _initial_fill(X, missing, est, int(rng.randint(2**31 - 1)))
        for round_ in range(self.n_rounds if missing.any() else 1):
            if round_ > 0:
                est.set_params(warm_start=True)
                with warnings.catch_warnings():  # draws of a model still in training
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    filled = est.impute(
                        X,
                        sample_posterior=True,
                        n_steps=self.n_steps,
                        n_chains=1,
                        random_state=int(rng.randint(2**31 - 1)),
                    )
            est.fit(filled)
        self.estimator_ = est
        self.report_ = None
        if not missing.any():
            return X
        out, self.report_ = self._impute(X, return_report=True)
        return out

    def __sklearn_is_fitted__(self) -> bool:
        """Whether the density was fitted (``estimator_``), as ``check_is_fitted`` asks.

        ``n_features_in_`` alone does not say so: ``validate_data`` sets it before the
        density's fit, which may fail.
        """
        return hasattr(self, "estimator_")

    def _impute(self, X: np.ndarray, **kwargs: object) -> object:
        return self.estimator_.impute(
            X,
            sample_posterior=self.sample_posterior,
            n_steps=self.n_steps,
            random_state=self._seed,
            **kwargs,
        )

    def transform(self, X: object) -> np.ndarray:
        """Fill the NaNs of ``X`` from the fitted flow; the other entries are unchanged.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data with NaN for the missing entries (``inf`` is an error).

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The conditional mean (or one draw with ``sample_posterior=True``) in the
            NaN entries, float64; the observed entries bit for bit.
        """
        check_is_fitted(self)
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan", reset=False
        ).astype(np.float64)
        if not np.isnan(X).any():
            return X
        return self._impute(X)

    # --------------------------------------------------------------- persistence
    def _model_record(self) -> dict:
        """Return the plain record a model file holds (``save``: ``ModelFileMixin``)."""
        return imputer_record(self, EBFlowDensity)

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type is private
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags

"""``EBFlowOutlierDetector``: outlier detection by thresholding a log-density.

Any density estimator with ``fit`` and ``score_samples`` (``EBFlowDensity`` by default,
but also ``KernelDensity`` or ``GaussianMixture``) becomes an outlier detector with
scikit-learn's conventions (those of ``IsolationForest`` and ``LocalOutlierFactor``):
``score_samples`` is higher for more normal points, ``decision_function`` is negative for
outliers and ``predict`` returns +1 for inliers and -1 for outliers.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.
.. [2] F. T. Liu, K. M. Ting, Z.-H. Zhou, "Isolation Forest", ICDM 2008.
.. [3] R. J. Hyndman, "Computing and Graphing Highest Density Regions", The American
   Statistician 50(2), 120–126, 1996.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.model_selection import KFold
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from skebflow.estimators._density import EBFlowDensity, unchanged_on_error
from skebflow.estimators._model_file import ModelFileMixin
from skebflow.estimators._record import detector_record

__all__ = [
    "AUTO_CONTAMINATION",
    "CALIBRATION_FOLDS",
    "CALIBRATION_MAX_VALIDATION_FRACTION",
    "CALIBRATION_MIN_FLAGGED",
    "EBFlowOutlierDetector",
]

#: The contamination that ``contamination="auto"`` stands for: the threshold is the
#: 1 % quantile of the training log-densities, the plug-in estimate of the boundary of
#: the fitted density's 99 % highest-density region (Hyndman 1996).
AUTO_CONTAMINATION = 0.01
#: The threshold is a quantile of held-out scores: the density's own validation rows when
#: their number times the contamination is at least this (30 expected flags among them),
#: else out-of-fold scores from this many folds. Fewer validation rows place the quantile
#: too roughly, and early stopping picked the model on them: at 10 expected flags, 100
#: validation rows of moons flagged 16.3 % of fresh inliers at 0.1 (`bench detector`,
#: ``docs/user_guide_details.md``), where out-of-fold scores stayed within 2.6 points.
CALIBRATION_MIN_FLAGGED = 30.0
CALIBRATION_FOLDS = 5
#: The default flow (``estimator=None``) holds out up to this share of the rows for early
#: stopping, instead of its usual ``validation_fraction``, when that is what it takes for
#: the validation rows to set the threshold: one fit instead of ``1 + CALIBRATION_FOLDS``
#: (10,000 rows at ``contamination="auto"``: 3,000 validation rows, 30 expected flags).
CALIBRATION_MAX_VALIDATION_FRACTION = 0.3


class EBFlowOutlierDetector(ModelFileMixin, OutlierMixin, BaseEstimator):
    """Outlier detection by thresholding the log-density of a density estimator.

    A clone of ``estimator`` is fitted to ``X``; a point is an outlier when its
    log-density falls below ``offset_``, a low quantile of held-out log-densities of the
    training rows (scored by a model that did not train on them, see ``calibration_``).
    With an energy-based normalizing flow (the default, :class:`EBFlowDensity`) the
    log-density is exact and normalized, so scores of different points, and of models
    fitted to the same data, are directly comparable.

    Parameters
    ----------
    estimator : estimator object or None, default=None
        The density estimator: any object with ``fit(X)`` and ``score_samples(X)``
        returning log-densities (``KernelDensity``, ``GaussianMixture``, ...). It is
        cloned at fit time. ``None`` means ``EBFlowDensity()``.
    contamination : "auto" or float, default="auto"
        Expected proportion of outliers in the data; it sets the threshold: ``offset_``
        is the ``100 * contamination`` percentile of held-out log-densities of the
        training rows, so about that fraction of fresh data like the training set is
        flagged (measured in ``docs/user_guide_details.md``, "Outlier detection").

        - If float, it must lie in (0, 0.5].
        - If "auto", the threshold is the 1 % quantile of the held-out log-densities,
          exactly as ``contamination=0.01``. A log-density has no threshold that holds
          whatever the data: it changes by ``-log|det A|`` when ``X`` is mapped to
          ``A X + b``, so a fixed offset, as ``IsolationForest`` uses with "auto",
          would depend on the units of ``X``. The quantile rule is unit-free: every
          prediction is unchanged by an invertible affine change of units. The 1 %
          quantile of the fitted density evaluated at the training points is the
          plug-in estimate of the level whose upper set is the density's 99 %
          highest-density region (Hyndman 1996), so "auto" flags the points outside
          the region holding 99 % of the probability mass: a 1 % false-alarm rate on
          data like the training set, if the density fits. It needs only
          ``score_samples``, draws no random numbers, and works with any density
          estimator.
    novelty : bool, default=True
        Whether the detector is for new data (novelty detection, the default) or for
        the training data itself (outlier detection), as in ``LocalOutlierFactor``. It
        decides which log-densities the threshold is a quantile of.

        - ``True``: scores of training rows by a model that did not train on them
          (``calibration_`` says how), so that ``predict`` flags about
          ``contamination`` of fresh data like the training set. On its own training
          rows the detector then flags fewer than ``contamination``, so ``fit_predict``
          is not available: use ``fit(X).predict(X_new)``.
        - ``False``: the training rows' own scores, scikit-learn's rule for outlier
          detection (that of ``IsolationForest``): ``fit_predict`` flags exactly
          ``contamination`` of the training rows (ties aside), but a flexible density
          scores its training rows too high, so fresh inliers are flagged several times
          more often. Cheaper: one fit instead of up to six.
    random_state : int, RandomState instance or None, default=None
        Seeds the density estimator (and, when an int, the folds of a cross-fitted
        calibration; else they are shuffled with seed 0), so that fits with the same
        ``random_state`` give the same model, threshold and
        predictions. With the default estimator it is
        passed on as it is: ``EBFlowDensity(random_state=random_state)``. A given
        ``estimator`` is seeded as ``BaggingClassifier`` seeds its base estimators:
        when ``random_state`` is not None, every ``random_state`` parameter of its
        clone (nested ones such as ``ebflowdensity__random_state`` of a pipeline
        included) is set to an int drawn from ``check_random_state(random_state)``;
        when it is None the clone keeps the estimator's own ``random_state``. An
        estimator without a ``random_state`` parameter is left as it is.

    Attributes
    ----------
    estimator_ : estimator object
        The fitted clone of ``estimator`` (``EBFlowDensity(random_state=random_state)``
        when ``None``), seeded as ``random_state`` says.
    offset_ : float
        The threshold on the log-density: ``decision_function = score_samples -
        offset_``, negative for outliers.
    calibration_ : str
        Which held-out scores set ``offset_``: ``"validation"`` (the rows an
        ``EBFlowDensity`` held out for early stopping, when their number times
        ``contamination`` is at least 30; the default flow holds out up to 30 % of the
        rows to get there), ``"cross-fitted"`` (every training row scored
        by one of 5 models fitted without its fold: 5 more fits) or ``"training"``
        (``novelty=False``, or fewer than 10 rows: the training scores themselves).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit (only when ``X`` has string column names).

    See Also
    --------
    EBFlowDensity : The default density estimator.
    sklearn.ensemble.IsolationForest : Outlier detection by random partitioning.
    sklearn.neighbors.LocalOutlierFactor : Outlier detection by local density ratios.

    Notes
    -----
    A flexible density estimator scores its own training points higher than new points
    from the same distribution (breast cancer, 250 training rows: 62.0 nats on them,
    50.4 on fresh ones), so a threshold taken from the training scores flagged 13.9 %
    of fresh inliers at ``contamination="auto"`` and 33 % at 0.05. The threshold is
    therefore a quantile of held-out scores (``calibration_``).

    A log-density of -inf (zero density, as ``KernelDensity(kernel="tophat")`` gives
    outside its support) is the most outlying score there is: ``decision_function`` is
    -inf and ``predict`` -1 there. Training points may have zero density too, as long as
    the ``100 * contamination`` percentile of the training log-densities stays finite;
    otherwise ``fit`` raises a ValueError.

    References
    ----------
    .. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with
       Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.
    .. [2] F. T. Liu, K. M. Ting, Z.-H. Zhou, "Isolation Forest", ICDM 2008.
    .. [3] R. J. Hyndman, "Computing and Graphing Highest Density Regions",
       The American Statistician 50(2), 120–126, 1996.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow import EBFlowDensity, EBFlowOutlierDetector
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(size=(95, 2)), rng.normal(8.0, 0.5, size=(5, 2))])
    >>> flow = EBFlowDensity(max_iter=2, random_state=0)
    >>> detector = EBFlowOutlierDetector(estimator=flow, contamination=0.05).fit(X)
    >>> labels = detector.predict(X)
    >>> int((labels == -1).sum())
    5
    >>> bool(np.all(labels[-5:] == -1))
    True
    >>> scores = detector.decision_function(X)
    >>> bool(np.allclose(scores, detector.score_samples(X) - detector.offset_))
    True

    Points where the density is zero are outliers:

    >>> from sklearn.neighbors import KernelDensity
    >>> tophat = KernelDensity(kernel="tophat", bandwidth=2.0)
    >>> detector = EBFlowOutlierDetector(estimator=tophat).fit(X)
    >>> detector.decision_function([[50.0, 50.0]]), detector.predict([[50.0, 50.0]])
    (array([-inf]), array([-1]))
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [HasMethods(["fit", "score_samples"]), None],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "novelty": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        estimator: object = None,
        contamination: str | float = "auto",
        novelty: bool = True,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.estimator = estimator
        self.contamination = contamination
        self.novelty = novelty
        self.random_state = random_state

    def _estimator(self) -> object:
        """Return the unfitted density estimator: ``estimator`` or the default flow."""
        if self.estimator is None:
            return EBFlowDensity(random_state=self.random_state)
        return self.estimator

    def _make_estimator(self, n_samples: int, contamination: float) -> object:
        """Return the unfitted density estimator to fit, seeded by ``random_state``.

        The default flow holds out enough rows for its validation scores to set the
        threshold when at most :data:`CALIBRATION_MAX_VALIDATION_FRACTION` suffices.
        """
        if self.estimator is None:
            # A fresh default, not a clone: a RandomState instance is shared, not copied,
            # so that successive fits draw different seeds from it.
            estimator = self._estimator()
            if self.novelty:
                needed = CALIBRATION_MIN_FLAGGED / (contamination * n_samples)
                usual = estimator.validation_fraction
                if usual < needed <= CALIBRATION_MAX_VALIDATION_FRACTION:
                    # a little above, so that rounding the split keeps enough rows
                    fraction = min(needed * 1.01, CALIBRATION_MAX_VALIDATION_FRACTION)
                    estimator.set_params(validation_fraction=fraction)
            return estimator
        estimator = clone(self.estimator)
        if self.random_state is not None:
            _set_random_states(estimator, self.random_state)
        return estimator

    def _validate(self, X: object, *, reset: bool) -> object:
        input_tags = _input_tags(self._estimator())
        sparse = bool(input_tags is not None and input_tags.sparse)
        allow_nan = bool(input_tags is not None and input_tags.allow_nan)
        return validate_data(
            self,
            X,
            accept_sparse=sparse,
            dtype=[np.float64, np.float32],  # as EBFlowDensity and KernelDensity convert
            ensure_all_finite="allow-nan" if allow_nan else True,
            reset=reset,
        )

    @_fit_context(prefer_skip_nested_validation=False)  # the wrapped estimator validates
    def fit(self, X: object, y: object = None) -> EBFlowOutlierDetector:
        """Fit the density estimator and set the threshold ``offset_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : EBFlowOutlierDetector
            The fitted detector.

        Raises
        ------
        ValueError
            If so many training points have zero density (log-density -inf) that the
            threshold, their ``100 * contamination`` percentile, is -inf.
        FloatingPointError
            If ``score_samples`` returns NaN on the training data, or the threshold is
            otherwise not finite.

        Notes
        -----
        A fit that raises (an invalid parameter of the estimator, bad data, Ctrl-C)
        leaves the detector as it was: fitted with its previous model, or not fitted
        (its methods then raise ``NotFittedError``).
        """
        with unchanged_on_error(self):
            self._fit(X)
        return self

    def _fit(self, X: object) -> None:
        X = self._validate(X, reset=True)
        contamination = (
            AUTO_CONTAMINATION if self.contamination == "auto" else float(self.contamination)
        )
        estimator = self._make_estimator(X.shape[0], contamination).fit(X)
        scores, calibration = _held_out_scores(self, estimator, X, contamination)
        name = type(estimator).__name__
        if np.isnan(scores).any():
            raise FloatingPointError(
                f"{name}.score_samples returned NaN on the training data; no threshold can be set."
            )
        percent = 100.0 * contamination
        # A log-density of -inf (zero density, e.g. outside a bounded support) is as
        # outlying as can be: it may lie among the training scores as long as the
        # quantile's lower neighbour, numpy's own "lower" order statistic, is finite.
        if np.percentile(scores, percent, method="lower") == -np.inf:
            n_zero = int(np.isneginf(scores).sum())
            raise ValueError(
                f"{name}.score_samples is -inf (zero density) at {n_zero} of the "
                f"{len(scores)} training points, so their {percent:g} percentile, the "
                f"threshold for contamination={contamination:g}, is -inf: no finite "
                "threshold can be set. Use a larger contamination or a density estimator "
                "whose support covers the training data."
            )
        with np.errstate(invalid="ignore"):  # +inf next to the quantile gives NaN
            offset = float(np.percentile(scores, percent))
        if not np.isfinite(offset):
            raise FloatingPointError(
                f"{name}.score_samples is not finite on at least {percent:g} % of the "
                f"training data (offset {offset}); no finite threshold can be set."
            )
        self.estimator_, self.offset_, self.calibration_ = estimator, offset, calibration

    def __sklearn_is_fitted__(self) -> bool:
        """Whether a density estimator was fitted (``estimator_``), as ``check_is_fitted`` asks.

        ``n_features_in_`` alone does not say so: ``validate_data`` sets it before the
        density's fit, which may fail.
        """
        return hasattr(self, "estimator_")

    def _log_density(self, X: object) -> np.ndarray:
        return _scores_of(self.estimator_, X, n=X.shape[0])

    def score_samples(self, X: object) -> np.ndarray:
        r"""Return the log-density of each sample under the fitted estimator.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to score.

        Returns
        -------
        ndarray of shape (n_samples,)
            :math:`\log p(x)`, float64; the higher, the more normal.
        """
        check_is_fitted(self)
        return self._log_density(self._validate(X, reset=False))

    def decision_function(self, X: object) -> np.ndarray:
        """Return ``score_samples(X) - offset_``: negative for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to score.

        Returns
        -------
        ndarray of shape (n_samples,)
            Log-density above the threshold; negative values are outliers.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X: object) -> np.ndarray:
        """Return +1 for inliers and -1 for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to classify.

        Returns
        -------
        ndarray of shape (n_samples,)
            +1 where ``decision_function(X) >= 0``, -1 elsewhere.
        """
        decision = self.decision_function(X)
        if np.isnan(decision).any():
            raise FloatingPointError(
                f"{type(self.estimator_).__name__}.score_samples returned NaN for "
                f"{int(np.isnan(decision).sum())} points, which can be neither inliers "
                "nor outliers."
            )
        labels = np.ones(decision.shape, dtype=int)
        labels[decision < 0] = -1
        return labels

    def _check_outlier_detection(self) -> bool:
        """``fit_predict`` exists only with ``novelty=False`` (``LocalOutlierFactor``'s rule)."""
        if self.novelty:
            raise AttributeError(
                "fit_predict is not available when novelty=True: the threshold is set for "
                "new data, so it flags fewer than `contamination` of the training rows. Use "
                "novelty=False to flag outliers in the training set, or fit(X).predict(X_new) "
                "for new data."
            )
        return True

    @available_if(_check_outlier_detection)
    def fit_predict(self, X: object, y: object = None, **kwargs: object) -> np.ndarray:
        """Fit to ``X`` and flag its outliers: exactly ``contamination`` of them, ties aside.

        Only with ``novelty=False``, where the threshold is a quantile of the training
        rows' own scores (scikit-learn's outlier detection).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored; present for API consistency.
        **kwargs : dict
            Ignored; present for API consistency (``OutlierMixin.fit_predict``).

        Returns
        -------
        ndarray of shape (n_samples,)
            +1 for inliers, -1 for outliers among the training rows.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.mixture import GaussianMixture
        >>> from skebflow import EBFlowOutlierDetector
        >>> X = np.random.default_rng(0).normal(size=(200, 2))
        >>> detector = EBFlowOutlierDetector(
        ...     estimator=GaussianMixture(), contamination=0.1, novelty=False
        ... )
        >>> int((detector.fit_predict(X) == -1).sum())
        20
        """
        return self.fit(X).predict(X)

    # --------------------------------------------------------------- persistence
    def _model_record(self) -> dict:
        """Return the plain record a model file holds (``save``: ``ModelFileMixin``)."""
        return detector_record(self, EBFlowDensity)

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type is private
        tags = super().__sklearn_tags__()
        inner = self._estimator()
        input_tags = _input_tags(inner)
        if input_tags is not None:
            tags.input_tags.sparse = input_tags.sparse
            tags.input_tags.allow_nan = input_tags.allow_nan
            tags.non_deterministic = get_tags(inner).non_deterministic
        return tags


def _held_out_scores(
    detector: EBFlowOutlierDetector, estimator: object, X: np.ndarray, contamination: float
) -> tuple[np.ndarray, str]:
    """Return log-densities of the rows of ``X`` scored by a model that did not train on them.

    The threshold is a quantile of these scores, so that the share of fresh inliers it
    flags follows ``contamination``; on its own training rows a flexible density is too
    confident (breast cancer, 250 training rows: 62.0 nats on them, 50.4 on fresh ones,
    and ``contamination=0.05`` flagged 33 % of fresh inliers). ``"validation"``: an
    ``EBFlowDensity`` scores the rows it held out for early stopping, when they are
    enough to place the quantile (their number times ``contamination`` at least
    :data:`CALIBRATION_MIN_FLAGGED`); ``"cross-fitted"``: each row is scored by a
    model fitted without its fold (:data:`CALIBRATION_FOLDS` folds, at least two rows in
    each; the fold models' warnings are silenced, the final model's are not);
    ``"training"``: ``novelty=False``, or too few rows to hold any out: the training
    scores themselves.
    """
    n = X.shape[0]  # validated: an array or a sparse matrix
    if not detector.novelty:
        return _scores_of(estimator, X, n=n), "training"
    index = getattr(estimator, "_validation_index", None)
    if isinstance(estimator, EBFlowDensity) and index is not None:
        if len(index) * contamination >= CALIBRATION_MIN_FLAGGED:
            return _scores_of(estimator, X[index], n=len(index)), "validation"
    if n < 2 * CALIBRATION_FOLDS:
        return _scores_of(estimator, X, n=n), "training"
    # The folds: shuffled with random_state when it is an int, else with seed 0 (a
    # RandomState instance is not drawn from again: one draw per fit, as before). The fold
    # models are clones of the final estimator, with its seeds.
    seed = detector.random_state if isinstance(detector.random_state, Integral) else 0
    folds = KFold(n_splits=CALIBRATION_FOLDS, shuffle=True, random_state=int(seed))
    scores = np.empty(n, dtype=np.float64)
    for train, test in folds.split(np.zeros((n, 1))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = clone(estimator).fit(X[train])
        scores[test] = _scores_of(model, X[test], n=len(test))
    return scores, "cross-fitted"


def _scores_of(estimator: object, X: object, *, n: int) -> np.ndarray:
    """Return ``estimator.score_samples(X)`` as float64, checked to be one per row."""
    scores = np.asarray(estimator.score_samples(X), dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(
            f"{type(estimator).__name__}.score_samples returned an array of shape "
            f"{scores.shape}; expected ({n},)."
        )
    return scores


def _input_tags(estimator: object) -> object:
    """Return the input tags of ``estimator``, or ``None`` when it declares none."""
    if not hasattr(estimator, "__sklearn_tags__"):
        return None
    return get_tags(estimator).input_tags


def _set_random_states(estimator: object, random_state: object) -> None:
    """Set every ``random_state`` parameter of ``estimator`` to an int seed.

    The convention of scikit-learn's ensembles (``sklearn.ensemble._base.
    _set_random_states``, kept private there): the parameters named ``random_state``
    or ending in ``__random_state``, in sorted order, each get
    ``check_random_state(random_state).randint(np.iinfo(np.int32).max)``.

    Parameters
    ----------
    estimator : estimator object
        An unfitted estimator with ``get_params`` and ``set_params``; changed in place.
    random_state : int, RandomState instance or None
        Source of the seeds.

    Examples
    --------
    >>> from sklearn.mixture import GaussianMixture
    >>> gm = GaussianMixture()
    >>> _set_random_states(gm, 0)
    >>> gm.random_state == np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    True
    """
    random_state = check_random_state(random_state)
    seeds = {
        key: random_state.randint(np.iinfo(np.int32).max)
        for key in sorted(estimator.get_params(deep=True))
        if key == "random_state" or key.endswith("__random_state")
    }
    if seeds:
        estimator.set_params(**seeds)

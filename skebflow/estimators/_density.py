"""``EBFlowDensity``: the scikit-learn estimator, in one class of thin methods.

Every method validates its input as scikit-learn does and hands the work to the module
that owns it: a fit resolves the parameters once (:mod:`._settings`) and trains one
:class:`~._training_run.TrainingRun` (a fresh fit, a warm start or ``partial_fit``), whose
:class:`~._training_run.TrainingOutcome` :meth:`EBFlowDensity._set_fitted` turns into the
fitted attributes, the only place they are set. Inference is :mod:`._inference`'s, MCMC
:mod:`skebflow.sampling`'s, model files :mod:`._record` and :mod:`._model_file`'s.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Callable, Iterator
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import torch
from sklearn import get_config
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from skebflow.estimators._defaults import DRIFT_MIN_NATS, DRIFT_NATS_PER_FEATURE
from skebflow.estimators._inference import FittedFlow
from skebflow.estimators._model_file import ModelFileMixin
from skebflow.estimators._record import density_record
from skebflow.estimators._settings import resolve_settings
from skebflow.estimators._training_run import TrainingOutcome, run_fit, run_partial_fit
from skebflow.exceptions import DriftWarning
from skebflow.nn import ARCHITECTURES, HIDDEN_FEATURES
from skebflow.objectives import OBJECTIVE_OPTIONS, OBJECTIVES
from skebflow.preprocessing import PREPROCESSING
from skebflow.sampling import (
    MIN_ACCEPTANCE,
    N_CHAINS,
    N_STEPS,
    REFINE_STEPS,
    RHAT_THRESHOLD,
    WARN_FRACTION,
    ImputationReport,
    check_observed,
    conditional_draws,
    conditional_fill,
    refine,
)
from skebflow.training import TrainConfig
from skebflow.utils import DTYPES, as_tensor, make_generator, to_numpy, user_stacklevel

__all__ = ["EBFlowDensity"]

#: Fitted attributes that ``validate_data`` sets, not ``_set_fitted``: they describe the
#: data of the last call (``fit_preprocessing``'s sample included), not the model.
_DATA_ATTRIBUTES = ("n_features_in_", "feature_names_in_")


def _positive_int(value: object, name: str) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


@contextlib.contextmanager
def unchanged_on_error(estimator: object) -> Iterator[None]:
    """Put every attribute of ``estimator`` back as it was if the block raises.

    An interrupt (``KeyboardInterrupt``) included: the estimator is then exactly as
    before the block, fitted with its previous model or not fitted, never half old and
    half new (``n_features_in_`` of the new data beside the previous model, say). The
    attributes are restored, not copied: the block must replace them, not change the
    objects they hold in place.
    """
    before = dict(vars(estimator))
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(before)
        raise


def _validate_params_in_every_call(
    partial_fit: Callable[..., EBFlowDensity],
) -> Callable[..., EBFlowDensity]:
    """Validate the parameters in every ``partial_fit``, on a fitted estimator too.

    scikit-learn's ``_fit_context`` validates them in ``partial_fit`` only while the
    estimator is not fitted, but ``partial_fit`` after :meth:`EBFlowDensity.fit` builds a
    new run from ``get_params()``: a value set with ``set_params`` in between is refused
    with scikit-learn's ``InvalidParameterError`` (a ``ValueError``) before anything
    changes, as ``fit`` refuses it. Like ``_fit_context``, this honours
    ``sklearn.set_config(skip_parameter_validation=True)`` (and its nested validation
    skipped inside another estimator's fit); ``_fit_context`` validates an unfitted
    estimator itself, so the parameters are validated once per call.
    """

    @functools.wraps(partial_fit)
    def wrapper(estimator: EBFlowDensity, *args: object, **kwargs: object) -> EBFlowDensity:
        if estimator.__sklearn_is_fitted__() and not get_config()["skip_parameter_validation"]:
            estimator._validate_params()
        return partial_fit(estimator, *args, **kwargs)

    return wrapper


def _check_step_size(step_size: object) -> float | None:
    if step_size is None or step_size == "auto":
        return None
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or step_size <= 0:
        raise ValueError(f"step_size must be 'auto' or a positive float, got {step_size!r}.")
    return float(step_size)


class EBFlowDensity(ModelFileMixin, DensityMixin, BaseEstimator):
    r"""Density estimation with an energy-based normalizing flow trained by score matching.

    The flow's log-density splits into an energy, which training touches, and a
    log-normalizer made of the log-determinants of its linear layers, which is computed
    once after training. Score-matching objectives need only the energy's input
    gradient, so training never computes a determinant and the dense layers are
    unconstrained. ``score_samples`` returns exactly normalized log-densities in the
    units of ``X``.

    Parameters
    ----------
    architecture : str, default="auto"
        Flow family (``docs/user_guide.md``, "Choosing an objective and an
        architecture"). ``"spline"``: ``n_blocks`` × [ActNorm → Dense →
        rational-quadratic spline coupling] → Dense;
        ``"autoregressive"``: the same with masked autoregressive splines;
        ``"coupling"``: with affine couplings; ``"fc"``: the paper's Dense → smooth
        leaky ReLU → Dense. The image flows need ``image_shape``: ``"conv"`` is the
        paper's CNN (7×7 convolutions, smooth leaky ReLUs, 2×2 squeezes), ``"glow"`` a
        multi-scale Glow. The linear layers are unconstrained and enter only the
        log-normalizer. ``"auto"``: ``"conv"`` with ``image_shape``, else ``"spline"``
        up to 128 features and above that ``"coupling"`` for ``objective="ml"``,
        ``"fc"`` for the other objectives; for ``objective="ssm"`` or ``"sm"``, whose loss
        needs a twice-differentiable energy (a spline's is not), ``"coupling"`` instead
        of ``"spline"``, as for ``"dsm"`` and ``"fdssm"`` above 2 features
        (``docs/defaults.md``).
    n_blocks : int or None, default=None
        Number of blocks (``None``: 4 for spline, autoregressive and coupling, 2 for fc,
        3 for conv and 2 levels for glow, fewer if the image allows fewer 2×2 squeezes).
    hidden_features : int, default=64
        Width of the hidden layers of each coupling's conditioner (spline, coupling and
        autoregressive; the channels of glow's).
    image_shape : tuple of int or None, default=None
        ``(C, H, W)``: each row of ``X`` is one image flattened in C·H·W order
        (``images.reshape(n, -1)``), read back for ``"conv"`` and ``"glow"``. One entry
        may be -1, inferred from the number of features (``image_shape_``); a shape that
        does not hold ``n_features_in_`` values is a ``ValueError``. For pixel data use
        ``preprocessing="logit"``, ``bounds`` and ``dequantize``.
    objective : {"auto", "ml", "sml", "sm", "ssm", "dsm", "fdssm"}, default="auto"
        Training objective: maximum likelihood, sampling-based ML, exact, sliced,
        denoising or finite-difference sliced score matching. ``"auto"`` is ``"ml"``
        below 2048 features and ``"ssm"`` from 2048 on (for ``"conv"`` and ``"glow"``:
        ``"ml"`` below 1024, ``"ssm"`` from 1024 on), where an ML step costs several
        score-matching steps; ML gave the best held-out likelihood wherever it was
        measured (``docs/defaults.md``).
    noise_scale : float, default=0.1
        Noise standard deviation of ``"dsm"`` (in preprocessed units).
    fd_epsilon : float, default=0.1
        Radius of the finite-difference perturbation of ``"fdssm"``.
    n_slices : int, default=1
        Random projections per sample for ``"ssm"``.
    min_singular_value : float, "auto" or None, default="auto"
        Score-matching objectives only: add a soft barrier that keeps the singular
        values of the dense layers above this value
        (:class:`skebflow.objectives.SingularValueBarrier`). Score matching
        can otherwise drive a dense layer towards singularity, which leaks probability
        mass away from the data (``docs/benchmark_history.md``, §2). ``"auto"`` is 0.2 (in
        preprocessed units) for the score-matching objectives when ``preprocessing`` is
        set, and no barrier otherwise (maximum likelihood has its own, the determinant;
        without preprocessing the data's units are unknown). ``None`` adds nothing.
        On ``"conv"`` and ``"glow"`` it watches the convolutions' operators and the
        1×1 convolutions' weights.
    preprocessing : {"standardize", "logit"} or None, default="standardize"
        Map applied outside the flow (Match after Preprocessing); its log-Jacobian is
        added back, so densities stay in the units of ``X``.
    bounds : tuple of (float, float) or None, default=None
        Box ``(low, high)`` of the data for ``preprocessing="logit"``; inferred from the
        training data when ``None``.
    dequantize : bool, default=False
        Treat ``X`` as integer-valued: uniform noise in training, the cell centre
        ``x + 0.5`` when scoring.
    match_after_preprocessing : bool, default=True
        Compute the training objective on the preprocessed data (MaP, recommended).
        ``False`` is the paper's ablation: the preprocessing becomes the flow's first,
        parameter-free layer, so scores and noise live in the units of ``X``; the fitted
        density has the same form, but score matching usually learns a worse one.
    whiten : bool or "auto", default="auto"
        Train in whitened coordinates: a fixed ZCA whitening map, fitted to the
        preprocessed training data (eigenvalues floored at 1e-4 of their mean; the
        Ledoit-Wolf covariance when there are no more rows than features), becomes
        the flow's first layer (:class:`~skebflow.nn.Whitening`), and the objective is
        measured after it. Score matching is not invariant to linear maps of the data
        and trains far better whitened on correlated tables; maximum likelihood is
        invariant. ``"auto"`` whitens for the score-matching objectives on tabular flows
        (``docs/defaults.md``). Not for image flows, and only with
        ``match_after_preprocessing=True``.
    learning_rate : float or "auto", default="auto"
        Adam's initial step size; ``"auto"`` is 3e-3 for the spline and coupling flows,
        1e-3 for the FC flow and 1e-2 for conv and glow (``docs/defaults.md``). For the
        score-matching objectives on the spline, coupling and autoregressive flows it is
        scaled by ``sqrt(batch_size / 512)`` (below 512 rows per batch: 1.1e-3 for
        batches of 64), and is at most 1e-3 on the coupling flow.
    batch_size : int or "auto", default="auto"
        Minibatch size. ``"auto"`` takes about 1/20 of the training rows (about 20 steps
        per epoch), rounded to a power of two within [32, 512]: 512 rows for 10,000
        samples, 64 for 1,300, 32 for 100.
    lr_schedule : {"plateau", "constant"}, default="plateau"
        ``"plateau"`` halves the learning rate after 0.6 times ``n_iter_no_change``
        epochs (a quarter for every objective but ``"ml"``) without an improvement of
        the monitored score (the validation log-likelihood, or the training loss
        without early stopping).
    max_iter : int, default=200
        Maximum number of epochs. An epoch is a pass over the training rows, or, with
        more than 10,240 of them (20 batches, for batches above 512), a random 10,240
        drawn anew each epoch, so that an epoch's cost stops growing with the number of
        rows (``partial_fit`` always passes over its whole chunk).
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the data, monitor its exact log-likelihood
        every epoch, stop after ``n_iter_no_change`` epochs without improvement once the
        scores of the last ``2 * n_iter_no_change`` epochs no longer rise (a Mann–Kendall
        trend test at z = 2, counting only a rise of more than ``tol`` per
        ``n_iter_no_change`` epochs), and keep the best epoch's weights. Needs at least
        2 validation samples; with fewer the training loss is monitored instead, with a
        warning.
    validation_fraction : float, default=0.1
        Fraction held out for early stopping, at most 10,000 rows (the rest train).
    n_iter_no_change : int, default=20
        Patience, in epochs (training goes on past it while the trend still rises).
    tol : float, default=1e-4
        Minimum improvement of the monitored quantity.
    ema_decay : float, "auto" or None, default="auto"
        Exponential moving average of the weights; the averaged weights are validated,
        kept and used. ``"auto"`` averages over about one epoch of steps,
        ``1 - 1 / max(10, steps per epoch)``, at most 0.999 (a fixed 0.999 averages
        over 1,000 steps, i.e. 50 epochs of 20 steps, so the validated weights would
        lag far behind training). ``None`` or 0 disables it.
    max_grad_norm : float or None, default=10.0
        Gradient-norm clipping threshold.
    training_dtype : {"float32", "float64"}, default="float32"
        Precision of training; inference always runs in float64.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    random_state : int, RandomState instance or None, default=None
        Seeds one local torch generator used for initialization, the validation split,
        shuffling and objective noise; the global RNGs are never touched.
    verbose : int, default=0
        0 silent, 1 a progress bar, 2 a line per epoch; 1 and 2 end with a summary line
        (epochs run, why training stopped, the best epoch and its validation score, the
        time). With 1, ``impute`` and ``sample_conditional`` (and so ``EBFlowImputer``)
        show a progress bar of their MCMC steps too, with a time estimate.
    warm_start : bool, default=False
        Continue from the previous fit (and its preprocessing) when refitting. A fit
        with ``warm_start=True`` keeps its trainer (weights, Adam's moments, schedule,
        EMA, random stream), so the next warm fit continues exactly where it stopped
        (changed hyperparameters apply to the new fit). When the previous fit ran
        without ``warm_start``, or ``architecture``, ``device``, ``training_dtype`` or
        ``match_after_preprocessing`` changed, it starts from ``flow_`` with a new
        optimizer. ``n_iter_`` and ``loss_curve_`` describe the latest fit.

    Attributes
    ----------
    flow_ : EnergyFlow
        The trained flow (EMA weights of the best epoch), float64.
    preprocessing_ : Chain
        The fitted preprocessing.
    log_normalizer_ : float
        :math:`\log Z` of ``flow_``, computed once after training.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit (only when ``X`` has string column names).
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_scores_ : list of float
        Held-out mean log-likelihood per epoch (in the units of ``X``), empty without
        early stopping.
    n_skipped_steps_ : int
        Optimizer steps skipped because the loss or a gradient was not finite.
    best_iteration_ : int or None
        The epoch (1-based) whose weights were kept, when validation was monitored; 0
        when no epoch of a new fit beat the untrained flow on the held-out rows, which
        was then kept (and reported in a :class:`~skebflow.exceptions.DivergenceWarning`).
    objective_ : str
        The objective used (``"auto"`` resolved).
    batch_size_ : int
        The minibatch size used (``"auto"`` resolved).
    ema_decay_ : float or None
        The EMA decay used (``"auto"`` resolved).
    learning_rate_ : float
        The initial learning rate used (``"auto"`` resolved).
    final_learning_rate_ : float
        The learning rate at the end of training (after the schedule's reductions).
    min_singular_value_ : float or None
        The singular-value barrier's threshold used (``"auto"`` resolved; ``None`` for
        the likelihood objectives, on which the barrier never acts).
    divergence_ : list of str
        What the end-of-fit checks saw (empty for a healthy fit): no epoch better on the
        held-out rows than the untrained flow, a training loss that grew by orders of
        magnitude, or samples orders of magnitude outside the data. Each finding is also
        reported in a :class:`~skebflow.exceptions.DivergenceWarning` with
        remedies for this configuration.
    jitter_ : float
        Standard deviation of the Gaussian jitter added to the training batches (in
        preprocessed units): 0, or a small floor (1e-3, ``DEGENERATE_JITTER`` in
        ``docs/defaults.md``) when the training data were degenerate (constant or
        collinear columns, no more rows than columns; a ``DataDimensionalityWarning``
        names them) or held point masses (discrete or repeated values; a
        ``PointMassWarning`` names them). It bounds the density, as
        ``GaussianMixture``'s ``reg_covar`` bounds its covariances.
    architecture_ : str
        The architecture used (``"auto"`` resolved).
    whiten_ : bool
        Whether the flow starts with a fitted whitening map (``"auto"`` resolved).
    image_shape_ : tuple of int or None
        ``image_shape`` with a -1 inferred (``None`` without it).
    device_ : torch.device
        Where the flow lives.

    See Also
    --------
    sklearn.neighbors.KernelDensity : Kernel density estimation.
    sklearn.mixture.GaussianMixture : Gaussian mixture model.

    References
    ----------
    .. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with
       Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow import EBFlowDensity
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> est = EBFlowDensity(max_iter=5, random_state=0).fit(X)
    >>> est.score_samples(X[:3]).shape
    (3,)
    >>> est.sample(4, random_state=0).shape
    (4, 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        "architecture": [StrOptions({"auto", *ARCHITECTURES})],
        "n_blocks": [Interval(Integral, 1, None, closed="left"), None],
        "hidden_features": [Interval(Integral, 1, None, closed="left")],
        "image_shape": [tuple, list, None],
        "objective": [StrOptions({"auto", *OBJECTIVES})],
        "noise_scale": [Interval(Real, 0, None, closed="neither")],
        "fd_epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_slices": [Interval(Integral, 1, None, closed="left")],
        "min_singular_value": [
            Interval(Real, 0, None, closed="neither"),
            StrOptions({"auto"}),
            None,
        ],
        "preprocessing": [StrOptions({name for name in PREPROCESSING if name}), None],
        "bounds": [tuple, list, None],
        "dequantize": ["boolean"],
        "match_after_preprocessing": ["boolean"],
        "whiten": ["boolean", StrOptions({"auto"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "lr_schedule": [StrOptions({"plateau", "constant"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "ema_decay": [Interval(Real, 0, 1, closed="left"), StrOptions({"auto"}), None],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "training_dtype": [StrOptions(set(DTYPES))],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        *,
        architecture: str = "auto",
        n_blocks: int | None = None,
        hidden_features: int = HIDDEN_FEATURES,
        image_shape: tuple[int, int, int] | None = None,
        objective: str = "auto",
        noise_scale: float = OBJECTIVE_OPTIONS["noise_scale"],
        fd_epsilon: float = OBJECTIVE_OPTIONS["fd_epsilon"],
        n_slices: int = OBJECTIVE_OPTIONS["n_slices"],
        min_singular_value: float | str | None = "auto",
        preprocessing: str | None = "standardize",
        bounds: tuple[float, float] | None = None,
        dequantize: bool = False,
        match_after_preprocessing: bool = True,
        whiten: bool | str = "auto",
        learning_rate: float | str = "auto",
        batch_size: int | str = "auto",
        lr_schedule: str = "plateau",
        max_iter: int = TrainConfig.max_iter,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = TrainConfig.n_iter_no_change,
        tol: float = TrainConfig.tol,
        ema_decay: float | str | None = "auto",
        max_grad_norm: float | None = TrainConfig.max_grad_norm,
        training_dtype: str = "float32",
        device: str | torch.device = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        self.architecture = architecture
        self.n_blocks = n_blocks
        self.hidden_features = hidden_features
        self.image_shape = image_shape
        self.objective = objective
        self.noise_scale = noise_scale
        self.fd_epsilon = fd_epsilon
        self.n_slices = n_slices
        self.min_singular_value = min_singular_value
        self.preprocessing = preprocessing
        self.bounds = bounds
        self.dequantize = dequantize
        self.match_after_preprocessing = match_after_preprocessing
        self.whiten = whiten
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.ema_decay = ema_decay
        self.max_grad_norm = max_grad_norm
        self.training_dtype = training_dtype
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------------ training
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: object, y: object = None) -> EBFlowDensity:
        """Fit the flow to ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; at least 2 samples.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : EBFlowDensity
            The fitted estimator.
        """
        with self._unchanged_on_error():
            warm = self.warm_start and self.__sklearn_is_fitted__()
            kept = getattr(self, "_run", None) if warm else None
            self._run = self._sample_preprocessing = None  # fit starts over
            X = validate_data(
                self, X, dtype=[np.float64, np.float32], ensure_min_samples=2, reset=not warm
            )
            settings = resolve_settings(self.get_params(), X.shape[1])
            warm_from = (self.flow_, self.preprocessing_, self.jitter_) if warm else None
            if warm:
                self._warn_about_drift(X)
            run, outcome = run_fit(settings, X, warm_from=warm_from, kept=kept)
            # The run (the optimizer's moments, the EMA) is kept only for a warm start.
            self._run = run if self.warm_start else None
            self._set_fitted(outcome)
        if outcome.interrupted:
            # The best model so far is kept (fitted, consistent); the interrupt goes on, so
            # that a script, cross_val_score or a search stops instead of scoring it.
            raise KeyboardInterrupt
        return self

    @_validate_params_in_every_call
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: object, y: object = None) -> EBFlowDensity:
        """Train one epoch on the chunk ``X``, continuing from the previous calls.

        The first call builds the preprocessing (from :meth:`fit_preprocessing`'s sample
        when it was called first, else from this chunk), the flow and the trainer; every
        call runs one epoch over its chunk, continuing the weights, Adam's moments, the
        learning-rate schedule, the EMA and the random stream. There is no validation
        split and no early stopping: the caller decides how many passes to make. After
        every call the fitted attributes describe the EMA weights so far, so the model
        can be scored or sampled between chunks. A call to :meth:`fit` starts over (or,
        with ``warm_start=True``, continues). After :meth:`fit`, ``partial_fit``
        continues the fitted model (its weights and preprocessing, with a new optimizer,
        under the current parameters; ``n_iter_`` and ``loss_curve_`` then count the
        ``partial_fit`` epochs). The parameters are validated in every call, a fitted
        estimator's too (scikit-learn's own ``partial_fit`` validates them only until
        the estimator is fitted); a call that raises changes nothing.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of the data (at least 2 rows in the first call).
        y : None
            Ignored.

        Returns
        -------
        self : EBFlowDensity
            The estimator, fitted to the chunks so far.

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            A ``ValueError``: a parameter is invalid (set with ``set_params`` after an
            earlier call, say); the estimator is left as it was.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> X = np.random.default_rng(0).normal(size=(600, 2))
        >>> est = EBFlowDensity(random_state=0)
        >>> for epoch in range(2):
        ...     for chunk in np.array_split(X, 3):
        ...         est = est.partial_fit(chunk)
        >>> est.n_iter_, len(est.loss_curve_)
        (6, 6)
        """
        with self._unchanged_on_error():
            run = getattr(self, "_run", None)
            run = run if run is not None and run.incremental else None
            sample_chain = getattr(self, "_sample_preprocessing", None)
            # After fit, partial_fit continues the fitted model (a new optimizer).
            fitted = run is None and sample_chain is None and self.__sklearn_is_fitted__()
            X = validate_data(
                self,
                X,
                dtype=[np.float64, np.float32],
                ensure_min_samples=2 if run is None and not fitted else 1,
                reset=run is None and sample_chain is None and not fitted,
            )
            if run is None:
                settings = resolve_settings(self.get_params(), X.shape[1])
            else:
                settings = run.settings
            warm_from = (self.flow_, self.preprocessing_, self.jitter_) if fitted else None
            self._run, outcome = run_partial_fit(
                settings, X, run=run, sample_chain=sample_chain, warm_from=warm_from
            )
            self._set_fitted(outcome)
        return self

    def _warn_about_drift(self, X: np.ndarray) -> None:
        """Warn when a warm start's rows score far below the fitted model's held-out rows.

        A warm start keeps the preprocessing statistics and the flow: on data shifted or
        rescaled far from what they were fitted to (1e3 added to every value: -31,359
        nats per sample where a fresh fit gives -2.82) it cannot recover, so the user is
        told before training.
        """
        if not self.validation_scores_:
            return
        reference = max(self.validation_scores_)
        scores = self.score_samples(X)
        new = float(np.mean(scores)) if np.isfinite(scores).all() else -np.inf
        margin = max(DRIFT_NATS_PER_FEATURE * self.n_features_in_, DRIFT_MIN_NATS)
        if new < reference - margin:
            warnings.warn(
                f"warm_start: the new rows score {new:.4g} nats per sample under the fitted "
                f"model, its held-out rows scored {reference:.4g}: the data differ from what "
                "the model and its preprocessing statistics were fitted to (shifted or "
                "rescaled?). A warm start keeps those statistics and may not recover; set "
                "warm_start=False to fit afresh.",
                DriftWarning,
                stacklevel=user_stacklevel(),
            )

    def _unchanged_on_error(self) -> contextlib.AbstractContextManager[None]:
        """Put every attribute back as it was if the block raises (an interrupt included).

        A failed ``fit``, ``partial_fit`` or ``fit_preprocessing`` (bad data of another
        width, a diverged training, Ctrl-C outside the epochs) leaves the estimator as it
        was before the call: fitted with the previous model, or not fitted, never half
        old and half new. (An interrupted ``partial_fit`` keeps the previous call's
        model; its optimizer has taken the interrupted epoch's steps, which the next call
        continues from.)
        """
        return unchanged_on_error(self)

    def fit_preprocessing(self, X: object) -> EBFlowDensity:
        """Fit only the preprocessing statistics, on a sample, for :meth:`partial_fit`.

        Call it first when the chunks are not alike (sorted or drifting data), so that
        every chunk is standardized with the statistics of the whole. It starts a new
        incremental training: it discards the state of earlier :meth:`partial_fit`
        calls and a model fitted before (by :meth:`fit` or :meth:`partial_fit`), whatever
        the sample's number of features, since the next :meth:`partial_fit` trains a new
        flow on these statistics. The estimator is not fitted after it: its other methods
        raise ``NotFittedError`` until :meth:`partial_fit`, and ``n_features_in_`` is the
        sample's. A call that raises changes nothing (a fitted model stays fitted).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A sample of the data; at least 2 rows.

        Returns
        -------
        self : EBFlowDensity
            The estimator, with its preprocessing statistics ready (and not fitted).
        """
        self._validate_params()
        with self._unchanged_on_error():
            X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
            settings = resolve_settings(self.get_params(), X.shape[1])
            chain = settings.build_chain().fit(as_tensor(X, dtype=torch.float64))
            self._discard_model()
            self._sample_preprocessing = chain
            self._run = None
        return self

    def _discard_model(self) -> None:
        """Delete the fitted model: every fitted attribute but those of the data.

        ``n_features_in_`` and ``feature_names_in_`` (``validate_data``'s) are kept; the
        estimator is no longer fitted (``__sklearn_is_fitted__``).
        """
        for key in list(vars(self)):
            fitted = key.endswith("_") and not key.startswith("_")
            if (fitted and key not in _DATA_ATTRIBUTES) or key == "_validation_index":
                delattr(self, key)

    def _set_fitted(self, outcome: TrainingOutcome) -> None:
        """Set the fitted attributes from a training outcome: the only place they are set.

        (``n_features_in_`` and ``feature_names_in_`` are set by scikit-learn's
        ``validate_data``, as in every scikit-learn estimator.)
        """
        settings = outcome.settings
        self.flow_ = outcome.flow
        self.preprocessing_ = outcome.chain
        self.log_normalizer_ = outcome.log_normalizer
        self.device_ = settings.device
        self.architecture_ = settings.architecture
        self.whiten_ = settings.whiten
        self.objective_ = settings.objective
        self.min_singular_value_ = settings.min_singular_value
        self.image_shape_ = settings.image_shape
        self.learning_rate_ = outcome.learning_rate
        self.batch_size_ = outcome.batch_size
        self.ema_decay_ = outcome.ema_decay
        self.jitter_ = outcome.jitter
        self.n_iter_ = outcome.n_iter
        self.loss_curve_ = outcome.loss_curve
        self.validation_scores_ = outcome.validation_scores
        self.n_skipped_steps_ = outcome.n_skipped_steps
        self.best_iteration_ = outcome.best_iteration
        self.final_learning_rate_ = outcome.final_learning_rate
        self.divergence_ = outcome.divergence
        # The rows of the last fit's X held out of training (not saved in model files):
        # the outlier detector sets its threshold on their scores.
        self._validation_index = outcome.validation_index

    def __sklearn_is_fitted__(self) -> bool:
        """Whether a flow was trained (``fit_preprocessing`` alone does not fit)."""
        return hasattr(self, "flow_")

    # ----------------------------------------------------------------- inference
    def _check_input(self, X: object) -> np.ndarray:
        """Validate ``X`` as scikit-learn does, without copying it into torch."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def _fitted(self) -> FittedFlow:
        return FittedFlow(self.flow_, self.preprocessing_, self.log_normalizer_, self.device_)

    def score_samples(self, X: object) -> np.ndarray:
        r"""Return the log-density of each sample, in the units of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        ndarray of shape (n_samples,)
            :math:`\log p(x)`, float64; exactly normalized over the space of ``X``.
            It is ``-inf`` where the density is zero (outside the bounds of
            ``preprocessing="logit"``, as ``KernelDensity(kernel="tophat")`` outside
            its kernels) and where it is too small for float64 (points so far from the
            data that the computation overflows); it is never NaN for finite input.

        Raises
        ------
        FloatingPointError
            If the flow gives NaN for a row that neither leaves the support nor
            overflows (a broken model; never silently).
        """
        X = self._check_input(X)
        return self._fitted().score_samples(X)

    def score(self, X: object, y: object = None) -> float:
        """Return the mean log-likelihood per sample (GaussianMixture's convention).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.
        y : None
            Ignored.

        Returns
        -------
        float
            Mean of :meth:`score_samples`.
        """
        return float(np.mean(self.score_samples(X)))

    def score_gradient(self, X: object) -> np.ndarray:
        r"""Return :math:`\nabla_x \log p(x)` in the units of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The score function; never NaN for finite input. Where its computation
            overflows (points astronomically far from the data), it is taken along the
            ray from the data's centre: every layer of a flow is asymptotically linear
            (smooth leaky ReLU, splines beyond their box, affine couplings with bounded
            scales), so the score grows linearly along a ray; it is evaluated at a point
            of the ray where nothing overflows and scaled by the ratio of distances,
            which gives ``±inf`` entries where the true value exceeds float64's range.

        Raises
        ------
        ValueError
            Outside the bounds of ``preprocessing="logit"``, where the density is zero.
        FloatingPointError
            If the flow gives NaN for a row of moderate size (a broken model).
        """
        X = self._check_input(X)
        return self._fitted().score_gradient(X)

    def sample(
        self,
        n_samples: int = 1,
        random_state: object = None,
        *,
        method: str = "exact",
        n_steps: int | None = None,
    ) -> np.ndarray:
        """Draw exact samples by inverting the flow (optionally refined by MCMC).

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator; the global RNGs are never touched.
        method : {"exact", "langevin"}, default="exact"
            ``"langevin"`` refines each exact sample with ``n_steps`` steps of the
            imputation sampler (preconditioned MALA on the energy,
            ``docs/imputation.md``). The flow's inverse is exact, so this does not
            improve the samples' distribution (measured there); it checks the sampler,
            and helps only where an inverse is numerically inexact.
        n_steps : int or None, default=None
            MCMC steps of ``"langevin"`` (``None``: :data:`~skebflow.sampling.REFINE_STEPS`).

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The samples (only ``X``, as ``sklearn.neighbors.KernelDensity.sample``).
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if method not in ("exact", "langevin"):
            raise ValueError(f"method must be 'exact' or 'langevin', got {method!r}.")
        if n_steps is not None and method != "langevin":
            raise ValueError("n_steps applies to method='langevin' only.")
        steps = REFINE_STEPS if n_steps is None else _positive_int(n_steps, "n_steps")
        generator = make_generator(random_state, self.device_)
        langevin = None
        if method == "langevin":

            def langevin(x: Tensor) -> Tensor:
                x = x.to(self.device_, torch.float64)
                return refine(
                    self.flow_, self.preprocessing_, x, n_steps=steps, generator=generator
                )

        return self._fitted().sample(
            int(n_samples), self.n_features_in_, generator, refine=langevin
        )

    # -------------------------------------------------------------- conditionals
    def impute(
        self,
        X: object,
        *,
        sample_posterior: bool = False,
        n_steps: int = N_STEPS,
        n_chains: int = N_CHAINS,
        step_size: float | str = "auto",
        return_report: bool = False,
        random_state: object = None,
    ) -> np.ndarray | tuple[np.ndarray, ImputationReport]:
        """Fill the NaN entries of ``X`` from the fitted density, the others clamped.

        For each row with missing entries, ``n_chains`` Markov chains sample the
        conditional density of the missing entries given the observed ones
        (preconditioned MALA with Gaussian independence moves, on the flow's energy in
        the preprocessed space; ``docs/imputation.md``). Rows run in batches of at most 512
        rows (fewer for many features), so memory stays bounded.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data with NaN for the missing entries (``inf`` is an error).
        sample_posterior : bool, default=False
            ``False`` fills the conditional mean, estimated from all chains after
            burn-in (the fill with the least expected squared error, as
            ``IterativeImputer``'s default); ``True`` fills one draw from the
            conditional (the last state of the first chain).
        n_steps : int, default=200
            Steps per chain, the first quarter burn-in (step-size adaptation).
        n_chains : int, default=4
            Chains per row.
        step_size : float or "auto", default="auto"
            MALA's step in whitened units; ``"auto"`` adapts it per row during burn-in
            towards an acceptance rate of 0.574.
        return_report : bool, default=False
            Also return the chains' :class:`~skebflow.estimators.ImputationReport`.
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator; the global RNGs are never touched.

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
            ``X`` with its NaN entries filled; the other entries and the rows without
            NaN are returned bit for bit. A row with every entry missing is filled with
            the model's mean (an exact joint sample with ``sample_posterior=True``).
        report : ImputationReport
            Only with ``return_report=True``.

        Warns
        -----
        ConvergenceWarning
            When more than 10 % of the imputed rows have chains that clearly did not mix
            (split-R̂ above 1.2 or acceptance below 0.05); more steps usually help.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> rng = np.random.default_rng(0)
        >>> X = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=500)
        >>> est = EBFlowDensity(max_iter=5, n_blocks=1, random_state=0).fit(X)
        >>> filled = est.impute([[1.0, np.nan], [np.nan, -1.0]], random_state=0)
        >>> filled.shape
        (2, 2)
        >>> bool(filled[0, 1] > 0.3 and filled[1, 0] < -0.3)
        True
        """
        n_steps = _positive_int(n_steps, "n_steps")
        n_chains = _positive_int(n_chains, "n_chains")
        x, missing = self._check_missing(X)
        generator = make_generator(random_state, self.device_)
        step = _check_step_size(step_size)
        mean, draw, report = conditional_fill(
            self.flow_,
            self.preprocessing_,
            x,
            missing,
            n_steps=n_steps,
            n_chains=n_chains,
            step_size=step,
            generator=generator,
            progress=self.verbose == 1,
        )
        n_imputed = int(missing.any(dim=1).sum())
        if n_imputed and report.not_mixed.sum() > WARN_FRACTION * n_imputed:
            warnings.warn(
                f"The chains of {int(report.not_mixed.sum())} of {n_imputed} imputed rows "
                f"did not mix (split-R̂ > {RHAT_THRESHOLD} or acceptance < {MIN_ACCEPTANCE}); "
                f"{report.summary()}. Increase n_steps.",
                ConvergenceWarning,
                stacklevel=2,
            )
        out = to_numpy(draw if sample_posterior else mean)
        return (out, report) if return_report else out

    def sample_conditional(
        self,
        X_partial: object,
        n_samples: int = 1,
        *,
        n_steps: int = N_STEPS,
        random_state: object = None,
    ) -> np.ndarray:
        """Draw the missing (NaN) entries of each row given its observed entries.

        Each draw is the final state of its own chain, started by importance
        resampling and run ``n_steps`` steps (:meth:`impute`'s sampler), so draws are
        nearly independent and modes of the conditional keep their weights.

        Parameters
        ----------
        X_partial : array-like of shape (n_rows, n_features)
            Rows with NaN for the entries to draw.
        n_samples : int, default=1
            Draws per row.
        n_steps : int, default=200
            Steps per chain.
        random_state : int, RandomState instance or None, default=None
            Seeds a local generator; the global RNGs are never touched.

        Returns
        -------
        ndarray of shape (n_rows, n_samples, n_features)
            Complete rows: the observed entries as given, the missing ones drawn.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> X = np.random.default_rng(0).normal(size=(300, 2))
        >>> est = EBFlowDensity(max_iter=3, n_blocks=1, random_state=0).fit(X)
        >>> draws = est.sample_conditional([[0.5, np.nan]], n_samples=5, random_state=0)
        >>> draws.shape
        (1, 5, 2)
        >>> bool(np.all(draws[0, :, 0] == 0.5))
        True
        """
        n_samples = _positive_int(n_samples, "n_samples")
        n_steps = _positive_int(n_steps, "n_steps")
        x, missing = self._check_missing(X_partial)
        generator = make_generator(random_state, self.device_)
        draws = conditional_draws(
            self.flow_,
            self.preprocessing_,
            x,
            missing,
            n_samples=n_samples,
            n_steps=n_steps,
            generator=generator,
            progress=self.verbose == 1,
        )
        return to_numpy(draws)

    def _check_missing(self, X: object) -> tuple[Tensor, Tensor]:
        """Validate ``X`` (NaN allowed, inf not); return it and its NaN mask."""
        check_is_fitted(self)
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], reset=False, ensure_all_finite="allow-nan"
        )
        x = as_tensor(X, dtype=torch.float64, device=self.device_)
        missing = torch.isnan(x)
        check_observed(self.preprocessing_, x, missing)  # inside the preprocessing's support
        return x, missing

    # --------------------------------------------------------------- persistence
    def _model_record(self) -> dict:
        """Return the plain record a model file holds (``save``: ``ModelFileMixin``)."""
        return density_record(self)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if "flow_" in state:
            state = dict(state)
            state["flow_"] = copy.deepcopy(self.flow_).cpu()
            state["preprocessing_"] = copy.deepcopy(self.preprocessing_).cpu()
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "flow_" in state:
            device = self.device_
            if device.type == "cuda" and not torch.cuda.is_available():
                device = torch.device("cpu")
            self.device_ = device
            self.flow_ = self.flow_.to(device)
            self.preprocessing_ = self.preprocessing_.to(device)

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type is private
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

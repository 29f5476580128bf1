"""``EBFlowDensity``: the scikit-learn estimator (the only place where sklearn meets torch).

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

import skebflow.estimators.defaults as auto
from skebflow.estimators.configuration import ConfigurationMixin
from skebflow.estimators.divergence import check_divergence
from skebflow.estimators.fitting import (
    barrier_thresholds,
    degenerate_jitter,
    fit_history,
    fresh_chain,
    training_data,
    untrained_score,
    validation_split,
    warn_about_training,
)
from skebflow.estimators.imputation import ImputationMixin
from skebflow.estimators.incremental import IncrementalMixin
from skebflow.estimators.inference import FittedFlowMixin
from skebflow.nn.architectures import ARCHITECTURES
from skebflow.objectives.registry import (
    OBJECTIVE_OPTIONS,
    OBJECTIVES,
)
from skebflow.preprocessing.inside import with_preprocessing, without_preprocessing
from skebflow.preprocessing.transforms import PREPROCESSING
from skebflow.training.trainer import TrainConfig, Trainer, TrainingDivergedError
from skebflow.utils.tensors import (
    as_tensor,
    intra_op_threads,
    resolve_device,
    seed_from_random_state,
)

__all__ = ["EBFlowDensity"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class EBFlowDensity(
    ConfigurationMixin,
    IncrementalMixin,
    ImputationMixin,
    FittedFlowMixin,
    DensityMixin,
    BaseEstimator,
):
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
        Flow family (``docs/user_guide.md``, "Architectures"). ``"spline"``: ``n_blocks``
        × [ActNorm → Dense → rational-quadratic spline coupling] → Dense;
        ``"autoregressive"``: the same with masked autoregressive splines;
        ``"coupling"``: with affine couplings; ``"fc"``: the paper's Dense → smooth
        leaky ReLU → Dense. The image flows need ``image_shape``: ``"conv"`` is the
        paper's CNN (7×7 convolutions, smooth leaky ReLUs, 2×2 squeezes), ``"glow"`` a
        multi-scale Glow. The linear layers are unconstrained and enter only the
        log-normalizer. ``"auto"``: ``"conv"`` with ``image_shape``, else ``"spline"``
        up to 128 features and ``"fc"`` above (``docs/defaults.md``).
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
        (:class:`skebflow.objectives.regularizers.SingularValueBarrier`). Score matching
        can otherwise drive a dense layer towards singularity, which leaks probability
        mass away from the data (``docs/benchmarks.md``). ``"auto"`` is 0.2 (in
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
    learning_rate : float or "auto", default="auto"
        Adam's initial step size; ``"auto"`` is 3e-3 for the spline and coupling flows,
        1e-3 for the FC flow and 1e-2 for conv and glow (``docs/defaults.md``).
    batch_size : int or "auto", default="auto"
        Minibatch size. ``"auto"`` takes about 1/20 of the training rows (about 20 steps
        per epoch), rounded to a power of two within [32, 512]: 512 rows for 10,000
        samples, 64 for 1,300, 32 for 100.
    lr_schedule : {"plateau", "constant"}, default="plateau"
        ``"plateau"`` halves the learning rate after a quarter of ``n_iter_no_change``
        epochs without an improvement of the monitored score (the validation
        log-likelihood, or the training loss without early stopping).
    max_iter : int, default=200
        Maximum number of epochs.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the data, monitor its exact log-likelihood
        every epoch, stop after ``n_iter_no_change`` epochs without improvement and keep
        the best epoch's weights. Needs at least 2 validation samples; with fewer the
        training loss is monitored instead, with a warning.
    validation_fraction : float, default=0.1
        Fraction held out for early stopping.
    n_iter_no_change : int, default=12
        Patience, in epochs.
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
        time).
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
    feature_names_in_ : ndarray of shape (n_features_in_,)
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
        What the end-of-fit checks saw (empty for a healthy fit): a kept model worse on
        the held-out rows than the untrained flow, a training loss that grew by orders of
        magnitude, or samples orders of magnitude outside the data. Each finding is also
        reported in a :class:`~skebflow.estimators.divergence.DivergenceWarning` with
        remedies for this configuration.
    jitter_ : float
        Standard deviation of the Gaussian jitter added to the training batches (in
        preprocessed units): 0, or :data:`~skebflow.estimators.degenerate.DEGENERATE_JITTER`
        when the training data were degenerate (constant or collinear columns, no more
        rows than columns; a ``DataDimensionalityWarning`` names them). It bounds the
        density, as ``GaussianMixture``'s ``reg_covar`` bounds its covariances.
    architecture_ : str
        The architecture used (``"auto"`` resolved).
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
        "training_dtype": [StrOptions(set(_DTYPES))],
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
        hidden_features: int = 64,
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
        warm = self.warm_start and hasattr(self, "flow_")
        self._incremental = self._sample_preprocessing = None  # fit starts over
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], ensure_min_samples=2, reset=not warm
        )
        n_features = X.shape[1]
        architecture, objective = self._resolve(n_features)
        min_singular_value = self._resolve_barrier(objective)
        device = resolve_device(self.device)
        dtype = _DTYPES[self.training_dtype]
        seed = seed_from_random_state(self.random_state)
        cpu_generator = torch.Generator().manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed + 1)

        x_all = as_tensor(X, dtype=torch.float64)
        x_train, x_val = validation_split(
            x_all, self.validation_fraction if self.early_stopping else None, cpu_generator
        )

        trainer_key = (architecture, str(device), dtype, self.match_after_preprocessing)
        trainer = getattr(self, "_trainer", None) if warm else None
        if trainer is not None and getattr(self, "_trainer_key", None) != trainer_key:
            trainer = None  # the settings changed: continue from the weights only
        if warm:
            chain = self.preprocessing_.to(device=device, dtype=torch.float64)
            flow = copy.deepcopy(self.flow_).to(device=device, dtype=dtype).requires_grad_(True)
        else:
            chain = fresh_chain(self, architecture, x_all, x_train, device)
            flow = self._build_flow(architecture, n_features, cpu_generator).to(
                device=device, dtype=dtype
            )
        chain.check(x_all.to(device))

        x_train, x_val = x_train.to(device), x_val.to(device)
        model = flow
        if trainer is not None:
            model = trainer.model
        elif not self.match_after_preprocessing:
            model = with_preprocessing(flow, copy.deepcopy(chain).to(dtype=dtype))
        if warm:
            jitter = self.jitter_
        else:  # dequantization noise spreads every column enough
            jitter = 0.0 if self.dequantize else degenerate_jitter(chain, x_train)
        train_data, prepare, score_fn = training_data(
            chain,
            x_train,
            x_val,
            dtype,
            self.dequantize,
            self.match_after_preprocessing,
            jitter=jitter,
        )

        config, loss, regularizers, advice = self._training_setup(
            architecture, objective, min_singular_value, len(train_data)
        )
        if trainer is None:
            trainer = Trainer(model, loss, config, generator=generator, regularizers=regularizers)
        else:  # warm start: same optimizer moments, schedule, EMA and generator
            trainer.loss_fn, trainer.config = loss, config
            if barrier_thresholds(trainer.regularizers) != barrier_thresholds(regularizers):
                trainer.regularizers = regularizers  # else the barrier keeps its state
        single = device.type == "cpu" and n_features < auto.SINGLE_THREAD_MAX_FEATURES
        with intra_op_threads(1 if single else None):
            initial_score = None if warm else untrained_score(trainer, score_fn)
            try:
                result = trainer.fit(train_data, prepare=prepare, score_fn=score_fn)
            except TrainingDivergedError as exc:
                raise FloatingPointError(f"{exc.seen} {advice}") from exc
        # The trainer (the optimizer's moments, the EMA) is kept only for a warm start.
        self._trainer = trainer if self.warm_start else None
        self._trainer_key = trainer_key
        trained = result.flow
        if not self.match_after_preprocessing:
            trained = without_preprocessing(trained)
        names = (architecture, objective, min_singular_value)
        self._set_fitted(trained, chain, device, names, jitter, advice, fit_history(result))
        warn_about_training(result, self.max_iter)
        with torch.no_grad():
            y_train = chain.forward(x_train)[0]
        self.divergence_ = check_divergence(
            result,
            initial_score=initial_score,
            flow=self.flow_,
            y_train=y_train,
            advice=advice,
            generator=torch.Generator(device=device).manual_seed(seed + 2),
        )
        return self

    # ------------------------------------------------------------ sklearn glue
    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type is private
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

"""The ``"auto"`` settings of the estimators: each rule and its constants, in one place.

Every value comes from a measurement in ``docs/defaults.md``, where the figures live. The
estimators read these at fit time (so a test or a study can change one in one place).
The defaults that belong to a lower layer are written there once and read from there: a
builder's options (number of blocks, hidden features) in its signature in
:mod:`skebflow.nn`, an objective's options in its function's signature, the training
loop's in :class:`~skebflow.training.TrainConfig`.
"""

from __future__ import annotations

import math

import numpy as np

from skebflow.objectives import SCORE_OBJECTIVES

__all__ = [
    "AUTO_BATCH_MAX",
    "AUTO_BATCH_MIN",
    "AUTO_BATCH_STEPS",
    "AUTO_EMA_MAX_DECAY",
    "AUTO_EMA_MIN_STEPS",
    "AUTO_IMAGE_ARCHITECTURE",
    "AUTO_IMAGE_OBJECTIVE",
    "AUTO_IMAGE_SM_MIN_FEATURES",
    "AUTO_MIN_SINGULAR_VALUE",
    "AUTO_SCORE_SPLINE_MAX_FEATURES",
    "AUTO_SMOOTH_ARCHITECTURE",
    "AUTO_SPLINE_MAX_FEATURES",
    "AUTO_SSM_MIN_FEATURES",
    "AUTO_WIDE_ML_ARCHITECTURE",
    "DEFAULT_LEARNING_RATES",
    "DEGENERATE_JITTER",
    "DEQUANTIZED_LOGIT_EPS",
    "DIVERGENCE_NOISE_STANDARD_ERRORS",
    "DRIFT_MIN_NATS",
    "DRIFT_NATS_PER_FEATURE",
    "MAX_EPOCH_ROWS",
    "MAX_VALIDATION_ROWS",
    "PLATEAU_PATIENCE_FRACTION",
    "SCORE_BATCH_SCALED_ARCHITECTURES",
    "SCORE_MAX_LEARNING_RATES",
    "SCORE_PLATEAU_PATIENCE_FRACTION",
    "SECOND_ORDER_OBJECTIVES",
    "SINGLE_THREAD_MAX_FEATURES",
    "SQUEEZED_ARCHITECTURES",
    "TRAINING_COPIES",
    "TREND_WINDOW_FACTOR",
    "WHITENED_ARCHITECTURES",
    "WHITENING_MIN_VARIANCE",
    "auto_architecture",
    "auto_batch_size",
    "auto_ema_decay",
    "auto_learning_rate",
    "auto_objective",
    "auto_whiten",
    "epoch_rows",
    "logit_squeeze",
    "plateau_patience",
    "trend_window",
]

#: Above this many features ``architecture="auto"`` leaves the spline flow (whose cost
#: grows fastest with the width): :data:`AUTO_WIDE_ML_ARCHITECTURE` for ``"ml"``, the
#: paper's FC flow for every other objective.
AUTO_SPLINE_MAX_FEATURES = 128
#: ``architecture="auto"`` for maximum likelihood above :data:`AUTO_SPLINE_MAX_FEATURES`
#: features: affine couplings, the best held-out likelihood of the tabular architectures
#: on every set measured there, at 0.3–3 × the FC flow's fit time (4,000 rows; 8×8×3
#: image patches, 192 features: coupling −516, spline −522, autoregressive −532, FC −656
#: nats; a flow teacher, 160: −342.6 against FC's −345.0; a Gaussian-mixture teacher,
#: 256: −366.9 against −374.9; ``docs/defaults.md``).
AUTO_WIDE_ML_ARCHITECTURE = "coupling"
#: From this many features on, ``objective="auto"`` trains by sliced score matching; below,
#: by maximum likelihood, whose held-out likelihood was the best wherever it was measured
#: and whose step costs only a few SSM steps below this size on a CPU.
AUTO_SSM_MIN_FEATURES = 2048
#: The objectives whose loss holds the score's derivative (a Hessian trace, or its
#: slices): their integration-by-parts identity needs a twice-differentiable energy. A
#: rational-quadratic spline's log-derivative has a derivative that jumps at every knot,
#: which autograd's trace misses, so on the spline flow these objectives minimize the
#: wrong quantity (``tests/nn/test_second_derivatives.py``, ``docs/defaults.md``).
SECOND_ORDER_OBJECTIVES = ("sm", "ssm")
#: ``architecture="auto"`` for :data:`SECOND_ORDER_OBJECTIVES` up to
#: :data:`AUTO_SPLINE_MAX_FEATURES` features, and for the other score-matching objectives
#: (DSM, FDSSM) above :data:`AUTO_SCORE_SPLINE_MAX_FEATURES`: affine couplings with smooth
#: conditioners.
AUTO_SMOOTH_ARCHITECTURE = "coupling"
#: DSM and FDSSM keep the spline flow up to this many features (the 2-D sets, whose sharp
#: edges the affine couplings cannot draw: gaussians −3.21 against −4.01, pinwheel −3.08
#: against −3.54 by DSM); on tables they train better and more stably on the coupling
#: flow (breast cancer DSM 63.7 against 57.5, FDSSM 63.6 against 54.4; the spline's FDSSM
#: fits kept their first epochs), ``docs/defaults.md``.
AUTO_SCORE_SPLINE_MAX_FEATURES = 2
#: ``architecture="auto"`` with ``image_shape`` given: the paper's CNN.
AUTO_IMAGE_ARCHITECTURE = "conv"
#: From this many features (pixels × channels) on, ``objective="auto"`` trains an image
#: flow (``"conv"``, ``"glow"``) by :data:`AUTO_IMAGE_OBJECTIVE`; below, by maximum
#: likelihood. ML's excess cost over the floor grows as D³ (the LU of the D×D convolution
#: operators), a score-matching step's about linearly: at this size an ML step costs about
#: 4 score-matching steps, the tabular rule's margin.
AUTO_IMAGE_SM_MIN_FEATURES = 1024
#: The score-matching objective of ``objective="auto"`` on large images: SSM, whose
#: held-out likelihood on digits as images was the better one at the default learning rate.
AUTO_IMAGE_OBJECTIVE = "ssm"
#: ``min_singular_value="auto"``: the barrier threshold of the score-matching objectives
#: on standardized or logit-mapped data.
AUTO_MIN_SINGULAR_VALUE = 0.2
#: The logit squeeze λ of a dequantized chain (``preprocessing="logit"``,
#: ``dequantize=True``) on the architectures of :data:`SQUEEZED_ARCHITECTURES`, as in Real
#: NVP's pixel chain; elsewhere ``Logit``'s 1e-6. At 1e-6 the lowest cell spans 11 logit
#: units with its density piled against its upper edge, which a smooth flow leaks across;
#: the image flows got worse with the squeeze, so they keep 1e-6.
DEQUANTIZED_LOGIT_EPS = 0.05
SQUEEZED_ARCHITECTURES = ("spline",)
#: ``learning_rate="auto"`` per architecture.
DEFAULT_LEARNING_RATES = {
    "fc": 1e-3,
    "coupling": 3e-3,
    "spline": 3e-3,
    "autoregressive": 3e-3,
    "conv": 1e-2,
    "glow": 1e-2,
}
#: The architectures on which ``learning_rate="auto"`` of the score-matching objectives
#: shrinks with the batch: ``DEFAULT_LEARNING_RATES[architecture] * sqrt(batch_size /
#: AUTO_BATCH_MAX)``, as the noise of a minibatch's gradient grows (a score-matching
#: loss is far noisier than the likelihood). On 2,000 rows of moons (batches of 64,
#: 1.1e-3) DSM went from −3.997 (its first epoch kept) to −3.41 and FDSSM from −3.914 to
#: −3.48 (ML −3.296); the spline flow's fits of 10,000 rows (batches of 512) keep 3e-3
#: (``docs/defaults.md``).
SCORE_BATCH_SCALED_ARCHITECTURES = ("spline", "coupling", "autoregressive")
#: The most ``learning_rate="auto"`` gives score matching on an architecture: on the
#: whitened coupling flow 1e-3 beat 3e-3 (mixture-64 SSM 0 of 3 seeds kept the start,
#: against 2 of 3 at 2.1e-3; mixture-16 DSM −21.50 against −22.18; 8 Gaussians SSM −3.87
#: against −4.11) and held breast cancer's fits steady.
SCORE_MAX_LEARNING_RATES = {"coupling": 1e-3}
#: Below this many features a CPU fit trains on one intra-op thread (small operations run
#: several times faster without thread hand-off); larger models use torch's setting.
SINGLE_THREAD_MAX_FEATURES = 256
#: ``batch_size="auto"``: about ``n_train / AUTO_BATCH_STEPS`` rows (so that an epoch has
#: about this many steps), rounded to a power of two and clipped to
#: ``[AUTO_BATCH_MIN, AUTO_BATCH_MAX]``.
AUTO_BATCH_STEPS = 20
AUTO_BATCH_MIN = 32
AUTO_BATCH_MAX = 512
#: An epoch of ``fit`` trains on at most this many rows, or ``AUTO_BATCH_STEPS`` batches
#: when the batch is larger (a random subset of the training rows when there are more,
#: drawn anew every epoch): 20 steps of the largest automatic batch. Early stopping, the
#: plateau schedule and ``max_iter`` then count the same work at any size
#: (``docs/defaults.md``, "Cost at large n").
MAX_EPOCH_ROWS = AUTO_BATCH_STEPS * AUTO_BATCH_MAX
#: Early stopping holds out ``validation_fraction`` of the rows, at most this many (the
#: rest train), so that scoring them does not outgrow an epoch of training.
MAX_VALIDATION_ROWS = 10_000
#: ``ema_decay="auto"``: the average spans about one epoch of steps, at least
#: ``AUTO_EMA_MIN_STEPS``, at most ``1 / (1 - AUTO_EMA_MAX_DECAY)``.
AUTO_EMA_MIN_STEPS = 10
AUTO_EMA_MAX_DECAY = 0.999
#: ``lr_schedule="plateau"`` halves the learning rate after this fraction of
#: ``n_iter_no_change`` epochs without improvement (12 of 20 epochs; a faster decay froze
#: fits on a plateau: ``docs/defaults.md``, "When training stops").
PLATEAU_PATIENCE_FRACTION = 0.6
#: The score-matching objectives keep the faster decay their recipes were measured with
#: (a quarter of the patience): a score-matching gradient is far noisier, and SSM on
#: rings diverged at epoch 43 with the rate kept up for 12 stalled epochs.
SCORE_PLATEAU_PATIENCE_FRACTION = 0.25
#: Early stopping waits while the validation scores of the last
#: ``TREND_WINDOW_FACTOR * n_iter_no_change`` epochs still rise (a Mann–Kendall trend
#: test at ``TrainConfig.trend_threshold``, with a rise of more than ``tol`` per
#: ``n_iter_no_change`` epochs: :func:`skebflow.training._stopping.rising_trend`).
TREND_WINDOW_FACTOR = 2
#: The architectures on which ``whiten="auto"`` trains the score-matching objectives in
#: whitened coordinates (:class:`~skebflow.nn.Whitening` in front of the flow). Score
#: matching is not invariant to linear maps of the data: on correlated tables it trains
#: far better whitened (breast cancer, coupling flow: DSM 59.5 → 63.7, FDSSM 59.1 → 63.6,
#: SSM 58.2 → 63.8 nats; ML 65.4), ``docs/defaults.md``.
WHITENED_ARCHITECTURES = ("coupling", "fc")
#: The floor of the whitening's eigenvalues, relative to their mean (standardized
#: units): a (nearly) degenerate direction is scaled up at most 100-fold.
WHITENING_MIN_VARIANCE = 1e-4
#: Standard deviation of the jitter added to degenerate training data (constant or
#: collinear columns, no more rows than columns), in the units the flow is trained in
#: (standardized units by default); see :mod:`skebflow.preprocessing` (``find_degeneracy``).
DEGENERATE_JITTER = 1e-3
#: A fit is said to have diverged from its untrained start only when its held-out
#: log-likelihood is worse by more than this many standard errors of the validation
#: score (the rows' spread over the square root of their number): smaller gaps are the
#: noise of a finite validation split, not divergence.
DIVERGENCE_NOISE_STANDARD_ERRORS = 2.0
#: A warm start warns of drift when the new rows' mean log-density under the fitted model
#: is below its best held-out score by more than this many nats per feature (and at
#: least ``DRIFT_MIN_NATS``): the preprocessing it keeps was fitted to other data.
DRIFT_NATS_PER_FEATURE = 1.0
DRIFT_MIN_NATS = 5.0
#: Copies of the flow's weights that training holds (weights, gradients, Adam's two
#: moments, the EMA): a fit whose copies exceed the device's memory is refused up front.
TRAINING_COPIES = 5


def auto_architecture(n_features: int, *, image: bool = False, objective: str = "ml") -> str:
    """``architecture="auto"``: the spline flow up to 128 features, the coupling flow above.

    With ``image=True`` (``image_shape`` given) the paper's CNN, ``"conv"``. Up to 128
    features, the objectives of :data:`SECOND_ORDER_OBJECTIVES` get
    :data:`AUTO_SMOOTH_ARCHITECTURE` instead of the spline flow, whose energy is not twice
    differentiable, and so do DSM and FDSSM above :data:`AUTO_SCORE_SPLINE_MAX_FEATURES`.
    Above 128 features maximum likelihood (``"ml"``) gets :data:`AUTO_WIDE_ML_ARCHITECTURE`
    and every other objective the paper's FC flow (``objective="auto"`` is SSM from 2048
    features on, where the FC flow wins on time to quality).

    Examples
    --------
    >>> auto_architecture(2), auto_architecture(784), auto_architecture(784, image=True)
    ('spline', 'coupling', 'conv')
    >>> auto_architecture(3072, objective="ssm"), auto_architecture(3072, objective="ml")
    ('fc', 'coupling')
    >>> auto_architecture(2, objective="ssm"), auto_architecture(784, objective="ssm")
    ('coupling', 'fc')
    >>> auto_architecture(2, objective="dsm"), auto_architecture(30, objective="dsm")
    ('spline', 'coupling')
    """
    if image:
        return AUTO_IMAGE_ARCHITECTURE
    if n_features > AUTO_SPLINE_MAX_FEATURES:
        return AUTO_WIDE_ML_ARCHITECTURE if objective == "ml" else "fc"
    if objective in SECOND_ORDER_OBJECTIVES:
        return AUTO_SMOOTH_ARCHITECTURE
    if objective in SCORE_OBJECTIVES and n_features > AUTO_SCORE_SPLINE_MAX_FEATURES:
        return AUTO_SMOOTH_ARCHITECTURE
    return "spline"


def auto_learning_rate(architecture: str, objective: str, batch_size: int) -> float:
    """``learning_rate="auto"``: per architecture; for score matching, scaled by the batch.

    Score matching on :data:`SCORE_BATCH_SCALED_ARCHITECTURES` takes the architecture's
    rate times ``sqrt(batch_size / 512)`` (below 512 rows per batch), at most
    :data:`SCORE_MAX_LEARNING_RATES`.

    Examples
    --------
    >>> auto_learning_rate("spline", "ml", 64), auto_learning_rate("spline", "dsm", 512)
    (0.003, 0.003)
    >>> round(auto_learning_rate("spline", "dsm", 64), 5), auto_learning_rate("fc", "ssm", 64)
    (0.00106, 0.001)
    >>> auto_learning_rate("coupling", "ssm", 512), auto_learning_rate("coupling", "dsm", 32)
    (0.001, 0.00075)
    """
    rate = DEFAULT_LEARNING_RATES[architecture]
    if objective in SCORE_OBJECTIVES and architecture in SCORE_BATCH_SCALED_ARCHITECTURES:
        rate *= math.sqrt(min(1.0, batch_size / AUTO_BATCH_MAX))
        rate = min(rate, SCORE_MAX_LEARNING_RATES.get(architecture, rate))
    return rate


def auto_objective(n_features: int, *, image: bool = False) -> str:
    """``objective="auto"``: maximum likelihood below 2048 features, SSM from 2048 on.

    For an image flow (``image=True``): maximum likelihood below 1024 features, SSM from
    1024 on.

    Examples
    --------
    >>> auto_objective(64), auto_objective(3072)
    ('ml', 'ssm')
    >>> auto_objective(784, image=True), auto_objective(1024, image=True)
    ('ml', 'ssm')
    """
    if image:
        return AUTO_IMAGE_OBJECTIVE if n_features >= AUTO_IMAGE_SM_MIN_FEATURES else "ml"
    return "ssm" if n_features >= AUTO_SSM_MIN_FEATURES else "ml"


def auto_whiten(objective: str, *, architecture: str, match_after_preprocessing: bool) -> bool:
    """``whiten="auto"``: score matching on :data:`WHITENED_ARCHITECTURES` is whitened.

    The spline flows (``"spline"``, ``"autoregressive"``) keep the data's own axes, which
    their axis-aligned splines follow; image flows keep their pixels' layout (a dense
    whitening map would undo the locality the convolutions rely on); without Match after
    Preprocessing the objective sees the data before the preprocessing, so there is
    nothing to whiten after it.

    Examples
    --------
    >>> auto_whiten("dsm", architecture="coupling", match_after_preprocessing=True)
    True
    >>> auto_whiten("ml", architecture="coupling", match_after_preprocessing=True)
    False
    >>> auto_whiten("dsm", architecture="spline", match_after_preprocessing=True)
    False
    """
    return (
        objective in SCORE_OBJECTIVES
        and architecture in WHITENED_ARCHITECTURES
        and match_after_preprocessing
    )


def logit_squeeze(architecture: str, dequantize: bool) -> float | None:
    """Return the logit squeeze λ of a chain: :data:`DEQUANTIZED_LOGIT_EPS` or ``None``.

    ``None`` means ``Logit``'s default (1e-6).

    Examples
    --------
    >>> logit_squeeze("spline", True), logit_squeeze("spline", False), logit_squeeze("conv", True)
    (0.05, None, None)
    """
    squeezed = dequantize and architecture in SQUEEZED_ARCHITECTURES
    return DEQUANTIZED_LOGIT_EPS if squeezed else None


def auto_batch_size(n_train: int) -> int:
    """``batch_size="auto"``: about ``n_train / 20`` rows, a power of two in [32, 512].

    Examples
    --------
    >>> auto_batch_size(100), auto_batch_size(1300), auto_batch_size(10_000)
    (32, 64, 512)
    """
    rows = max(1.0, n_train / AUTO_BATCH_STEPS)
    return int(np.clip(2 ** round(math.log2(rows)), AUTO_BATCH_MIN, AUTO_BATCH_MAX))


def auto_ema_decay(n_train: int, batch_size: int) -> float:
    """``ema_decay="auto"``: an average over about one epoch of steps (10 to 1000).

    Examples
    --------
    >>> round(auto_ema_decay(10_000, 512), 4)
    0.95
    """
    steps = max(AUTO_EMA_MIN_STEPS, math.ceil(n_train / batch_size))
    return min(AUTO_EMA_MAX_DECAY, 1.0 - 1.0 / steps)


def plateau_patience(n_iter_no_change: int, objective: str = "ml") -> int:
    """Epochs without improvement before the plateau schedule halves the learning rate.

    Examples
    --------
    >>> plateau_patience(20), plateau_patience(20, "ssm")
    (12, 5)
    """
    fraction = PLATEAU_PATIENCE_FRACTION if objective == "ml" else SCORE_PLATEAU_PATIENCE_FRACTION
    return max(1, round(fraction * n_iter_no_change))


def epoch_rows(batch_size: int) -> int:
    """Rows an epoch of ``fit`` trains on at most: :data:`MAX_EPOCH_ROWS`, or 20 batches.

    Examples
    --------
    >>> epoch_rows(512), epoch_rows(4096)
    (10240, 81920)
    """
    return max(MAX_EPOCH_ROWS, AUTO_BATCH_STEPS * batch_size)


def trend_window(n_iter_no_change: int) -> int:
    """Epochs whose validation trend must have stopped rising before training stops.

    Examples
    --------
    >>> trend_window(20)
    40
    """
    return TREND_WINDOW_FACTOR * n_iter_no_change

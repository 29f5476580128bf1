"""From ``EBFlowDensity``'s parameters to what a fit needs, resolved once and frozen.

:func:`resolve_settings` is the one step that turns the estimator's parameters into a
:class:`FitSettings`: every ``"auto"`` resolved (through :mod:`._defaults`), the image
shape checked, the device, dtype and seed fixed. It reads the parameters and writes
nothing. ``FitSettings`` then gives the training run everything it builds from them: the
flow (:func:`build_flow`), the unfitted preprocessing (:func:`build_chain`), the trainer's
configuration, the loss, the regularizers and the remedies to cite when a fit fails. The
model files rebuild a fitted estimator through the same two builders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral

import torch

import skebflow.estimators._defaults as auto
from skebflow.estimators._divergence import remedies
from skebflow.nn import ARCHITECTURES, IMAGE_ARCHITECTURES, EnergyFlow, Whitening
from skebflow.objectives import barrier_applies, bind_objective, make_regularizers
from skebflow.preprocessing import Chain, make_preprocessing
from skebflow.training import LossFn, Regularizer, TrainConfig
from skebflow.utils import DTYPES, resolve_device, seed_from_random_state

__all__ = [
    "FitSettings",
    "build_chain",
    "build_flow",
    "resolve_image_shape",
    "resolve_settings",
]

_ROWS = "each row of X must be one image flattened in C·H·W order"
#: The architectures whose builders take ``hidden_features``.
_HIDDEN = ("coupling", "spline", "autoregressive", "glow")


@dataclass(frozen=True)
class FitSettings:
    """Everything a fit of ``EBFlowDensity`` uses, with every ``"auto"`` resolved.

    The fields are the estimator's parameters of the same names, resolved for
    ``n_features`` features, except ``device`` (a ``torch.device``), ``dtype`` (the
    training dtype), ``seed`` (from ``random_state``) and ``threads`` (the intra-op
    threads of a CPU fit, ``None`` for torch's setting). ``batch_size``, ``ema_decay``
    and ``learning_rate`` may still be ``"auto"``: they depend on the number of training
    rows (:meth:`batch_and_ema`, :meth:`learning_rate_for`).
    """

    n_features: int
    image_shape: tuple[int, int, int] | None
    architecture: str
    n_blocks: int | None
    hidden_features: int
    objective: str
    objective_options: Mapping[str, float | int]
    min_singular_value: float | None
    preprocessing: str | None
    bounds: tuple | None
    dequantize: bool
    match_after_preprocessing: bool
    whiten: bool
    learning_rate: float | str
    batch_size: int | str
    ema_decay: float | str | None
    lr_patience: int | None
    max_iter: int
    early_stopping: bool
    validation_fraction: float
    n_iter_no_change: int
    tol: float
    max_grad_norm: float | None
    verbose: int
    device: torch.device
    dtype: torch.dtype
    seed: int
    threads: int | None

    @property
    def trainer_key(self) -> tuple:
        """What a kept trainer must share with a warm start to be continued."""
        return (
            self.architecture,
            str(self.device),
            self.dtype,
            self.match_after_preprocessing,
            self.whiten,
        )

    def batch_and_ema(
        self, n_train: int, *, bounded_epochs: bool = False
    ) -> tuple[int, float | None]:
        """Return the batch size and EMA decay for ``n_train`` training rows.

        The automatic EMA spans about one epoch: a whole pass, or with
        ``bounded_epochs`` the rows of :func:`~._defaults.epoch_rows`.
        """
        batch_size = self.batch_size
        if batch_size == "auto":
            batch_size = auto.auto_batch_size(n_train)
        batch_size = min(int(batch_size), n_train)
        ema_decay = self.ema_decay
        if ema_decay == "auto":
            rows = min(n_train, auto.epoch_rows(batch_size)) if bounded_epochs else n_train
            ema_decay = auto.auto_ema_decay(rows, batch_size)
        return batch_size, ema_decay or None

    def learning_rate_for(self, batch_size: int) -> float:
        """Return the learning rate of a fit with minibatches of ``batch_size`` rows."""
        if self.learning_rate == "auto":
            return auto.auto_learning_rate(self.architecture, self.objective, batch_size)
        return float(self.learning_rate)

    def train_config(self, n_train: int, *, whole_passes: bool = False) -> TrainConfig:
        """Return the trainer's configuration for ``n_train`` training rows.

        An epoch trains on at most :data:`~._defaults.MAX_EPOCH_ROWS` rows (or 20 batches
        of a larger batch size), unless ``whole_passes`` (``partial_fit``: one pass over
        each chunk).
        """
        batch_size, ema_decay = self.batch_and_ema(n_train, bounded_epochs=not whole_passes)
        epoch_rows = None if whole_passes else auto.epoch_rows(batch_size)
        return TrainConfig(
            learning_rate=self.learning_rate_for(batch_size),
            batch_size=batch_size,
            max_iter=self.max_iter,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            ema_decay=ema_decay,
            max_grad_norm=self.max_grad_norm,
            lr_patience=self.lr_patience,
            trend_window=auto.trend_window(self.n_iter_no_change),
            max_epoch_rows=epoch_rows,
            verbose=int(self.verbose),
        )

    def loss(self) -> LossFn:
        """Return the objective's loss with its options bound."""
        return bind_objective(self.objective, **self.objective_options)

    def regularizers(self) -> list[Regularizer]:
        """Return the terms the trainer adds to the loss (the singular-value barrier)."""
        return make_regularizers(self.objective, self.min_singular_value)

    def advice(self, batch_size: int) -> str:
        """Return the remedies a failing fit of these settings (batches of ``batch_size``) cites."""
        return remedies(
            architecture=self.architecture,
            objective=self.objective,
            learning_rate=self.learning_rate_for(batch_size),
            batch_size=batch_size,
            max_grad_norm=self.max_grad_norm,
            noise_scale=float(self.objective_options["noise_scale"]),
            preprocessing=self.preprocessing,
        )

    def build_flow(self, generator: torch.Generator) -> EnergyFlow:
        """Build the untrained flow (float32, on the CPU)."""
        return build_flow(
            self.architecture,
            self.n_features,
            n_blocks=self.n_blocks,
            hidden_features=self.hidden_features,
            image_shape=self.image_shape,
            generator=generator,
            whiten=self.whiten,
        )

    def build_chain(self) -> Chain:
        """Build the unfitted preprocessing chain."""
        return build_chain(self.preprocessing, self.bounds, self.dequantize, self.architecture)


def resolve_settings(params: Mapping[str, object], n_features: int) -> FitSettings:
    """Resolve an ``EBFlowDensity``'s parameters (``get_params()``) for ``n_features``.

    Pure: it reads the parameters and writes nothing. Raises ``ValueError`` for an
    ``image_shape`` that does not hold ``n_features`` values, an image architecture
    without ``image_shape`` and an unknown device.

    Examples
    --------
    >>> from skebflow import EBFlowDensity
    >>> settings = resolve_settings(EBFlowDensity(random_state=0).get_params(), 2)
    >>> settings.architecture, settings.objective, settings.learning_rate_for(64)
    ('spline', 'ml', 0.003)
    >>> settings.batch_and_ema(1000)
    (64, 0.9375)
    """
    image_shape = resolve_image_shape(params["image_shape"], n_features)
    architecture = params["architecture"]
    if architecture == "auto":
        image = image_shape is not None
    else:
        image = architecture in IMAGE_ARCHITECTURES
    if image and image_shape is None:
        raise ValueError(
            f"architecture={architecture!r} reads each row of X as an image: pass "
            "image_shape=(C, H, W) (one entry may be -1, inferred from the number of "
            "features)."
        )
    objective = params["objective"]
    if objective == "auto":
        objective = auto.auto_objective(n_features, image=image)
    if architecture == "auto":
        architecture = auto.auto_architecture(n_features, image=image, objective=objective)
    whiten = _whiten(params, objective, architecture, image=image)
    device = resolve_device(params["device"])
    learning_rate = params["learning_rate"]
    lr_patience = None
    if params["lr_schedule"] == "plateau":
        lr_patience = auto.plateau_patience(params["n_iter_no_change"], objective)
    single = device.type == "cpu" and n_features < auto.SINGLE_THREAD_MAX_FEATURES
    return FitSettings(
        n_features=n_features,
        image_shape=image_shape,
        architecture=architecture,
        n_blocks=params["n_blocks"],
        hidden_features=params["hidden_features"],
        objective=objective,
        objective_options={
            name: params[name] for name in ("n_slices", "noise_scale", "fd_epsilon")
        },
        min_singular_value=_barrier(objective, params),
        preprocessing=params["preprocessing"],
        bounds=_bounds_pair(params["bounds"]),
        dequantize=params["dequantize"],
        match_after_preprocessing=params["match_after_preprocessing"],
        whiten=whiten,
        learning_rate=learning_rate,
        batch_size=params["batch_size"],
        ema_decay=params["ema_decay"],
        lr_patience=lr_patience,
        max_iter=params["max_iter"],
        early_stopping=params["early_stopping"],
        validation_fraction=params["validation_fraction"],
        n_iter_no_change=params["n_iter_no_change"],
        tol=params["tol"],
        max_grad_norm=params["max_grad_norm"],
        verbose=params["verbose"],
        device=device,
        dtype=DTYPES[params["training_dtype"]],
        seed=seed_from_random_state(params["random_state"]),
        threads=1 if single else None,
    )


def _barrier(objective: str, params: Mapping[str, object]) -> float | None:
    """Threshold of the singular-value barrier for ``objective``, or ``None``.

    The barrier watches every unconstrained linear layer: dense layers, and the
    convolutions and 1×1 convolutions of the image flows. ``"auto"`` sets it only when
    the data are preprocessed (without preprocessing their units are unknown).
    """
    if not barrier_applies(objective):
        return None
    if params["min_singular_value"] != "auto":
        return params["min_singular_value"]
    return auto.AUTO_MIN_SINGULAR_VALUE if params["preprocessing"] is not None else None


def _whiten(
    params: Mapping[str, object], objective: str, architecture: str, *, image: bool
) -> bool:
    """Resolve the ``whiten`` parameter; a ``ValueError`` where it cannot apply."""
    match = bool(params["match_after_preprocessing"])
    if params["whiten"] == "auto":
        return auto.auto_whiten(
            objective, architecture=architecture, match_after_preprocessing=match
        )
    if params["whiten"] and image:
        raise ValueError(
            "whiten=True applies to tabular flows; an image flow keeps its pixels' layout. "
            "Use whiten=False or 'auto' with image_shape or an image architecture."
        )
    if params["whiten"] and not match:
        raise ValueError(
            "whiten=True needs match_after_preprocessing=True: the whitening is fitted to "
            "the preprocessed data, where the objective is measured."
        )
    return bool(params["whiten"])


def _bounds_pair(bounds: object) -> tuple | None:
    """Validate the ``bounds`` parameter: ``None`` or a pair ``(low, high)``."""
    if bounds is None:
        return None
    if len(bounds) != 2:
        raise ValueError(f"bounds must be a pair (low, high), got {bounds!r}.")
    return tuple(bounds)


def build_flow(
    architecture: str,
    n_features: int,
    *,
    n_blocks: int | None,
    hidden_features: int,
    image_shape: tuple[int, int, int] | None,
    generator: torch.Generator,
    whiten: bool = False,
) -> EnergyFlow:
    """Build the untrained flow of an estimator (``fit``, ``partial_fit`` and ``load``).

    ``n_blocks=None`` takes the builder's own default (for the image flows: as many
    blocks as the image allows 2×2 squeezes, at most the default). With ``whiten`` the
    flow starts with a :class:`~skebflow.nn.Whitening` (the identity until the training
    run fits it to the data).

    Examples
    --------
    >>> flow = build_flow("spline", 3, n_blocks=None, hidden_features=8, image_shape=None,
    ...                   generator=torch.Generator().manual_seed(0))
    >>> flow.features
    3
    """
    options: dict = {"generator": generator}
    if architecture in IMAGE_ARCHITECTURES:
        options["image_shape"] = image_shape
        options["n_blocks"] = n_blocks
    elif n_blocks is not None:
        options["n_blocks"] = n_blocks
    if architecture in _HIDDEN:
        options["hidden_features"] = hidden_features
    flow = ARCHITECTURES[architecture](n_features, **options)
    if whiten:
        flow = EnergyFlow([Whitening(n_features), *flow.layers], n_features)
    return flow


def build_chain(
    preprocessing: str | None, bounds: object, dequantize: bool, architecture: str
) -> Chain:
    """Build the unfitted preprocessing chain of an estimator (``fit``, ``partial_fit``, ``load``).

    The logit's squeeze depends on the resolved architecture (:func:`._defaults.logit_squeeze`).

    Examples
    --------
    >>> build_chain("standardize", None, False, "spline")
    Chain(...)
    """
    eps = auto.logit_squeeze(architecture, dequantize)
    return make_preprocessing(
        preprocessing, bounds=_bounds_pair(bounds), dequantize=dequantize, eps=eps
    )


def resolve_image_shape(
    image_shape: Sequence[int] | None, n_features: int
) -> tuple[int, int, int] | None:
    """Return ``image_shape`` with any ``-1`` inferred from ``n_features``, checked.

    Each row of ``X`` is one image flattened in C·H·W order (row-major, as
    ``images.reshape(len(images), -1)`` flattens an array of shape ``(n, C, H, W)``);
    ``image_shape=(C, H, W)`` says how to read it back, and one entry may be ``-1``,
    inferred as ``numpy.reshape`` infers it.

    Parameters
    ----------
    image_shape : tuple of int or None
        ``(C, H, W)``: positive sizes, at most one of them ``-1``.
    n_features : int
        The number of features of ``X`` (``C·H·W``).

    Returns
    -------
    tuple of int or None
        The image shape (``None`` for ``None``).

    Raises
    ------
    ValueError
        If ``image_shape`` is not three positive integers (one may be ``-1``) or does not
        hold ``n_features`` values.

    Examples
    --------
    >>> resolve_image_shape((1, 8, 8), 64), resolve_image_shape((3, -1, 4), 48)
    ((1, 8, 8), (3, 4, 4))
    >>> resolve_image_shape((1, 8, 8), 10)
    Traceback (most recent call last):
    ...
    ValueError: image_shape=(1, 8, 8) holds 64 values per image, but X has 10 features; ...
    """
    if image_shape is None:
        return None
    sizes = tuple(image_shape)
    valid = all(isinstance(s, Integral) and not isinstance(s, bool) for s in sizes)
    if len(sizes) != 3 or not valid or any(s < 1 and s != -1 for s in sizes) or sizes.count(-1) > 1:
        raise ValueError(
            f"image_shape must be (C, H, W): three positive integers, at most one of them -1 "
            f"(inferred from the number of features), got {image_shape!r}."
        )
    sizes = tuple(int(s) for s in sizes)
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_features % known:
            raise ValueError(
                f"image_shape={sizes} needs a number of features divisible by {known}, but X "
                f"has {n_features} features; {_ROWS}."
            )
        sizes = tuple(n_features // known if s == -1 else s for s in sizes)
    elif known != n_features:
        raise ValueError(
            f"image_shape={sizes} holds {known} values per image, but X has {n_features} "
            f"features; {_ROWS}."
        )
    return sizes  # type: ignore[return-value]

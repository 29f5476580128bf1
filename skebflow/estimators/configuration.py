"""How ``EBFlowDensity`` turns its parameters into a flow and a trainer's settings.

:class:`ConfigurationMixin` resolves every ``"auto"`` parameter (through
:mod:`skebflow.estimators.defaults`), builds the flow of the chosen architecture, and
gives ``fit`` and ``partial_fit`` the same trainer configuration, loss, regularizers and
remedies. The image flows (``"conv"``, ``"glow"``) read each row as an image of
``image_shape`` (:mod:`skebflow.estimators.images`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

import skebflow.estimators.defaults as auto
from skebflow.estimators.divergence import remedies
from skebflow.estimators.images import resolve_image_shape
from skebflow.nn.architectures import ARCHITECTURES, IMAGE_ARCHITECTURES
from skebflow.nn.flow import EnergyFlow
from skebflow.objectives.registry import barrier_applies, bind_objective, make_regularizers
from skebflow.preprocessing.transforms import Chain
from skebflow.training.trainer import TrainConfig

__all__ = ["ConfigurationMixin"]


class ConfigurationMixin:
    """Parameter resolution, flow building and trainer settings of the estimator."""

    def _resolve(self, n_features: int) -> tuple[str, str]:
        """Resolve ``architecture`` and ``objective``; check and set ``image_shape_``."""
        self.image_shape_ = resolve_image_shape(self.image_shape, n_features)
        architecture = self.architecture
        if architecture == "auto":
            architecture = auto.auto_architecture(n_features, image=self.image_shape_ is not None)
        if architecture in IMAGE_ARCHITECTURES and self.image_shape_ is None:
            raise ValueError(
                f"architecture={architecture!r} reads each row of X as an image: pass "
                "image_shape=(C, H, W) (one entry may be -1, inferred from the number of "
                "features)."
            )
        objective = self.objective
        if objective == "auto":
            objective = auto.auto_objective(n_features, image=architecture in IMAGE_ARCHITECTURES)
        return architecture, objective

    def _image_flow(self) -> bool:
        """Whether the (resolved) architecture is an image flow."""
        if self.architecture == "auto":
            return self.image_shape is not None
        return self.architecture in IMAGE_ARCHITECTURES

    def _resolve_barrier(self, objective: str) -> float | None:
        """Threshold of the singular-value barrier for ``objective``, or ``None``.

        The barrier watches every unconstrained linear layer: dense layers, and the
        convolutions and 1×1 convolutions of the image flows
        (:data:`~skebflow.objectives.regularizers.BARRIER_LAYERS`).
        """
        if not barrier_applies(objective):
            return None
        if self.min_singular_value != "auto":
            return self.min_singular_value
        return auto.AUTO_MIN_SINGULAR_VALUE if self.preprocessing is not None else None

    def _resolve_batch_and_ema(self, n_train: int) -> tuple[int, float | None]:
        """Batch size and EMA decay for ``n_train`` training rows (``"auto"`` resolved)."""
        batch_size = self.batch_size
        if batch_size == "auto":
            batch_size = auto.auto_batch_size(n_train)
        batch_size = min(int(batch_size), n_train)
        ema_decay = self.ema_decay
        if ema_decay == "auto":
            ema_decay = auto.auto_ema_decay(n_train, batch_size)
        self.batch_size_, self.ema_decay_ = batch_size, ema_decay or None
        return batch_size, ema_decay or None

    def _training_setup(
        self, architecture: str, objective: str, min_singular_value: float | None, n_train: int
    ) -> tuple[TrainConfig, Callable, list, str]:
        """Return the trainer's config, loss and regularizers, and the remedies to cite."""
        batch_size, ema_decay = self._resolve_batch_and_ema(n_train)
        lr_patience = None
        if self.lr_schedule == "plateau":
            lr_patience = auto.plateau_patience(self.n_iter_no_change)
        learning_rate = self.learning_rate
        if learning_rate == "auto":
            learning_rate = auto.DEFAULT_LEARNING_RATES[architecture]
        self.learning_rate_ = learning_rate
        config = TrainConfig(
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_iter=self.max_iter,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            ema_decay=ema_decay,
            max_grad_norm=self.max_grad_norm,
            lr_patience=lr_patience,
            verbose=int(self.verbose),
        )
        loss = bind_objective(
            objective,
            n_slices=self.n_slices,
            noise_scale=self.noise_scale,
            fd_epsilon=self.fd_epsilon,
        )
        advice = remedies(
            architecture=architecture,
            objective=objective,
            learning_rate=learning_rate,
            max_grad_norm=self.max_grad_norm,
            noise_scale=self.noise_scale,
            preprocessing=self.preprocessing,
        )
        return config, loss, make_regularizers(objective, min_singular_value), advice

    def _build_flow(
        self, architecture: str, n_features: int, generator: torch.Generator
    ) -> EnergyFlow:
        """Build the untrained flow of ``architecture`` from the parameters (as ``fit``)."""
        options: dict = {"generator": generator}
        n_blocks = self.n_blocks
        if architecture in IMAGE_ARCHITECTURES:
            image_shape = resolve_image_shape(self.image_shape, n_features)
            options["image_shape"] = image_shape
            if n_blocks is None:
                n_blocks = auto.auto_image_blocks(architecture, image_shape)
        elif n_blocks is None:
            n_blocks = auto.DEFAULT_BLOCKS[architecture]
        options["n_blocks"] = n_blocks
        if architecture in ("coupling", "spline", "autoregressive", "glow"):
            options["hidden_features"] = self.hidden_features
        return ARCHITECTURES[architecture](n_features, **options)

    def _set_fitted(
        self,
        flow: EnergyFlow,
        chain: Chain,
        device: torch.device,
        names: tuple[str, str, float | None],
        jitter: float,
        advice: str,
        history: dict,
    ) -> None:
        """Set the fitted attributes of ``fit`` and ``partial_fit`` from a trained flow.

        ``names`` is ``(architecture, objective, min_singular_value)``; ``history`` holds
        ``n_iter``, ``loss_curve``, ``validation_scores``, ``n_skipped_steps``,
        ``best_iteration`` and ``final_learning_rate``. Raises ``FloatingPointError``
        (with ``advice``) if the flow's log-normalizer is not finite.
        """
        self.flow_ = flow.to(torch.float64).requires_grad_(False).eval()
        self.preprocessing_ = chain
        self.device_ = device
        self.architecture_, self.objective_, self.min_singular_value_ = names
        self.jitter_ = jitter
        self.n_iter_ = history["n_iter"]
        self.loss_curve_ = list(history["loss_curve"])
        self.validation_scores_ = list(history["validation_scores"])
        self.n_skipped_steps_ = history["n_skipped_steps"]
        self.best_iteration_ = history["best_iteration"]
        self.final_learning_rate_ = history["final_learning_rate"]
        with torch.no_grad():
            self.log_normalizer_ = float(self.flow_.log_normalizer())
        if not math.isfinite(self.log_normalizer_):
            raise FloatingPointError(
                "The trained flow has a singular linear layer (log-normalizer "
                f"{self.log_normalizer_}). {advice}"
            )

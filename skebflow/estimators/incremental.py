"""``partial_fit``: training on data that arrive in chunks (out-of-core, streams).

:class:`IncrementalMixin` gives :class:`~skebflow.EBFlowDensity` ``partial_fit(X)``: one
epoch of its :class:`~skebflow.training.Trainer` over the chunk, continuing the weights,
Adam's moments, the learning-rate schedule, the EMA and the random stream of the calls
before. The preprocessing statistics (standardization, inferred logit bounds) come from
:meth:`IncrementalMixin.fit_preprocessing` on a sample when it was called first, else
from the first chunk. There is no validation split and no early stopping: the caller
decides how many passes to make. After every call the fitted attributes describe the EMA
weights so far, with ``log_normalizer_`` refreshed, so the model can be scored or
sampled between chunks.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.utils.validation import validate_data

from skebflow.estimators.defaults import SINGLE_THREAD_MAX_FEATURES
from skebflow.estimators.fitting import degenerate_jitter, estimator_chain, training_data
from skebflow.preprocessing.inside import with_preprocessing, without_preprocessing
from skebflow.training.trainer import Trainer, TrainingDivergedError
from skebflow.utils.tensors import (
    as_tensor,
    intra_op_threads,
    resolve_device,
    seed_from_random_state,
)

__all__ = ["IncrementalMixin"]


class IncrementalMixin:
    """``fit_preprocessing`` and ``partial_fit`` for :class:`~skebflow.EBFlowDensity`."""

    def fit_preprocessing(self, X: object) -> IncrementalMixin:
        """Fit only the preprocessing statistics, on a sample, for :meth:`partial_fit`.

        Call it first when the chunks are not alike (sorted or drifting data), so that
        every chunk is standardized with the statistics of the whole. It discards the
        state of earlier :meth:`partial_fit` calls.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A sample of the data; at least 2 rows.

        Returns
        -------
        self
        """
        self._validate_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        architecture, _ = self._resolve(X.shape[1])
        chain = estimator_chain(self.preprocessing, self.bounds, self.dequantize, architecture)
        self._sample_preprocessing = chain.fit(as_tensor(X, dtype=torch.float64))
        self._incremental = None
        return self

    def partial_fit(self, X: object, y: object = None) -> IncrementalMixin:
        """Train one epoch on the chunk ``X``, continuing from the previous calls.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of the data (at least 2 rows in the first call).
        y : None
            Ignored.

        Returns
        -------
        self

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
        state = getattr(self, "_incremental", None)
        sample_chain = getattr(self, "_sample_preprocessing", None)
        if state is None:
            self._validate_params()
        X = validate_data(
            self,
            X,
            dtype=[np.float64, np.float32],
            ensure_min_samples=2 if state is None else 1,
            reset=state is None and sample_chain is None,
        )
        if state is None:
            state = self._start_incremental(X, sample_chain)
            self._incremental = state
        x = as_tensor(X, dtype=torch.float64).to(state["device"])
        chain = state["chain"]
        chain.check(x)
        empty = x[:0]
        train_data, prepare, _ = training_data(
            chain,
            x,
            empty,
            state["dtype"],
            self.dequantize,
            self.match_after_preprocessing,
            jitter=state["jitter"],
        )
        trainer: Trainer = state["trainer"]
        with intra_op_threads(state["threads"]):
            try:
                loss = trainer.epoch(train_data, prepare=prepare)
            except TrainingDivergedError as exc:
                raise FloatingPointError(f"{exc.seen} {state['advice']}") from exc
        if trainer.scheduler is not None:
            trainer.scheduler.step(-loss)
        self._publish(state)
        return self

    def _start_incremental(self, X: np.ndarray, sample_chain: object) -> dict:
        """Build the preprocessing, the flow and the trainer at the first chunk."""
        n_features = X.shape[1]
        architecture, objective = self._resolve(n_features)
        min_singular_value = self._resolve_barrier(objective)
        device = resolve_device(self.device)
        dtype = getattr(torch, self.training_dtype)  # "float32" or "float64", validated
        seed = seed_from_random_state(self.random_state)
        cpu_generator = torch.Generator().manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed + 1)
        x = as_tensor(X, dtype=torch.float64)
        if sample_chain is None:
            chain = estimator_chain(
                self.preprocessing, self.bounds, self.dequantize, architecture
            ).fit(x)
        else:
            chain = copy.deepcopy(sample_chain)
        chain = chain.to(device=device, dtype=torch.float64)
        flow = self._build_flow(architecture, n_features, cpu_generator)
        model = flow.to(device=device, dtype=dtype)
        if not self.match_after_preprocessing:
            model = with_preprocessing(model, copy.deepcopy(chain).to(dtype=dtype))
        jitter = 0.0 if self.dequantize else degenerate_jitter(chain, x.to(device))
        config, loss, regularizers, advice = self._training_setup(
            architecture, objective, min_singular_value, len(x)
        )
        trainer = Trainer(model, loss, config, generator=generator, regularizers=regularizers)
        single = device.type == "cpu" and n_features < SINGLE_THREAD_MAX_FEATURES
        return {
            "trainer": trainer,
            "chain": chain,
            "device": device,
            "dtype": dtype,
            "jitter": jitter,
            "advice": advice,
            "threads": 1 if single else None,
            "names": (architecture, objective, min_singular_value),
        }

    def _publish(self, state: dict) -> None:
        """Set the fitted attributes from the trainer's EMA weights so far."""
        trainer: Trainer = state["trainer"]
        kept = copy.deepcopy(trainer.kept)
        if not self.match_after_preprocessing:
            kept = without_preprocessing(kept)
        history = {
            "n_iter": trainer.n_iter,
            "loss_curve": trainer.loss_curve,
            "validation_scores": [],
            "n_skipped_steps": trainer.n_skipped_steps,
            "best_iteration": None,
            "final_learning_rate": float(trainer.optimizer.param_groups[0]["lr"]),
        }
        self.divergence_ = []
        self._set_fitted(
            kept,
            state["chain"],
            state["device"],
            state["names"],
            state["jitter"],
            state["advice"],
            history,
        )

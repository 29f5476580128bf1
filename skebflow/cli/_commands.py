"""The commands on files: ``fit`` (data to a model), ``score`` and ``sample`` (a model).

Each command checks its files before any work (an input that does not exist, an output
in a missing folder or over an input are usage errors), reads data with
:mod:`skebflow.cli._io`, and reports on stderr: stdout is kept for data (the scores).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np

from skebflow import EBFlowDensity
from skebflow.cli._io import (
    check_input,
    check_output,
    load_model,
    read_data,
    save_array,
    save_model,
)
from skebflow.cli._messages import PROG, DataError, WrongKindError, info
from skebflow.cli._options import estimator_params

__all__ = ["fit", "sample", "score"]


def _read(path: str, header: bool | None, usage: str) -> np.ndarray:
    """Read a data file and say what was read."""
    try:
        table = read_data(path, header)
    except WrongKindError as error:
        raise WrongKindError(f"{error}; usage: {PROG} {usage}") from error
    info(table.describe(path))
    return table.X


def _model(path: str, usage: str, trust_pickle: bool) -> EBFlowDensity:
    """Load a model; a file that is not one names the expected order of the arguments."""
    try:
        return load_model(path, trust_pickle=trust_pickle)
    except WrongKindError as error:
        raise WrongKindError(f"{error}; usage: {PROG} {usage}") from error


def _check_columns(model: EBFlowDensity, X: np.ndarray, path: str) -> None:
    """Raise a :class:`DataError` when ``X`` has not the model's number of columns."""
    if X.shape[1] != model.n_features_in_:
        raise DataError(
            f"{path} has {X.shape[1]} columns, the model was fitted on {model.n_features_in_}"
        )


def fit(args: argparse.Namespace) -> int:
    """Fit on a file and save the model.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of ``fit``: ``data``, ``model``, ``header`` and the estimator
        options.

    Returns
    -------
    int
        The exit status, 0 (an interrupt raises ``KeyboardInterrupt``: status 130).
    """
    check_input(args.data)
    check_output(args.model, args.data)
    model = EBFlowDensity(**estimator_params(args))
    model._validate_params()  # a bad value is a usage error, found before reading data
    X = _read(args.data, args.header, "fit DATA MODEL")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # verbose=2 prints a line per epoch
            model.fit(X)
    except KeyboardInterrupt:
        # fit keeps the best model so far when Ctrl-C stops its epochs; it is saved only
        # when asked, and the exit status says "interrupted" (130) either way.
        if args.save_interrupted and model.__sklearn_is_fitted__():
            save_model(model, args.model)
            info(
                f"interrupted after {model.n_iter_} epochs; the best model so far was "
                f"saved to {args.model}"
            )
        raise
    save_model(model, args.model)
    info(
        f"fitted {model.n_iter_} epochs ({model.architecture_}, {model.objective_}); "
        f"model saved to {args.model}"
    )
    return 0


def score(args: argparse.Namespace) -> int:
    """Score each row of a file with a saved model: stdout, or ``--output``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of ``score``: ``model``, ``data``, ``output`` and ``header``.

    Returns
    -------
    int
        The exit status, 0.
    """
    check_input(args.model)
    check_input(args.data)
    if args.output:
        check_output(args.output, args.model, args.data)
    model = _model(args.model, "score MODEL DATA", args.trust_pickle)
    X = _read(args.data, args.header, "score MODEL DATA")
    _check_columns(model, X, args.data)
    scores = model.score_samples(X)
    if args.output:
        save_array(args.output, scores[:, None])
        info(f"{len(scores)} scores written to {args.output}")
    else:
        sys.stdout.write("".join(f"{value!r}\n" for value in scores.tolist()))
        sys.stdout.flush()
    info(f"mean log-likelihood per sample: {scores.mean():.6f} ({len(scores)} rows)")
    return 0


def sample(args: argparse.Namespace) -> int:
    """Draw samples from a saved model into a file.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of ``sample``: ``model``, ``output``, ``n_samples`` and ``seed``.

    Returns
    -------
    int
        The exit status, 0.
    """
    check_input(args.model)
    check_output(args.output, args.model)
    model = _model(args.model, "sample MODEL OUTPUT", args.trust_pickle)
    save_array(args.output, model.sample(args.n_samples, random_state=args.seed))
    info(f"{args.n_samples} samples written to {args.output}")
    return 0

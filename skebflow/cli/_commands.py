"""The commands on files: ``fit`` (data to a model), ``score`` and ``sample`` (a model).

Each command checks its files before any work (an input that does not exist, an output
in a missing folder or over an input are usage errors), reads data with
:mod:`skebflow.cli._io`, and reports on stderr: stdout is kept for data (the scores).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Sequence

import numpy as np

from skebflow import EBFlowDensity
from skebflow.cli._io import (
    Table,
    check_input,
    check_output,
    is_id_name,
    load_model,
    read_data,
    save_array,
    save_model,
)
from skebflow.cli._messages import PROG, DataError, UsageError, WrongKindError, info
from skebflow.cli._options import estimator_params

__all__ = ["fit", "sample", "score"]


def _read(args: argparse.Namespace, path: str, usage: str, features: Sequence[str] = ()) -> Table:
    """Read a data file, keep the columns ``--columns``/``--drop`` select, say what was read.

    The id column (``--id``; by default a header column named like an id, see
    :func:`~skebflow.cli._io.is_id_name`) is kept apart as row labels, unless
    ``--columns`` names it as a feature or it is one of ``features`` (the model's).
    """
    header, drop, chosen = args.header, args.drop, args.columns
    id_column = args.id
    if id_column == "auto" and chosen and any(is_id_name(name) for name in chosen):
        id_column = None  # --columns id: the user says it is a feature
    try:
        table = read_data(
            path,
            header,
            sep=args.sep,
            decimal=args.decimal,
            id_column=id_column,
            features=features,
        )
    except WrongKindError as error:
        raise WrongKindError(f"{error}; usage: {PROG} {usage}") from error
    described = table.describe("standard input" if path == "-" else path)
    if table.ids is not None and args.id == "auto":
        described += " (--id none makes it a feature)"
    info(described)
    if drop and table.ids is not None and table.id_name in drop:  # --drop id: no ids then
        drop = [name for name in drop if name != table.id_name]
        table = Table(table.X, table.columns)
    for option, names in (("--drop", drop), ("--columns", chosen)):
        if not names:
            continue
        indices = _column_indices(table, names, option, path)
        keep = [j for j in range(table.X.shape[1]) if j not in indices]
        if option == "--columns":
            keep = indices
        if not keep:
            raise UsageError(f"{option} leaves no column of {path}")
        table = table.select(keep)
    return table


def _column_indices(table: Table, names: list[str], option: str, path: str) -> list[int]:
    """Resolve the names (or, without a header, 1-based numbers) of ``--drop``/``--columns``.

    Numbers count the file's columns, the id column included (it is not selectable).
    """
    if len(set(names)) != len(names):
        raise UsageError(f"{option} names a column twice")
    if table.columns is not None:
        if table.id_name in names:
            raise UsageError(
                f"{option} {table.id_name}: the id column (--id none makes it a feature)"
            )
        unknown = [name for name in names if name not in table.columns]
        if unknown:
            raise UsageError(f"{option} {', '.join(unknown)}: no such column in {path}")
        return [table.columns.index(name) for name in names]
    width = table.X.shape[1] + (table.ids is not None)
    skipped = table.id_position
    numbers = [name for name in names if name.isdigit() and 1 <= int(name) <= width]
    if len(numbers) != len(names) or (skipped is not None and str(skipped + 1) in names):
        where = "" if skipped is None else f", not the id column {skipped + 1}"
        raise UsageError(
            f"{option} takes column numbers 1 to {width}{where} for {path}, which has no header"
        )
    return [int(name) - 1 - (skipped is not None and int(name) - 1 > skipped) for name in names]


def _named_columns(table: Table, path: str) -> list[str] | None:
    """Return the header's names to keep with the model (None without a header)."""
    if table.columns is None:
        return None
    repeated = sorted({name for name in table.columns if table.columns.count(name) > 1})
    if repeated:
        raise DataError(f"{path} repeats the column name(s) {repeated}; rename them")
    return list(table.columns)


def _model(path: str, usage: str, trust_pickle: bool) -> EBFlowDensity:
    """Load a model; a file that is not one names the expected order of the arguments."""
    try:
        return load_model(path, trust_pickle=trust_pickle)
    except WrongKindError as error:
        raise WrongKindError(f"{error}; usage: {PROG} {usage}") from error


def _model_columns(model: EBFlowDensity, table: Table, path: str) -> np.ndarray:
    """Return the table's values in the model's column order (by name when both have names).

    A model fitted on a file with a header matches a header by name (columns in another
    order are put in the model's order; a missing or extra column is a
    :class:`DataError` naming it); without names on either side columns are matched by
    position, and their number must be the model's.
    """
    names = getattr(model, "feature_names_in_", None)
    if names is not None and table.columns is not None:
        expected = [str(name) for name in names]
        missing = [name for name in expected if name not in table.columns]
        extra = [name for name in table.columns if name not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks the model's column(s) {missing}")
            if extra:
                parts.append(
                    f"has column(s) {extra} the model was not fitted on (--drop them, or "
                    "--id NAME for a column of row labels)"
                )
            raise DataError(f"{path} " + " and ".join(parts))
        order = [table.columns.index(name) for name in expected]
        if order != list(range(len(order))):
            info(f"columns of {path} matched to the model's by name: {', '.join(expected)}")
        return table.X[:, order]
    if table.X.shape[1] != model.n_features_in_:
        raise DataError(
            f"{path} has {table.X.shape[1]} columns, the model was fitted on {model.n_features_in_}"
        )
    if names is not None:
        info(f"{path} has no header: columns taken in the model's order ({', '.join(names)})")
    return table.X


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
    params = estimator_params(args)
    if "verbose" not in params and sys.stderr.isatty():
        params["verbose"] = 1  # a progress bar on a terminal, unless --verbose says otherwise
    model = EBFlowDensity(**params)
    model._validate_params()  # a bad value is a usage error, found before reading data
    table = _read(args, args.data, "fit DATA MODEL")
    names = _named_columns(table, args.data)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # verbose=2 prints a line per epoch
            model.fit(table.X)
        if names is not None:  # scored files are then matched by name
            model.feature_names_in_ = np.asarray(names, dtype=object)
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
    seconds = time.perf_counter() - start
    save_model(model, args.model)
    held_out = ""
    if model.validation_scores_:
        best = max(model.validation_scores_)
        held_out = f", held-out log-likelihood {best:.6g} per row"
    info(
        f"fitted {model.n_iter_} epochs in {seconds:.1f} s ({model.architecture_}, "
        f"{model.objective_}{held_out}); model saved to {args.model}"
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
    names = getattr(model, "feature_names_in_", None)
    features = () if names is None else [str(name) for name in names]
    table = _read(args, args.data, "score MODEL DATA", features)
    X = _model_columns(model, table, args.data)
    with warnings.catch_warnings():  # the names were matched above, by name or position
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        scores = model.score_samples(X)
    if table.ids is not None and args.output and args.output.endswith(".npy"):
        info(f"the ids of column {table.id_name!r} are not written to .npy (numbers only)")
    to_file = bool(args.output) and args.output != "-"
    if to_file or table.ids is not None:  # CSV with a header (and the ids), or .npy
        where = args.output if to_file else "-"
        save_array(where, scores[:, None], ["log_density"], table.ids, table.id_name)
        if to_file:
            info(f"{len(scores)} scores written to {args.output}")
    else:  # one number per line, for sort and head
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
    names = getattr(model, "feature_names_in_", None)
    columns = None if names is None else [str(name) for name in names]
    save_array(args.output, model.sample(args.n_samples, random_state=args.seed), columns)
    where = "standard output" if args.output == "-" else args.output
    info(f"{args.n_samples} samples written to {where}")
    return 0

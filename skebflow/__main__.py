"""Command line: ``python -m skebflow {demo,bench,fit,score,sample} ...``.

* ``demo``: fit the default :class:`~skebflow.EBFlowDensity` and a score-matching one
  (``--objectives``) on a built-in 2-D data set (checkerboard by default), print
  held-out log-likelihoods next to a cross-validated KernelDensity and a BIC-chosen
  GaussianMixture, and save a picture of every model's density and samples.
* ``bench``: the benchmarks (see ``python -m skebflow bench --help``).
* ``fit`` / ``score`` / ``sample``: train on a CSV or ``.npy`` file (every estimator
  parameter is an option), save the model in skebflow's model format (it loads without
  running code; see ``docs/persistence.md``), print the log-density of each row of
  another file, or draw samples into a file.

Mistakes end with one line ``error: ...`` on stderr: exit status 2 for the command line
itself (an unknown option, a bad parameter value, a missing file), 1 for files and data
(an unreadable file, NaN, the wrong number of columns). ``--debug`` adds the traceback.
See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

from skebflow.bench.baselines import QUALITY_PEERS
from skebflow.cli_io import (
    check_input,
    check_output,
    load_model,
    read_data,
    save_array,
    save_model,
)
from skebflow.cli_options import (
    DataError,
    UsageError,
    WrongKindError,
    add_estimator_options,
    estimator_params,
    first_line,
)
from skebflow.datasets.toys import TOY_DATASETS, make_toy, toy_log_density
from skebflow.estimators.density import EBFlowDensity

__all__ = ["main"]

PROG = "python -m skebflow"
DEMO_OBJECTIVES = ("auto", "dsm")
DESCRIPTION = """\
Energy-based normalizing flows as a scikit-learn density estimator.

commands:
  fit DATA MODEL      fit EBFlowDensity on a CSV or .npy file and save it (model file)
  score MODEL DATA    print the log-density of each row of DATA (one per line)
  sample MODEL OUT    draw samples into a CSV or .npy file
  demo                fit on a built-in 2-D data set next to KDE and a Gaussian mixture
  bench               the benchmarks (python -m skebflow bench --help)

Exit status: 0 success, 1 a file or the data cannot be used, 2 a mistake in the
command line. Errors are one line on stderr; --debug adds the traceback."""
EXIT_USAGE, EXIT_DATA, EXIT_INTERRUPTED = 2, 1, 130


def _info(message: str) -> None:
    """Print an informational line to stderr (stdout is kept for data)."""
    print(message, file=sys.stderr)


def _baselines(X: np.ndarray) -> dict[str, object]:
    """Fit the peers a user would otherwise pick: a CV-tuned KDE and a BIC-chosen GMM."""
    kde, gmm = QUALITY_PEERS["KernelDensity"](X, 0), QUALITY_PEERS["GaussianMixture"](X, 0)
    return {
        f"GaussianMixture({gmm.info['n_components']}, BIC)": gmm,
        f"KernelDensity(bw={kde.info['bandwidth']:.3f} std, CV)": kde,
    }


def demo(args: argparse.Namespace) -> int:
    """Run the demo: the default and other objectives on a 2-D toy, the peers, a picture."""
    X = make_toy(args.dataset, args.n_samples, random_state=0)
    X_test = make_toy(args.dataset, 5000, random_state=1)
    truth = float(toy_log_density(args.dataset, X_test).mean())
    print(f"data set: {args.dataset} ({len(X)} training, {len(X_test)} held-out samples)")
    print("held-out mean log-likelihood per sample (nats; higher is better)")
    print(f"  {'true density':<40} {truth:8.3f}")
    models: dict[str, object] = {}
    for objective in args.objectives:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = EBFlowDensity(objective=objective, max_iter=args.max_iter, random_state=0)
            model.fit(X)
        name = "EBFlowDensity()" if objective == "auto" else f"EBFlowDensity({objective!r})"
        models[name] = model
        elapsed = time.perf_counter() - start
        print(
            f"  {name:<40} {model.score(X_test):8.3f}   "
            f"({model.architecture_}, {model.objective_}, {model.n_iter_} epochs, {elapsed:.1f} s)"
        )
    for name, model in _baselines(X).items():
        models[name] = model
        print(f"  {name:<40} {float(np.mean(model.score_samples(X_test))):8.3f}")
    if args.output:
        _plot(args, X, models)
    return 0


def _plot(args: argparse.Namespace, X: np.ndarray, models: dict[str, object]) -> None:
    """Save a picture of every model's density and samples (when matplotlib is there)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _info("matplotlib is not installed: no picture (pip install 'skebflow[examples]').")
        return
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    axis = np.linspace(-5.5, 5.5, 200)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    columns = 1 + len(models)
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 6.4), squeeze=False)
    panels = [("true density", np.exp(toy_log_density(args.dataset, grid)), X[:2000])]
    for name, model in models.items():
        samples = model.sample(2000, random_state=0)
        panels.append((name, np.exp(model.score_samples(grid)), samples))
    for column, (title, density, points) in enumerate(panels):
        axes[0, column].imshow(
            density.reshape(len(axis), len(axis)), origin="lower", extent=(-5.5, 5.5, -5.5, 5.5)
        )
        axes[0, column].set_title(title, fontsize=8)
        axes[1, column].scatter(points[:, 0], points[:, 1], s=1, alpha=0.5)
        axes[1, column].set(xlim=(-5.5, 5.5), ylim=(-5.5, 5.5), aspect="equal")
    axes[1, 0].set_ylabel("samples")
    axes[0, 0].set_ylabel("density")
    fig.tight_layout()
    path = out / f"demo-{args.dataset}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    _info(f"picture of the densities and samples: {path}")


def _read(path: str, header: bool | None, usage: str) -> np.ndarray:
    """Read a data file and say what was read."""
    try:
        table = read_data(path, header)
    except WrongKindError as error:
        raise WrongKindError(f"{error}; usage: {PROG} {usage}") from error
    _info(table.describe(path))
    return table.X


def _model(path: str, usage: str) -> EBFlowDensity:
    """Load a model; a file that is not one names the expected order of the arguments."""
    try:
        return load_model(path)
    except WrongKindError as error:
        raise WrongKindError(f"{error}; usage: {PROG} {usage}") from error


def _check_columns(model: EBFlowDensity, X: np.ndarray, path: str) -> None:
    """Raise a :class:`DataError` when ``X`` has not the model's number of columns."""
    if X.shape[1] != model.n_features_in_:
        raise DataError(
            f"{path} has {X.shape[1]} columns, the model was fitted on {model.n_features_in_}"
        )


def fit(args: argparse.Namespace) -> int:
    """Fit on a file and save the model."""
    check_input(args.data)
    check_output(args.model, args.data)
    model = EBFlowDensity(**estimator_params(args))
    model._validate_params()  # a bad value is a usage error, found before reading data
    X = _read(args.data, args.header, "fit DATA MODEL")
    with contextlib.redirect_stdout(sys.stderr):  # verbose=2 prints a line per epoch
        model.fit(X)
    save_model(model, args.model)
    _info(
        f"fitted {model.n_iter_} epochs ({model.architecture_}, {model.objective_}); "
        f"model saved to {args.model}"
    )
    return 0


def score(args: argparse.Namespace) -> int:
    """Score each row of a file with a saved model: stdout, or ``--output``."""
    check_input(args.model)
    check_input(args.data)
    if args.output:
        check_output(args.output, args.model, args.data)
    model = _model(args.model, "score MODEL DATA")
    X = _read(args.data, args.header, "score MODEL DATA")
    _check_columns(model, X, args.data)
    scores = model.score_samples(X)
    if args.output:
        save_array(args.output, scores[:, None])
        _info(f"{len(scores)} scores written to {args.output}")
    else:
        sys.stdout.write("".join(f"{value!r}\n" for value in scores.tolist()))
        sys.stdout.flush()
    _info(f"mean log-likelihood per sample: {scores.mean():.6f} ({len(scores)} rows)")
    return 0


def sample(args: argparse.Namespace) -> int:
    """Draw samples from a saved model into a file."""
    check_input(args.model)
    check_output(args.output, args.model)
    model = _model(args.model, "sample MODEL OUTPUT")
    save_array(args.output, model.sample(args.n_samples, random_state=args.seed))
    _info(f"{args.n_samples} samples written to {args.output}")
    return 0


def _positive_int(text: str) -> int:
    """Parse a positive integer option (argparse names the option on failure)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.__name__ = "positive integer"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes raise :class:`UsageError` (one line)."""

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse, remembering the arguments for the hints of :meth:`error`."""
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """Raise the mistake instead of printing the usage and exiting."""
        given = getattr(self, "_given", [])
        many = [a.option_strings[0] for a in self._actions if a.nargs == "+" and a.option_strings]
        many = [option for option in many if option in given]
        if message.startswith("the following arguments are required") and many:
            message += f" ({many[0]} takes every value after it: put it after the file names"
            message += f" or write {many[0]} A,B)"
        if message.endswith("expected at least one argument") and many:
            message += f" (a value starting with '-': write {many[0]}=-1,2)"
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _add_common(parser: argparse.ArgumentParser, header: bool = False) -> None:
    """Add ``--debug`` (also accepted after the command) and the header options."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    if header:
        group = parser.add_mutually_exclusive_group()
        for flag, value, text in (("--header", True, "is"), ("--no-header", False, "is not")):
            group.add_argument(
                flag,
                dest="header",
                action="store_const",
                const=value,
                default=None,
                help=f"the CSV's first line {text} a header (default: detected)",
            )


def _parser() -> argparse.ArgumentParser:
    """Build the parser of every command but ``bench`` (which has its own)."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog=PROG, description=DESCRIPTION, formatter_class=raw)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, run: Callable[[argparse.Namespace], int]) -> _Parser:
        sub = commands.add_parser(name, help=text, description=text, formatter_class=raw)
        sub.set_defaults(run=run)
        return sub

    p = command("demo", "Fit every objective on a built-in 2-D data set.", demo)
    p.add_argument("--dataset", choices=TOY_DATASETS, default="checkerboard", help="2-D toy")
    p.add_argument("--n-samples", type=_positive_int, default=3000, help="training rows")
    p.add_argument("--max-iter", type=_positive_int, default=60, help="epochs per model")
    p.add_argument(
        "--objectives", nargs="+", default=list(DEMO_OBJECTIVES), help="one model per objective"
    )
    p.add_argument("--output", default="demo-output", help="folder for the picture")
    _add_common(p)
    commands.add_parser("bench", help="The benchmarks (see: bench --help).", add_help=False)
    p = command("fit", "Fit EBFlowDensity on a CSV or .npy file and save the model.", fit)
    p.add_argument("data", help="CSV (with or without a header line) or .npy file")
    p.add_argument("model", help="output path of the model (skebflow's model format, any name)")
    _add_common(p, header=True)
    add_estimator_options(p)
    p = command("score", "Print the log-density of each row of a file, one per line.", score)
    p.add_argument("model", help="a model saved by fit")
    p.add_argument("data", help="CSV or .npy file with the model's columns")
    p.add_argument("--output", help="write the scores to this CSV/.npy file instead")
    _add_common(p, header=True)
    p = command("sample", "Draw samples from a saved model into a CSV or .npy file.", sample)
    p.add_argument("model", help="a model saved by fit")
    p.add_argument("output", help="output CSV or .npy file")
    p.add_argument("--n-samples", type=_positive_int, default=1000, help="rows to draw")
    p.add_argument("--seed", type=int, default=0, help="random seed of the samples")
    _add_common(p)
    return parser


def _exit_status(error: BaseException) -> tuple[int, str]:
    """Return the exit status and the one-line message of an error."""
    if isinstance(error, (UsageError, InvalidParameterError)):
        return EXIT_USAGE, first_line(error)
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(error, (DataError, ValueError, TypeError, OSError)):
        return EXIT_DATA, first_line(error)
    name = type(error).__name__
    return EXIT_DATA, f"unexpected {name}: {first_line(error)} (rerun with --debug to see where)"


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """Print a warning as one line ``warning: ...`` (a ``warnings.showwarning``)."""
    _info(f"warning: {first_line(message)}")


@contextlib.contextmanager
def _short_warnings(debug: bool) -> Iterator[None]:
    """Show each warning as one line (in Python's full form with ``--debug``)."""
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        yield


def _system_exit_status(exit_: SystemExit) -> int:
    """Return the status of a ``SystemExit`` (printing its message when it has one)."""
    if exit_.code is None or isinstance(exit_.code, int):
        return exit_.code or 0
    print(exit_.code, file=sys.stderr)
    return EXIT_DATA


def _split_command(argv: list[str]) -> tuple[str | None, list[str]]:
    """Return the command name and the arguments after it."""
    for index, arg in enumerate(argv):
        if not arg.startswith("-"):
            return arg, argv[index + 1 :]
    return None, []


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` when omitted).

    Returns
    -------
    int
        The exit status: 0, 1 (a file or the data cannot be used) or 2 (a mistake in
        the command line); the error is one line on stderr.

    Examples
    --------
    >>> main(["score", "no-such-model.joblib", "data.csv"])
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    command, rest = _split_command(argv)
    try:
        with _short_warnings(debug):
            if command == "bench":
                from skebflow.bench.cli import main as bench_main

                return bench_main([arg for arg in rest if arg != "--debug"])
            args, unknown = _parser().parse_known_args(argv)
            if unknown:
                hint = f"see: {PROG} {args.command} --help"
                raise UsageError(f"unrecognized arguments: {' '.join(unknown)} ({hint})")
            return args.run(args)
    except SystemExit as exit_:  # --help, and the bench parser's own errors
        return _system_exit_status(exit_)
    except BrokenPipeError:  # `... | head`: the reader left, nothing more to say
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_DATA
    except (Exception, KeyboardInterrupt) as error:
        if debug:
            traceback.print_exc()
        status, message = _exit_status(error)
        print(f"error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())

"""The parser of the command line and the dispatch to its commands (``main``).

Every command but ``bench`` has its parser here; ``bench`` is handed to
:mod:`skebflow.bench._cli`, which has its own. ``main`` turns every error into one line
on stderr and an exit status (:func:`skebflow.cli._messages.exit_status`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from skebflow.cli._commands import fit, sample, score
from skebflow.cli._demo import DEMO_OBJECTIVES, DEMO_TABLES, demo
from skebflow.cli._messages import EXIT_DATA, PROG, UsageError, exit_status, short_warnings
from skebflow.cli._options import add_estimator_options
from skebflow.datasets import TOY_DATASETS

__all__ = ["main"]

DESCRIPTION = """\
Energy-based normalizing flows as a scikit-learn density estimator.

commands:
  fit DATA MODEL      fit EBFlowDensity on a CSV or .npy file and save it (model file)
  score MODEL DATA    print the log-density of each row of DATA (one per line)
  sample MODEL OUT    draw samples into a CSV or .npy file
  demo                fit on a 2-D set and on digits next to KDE and a Gaussian mixture
  bench               the benchmarks (python -m skebflow bench --help)

Exit status: 0 success, 1 a file or the data cannot be used, 2 a mistake in the
command line. Errors are one line on stderr; --debug adds the traceback."""


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


def _add_drop(parser: argparse.ArgumentParser) -> None:
    """Add the column selection (``--columns``, ``--drop``, ``--id``) and the text format."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--columns",
        nargs="+",
        metavar="NAME",
        help="the feature columns to use, by header name (by number from 1 without a header)",
    )
    group.add_argument(
        "--drop",
        nargs="+",
        metavar="NAME",
        help="columns to leave out, by header name (by number from 1 without a header): a "
        "label is not a feature",
    )
    parser.add_argument(
        "--id",
        default="auto",
        metavar="NAME",
        help="a column of row labels (by name, or number without a header): not a feature, "
        "and written beside the scores; default: a header column named id, index, *_id or "
        "blank (a pandas index); 'none': no id column",
    )
    parser.add_argument(
        "--sep",
        help="field separator of a text file (default ','; a tab for .tsv; needs pandas "
        "otherwise: pip install 'skebflow[tables]')",
    )
    parser.add_argument(
        "--decimal",
        default=".",
        help="decimal mark of a text file, e.g. ',' (needs pandas when not '.')",
    )


def _add_trust_pickle(parser: argparse.ArgumentParser) -> None:
    """Add the opt-in for joblib/pickle model files (refused by default: they run code)."""
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="also load a joblib/pickle model file (older versions wrote them); unpickling "
        "runs any code the file names, so only for files you trust",
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

    p = command(
        "demo", "Fit every objective on a built-in 2-D data set, the default on digits.", demo
    )
    p.add_argument("--dataset", choices=TOY_DATASETS, default="checkerboard", help="2-D toy")
    p.add_argument("--n-samples", type=_positive_int, default=3000, help="training rows")
    p.add_argument("--max-iter", type=_positive_int, default=60, help="epochs per model")
    p.add_argument(
        "--objectives", nargs="+", default=list(DEMO_OBJECTIVES), help="one model per objective"
    )
    p.add_argument(
        "--table", choices=DEMO_TABLES, default="digits", help="a real table next ('none': skip)"
    )
    p.add_argument(
        "--table-max-iter",
        type=_positive_int,
        help="epochs of the table's flow (default: the estimator's)",
    )
    p.add_argument("--output", default="demo-output", help="folder for the pictures")
    _add_common(p)
    commands.add_parser("bench", help="The benchmarks (see: bench --help).", add_help=False)
    p = command("fit", "Fit EBFlowDensity on a CSV or .npy file and save the model.", fit)
    p.add_argument("data", help="CSV (with or without a header line) or .npy file")
    p.add_argument("model", help="output path of the model (skebflow's model format, any name)")
    p.add_argument(
        "--save-interrupted",
        action="store_true",
        help="on Ctrl-C, save the best model so far (the exit status is 130 either way)",
    )
    _add_drop(p)
    _add_common(p, header=True)
    add_estimator_options(p)
    p = command("score", "Print the log-density of each row of a file, one per line.", score)
    p.add_argument("model", help="a model saved by fit")
    p.add_argument("data", help="CSV or .npy file with the model's columns")
    p.add_argument("--output", help="write the scores to this CSV/.npy file instead")
    _add_drop(p)
    _add_trust_pickle(p)
    _add_common(p, header=True)
    p = command("sample", "Draw samples from a saved model into a CSV or .npy file.", sample)
    p.add_argument("model", help="a model saved by fit")
    p.add_argument("output", help="output CSV or .npy file")
    p.add_argument("--n-samples", type=_positive_int, default=1000, help="rows to draw")
    p.add_argument("--seed", type=int, default=0, help="random seed of the samples")
    _add_trust_pickle(p)
    _add_common(p)
    return parser


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
        with short_warnings(debug):
            if command == "bench":
                from skebflow.bench import main as bench_main

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
        status, message = exit_status(error)
        print(f"error: {message}", file=sys.stderr)
        return status

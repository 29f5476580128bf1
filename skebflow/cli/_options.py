"""Estimator options of the command line (:mod:`skebflow.cli`), one per parameter.

Every constructor parameter of :class:`~skebflow.EBFlowDensity` becomes a ``fit`` option,
with its help taken from the class docstring in plain text; option values are read as
``None``, booleans, numbers, strings or tuples, and validated by the estimator.
"""

from __future__ import annotations

import argparse
import inspect
import re

from skebflow import EBFlowDensity

__all__ = [
    "ALIASES",
    "CLI_DEFAULTS",
    "add_estimator_options",
    "estimator_params",
    "first_sentence",
    "parameter_docs",
    "parse_value",
    "plain",
]


#: Defaults of the command line that differ from the estimator's: ``fit`` is reproducible.
CLI_DEFAULTS: dict[str, object] = {"random_state": 0}
#: Extra option names of a parameter, kept from earlier versions of the command line.
ALIASES: dict[str, tuple[str, ...]] = {"random_state": ("--seed",)}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "cf.", "vs.")
_DEST = "param_"


# ----------------------------------------------------------------------- option help
def plain(text: str) -> str:
    r"""Remove reST markup (roles, literals, links) and collapse white space.

    Parameters
    ----------
    text : str
        reST text.

    Returns
    -------
    str
        Plain text on one line.

    Examples
    --------
    >>> plain('``"auto"`` uses :class:`~skebflow.EBFlowDensity` and :math:`\\log Z`')
    '"auto" uses EBFlowDensity and log Z'
    """

    def role(match: re.Match[str]) -> str:
        target = match.group(2)
        if "<" in target and target.endswith(">"):
            return target.split("<")[0].strip()
        return target.lstrip("~").split(".")[-1] if target.startswith("~") else target

    text = re.sub(r":(\w+(?::\w+)?):`([^`]+)`", role, text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_{0,2}", r"\1", text)
    text = re.sub(r"\\([A-Za-z]+)", r"\1", text)
    return " ".join(text.split())


def first_sentence(text: str) -> str:
    """Return the first sentence: up to the first full stop outside parentheses.

    Parameters
    ----------
    text : str
        Plain text.

    Returns
    -------
    str
        Its first sentence.

    Examples
    --------
    >>> first_sentence("Patience (i.e. epochs, e.g. 12). More text.")
    'Patience (i.e. epochs, e.g. 12).'
    """
    depth = 0
    for index, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        at_end = index + 1 == len(text) or text[index + 1].isspace()
        if char == "." and depth <= 0 and at_end:
            words = text[: index + 1].split()
            if not words or words[-1].lower() not in _ABBREVIATIONS:
                return text[: index + 1]
    return text


def parameter_docs(doc: str | None) -> dict[str, tuple[str, str]]:
    """Read the "Parameters" section of a numpydoc docstring.

    Parameters
    ----------
    doc : str or None
        The docstring.

    Returns
    -------
    dict of str to (str, str)
        For each parameter, its type line and its description (reST, doctest lines
        dropped), in the docstring's order.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    docs: dict[str, tuple[str, list[str]]] = {}
    inside, name = False, None
    for index, line in enumerate(lines):
        underline = index + 1 < len(lines) and set(lines[index + 1].strip()) == {"-"}
        if underline and line and not line[0].isspace():
            inside, name = line.strip() == "Parameters", None
            continue
        if not inside or set(line.strip()) == {"-"}:
            continue
        header = re.match(r"^(\w+)\s*:\s*(.*)$", line)
        if header:
            name = header.group(1)
            docs[name] = (header.group(2), [])
        elif name and line.strip() and not line.strip().startswith((">>>", "... ")):
            docs[name][1].append(line.strip())
    return {key: (kind, " ".join(body)) for key, (kind, body) in docs.items()}


def _help(name: str, default: object, docs: dict[str, tuple[str, str]]) -> str:
    """Return an option's help: the first sentence of its description, then its type."""
    kind, description = docs.get(name, ("", ""))
    text = first_sentence(plain(description)) or f"Parameter {name} of EBFlowDensity."
    text += f" [{plain(kind)}]" if kind else f" [default={default!r}]"
    if name in CLI_DEFAULTS:
        text += f" (default here: {CLI_DEFAULTS[name]!r})"
    return text.replace("%", "%%")


# ------------------------------------------------------------------- option values
def parse_value(text: str, default: object = None) -> object:
    """Turn an option's text into ``None``, a bool, an int, a float or a string.

    Parameters
    ----------
    text : str
        The text given on the command line.
    default : object, default=None
        The parameter's default; for a boolean one, ``yes/no``, ``on/off`` and ``1/0``
        are booleans too.

    Returns
    -------
    object
        The value handed to the estimator (which validates it).

    Examples
    --------
    >>> [parse_value(t) for t in ("None", "true", "12", "1e-3", "auto")]
    [None, True, 12, 0.001, 'auto']
    >>> parse_value("1", default=False)
    True
    """
    word = text.strip().lower()
    if word in {"none", "null"}:
        return None
    if isinstance(default, bool) or word in {"true", "false"}:
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            pass
    return text


def _takes_tuple(name: str, default: object) -> bool:
    """Whether a parameter takes a tuple (its default or its constraints say so)."""
    constraints = getattr(EBFlowDensity, "_parameter_constraints", {}).get(name, [])
    return isinstance(default, (tuple, list)) or any(c in (tuple, list) for c in constraints)


def _parse_tuple(values: list[str]) -> tuple[object, ...] | None:
    """Parse ``["0", "16"]`` or ``["0,16"]`` into ``(0, 16)``, and ``["none"]`` into None."""
    fields = [field for value in values for field in value.split(",") if field.strip()]
    if len(fields) == 1 and parse_value(fields[0]) is None:
        return None
    return tuple(parse_value(field) for field in fields)


def add_estimator_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per parameter of ``EBFlowDensity().get_params()``.

    ``learning_rate`` becomes ``--learning-rate VALUE``; parameters that take a tuple
    (``bounds``) take several values (``--bounds 0 16`` or ``--bounds 0,16``). The help
    is the first sentence of the parameter's description in the class docstring.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``fit`` parser.
    """
    docs = parameter_docs(EBFlowDensity.__doc__)
    order = {name: index for index, name in enumerate(docs)}
    params = EBFlowDensity().get_params(deep=False)
    group = parser.add_argument_group("estimator options (EBFlowDensity parameters)")
    for name in sorted(params, key=lambda key: (order.get(key, len(order)), key)):
        default = params[name]
        names = (f"--{name.replace('_', '-')}", *ALIASES.get(name, ()))
        many = _takes_tuple(name, default)
        group.add_argument(
            *names,
            dest=_DEST + name,
            default=argparse.SUPPRESS,
            nargs="+" if many else None,
            metavar="VALUE",
            help=_help(name, default, docs),
        )


def estimator_params(args: argparse.Namespace) -> dict[str, object]:
    """Collect the estimator parameters given as options (and the CLI's own defaults).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of ``fit``.

    Returns
    -------
    dict
        Keyword arguments of ``EBFlowDensity``.
    """
    params = EBFlowDensity().get_params(deep=False)
    chosen = {name: value for name, value in CLI_DEFAULTS.items() if name in params}
    for name, default in params.items():
        if hasattr(args, _DEST + name):
            text = getattr(args, _DEST + name)
            many = isinstance(text, list)
            chosen[name] = _parse_tuple(text) if many else parse_value(text, default)
    return chosen

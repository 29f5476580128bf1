"""Files of the command line (:mod:`skebflow.cli`): data and models.

Data files are CSV (comma-separated numbers, with or without a header row) or ``.npy``
arrays; models are files of a fitted :class:`~skebflow.EBFlowDensity` in skebflow's model
format (:func:`skebflow.load`, which loads without running code); joblib files of one
are read only with ``--trust-pickle`` (with a note that such a file can run code). Problems
are raised as :class:`~skebflow.cli._messages.DataError` or
:class:`~skebflow.cli._messages.UsageError` with a one-line message.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from skebflow import EBFlowDensity, load
from skebflow.cli._messages import DataError, UsageError, WrongKindError, first_line
from skebflow.estimators import save
from skebflow.exceptions import NotAModelFileError

__all__ = [
    "ID_NAMES",
    "Table",
    "check_input",
    "check_output",
    "is_id_name",
    "load_model",
    "read_data",
    "save_array",
    "save_model",
]

_PICKLE_MAGIC = (b"\x80", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18", b"ZF")
_TORCH_MAGIC = b"PK\x03\x04"  # the zip container of torch.save, hence of skebflow models
_MODEL_KINDS = ("joblib/pickle", "skebflow model")
#: The note printed when a joblib (pickle) model is loaded.
JOBLIB_NOTE = (
    "note: {path} is a joblib/pickle model, loaded because of --trust-pickle: such a file "
    "can run any code it names (fit writes skebflow's model format, which cannot)"
)
PICKLE_REFUSED = (
    "{path} is a joblib/pickle file, not a skebflow model file; it was not loaded, because "
    "unpickling a file can run any code it names. If you trust where it came from, pass "
    "--trust-pickle (then refit, or save the loaded model with skebflow.save)"
)


@dataclass
class Table:
    """Numbers read from a data file.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_columns)
        The data, float64.
    columns : list of str or None
        The names in the header row, ``None`` without one.
    ids : list of str or None
        The row labels of the id column, as written in the file; ``None`` without one.
    id_name : str or None
        The id column's header name (``column N`` without a header).
    id_position : int or None
        Where the id column was in the file (0-based), so that column numbers given
        for a file without a header count the file's columns.
    """

    X: np.ndarray
    columns: list[str] | None = None
    ids: list[str] | None = None
    id_name: str | None = None
    id_position: int | None = None

    def describe(self, path: str) -> str:
        """Return a one-line summary, e.g. ``read a.csv: 200 rows x 2 columns``."""
        rows, cols = self.X.shape
        names = f" (header: {', '.join(self.columns)})" if self.columns else ""
        ids = "" if self.ids is None else f"; id column {self.id_name!r}, not a feature"
        return f"read {path}: {rows} rows x {cols} columns{names}{ids}"

    def select(self, keep: list[int]) -> Table:
        """Return the table with only the columns ``keep`` (indices), ids unchanged."""
        columns = None if self.columns is None else [self.columns[j] for j in keep]
        return Table(self.X[:, keep], columns, self.ids, self.id_name, self.id_position)


#: Header names (compared in lower case) that mark an id column: a row label, not a
#: feature. A blank name and ``Unnamed: 0`` are the index column of a pandas export;
#: a name ending in ``_id`` (``patient_id``) counts too.
ID_NAMES = ("id", "index", "", "unnamed: 0")


def is_id_name(name: str) -> bool:
    """Whether a header name marks an id column (see :data:`ID_NAMES`).

    Parameters
    ----------
    name : str
        A column name.

    Returns
    -------
    bool
        True for ``id``, ``ID``, ``index``, a blank name, ``Unnamed: 0`` and ``*_id``.

    Examples
    --------
    >>> [is_id_name(name) for name in ("ID", "patient_id", "", "alcohol", "idle")]
    [True, True, True, False, False]
    """
    word = name.strip().lower()
    return word in ID_NAMES or word.endswith("_id")


def _id_index(
    columns: list[str] | None, id_column: str | None, path: str, features: Sequence[str] = ()
) -> int | None:
    """Find the id column: by name or 1-based number, ``"auto"`` by its header name.

    ``None`` and ``"none"`` mean no id column; ``"auto"`` takes the header column whose
    name marks an id (:func:`is_id_name`) unless it is one of ``features`` (a model's
    columns), and is a :class:`UsageError` when several columns do.
    """
    if id_column is None or id_column.lower() == "none":
        return None
    if id_column == "auto":
        found = [
            j for j, name in enumerate(columns or []) if is_id_name(name) and name not in features
        ]
        if len(found) > 1:
            names = [columns[j] for j in found]
            raise UsageError(
                f"{path}: columns {names} all look like row ids; name the id column with "
                "--id NAME and --drop the others (or --id none: all are features)"
            )
        return found[0] if found else None
    if columns is not None and id_column in columns:
        return columns.index(id_column)
    if id_column.isdigit() and columns is None:
        return int(id_column) - 1  # checked against the width by the caller
    where = "has no header (give the column's number)" if columns is None else "has no such column"
    raise UsageError(f"--id {id_column}: {path} {where}")


def check_input(path: str) -> None:
    """Raise a :class:`UsageError` unless ``path`` is an existing file.

    Parameters
    ----------
    path : str
        A file the command reads.
    """
    if path == "-":  # standard input
        return
    if not Path(path).exists():
        raise UsageError(f"no such file: {path}")
    if Path(path).is_dir():
        raise UsageError(f"{path} is a folder, not a file")


def check_output(path: str, *inputs: str) -> None:
    """Raise a :class:`UsageError` unless ``path`` can be created (checked before any work).

    Parameters
    ----------
    path : str
        A file the command writes.
    *inputs : str
        The files the command reads, which ``path`` must not overwrite.
    """
    if path == "-":  # standard output
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder")
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {path}: folder {target.parent} does not exist")
    writable = os.access(target, os.W_OK) if target.exists() else os.access(target.parent, os.W_OK)
    if not writable:  # checked before any training, not after it
        raise UsageError(f"cannot write {path}: permission denied")
    for source in inputs:
        if target.resolve() == Path(source).resolve():
            raise UsageError(f"{path} is also an input: writing it would overwrite {source}")


def _kind(path: str) -> str:
    """Guess what a file holds from its first bytes: text, .npy, joblib/pickle or binary."""
    with open(path, "rb") as file:
        head = file.read(4096)
    if head.startswith(b"\x93NUMPY"):
        return ".npy array"
    if head.startswith(_PICKLE_MAGIC):
        return "joblib/pickle"
    if head.startswith(_TORCH_MAGIC):
        return "skebflow model"
    if not head:
        return "empty"
    return "binary" if b"\x00" in head else "text"


def _fields(line: str) -> list[str]:
    """Split a CSV line into fields (comment removed, quotes and blanks stripped)."""
    return [field.strip().strip('"').strip() for field in line.split("#")[0].split(",")]


def _is_number(field: str) -> bool:
    """Whether ``float`` reads the field (``nan`` and ``inf`` included)."""
    try:
        float(field)
    except ValueError:
        return False
    return True


def _data_lines(path: str, skip: int, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """Yield the line number and fields of every line after ``skip`` that holds data."""
    with open(path, encoding=encoding) as file:
        for number, line in enumerate(file, start=1):
            if number > skip and line.split("#")[0].strip():
                yield number, _fields(line)


def _locate_problem(
    path: str, skip: int, encoding: str, forced: bool, text_column: int | None = None
) -> str | None:
    """Describe the first line numpy could not read (``None`` when none is found)."""
    rows = list(_data_lines(path, skip, encoding))
    width = len(rows[0][1]) if rows else 0
    for number, fields in rows:
        where = f"{path}, line {number}"
        if len(fields) != width:
            return f"{where} has {len(fields)} columns, line {rows[0][0]} has {width}"
        for column, field in enumerate(fields, start=1):
            if column - 1 == text_column:  # the id column holds any text
                continue
            if not field:
                return (
                    f"{where}, column {column} is empty (missing values cannot be fitted or "
                    "scored: drop such rows, or fill them with skebflow.EBFlowImputer first)"
                )
            if not _is_number(field):
                hint = (
                    " (values must be separated by commas)" if re.search(r"\d[\s;]", field) else ""
                )
                if forced and number == rows[0][0]:
                    hint = " (drop --no-header if this line is a header)"
                return f"{where}, column {column}: {field!r} is not a number{hint}"
    return None


def _read_csv(
    path: str, header: bool | None, id_column: str | None = None, features: Sequence[str] = ()
) -> Table:
    """Read a CSV file of numbers, its header line detected unless ``header`` is given.

    The id column (``id_column``, see :func:`_id_index`) is read as text and kept apart.
    """
    kind = _kind(path)
    if kind not in ("text", "empty"):  # an empty file is reported as holding no data
        raise WrongKindError(f"{path} is not a CSV text file but a {kind} file{_order_hint(kind)}")
    with open(path, "rb") as file:
        encoding = "utf-8-sig" if file.read(3) == b"\xef\xbb\xbf" else "latin-1"
    first = next(_data_lines(path, 0, encoding), None)
    if first is None:
        raise DataError(f"{path} holds no data")
    number, fields = first
    if header is None:
        header = not all(_is_number(field) for field in fields)
    skip = number if header else 0
    text = _id_index(fields if header else None, id_column, path, features)
    if text is not None and not 0 <= text < len(fields):
        raise UsageError(f"--id {id_column}: {path} has {len(fields)} columns")
    numbers = None if text is None else [j for j in range(len(fields)) if j != text]
    if numbers == []:
        raise UsageError(f"{path} holds only its id column, no feature")
    options = {"delimiter": ",", "skiprows": skip, "encoding": encoding, "quotechar": '"'}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below
            X = np.loadtxt(path, ndmin=2, usecols=numbers, **options)
            ids = None
            if text is not None:
                ids = np.loadtxt(path, dtype=str, usecols=[text], ndmin=1, **options)
    except ValueError as error:
        message = _locate_problem(path, skip, encoding, forced=header is False, text_column=text)
        raise DataError(message or f"{path}: {first_line(error)}") from error
    if ids is not None and id_column == "auto" and not any(str(v).strip() for v in ids):
        # A blank-named column with nothing in it (a trailing comma) is no id column.
        message = _locate_problem(path, skip, encoding, forced=header is False)
        raise DataError(message or f"{path}: column {text + 1} is empty")
    if X.size == 0:
        raise DataError(f"{path} holds a header row but no data rows")
    if not np.isfinite(X).all():
        _check_finite(path, X, [number for number, _ in _data_lines(path, skip, encoding)])
    columns = [fields[j] for j in (numbers or range(len(fields)))] if header else None
    if ids is None:
        return Table(X, columns)
    name = fields[text] if header else f"column {text + 1}"
    return Table(X, columns, [str(value).strip() for value in ids], name, text)


def _order_hint(kind: str) -> str:
    """Suggest swapped arguments when a data file turns out to be a model."""
    if kind in _MODEL_KINDS:
        return " (perhaps a model: check the order of the arguments)"
    return ""


def _read_npy(path: str, id_column: str | None = None) -> Table:
    """Read a 1-D (one column) or 2-D ``.npy`` array of real numbers (and its id column)."""
    try:
        X = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        kind = _kind(path)
        if kind == ".npy array":  # a .npy file numpy refuses to read without pickle
            raise DataError(
                f"{path} holds a .npy array of Python objects (strings or mixed values), "
                "which only pickle could load, and pickle can run code: save an array of "
                "numbers instead (e.g. np.save(path, X.astype(float)))"
            ) from error
        raise WrongKindError(
            f"{path} is not a .npy array but a {kind} file{_order_hint(kind)}"
        ) from error
    if not isinstance(X, np.ndarray) or X.dtype.kind not in "biuf":
        raise DataError(f"{path} does not hold an array of real numbers")
    if X.ndim not in (1, 2) or X.size == 0:
        raise DataError(f"{path} holds an array of shape {X.shape}; rows x columns is needed")
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    text = None if id_column == "auto" else _id_index(None, id_column, path)
    return _split_ids(Table(X), text, id_column, path)


def _split_ids(table: Table, text: int | None, id_column: str | None, path: str) -> Table:
    """Move the column ``text`` of a table of numbers into its ids (as text)."""
    if text is None:
        return table
    width = table.X.shape[1]
    if not 0 <= text < width:
        raise UsageError(f"--id {id_column}: {path} has {width} columns")
    if width == 1:
        raise UsageError(f"{path} holds only its id column, no feature")
    keep = [j for j in range(width) if j != text]
    values = table.X[:, text]
    ids = [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in values]
    name = f"column {text + 1}" if table.columns is None else table.columns[text]
    return Table(table.select(keep).X, table.select(keep).columns, ids, name, text)


def _check_finite(path: str, X: np.ndarray, lines: list[int] | None = None) -> None:
    """Raise a :class:`DataError` naming the first NaN or infinite value."""
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        row, column = bad[0]
        where = f"line {lines[row]}" if lines else f"row {row + 1}"
        raise DataError(
            f"{path}, {where}, column {column + 1} is {X[row, column]} (missing or infinite "
            "values cannot be fitted or scored: drop such rows, or fill missing values "
            "with skebflow.EBFlowImputer first)"
        )


def read_data(
    path: str,
    header: bool | None = None,
    *,
    sep: str | None = None,
    decimal: str = ".",
    id_column: str | None = None,
    features: Sequence[str] = (),
) -> Table:
    """Read a CSV, TSV, parquet or ``.npy`` data file.

    Parameters
    ----------
    path : str
        A ``.npy`` file, a CSV file of comma-separated numbers (lines starting with ``#``
        and blank lines are skipped), or, read by pandas (the ``tables`` extra), a
        ``.tsv`` file, a ``.parquet`` file, or a text file with another ``sep`` or
        ``decimal``; ``-`` is standard input.
    header : bool or None, default=None
        Whether the text file's first line is a header; ``None`` detects it (a first line
        that is not all numbers is a header). Ignored for ``.npy`` and parquet.
    sep : str or None, default=None
        The field separator of a text file: ``None`` is ``,`` (a tab for ``.tsv``).
    decimal : str, default="."
        The decimal mark of a text file (``","`` for exports with decimal commas).
    id_column : str or None, default=None
        A column of row labels, kept apart as text (:attr:`Table.ids`), not a feature:
        its header name, or its 1-based number in a file without a header; ``"auto"``
        takes the header column named like an id (:func:`is_id_name`) when there is
        exactly one (several are a usage error); ``None`` or ``"none"``: no id column.
    features : sequence of str, default=()
        Names that are features whatever they look like (a model's columns): never
        taken as the id column by ``"auto"``.

    Returns
    -------
    Table
        The numbers (all finite), the header's names and the ids.
    """
    check_input(path)
    if path == "-" or not Path(path).is_file():
        # Standard input, a pipe or a device: read once into a temporary file (the
        # readers below open a file several times, and a pipe can be read only once).
        return _read_stream(
            path, header, sep=sep, decimal=decimal, id_column=id_column, features=features
        )
    if path.endswith(".tsv") and sep is None:
        sep = "\t"
    try:
        if path.endswith(".npy"):
            table = _read_npy(path, id_column)
        elif path.endswith(".parquet") or (sep not in (None, ",")) or decimal != ".":
            table = _read_with_pandas(path, header, sep or ",", decimal, id_column, features)
        else:
            table = _read_csv(path, header, id_column, features)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or first_line(error)}") from error
    _check_finite(path, table.X)
    return table


def _read_with_pandas(
    path: str,
    header: bool | None,
    sep: str,
    decimal: str,
    id_column: str | None = None,
    features: Sequence[str] = (),
) -> Table:
    """Read parquet, or text with another separator or decimal mark, with pandas."""
    try:
        import pandas as pd
    except ImportError:
        raise DataError(
            f"reading {path} (parquet, TSV, --sep or --decimal) needs pandas: pip install "
            "'skebflow[tables]'"
        ) from None
    try:
        if path.endswith(".parquet"):
            frame = pd.read_parquet(path)
            if any(name is not None for name in frame.index.names):
                frame = frame.reset_index()  # a named index (patient_id) is a column
        else:
            first = pd.read_csv(path, sep=sep, decimal=decimal, header=None, nrows=1)
            if header is None:
                header = not all(_is_number(str(v).replace(decimal, ".")) for v in first.iloc[0])
            frame = pd.read_csv(path, sep=sep, decimal=decimal, header=0 if header else None)
    except ImportError as error:  # parquet without pyarrow
        raise DataError(f"reading {path} needs pyarrow: pip install 'skebflow[tables]'") from error
    except (ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: {first_line(error)}") from error
    if frame.empty:
        raise DataError(f"{path} holds no data")
    named = path.endswith(".parquet") or bool(header)
    columns = [str(c) for c in frame.columns] if named else None
    index = _id_index(columns, id_column, path, features)
    if index is not None:
        if not 0 <= index < frame.shape[1]:
            raise UsageError(f"--id {id_column}: {path} has {frame.shape[1]} columns")
        if frame.shape[1] == 1:
            raise UsageError(f"{path} holds only its id column, no feature")
        ids = [str(value) for value in frame.iloc[:, index]]
        if not path.endswith(".parquet"):  # the ids as written (000 stays 000)
            text = pd.read_csv(
                path, sep=sep, header=0 if header else None, usecols=[index], dtype=str
            )
            ids = [str(value) for value in text.iloc[:, 0]]
        name = columns[index] if columns is not None else f"column {index + 1}"
        frame = frame.drop(columns=frame.columns[index])
        rest = _read_frame(frame, path, named)
        return Table(rest.X, rest.columns, ids, name, index)
    return _read_frame(frame, path, named)


def _read_frame(frame: object, path: str, named: bool) -> Table:
    """Turn a pandas frame of numbers into a table (a text column is a DataError)."""
    import pandas as pd

    text = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise DataError(
            f"{path}: column(s) {text} are not numbers (check --sep and --decimal, or --drop "
            "them; an id column: --id NAME)"
        )
    columns = [str(c) for c in frame.columns] if named else None
    return Table(frame.to_numpy(dtype=np.float64), columns)


def _read_stream(path: str, header: bool | None, **options: object) -> Table:
    """Read standard input (``-``) or a non-regular file once, then parse the copy."""
    name = "standard input" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as stream:
                data = stream.read()
    except OSError as error:
        raise DataError(f"cannot read {name}: {error.strerror or first_line(error)}") from error
    suffix = ".npy" if data.startswith(b"\x93NUMPY") else ".csv"
    with tempfile.TemporaryDirectory() as folder:
        copy = str(Path(folder) / f"input{suffix}")
        Path(copy).write_bytes(data)
        try:
            return read_data(copy, header, **options)
        except (DataError, UsageError) as error:
            raise type(error)(str(error).replace(copy, name)) from None


def _header(columns: list[str] | None) -> dict:
    """``np.savetxt`` options for a CSV header line of ``columns`` (none without names)."""
    return {} if columns is None else {"header": ",".join(columns), "comments": ""}


def save_array(
    path: str,
    array: np.ndarray,
    columns: list[str] | None = None,
    ids: list[str] | None = None,
    id_name: str | None = None,
) -> None:
    """Write an array to ``.npy``, or else to CSV at full precision (``-``: stdout).

    Parameters
    ----------
    path : str
        The output file, or ``-`` for standard output (CSV).
    array : ndarray
        The values (one row per line in CSV).
    columns : list of str, optional
        The CSV's header line (not written to ``.npy``).
    ids : list of str, optional
        Row labels written as the CSV's first column, headed ``id_name`` (not written to
        ``.npy``, which holds numbers only).
    id_name : str, optional
        The header of the id column (``id`` when not given).
    """
    try:
        if path.endswith(".npy") and path != "-":
            np.save(path, array)
            return
        if ids is not None:
            _write_with_ids(path, array, columns, ids, id_name or "id")
        elif path == "-":
            np.savetxt(sys.stdout, array, delimiter=",", fmt="%.17g", **_header(columns))
            sys.stdout.flush()
        else:
            np.savetxt(path, array, delimiter=",", fmt="%.17g", **_header(columns))
    except BrokenPipeError:  # `score ... | head`: the reader left; main says nothing
        raise
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or first_line(error)}") from error


def _write_with_ids(
    path: str, array: np.ndarray, columns: list[str] | None, ids: list[str], id_name: str
) -> None:
    """Write CSV rows ``id,value,...`` under a header (standard output for ``-``)."""
    header = [id_name, *(columns or [f"x{j}" for j in range(array.shape[1])])]
    rows = (
        [label, *(repr(float(value)) for value in row)]
        for label, row in zip(ids, array, strict=True)
    )
    if path == "-":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        sys.stdout.flush()
        return
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# --------------------------------------------------------------------------- models
def load_model(path: str, *, trust_pickle: bool = False) -> EBFlowDensity:
    """Load a fitted ``EBFlowDensity`` saved by ``fit``, or (when trusted) a joblib file of one.

    The file's content decides its format, not its name: skebflow's model format is read
    first (:func:`skebflow.load`, which runs no code from the file). A file that is not
    one but starts like a pickle is refused unread, since unpickling it can run any code
    it names, unless ``trust_pickle`` (``--trust-pickle``): then it is loaded with joblib,
    after a note on stderr.

    Parameters
    ----------
    path : str
        The model file.
    trust_pickle : bool, default=False
        Load joblib/pickle files (they can run code: only for files you trust).

    Returns
    -------
    EBFlowDensity
        The fitted model.
    """
    check_input(path)
    kind = _kind(path)
    if kind == "empty":
        raise DataError(f"{path} is empty (0 bytes), not a model file")
    if kind in ("text", ".npy array"):
        hint = " (perhaps data: check the order of the arguments)"
        raise WrongKindError(f"{path} is not a model file but a {kind} file{hint}")
    try:
        model = load(path)
    except NotAModelFileError as error:
        if kind != "joblib/pickle":
            raise WrongKindError(f"{path} is not a model file ({first_line(error)})") from error
        if not trust_pickle:
            raise DataError(PICKLE_REFUSED.format(path=path)) from None
        model = _load_joblib(path)
    except ValueError as error:
        raise DataError(first_line(error)) from error
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or first_line(error)}") from error
    if not isinstance(model, EBFlowDensity):
        raise DataError(f"{path} holds a {type(model).__name__}, not an EBFlowDensity")
    try:
        check_is_fitted(model)
    except NotFittedError as error:
        raise DataError(f"{path} holds an EBFlowDensity that is not fitted") from error
    return model


def _load_joblib(path: str) -> object:
    """Load a joblib (pickle) file, saying on stderr that it could run code."""
    print(JOBLIB_NOTE.format(path=path), file=sys.stderr)
    try:
        return joblib.load(path)
    except Exception as error:  # unpickling a foreign file can raise anything
        raise WrongKindError(f"{path} is not a joblib model file ({first_line(error)})") from error


def save_model(model: EBFlowDensity, path: str) -> None:
    """Save a model in skebflow's model format (it loads without running code).

    Parameters
    ----------
    model : EBFlowDensity
        The fitted model.
    path : str
        The output file (any name: the content, not the extension, tells the format).
    """
    try:
        save(model, path)
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or first_line(error)}") from error

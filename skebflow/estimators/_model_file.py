"""The model file: one ``torch.save`` of a plain dict, read back without running code.

A pickle (and so a joblib file) names the functions that rebuild its objects, and loading
it calls them: a crafted file runs whatever it names. A skebflow model file is one
:func:`torch.save` of a plain dict that holds only ``str``, ``int``, ``float``, ``bool``,
``None``, lists, dicts and tensors: the format marker, the versions and a SHA-256
checksum of everything else (:func:`write_model`) around an estimator's record
(:mod:`._record`). :func:`read_model` reads it with torch's restricted unpickler
(``torch.load(..., weights_only=True)``), which refuses every other class or function,
then checks the marker, the versions and the checksum before any value is used. A file
is written to a temporary file in the same folder and renamed over the target, so a
crash or a full disk leaves the previous file whole. The format, its checks and the
compatibility policy are described in ``docs/persistence.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
import stat
import struct
import tempfile
import warnings
from collections.abc import Mapping

import torch

from skebflow._version import __version__
from skebflow.estimators._record import field
from skebflow.exceptions import ModelVersionWarning, NotAModelFileError
from skebflow.utils import user_stacklevel

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFileMixin",
    "content_checksum",
    "read_model",
    "write_model",
]

#: The format marker: the value of the key ``"format"`` of every model file.
FORMAT = "skebflow-model"
#: The layout version this skebflow writes (and the newest it reads). Version 2 added the
#: checksum; version 1 files (no checksum) are still read.
FORMAT_VERSION = 2
#: The key of the checksum, ``"sha256:<hex digest>"`` of every other entry.
CHECKSUM = "checksum"
_PICKLE_HEAD = b"\x80"  # PROTO opcode: every pickle of protocol 2 or later (joblib's too)
_ZIP_HEAD = b"PK\x03\x04"  # torch.save's container


def write_model(record: Mapping, path: str | os.PathLike[str]) -> None:
    """Write an estimator's record to ``path`` as a model file.

    The whole model is serialized first, then written to a temporary file in the target's
    folder, flushed to disk and renamed over ``path`` (an atomic replacement): an error, a
    crash or a full disk leaves any previous file at ``path`` as it was. The new file keeps
    an existing file's permissions (else the usual ones, by the umask); a symbolic link
    is followed and its target replaced.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "record.skebflow")
    ...     write_model({"class": "Nothing"}, path)
    ...     content = torch.load(path, weights_only=True)
    >>> content["format"], content["format_version"], content["class"]
    ('skebflow-model', 2, 'Nothing')
    >>> content["checksum"] == content_checksum(content)
    True
    """
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "skebflow_version": __version__,
        "torch_version": str(torch.__version__),
        **record,
    }
    payload[CHECKSUM] = content_checksum(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    _replace(os.path.realpath(os.fspath(path)), buffer.getbuffer())


def _replace(path: str, data: memoryview) -> None:
    """Write ``data`` to a temporary file beside ``path``, sync it and rename it to ``path``."""
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory", path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".partial"
    )
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError, AttributeError):  # the rename itself, where supported
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def content_checksum(payload: Mapping) -> str:
    """Return ``"sha256:<hex>"`` of every entry of ``payload`` but the checksum itself.

    The digest covers each value with its type: ``None``, bools, ints, floats (their 8
    bytes), strings, lists and dicts (in order, with their lengths) and tensors (dtype,
    shape and raw bytes), so that any change to what a file holds changes it. A value of
    another type is a ``ValueError`` (a model file holds nothing else).

    Examples
    --------
    >>> x = torch.zeros(2, dtype=torch.float64)
    >>> a = content_checksum({"x": x, "n": 1})
    >>> changed = x.clone()
    >>> changed[1] = 1e-300
    >>> a == content_checksum({"x": x.clone(), "n": 1}), a == content_checksum(
    ...     {"x": changed, "n": 1})
    (True, False)
    """
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in payload.items() if key != CHECKSUM})
    return f"sha256:{digest.hexdigest()}"


def _feed(digest: hashlib._Hash, value: object) -> None:
    """Add ``value`` (with its type and length) to ``digest``."""
    if value is None:
        digest.update(b"N")
    elif isinstance(value, bool):
        digest.update(b"T" if value else b"F")
    elif isinstance(value, int):
        digest.update(b"i%d;" % value)
    elif isinstance(value, float):
        digest.update(b"f" + struct.pack("<d", value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"s%d:" % len(data) + data)
    elif isinstance(value, (list, tuple)):
        digest.update(b"l%d:" % len(value))
        for item in value:
            _feed(digest, item)
    elif isinstance(value, dict):
        digest.update(b"d%d:" % len(value))
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, torch.Tensor):
        header = f"t{value.dtype}{tuple(value.shape)}:".encode()
        try:
            data = value.detach().cpu().numpy().tobytes()  # C order, whatever the strides
        except TypeError as exc:  # a dtype numpy lacks; a model file holds none
            raise ValueError(f"the file is damaged: it holds a {value.dtype} tensor.") from exc
        digest.update(header + data)
    else:
        raise ValueError(f"the file is damaged: it holds a {type(value).__name__}.")


def read_model(path: str | os.PathLike[str]) -> dict:
    """Read a model file: the payload, its marker and versions checked.

    Raises :class:`~skebflow.exceptions.NotAModelFileError` for a file that is not a
    skebflow model file (unreadable, foreign, a pickle: refused unread) and ``ValueError``
    for a newer format or another major version of skebflow; warns with
    :class:`~skebflow.exceptions.ModelVersionWarning` about other versions.
    """
    payload = _read(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = "a dict" if isinstance(payload, dict) else f"a {type(payload).__name__}"
        raise NotAModelFileError(
            f"{os.fspath(path)} is a torch file but not a skebflow model file: it holds {what} "
            f"without the format marker {FORMAT!r}."
        )
    _check_versions(payload, path)
    return payload


def _check_checksum(payload: Mapping, version: int) -> None:
    """Refuse a file whose content differs from its checksum (format version 2 and later)."""
    if version < 2:
        if CHECKSUM in payload:
            raise ValueError(
                "the file is damaged: it says format version 1, which has no checksum, "
                "but holds one."
            )
        return
    saved = field(payload, CHECKSUM, str, "the file")
    if content_checksum(payload) != saved:
        raise ValueError(
            "the file is damaged: its content does not match the checksum it was saved with "
            "(it was changed after it was written: a damaged disk or transfer, or an edit); "
            "save the model again from the fitted estimator, or refit."
        )


def _read(path: str | os.PathLike[str]) -> object:
    """Read a file with torch's restricted unpickler (``NotAModelFileError`` if it refuses)."""
    with open(path, "rb") as file, warnings.catch_warnings():
        head = file.read(len(_ZIP_HEAD))
        file.seek(0)
        # Random bytes can look like a pickle of another protocol; torch warns about it.
        warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
        try:
            return torch.load(file, weights_only=True, map_location="cpu")
        except Exception as exc:  # a foreign file can make torch raise anything (OSError too)
            raise NotAModelFileError(_unreadable(path, head, exc)) from exc


def _unreadable(path: str | os.PathLike[str], head: bytes, error: Exception) -> str:
    """Say why torch refused the file: a pickle, foreign objects, or no torch file at all."""
    text = str(error)
    found = re.search(r"(Trying to load unsupported GLOBAL[^\n]*|Unsupported [^\n]*)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = found.group(1) if found else (lines[0] if lines else "the file ends too early")
    detail = detail.strip().rstrip(".")
    if len(detail) > 160:
        detail = detail[:157] + "..."
    name = os.fspath(path)
    refused = "it was not loaded, because building the objects of a pickle can run arbitrary code"
    if head.startswith(_PICKLE_HEAD):
        return (
            f"{name} is a pickle file (as joblib writes), not a skebflow model file; {refused} "
            f"(torch's restricted unpickler stopped at: {detail})."
        )
    if head.startswith(_ZIP_HEAD) and isinstance(error, pickle.UnpicklingError):
        return (
            f"{name} is a torch file holding Python objects other than plain data and tensors, "
            f"not a skebflow model file; {refused} (torch's restricted unpickler stopped at: "
            f"{detail})."
        )
    return (
        f"{name} is not a skebflow model file: torch cannot read it (it may be truncated or "
        f"damaged; {type(error).__name__}: {detail})."
    )


def _major(version: str) -> int | None:
    found = re.match(r"\d+", version)
    return int(found.group()) if found else None


def _check_versions(payload: Mapping, path: str | os.PathLike[str]) -> None:
    """Refuse a newer format or another major skebflow version; warn about other versions."""
    name = os.fspath(path)
    version = field(payload, "format_version", int, "the file")
    saved = field(payload, "skebflow_version", str, "the file")
    running = __version__
    if version > FORMAT_VERSION:
        raise ValueError(
            f"it was written in model format version {version} (by skebflow {saved}), newer "
            f"than version {FORMAT_VERSION}, the newest this skebflow {running} reads; "
            "upgrade skebflow to load it."
        )
    if version < 1:
        raise ValueError(f"the file is damaged: format version {version} does not exist.")
    _check_checksum(payload, version)
    if _major(saved) != _major(running):
        raise ValueError(
            f"it was saved by skebflow {saved}, whose major version differs from this "
            f"skebflow {running}; models are read only across versions of the same major "
            f"version: load it with skebflow {saved.split('.')[0]}.x, or refit."
        )
    if saved != running:
        warnings.warn(
            f"{name} was saved by skebflow {saved}, this is skebflow {running}: the model is "
            "rebuilt and checked, but results may differ in the last digits.",
            ModelVersionWarning,
            stacklevel=user_stacklevel(),
        )
    saved_torch = field(payload, "torch_version", str, "the file")
    if saved_torch.split("+")[0] != torch.__version__.split("+")[0]:
        warnings.warn(
            f"{name} was saved with torch {saved_torch}, this is torch {torch.__version__}: the "
            "weights load exactly, but results may differ in the last digits.",
            ModelVersionWarning,
            stacklevel=user_stacklevel(),
        )


class ModelFileMixin:
    """Give an estimator ``save(path)``: its record (``_model_record()``) as a model file.

    Each estimator that saves defines ``_model_record`` (from :mod:`._record`);
    ``skebflow.load`` reads the file back.
    """

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save the fitted estimator to a file that ``skebflow.load`` reads without running code.

        The same as ``skebflow.save(self, path)``. A detector or an imputer must wrap an
        ``EBFlowDensity``; the file is replaced atomically (a temporary file beside it,
        flushed and renamed).

        Parameters
        ----------
        path : str or path-like
            The output file (the format: ``docs/persistence.md``).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        ValueError
            If a parameter was changed after fit to a value that ``fit`` and
            ``skebflow.load`` reject (of the estimator, or of a detector's or an
            imputer's ``estimator`` or ``estimator_``), or the fitted flow no longer
            matches the parameters; nothing is written then (a previous file at
            ``path`` stays as it was).
        TypeError
            For a parameter or fitted attribute that is not a plain value, or a
            detector or imputer that does not wrap an ``EBFlowDensity``.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> import skebflow
        >>> from skebflow import EBFlowDensity, EBFlowOutlierDetector
        >>> X = np.random.default_rng(0).normal(size=(100, 2))
        >>> flow = EBFlowDensity(max_iter=2, n_blocks=1, hidden_features=8, random_state=0)
        >>> det = EBFlowOutlierDetector(estimator=flow, random_state=0).fit(X)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     det.save(os.path.join(folder, "detector.skebflow"))
        ...     loaded = skebflow.load(os.path.join(folder, "detector.skebflow"))
        >>> bool(np.array_equal(loaded.predict(X), det.predict(X)))
        True
        """
        write_model(self._model_record(), path)

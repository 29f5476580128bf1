"""Safe model files: save a fitted estimator, and load it back without running any code.

A pickle (and so a joblib file) names the functions that rebuild its objects, and loading
it calls them: a crafted file runs whatever it names. A skebflow model file is one
:func:`torch.save` of a plain dict that holds only ``str``, ``int``, ``float``, ``bool``,
``None``, lists, dicts and tensors, and :func:`load` reads it with torch's restricted
unpickler (``torch.load(..., weights_only=True)``), which refuses every other class or
function. The estimator is then rebuilt by skebflow's own code from the saved parameters,
exactly as ``fit`` builds it, and the saved tensors are copied into it (that record and its
checks: :mod:`skebflow.estimators.model_record`; this module writes and reads the file and
checks its versions). The format, its checks and the compatibility policy are described in
``docs/persistence.md``.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from skebflow import EBFlowDensity
>>> X = np.random.default_rng(0).normal(size=(100, 2))
>>> est = EBFlowDensity(max_iter=2, n_blocks=1, hidden_features=8, random_state=0).fit(X)
>>> with tempfile.TemporaryDirectory() as folder:
...     path = os.path.join(folder, "model.skebflow")
...     save(est, path)
...     loaded = load(path)
>>> bool(np.array_equal(loaded.score_samples(X), est.score_samples(X)))
True
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from collections.abc import Mapping

import torch

import skebflow
from skebflow.estimators.density import EBFlowDensity
from skebflow.estimators.model_record import density_record, detector_record, field, from_record
from skebflow.estimators.outlier import EBFlowOutlierDetector
from skebflow.utils.tensors import resolve_device

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelVersionWarning",
    "NotAModelFileError",
    "load",
    "save",
]

#: The format marker: the value of the key ``"format"`` of every model file.
FORMAT = "skebflow-model"
#: The layout version this skebflow writes (and the newest it reads).
FORMAT_VERSION = 1
_PICKLE_HEAD = b"\x80"  # PROTO opcode: every pickle of protocol 2 or later (joblib's too)
_ZIP_HEAD = b"PK\x03\x04"  # torch.save's container


class NotAModelFileError(ValueError):
    """The file is not a skebflow model file: unreadable, foreign, or a pickle (refused)."""


class ModelVersionWarning(UserWarning):
    """The model file was written by another version of skebflow or torch."""


# ------------------------------------------------------------------------------ saving
def save(estimator: EBFlowDensity | EBFlowOutlierDetector, path: str | os.PathLike[str]) -> None:
    """Save a fitted estimator to a model file that loads without running code.

    Parameters
    ----------
    estimator : EBFlowDensity or EBFlowOutlierDetector
        The fitted estimator; a detector must wrap an ``EBFlowDensity`` (its
        ``estimator_``). Its parameters must be plain values (None, bool, int, float, str,
        and tuples, lists and dicts of them; numpy scalars and arrays and a
        ``torch.device`` are converted to such values).
    path : str or path-like
        The file to write (any name; ``.skebflow`` is a good extension). The file is
        written only once the whole model is serialized.

    Raises
    ------
    TypeError
        For another kind of estimator, or a parameter or fitted attribute that is not a
        plain value (a ``RandomState`` as ``random_state``, an estimator object).
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If the fitted flow or preprocessing no longer matches the estimator's parameters
        (changed with ``set_params`` after ``fit``, or by a warm start with other
        ``architecture``, ``n_blocks``, ``hidden_features`` or preprocessing settings):
        such a model could not be rebuilt from its file.

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import torch
    >>> from skebflow import EBFlowDensity
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> est = EBFlowDensity(max_iter=2, n_blocks=1, hidden_features=8).fit(X)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "model.skebflow")
    ...     save(est, path)
    ...     content = torch.load(path, weights_only=True)
    >>> content["format"], content["format_version"], content["class"]
    ('skebflow-model', 1, 'EBFlowDensity')
    >>> content["attributes"]["n_features_in_"]
    2
    """
    if type(estimator) is EBFlowDensity:
        record = density_record(estimator)
    elif type(estimator) is EBFlowOutlierDetector:
        record = detector_record(estimator)
    else:
        raise TypeError(
            "save writes a fitted EBFlowDensity or EBFlowOutlierDetector, got "
            f"{type(estimator).__name__}."
        )
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "skebflow_version": skebflow.__version__,
        "torch_version": str(torch.__version__),
        **record,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with open(path, "wb") as file:
        file.write(buffer.getbuffer())


# ----------------------------------------------------------------------------- loading
def load(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> EBFlowDensity | EBFlowOutlierDetector:
    """Load a model file written by :func:`save`, without running any code from it.

    The file is read with ``torch.load(path, weights_only=True, map_location="cpu")``:
    torch's restricted unpickler builds only plain data and tensors and refuses every
    other class or function, so a crafted file cannot run code. The estimator is rebuilt
    from its saved parameters by skebflow's own code, exactly as ``fit`` builds it, and
    the saved weights and preprocessing statistics are copied in after their names,
    shapes and dtypes are checked. On the CPU the loaded model's ``score_samples``,
    ``sample`` and ``score_gradient`` equal the saved model's bit for bit.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    device : str or torch.device, default="cpu"
        Where the loaded model computes (``device_``); ``"auto"`` picks CUDA when it is
        available.

    Returns
    -------
    EBFlowDensity or EBFlowOutlierDetector
        The fitted estimator: its flow in float64, frozen (``requires_grad=False``) and in
        eval mode.

    Raises
    ------
    NotAModelFileError
        (A ``ValueError``.) If torch cannot read the file (random bytes, a truncated or
        empty file), if it is a torch file without skebflow's format marker, or if it
        holds Python objects other than plain data and tensors, such as a pickle or a
        joblib file (refused unread: building such objects can run code).
    ValueError
        If the file was written in a newer format version, by a skebflow of another major
        version, or is damaged: a missing or malformed field, parameters this skebflow
        does not accept, weights whose names, shapes or dtypes do not match the
        architecture, or weights inconsistent with the saved log-normalizer.
    OSError
        If the file cannot be opened (missing, a folder, no permission).

    Warns
    -----
    ModelVersionWarning
        If the file was written by another version of skebflow (of the same major
        version) or of torch: the model is loaded, but results may differ in the last
        digits.

    See Also
    --------
    save : Write a model file.

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "not-a-model.skebflow")
    ...     with open(path, "wb") as file:
    ...         _ = file.write(b"random bytes")
    ...     load(path)
    Traceback (most recent call last):
    ...
    skebflow.estimators.persistence.NotAModelFileError: ... torch cannot read it ...
    """
    target = resolve_device(device)
    payload = _read(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = "a dict" if isinstance(payload, dict) else f"a {type(payload).__name__}"
        raise NotAModelFileError(
            f"{os.fspath(path)} is a torch file but not a skebflow model file: it holds {what} "
            f"without the format marker {FORMAT!r}."
        )
    try:
        _check_versions(payload, path)
        estimator = from_record(payload)
    except NotAModelFileError:
        raise
    except ValueError as exc:
        raise ValueError(f"cannot load {os.fspath(path)}: {exc}") from exc
    return _move(estimator, target)


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
    running = skebflow.__version__
    if version > FORMAT_VERSION:
        raise ValueError(
            f"it was written in model format version {version} (by skebflow {saved}), newer "
            f"than version {FORMAT_VERSION}, the newest this skebflow {running} reads; "
            "upgrade skebflow to load it."
        )
    if version < 1:
        raise ValueError(f"the file is damaged: format version {version} does not exist.")
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
            stacklevel=3,
        )
    saved_torch = field(payload, "torch_version", str, "the file")
    if saved_torch.split("+")[0] != torch.__version__.split("+")[0]:
        warnings.warn(
            f"{name} was saved with torch {saved_torch}, this is torch {torch.__version__}: the "
            "weights load exactly, but results may differ in the last digits.",
            ModelVersionWarning,
            stacklevel=3,
        )


def _move(
    estimator: EBFlowDensity | EBFlowOutlierDetector, device: torch.device
) -> EBFlowDensity | EBFlowOutlierDetector:
    """Move the loaded flow and preprocessing to ``device``."""
    density = estimator.estimator_ if isinstance(estimator, EBFlowOutlierDetector) else estimator
    if device.type != "cpu":
        density.flow_ = density.flow_.to(device)
        density.preprocessing_ = density.preprocessing_.to(device)
        density.device_ = device
    return estimator

"""Safe model files: save a fitted estimator, and load it back without running any code.

:func:`save` writes an estimator's record (:mod:`._record`) in a model file
(:mod:`._model_file`: one ``torch.save`` of plain data and tensors); :func:`load` reads it
with torch's restricted unpickler, which refuses every class or function, and rebuilds
the estimator with skebflow's own code from the saved parameters, exactly as ``fit``
builds it. This module is the one place that names the estimator classes a file may
hold. The format, its checks and the compatibility policy are described in
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

import os

import torch

from skebflow.estimators._density import EBFlowDensity
from skebflow.estimators._imputer import EBFlowImputer
from skebflow.estimators._model_file import read_model, write_model
from skebflow.estimators._outlier import EBFlowOutlierDetector
from skebflow.estimators._record import (
    density_record,
    detector_record,
    from_record,
    imputer_record,
)
from skebflow.exceptions import NotAModelFileError
from skebflow.sampling import ImputationReport
from skebflow.utils import resolve_device

__all__ = ["load", "save"]

#: The classes a model file may hold, by the name its record gives.
_CLASSES = {
    "EBFlowDensity": EBFlowDensity,
    "EBFlowOutlierDetector": EBFlowOutlierDetector,
    "EBFlowImputer": EBFlowImputer,
    "ImputationReport": ImputationReport,
}
Estimator = EBFlowDensity | EBFlowOutlierDetector | EBFlowImputer


def save(estimator: Estimator, path: str | os.PathLike[str]) -> None:
    """Save a fitted estimator to a model file that loads without running code.

    Each estimator's ``save`` method does the same (``est.save(path)``).

    Parameters
    ----------
    estimator : EBFlowDensity, EBFlowOutlierDetector or EBFlowImputer
        The fitted estimator; a detector or an imputer must wrap an ``EBFlowDensity``
        (its ``estimator_``). Its parameters must be plain values (None, bool, int, float,
        str, and tuples, lists and dicts of them; numpy scalars and arrays and a
        ``torch.device`` are converted to such values).
    path : str or path-like
        The file to write (any name; ``.skebflow`` is a good extension). The whole model
        is serialized first, then written to a temporary file beside ``path`` and renamed
        over it, so that a failure leaves a previous file at ``path`` whole.

    Raises
    ------
    TypeError
        For another kind of estimator, or a parameter or fitted attribute that is not a
        plain value (a ``RandomState`` as ``random_state``, an estimator object).
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If a parameter was changed after ``fit`` to a value that ``fit`` and :func:`load`
        reject (the estimator's, or a detector's or an imputer's ``estimator`` or
        ``estimator_``'s), or if the fitted flow or preprocessing no longer matches the
        estimator's parameters (changed with ``set_params`` after ``fit``, or by a warm
        start with other ``architecture``, ``n_blocks``, ``hidden_features`` or
        preprocessing settings): such a model could not be rebuilt from its file. Nothing
        is written then.

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
    ('skebflow-model', 2, 'EBFlowDensity')
    >>> content["attributes"]["n_features_in_"]
    2
    """
    if type(estimator) is EBFlowDensity:
        record = density_record(estimator)
    elif type(estimator) is EBFlowOutlierDetector:
        record = detector_record(estimator, EBFlowDensity)
    elif type(estimator) is EBFlowImputer:
        record = imputer_record(estimator, EBFlowDensity)
    else:
        raise TypeError(
            "save writes a fitted EBFlowDensity, EBFlowOutlierDetector or EBFlowImputer, "
            f"got {type(estimator).__name__}."
        )
    write_model(record, path)


def load(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Estimator:
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
    EBFlowDensity, EBFlowOutlierDetector or EBFlowImputer
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
        version, or is damaged: content that differs from the checksum it was saved
        with, parameters that describe a flow the file holds no weights for (checked
        before anything is built), a missing or malformed field, parameters this skebflow
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
    skebflow.exceptions.NotAModelFileError: ... torch cannot read it ...
    """
    target = resolve_device(device)
    try:
        estimator = from_record(read_model(path), _CLASSES)
    except NotAModelFileError:
        raise
    except ValueError as exc:
        raise ValueError(f"cannot load {os.fspath(path)}: {exc}") from exc
    return _move(estimator, target)


def _move(estimator: Estimator, device: torch.device) -> Estimator:
    """Move the loaded flow and preprocessing to ``device``."""
    density = estimator if isinstance(estimator, EBFlowDensity) else estimator.estimator_
    if device.type != "cpu":
        density.flow_ = density.flow_.to(device)
        density.preprocessing_ = density.preprocessing_.to(device)
        density.device_ = device
    return estimator

"""The record of a fitted estimator (plain data and tensors), and the estimator rebuilt from it.

A model file (:mod:`._model_file`) holds a :func:`density_record`, a
:func:`detector_record` or an :func:`imputer_record`; :func:`from_record` builds the flow
and the preprocessing from the saved parameters through the same builders ``fit`` uses
(:func:`._settings.build_flow`, :func:`._settings.build_chain`), checks them against the
saved structure, names, shapes and dtypes (a ``ValueError`` otherwise) and copies the
saved tensors in. This module names no estimator class: the classes to build come in as
arguments (``load`` is the one place that names them).

Examples
--------
>>> import numpy as np
>>> from skebflow import EBFlowDensity, EBFlowOutlierDetector
>>> X = np.random.default_rng(0).normal(size=(100, 2))
>>> est = EBFlowDensity(max_iter=2, n_blocks=1, hidden_features=8, random_state=0).fit(X)
>>> classes = {"EBFlowDensity": EBFlowDensity, "EBFlowOutlierDetector": EBFlowOutlierDetector}
>>> again = from_record(density_record(est), classes)
>>> bool(np.array_equal(again.score_samples(X), est.score_samples(X)))
True
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from skebflow.estimators._settings import build_chain, build_flow, resolve_image_shape
from skebflow.nn import ARCHITECTURES
from skebflow.preprocessing import Chain

__all__ = ["density_record", "detector_record", "field", "from_record", "imputer_record"]

#: Fitted attributes stored in fields of their own (the flow, the preprocessing) or not at
#: all (the device: a loaded model lives where ``persistence.load`` puts it).
_OWN_FIELDS = ("flow_", "preprocessing_", "device_", "estimator_")
_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]*_")


# ----------------------------------------------------------------------------- records
def density_record(estimator: BaseEstimator, *, what: str | None = None) -> dict:
    """Return the plain record of a fitted ``EBFlowDensity``.

    ``class``, ``params``, ``tuple_params``, fitted ``attributes``, ``flow`` and
    ``preprocessing`` (structures and CPU tensors). A ``TypeError`` for a value that is not
    plain, a ``ValueError`` for parameters that ``load`` would reject (invalid values set
    after fit) or if the flow or preprocessing no longer matches the parameters. ``what``
    names the estimator in messages (default: its class).
    """
    check_is_fitted(estimator, "flow_")
    record = {"class": "EBFlowDensity", **_encode_params(estimator, what=what)}
    record["attributes"] = _fitted_attributes(estimator)
    architecture, n_features = estimator.architecture_, estimator.n_features_in_
    flow = estimator.flow_
    fresh = _fresh_flow(estimator, architecture, n_features)
    stale = (
        "does not match the estimator's parameters (changed with set_params after fit, or "
        "by a warm start with other settings), so the model could not be rebuilt from its "
        "file; restore the parameters of the fit or refit before saving."
    )
    if _describe(fresh) != _describe(flow) or _shapes(fresh.state_dict()) != _shapes(
        flow.state_dict()
    ):
        raise ValueError(f"The fitted flow_ ({architecture}, {n_features} features) {stale}")
    chain = estimator.preprocessing_
    if _describe(_fresh_chain(estimator)) != _describe(chain):
        raise ValueError(f"The fitted preprocessing_ {stale}")
    record["flow"] = {
        "architecture": architecture,
        "n_features": n_features,
        "modules": _describe(flow),
        "state_dict": {
            key: value.detach().cpu().clone() for key, value in flow.state_dict().items()
        },
    }
    record["preprocessing"] = {"modules": _describe(chain), "buffers": _buffers(chain)}
    return record


def detector_record(detector: BaseEstimator, density_class: type) -> dict:
    """Return the plain record of a fitted ``EBFlowOutlierDetector`` of an ``EBFlowDensity``.

    Its own fields, its ``estimator``'s parameters (or None) and the record of its
    ``estimator_``; a ``TypeError`` if it wraps anything but a ``density_class``.
    """
    return _wrapper_record(detector, density_class)


def imputer_record(imputer: BaseEstimator, density_class: type) -> dict:
    """Return the plain record of a fitted ``EBFlowImputer`` of an ``EBFlowDensity``.

    As :func:`detector_record`, plus the seed of its chains (``transform`` draws the
    same values after loading) and its ``report_`` (the arrays of an ``ImputationReport``
    as float64 tensors, or None).
    """
    record = _wrapper_record(imputer, density_class, skip=("report_",))
    record["seed"] = int(imputer._seed)
    report = imputer.report_
    record["report"] = None
    if report is not None:
        record["report"] = {
            item.name: (
                torch.as_tensor(np.asarray(value, dtype=np.float64))
                if isinstance(value, np.ndarray)
                else _plain(value, f"report_.{item.name}")
            )
            for item in dataclasses.fields(report)
            for value in [getattr(report, item.name)]
        }
    return record


def _wrapper_record(
    wrapper: BaseEstimator, density_class: type, skip: tuple[str, ...] = ()
) -> dict:
    """Return the record of an estimator around a fitted ``EBFlowDensity`` (``estimator_``)."""
    check_is_fitted(wrapper, "estimator_")
    name = type(wrapper).__name__
    fitted = wrapper.estimator_
    if type(fitted) is not density_class:
        raise TypeError(
            f"save writes an {name} only when it wraps an EBFlowDensity; this one wraps a "
            f"{type(fitted).__name__} (save that with joblib or pickle instead, which can "
            "run code when loaded: load such files only when you trust them)."
        )
    template = wrapper.estimator
    if template is not None and type(template) is not density_class:
        raise TypeError(
            f"parameter estimator of {name} must be None or an EBFlowDensity to be saved, "
            f"got a {type(template).__name__}."
        )
    record = {"class": name, **_encode_params(wrapper, skip="estimator")}
    record["estimator"] = None
    if template is not None:
        record["estimator"] = {
            "class": "EBFlowDensity",
            **_encode_params(template, what=f"the estimator parameter of {name}"),
        }
    record["attributes"] = _fitted_attributes(wrapper, skip)
    record["estimator_"] = density_record(fitted, what=f"estimator_ of {name}")
    return record


def _plain(value: object, what: str) -> object:
    """Return ``value`` as None, bool, int, float, str, or lists and dicts of them.

    Tuples become lists, numpy scalars and arrays Python values and lists, a
    ``torch.device`` its name; anything else raises a ``TypeError`` naming ``what``.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufUO":
        return _plain(value.tolist(), what)
    if isinstance(value, (list, tuple)):
        return [_plain(item, what) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {str(key): _plain(item, what) for key, item in value.items()}
    raise TypeError(
        f"{what} is {value!r} (a {type(value).__name__}), which a model file cannot hold: "
        "only None, bool, int, float, str and lists, tuples and dicts of them can be saved."
    )


def _encode_params(
    estimator: BaseEstimator, skip: str | None = None, what: str | None = None
) -> dict:
    """Return the plain parameters and the names of those that were tuples.

    ``skip`` names a parameter stored as a record of its own (a detector's estimator);
    ``what`` names the estimator in messages (default: its class). The parameters are
    validated first, as :func:`_decode_params` validates them on loading: a ``ValueError``
    for values that ``load`` would reject (set with ``set_params`` after fit), so that
    ``save`` never writes a file that does not load.
    """
    name = type(estimator).__name__
    try:
        estimator._validate_params()
    except (TypeError, ValueError) as exc:  # InvalidParameterError is both
        raise ValueError(
            f"The parameters of {what or name} were changed after fit and are invalid, so "
            f"the model cannot be saved (load would refuse the file): {exc} Set valid "
            "values with set_params (those of the fit) before saving."
        ) from exc
    params, tuples = {}, []
    for key, value in estimator.get_params(deep=False).items():
        if key == skip:
            continue
        try:
            params[key] = _plain(value, f"parameter {key} of {name}")
        except TypeError as exc:
            raise TypeError(
                f"{exc} Set a plain value with set_params before saving (random_state: an "
                "int or None)."
            ) from None
        if isinstance(value, tuple):
            tuples.append(key)
    return {"params": params, "tuple_params": tuples}


def _fitted_attributes(estimator: object, skip: tuple[str, ...] = ()) -> dict:
    """Return the fitted attributes (public, ending in ``_``) but those with own fields."""
    return {
        key: _plain(value, f"the fitted attribute {key} of {type(estimator).__name__}")
        for key, value in vars(estimator).items()
        if _ATTRIBUTE.fullmatch(key) and key not in _OWN_FIELDS and key not in skip
    }


def _describe(module: nn.Module) -> list[dict]:
    """Return every submodule's name, class and plain public options (the structure)."""
    entries = []
    for name, sub in module.named_modules():
        options = {}
        for key, value in vars(sub).items():
            if key.startswith("_") or key == "training":
                continue
            try:
                options[key] = _plain(value, key)
            except TypeError:
                continue  # not a plain option (a callable, a tensor): not described
        entries.append({"name": name, "type": type(sub).__name__, "options": options})
    return entries


def _buffers(chain: Chain) -> dict[str, Tensor | None]:
    """Return every registered buffer of the chain (``None`` for an unset one), on the CPU."""
    out: dict[str, Tensor | None] = {}
    for prefix, module in chain.named_modules():
        for name, buffer in module._buffers.items():
            key = f"{prefix}.{name}" if prefix else name
            out[key] = None if buffer is None else buffer.detach().cpu().clone()
    return out


def _fresh_flow(estimator: BaseEstimator, architecture: str, n_features: int) -> nn.Module:
    """Build the untrained float64 flow exactly as ``fit`` does (its weights are replaced)."""
    flow = build_flow(
        architecture,
        n_features,
        n_blocks=estimator.n_blocks,
        hidden_features=estimator.hidden_features,
        image_shape=resolve_image_shape(estimator.image_shape, n_features),
        generator=torch.Generator().manual_seed(0),
        # Files written before the whitening existed have no ``whiten_``: no whitening.
        whiten=getattr(estimator, "whiten_", False),
    )
    return flow.to(torch.float64)


def _fresh_chain(estimator: BaseEstimator) -> Chain:
    """Build the unfitted preprocessing chain exactly as ``fit`` does."""
    return build_chain(
        estimator.preprocessing, estimator.bounds, estimator.dequantize, estimator.architecture_
    )


def _shapes(state: Mapping[str, Tensor]) -> dict[str, tuple]:
    return {key: (tuple(value.shape), value.dtype) for key, value in state.items()}


# ---------------------------------------------------------------------------- rebuilding
def from_record(record: Mapping, classes: Mapping[str, type]) -> BaseEstimator:
    """Rebuild the fitted estimator of a record, on the CPU, checking every field.

    ``classes`` maps the record's class names (``"EBFlowDensity"``,
    ``"EBFlowOutlierDetector"``) to the classes to build. The flow comes back in float64,
    frozen and in eval mode. A ``ValueError`` if the record is damaged or does not match
    what its parameters rebuild.
    """
    kind = field(record, "class", str, "the file")
    if kind == "EBFlowDensity":
        return _density_from_record(classes["EBFlowDensity"], record, "the file")
    if kind == "EBFlowOutlierDetector":
        return _detector_from_record(classes, record)
    if kind == "EBFlowImputer":
        return _imputer_from_record(classes, record)
    raise ValueError(f"it holds a {kind!r}, which this skebflow cannot load.")


def field(record: Mapping, key: str, types: type | tuple[type, ...], where: str) -> object:
    """Return ``record[key]``, checked to be of ``types``; a ``ValueError`` otherwise."""
    if key not in record:
        raise ValueError(f"the file is damaged: {where} has no {key!r}.")
    value = record[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        expected = " or ".join(t.__name__ for t in _tuple(types))
        raise ValueError(
            f"the file is damaged: {key!r} of {where} is of type {type(value).__name__}, "
            f"expected {expected}."
        )
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


#: Parameters renamed since files were first written: class name -> {old name: (new
#: name, {old value: new value})}. skebflow 0.1.0.dev0 wrote the detector's
#: ``calibration="held-out"|"training"``, now ``novelty=True|False``.
_RENAMED_PARAMS: dict[str, dict[str, tuple[str, dict]]] = {
    "EBFlowOutlierDetector": {"calibration": ("novelty", {"held-out": True, "training": False})},
}


def _decode_params(cls: type, record: Mapping, where: str) -> object:
    """Construct ``cls`` from the saved parameters (tuples restored) and validate them.

    Parameters of older files under a name since changed (:data:`_RENAMED_PARAMS`) are
    read under their new name.
    """
    params = dict(field(record, "params", dict, where))
    for key in field(record, "tuple_params", list, where):
        if key in params and isinstance(params[key], list):
            params[key] = tuple(params[key])
    for old, (new, values) in _RENAMED_PARAMS.get(cls.__name__, {}).items():
        if old in params and new not in params:
            value = params.pop(old)
            if not isinstance(value, str) or value not in values:
                raise ValueError(f"{where} has parameters this skebflow rejects: {old}={value!r}.")
            params[new] = values[value]
    known = set(cls().get_params(deep=False))
    unknown = sorted(str(key) for key in set(params) - known)
    if unknown:
        raise ValueError(
            f"{where} has parameters that this {cls.__name__} does not have: {unknown} "
            "(written by a newer skebflow?)."
        )
    estimator = cls(**params)
    try:
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} has parameters this skebflow rejects: {exc}") from exc
    return estimator


def _set_attributes(estimator: object, record: Mapping, where: str) -> None:
    """Set the saved fitted attributes (``feature_names_in_``, ``image_shape_`` retyped)."""
    for key, value in field(record, "attributes", dict, where).items():
        if (
            not isinstance(key, str)
            or not _ATTRIBUTE.fullmatch(key)
            or key in _OWN_FIELDS
            or hasattr(type(estimator), key)
        ):
            raise ValueError(f"the file is damaged: {where} sets the attribute {key!r}.")
        if key == "feature_names_in_":
            value = np.asarray(value, dtype=object)
        if key == "image_shape_" and isinstance(value, list):
            value = tuple(value)  # a tuple, as fit sets it
        setattr(estimator, key, value)


def _check_modules(saved: list, rebuilt: list[dict], what: str) -> None:
    """Compare the saved structure with the one rebuilt from the parameters."""
    if saved == rebuilt:
        return
    for index, entry in enumerate(rebuilt):
        if index >= len(saved) or saved[index] != entry:
            other = saved[index] if index < len(saved) else "nothing"
            if isinstance(other, dict) and {"type", "options"} <= set(other):
                other = f"{other['type']} {other['options']}"
            raise ValueError(
                f"the {what} rebuilt from the saved parameters does not match the file: "
                f"module {entry['name'] or '(root)'!r} is {entry['type']} {entry['options']} "
                f"here, {other} in the file."
            )
    raise ValueError(
        f"the {what} in the file has {len(saved)} modules, the one rebuilt from the saved "
        f"parameters {len(rebuilt)}."
    )


def _check_state(saved: Mapping, expected: Mapping[str, Tensor], architecture: str) -> None:
    """Check that the saved weights have exactly the architecture's names, shapes and dtypes."""
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    if missing or unexpected:
        raise ValueError(
            f"the weights do not match the architecture {architecture!r}: missing "
            f"{missing or 'none'}, unexpected {unexpected or 'none'}."
        )
    for key, reference in expected.items():
        value = saved[key]
        if not isinstance(value, Tensor):
            raise ValueError(f"the file is damaged: weight {key!r} is a {type(value).__name__}.")
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise ValueError(
                f"the weights do not match the architecture {architecture!r}: {key!r} has "
                f"shape {tuple(value.shape)} ({value.dtype}) in the file, the architecture "
                f"needs {tuple(reference.shape)} ({reference.dtype})."
            )


def _density_from_record(cls: type, record: Mapping, where: str) -> BaseEstimator:
    """Rebuild a fitted ``EBFlowDensity`` (``cls``) from its record."""
    estimator = _decode_params(cls, record, where)
    _set_attributes(estimator, record, where)
    spec = field(record, "flow", dict, where)
    architecture = field(spec, "architecture", str, "the flow")
    n_features = field(spec, "n_features", int, "the flow")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"the file is damaged: unknown architecture {architecture!r}.")
    if n_features < 1 or getattr(estimator, "n_features_in_", None) != n_features:
        raise ValueError(
            f"the file is damaged: the flow has {n_features} features, n_features_in_ is "
            f"{getattr(estimator, 'n_features_in_', None)!r}."
        )
    prep = field(record, "preprocessing", dict, where)
    saved_buffers = field(prep, "buffers", dict, "the preprocessing")
    _check_statistics(saved_buffers, n_features)
    # The structure, names, shapes and dtypes are checked on a flow built on the "meta"
    # device, which allocates nothing: parameters that describe a huge flow (a crafted or
    # damaged file) are refused before any memory is taken for it.
    state = field(spec, "state_dict", dict, "the flow")
    if isinstance(estimator.n_blocks, int) and estimator.n_blocks > len(state):
        raise ValueError(
            f"the file is damaged: n_blocks={estimator.n_blocks}, but the flow holds only "
            f"{len(state)} weights (every block has at least one)."
        )
    try:
        with torch.device("meta"):
            skeleton = _fresh_flow(estimator, architecture, n_features)
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise ValueError(
            "the file is damaged: its parameters describe a flow that cannot be built "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})."
        ) from exc
    _check_modules(field(spec, "modules", list, "the flow"), _describe(skeleton), "flow")
    _check_state(state, skeleton.state_dict(), architecture)
    flow = _fresh_flow(estimator, architecture, n_features)
    _check_values(state, flow.state_dict())
    flow.load_state_dict(state, strict=True)
    flow.requires_grad_(False).eval()

    chain = _fresh_chain(estimator)
    _check_modules(
        field(prep, "modules", list, "the preprocessing"), _describe(chain), "preprocessing"
    )
    _load_buffers(chain, saved_buffers)

    log_z = field(vars(estimator), "log_normalizer_", float, "the fitted attributes")
    with torch.no_grad():
        recomputed = float(flow.log_normalizer())
    if not (math.isfinite(log_z) and math.isclose(recomputed, log_z, rel_tol=1e-9, abs_tol=1e-9)):
        raise ValueError(
            f"the file is damaged: its weights give the log-normalizer {recomputed!r}, the "
            f"file records {log_z!r}."
        )
    estimator.flow_ = flow
    estimator.preprocessing_ = chain.to(torch.float64)
    estimator.device_ = torch.device("cpu")
    return estimator


def _check_values(saved: Mapping[str, Tensor], fresh: Mapping[str, Tensor]) -> None:
    """Check the saved weights' values: finite, and the fixed buffers as the builder makes them.

    Index buffers (a coupling's ``cond_index``), masks and constant zeros are not learned:
    they must equal those of the flow rebuilt from the parameters, since a damaged index
    would pick the wrong features (or fail with an ``IndexError``) at the first score.
    """
    for key, reference in fresh.items():
        value = saved[key]
        fixed = not reference.is_floating_point() or key.rpartition(".")[2] in ("mask", "_zero")
        if reference.dtype == torch.bool:
            continue  # a flag such as ActNorm's ``initialized``
        if fixed and not torch.equal(value, reference):
            raise ValueError(
                f"the file is damaged: the fixed buffer {key!r} differs from the one the "
                "architecture builds."
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"the file is damaged: the weight {key!r} holds NaN or infinity.")


def _check_statistics(saved: Mapping, n_features: int) -> None:
    """Check the saved preprocessing statistics: float64, shape ``(n_features,)``, usable values.

    Checked before anything is built, so that ``n_features`` is vouched for by data the file
    holds. A scale must be positive and finite, a mean finite, bounds finite with
    ``low < high``.
    """
    for key, value in saved.items():
        if value is not None and not (
            isinstance(value, Tensor)
            and value.dtype == torch.float64
            and tuple(value.shape) == (n_features,)
        ):
            shown = (
                f"shape {tuple(value.shape)} ({value.dtype})"
                if isinstance(value, Tensor)
                else f"a {type(value).__name__}"
            )
            raise ValueError(
                f"the preprocessing statistic {key!r} is {shown} in the file; it must be a "
                f"float64 tensor of shape ({n_features},)."
            )
        name = key.rpartition(".")[2] if isinstance(key, str) else key
        if value is not None and not bool(torch.isfinite(value).all()):
            raise ValueError(f"the file is damaged: the statistic {key!r} holds NaN or infinity.")
        if value is not None and name == "scale" and not bool((value > 0).all()):
            raise ValueError(f"the file is damaged: the statistic {key!r} is not positive.")
    lows = {k.rpartition(".")[0]: v for k, v in saved.items() if str(k).endswith("low")}
    for prefix, low in lows.items():
        high = saved.get(f"{prefix}.high" if prefix else "high")
        if isinstance(low, Tensor) and isinstance(high, Tensor) and not bool((low < high).all()):
            raise ValueError(
                f"the file is damaged: the bounds of {prefix or 'the preprocessing'!r} do "
                "not satisfy low < high."
            )


def _load_buffers(chain: Chain, saved: Mapping) -> None:
    """Put the checked statistics into the rebuilt chain (their names checked)."""
    expected = _buffers(chain)
    if set(saved) != set(expected):
        raise ValueError(
            "the preprocessing statistics do not match the preprocessing: the file has "
            f"{sorted(saved)}, it needs {sorted(expected)}."
        )
    for key, value in saved.items():
        prefix, _, name = key.rpartition(".")
        setattr(chain.get_submodule(prefix), name, value)


def _detector_from_record(classes: Mapping[str, type], record: Mapping) -> BaseEstimator:
    """Rebuild a fitted ``EBFlowOutlierDetector`` from its record."""
    detector = _wrapper_from_record(classes, "EBFlowOutlierDetector", record)
    field(vars(detector), "offset_", float, "the fitted attributes")
    return detector


def _imputer_from_record(classes: Mapping[str, type], record: Mapping) -> BaseEstimator:
    """Rebuild a fitted ``EBFlowImputer`` from its record (its seed and report too)."""
    imputer = _wrapper_from_record(classes, "EBFlowImputer", record)
    imputer._seed = field(record, "seed", int, "the file")
    saved = field(record, "report", (dict, type(None)), "the file")
    imputer.report_ = None
    if saved is not None:
        report_class = classes["ImputationReport"]
        values = {}
        for item in dataclasses.fields(report_class):
            value = field(saved, item.name, (Tensor, int), "the report")
            if isinstance(value, Tensor):
                if value.dtype != torch.float64 or value.dim() != 1:
                    raise ValueError(
                        f"the file is damaged: the report's {item.name!r} is not a float64 vector."
                    )
                value = value.numpy().copy()
            values[item.name] = value
        if len(saved) != len(values):
            raise ValueError("the file is damaged: the report has fields this skebflow lacks.")
        imputer.report_ = report_class(**values)
    return imputer


def _wrapper_from_record(classes: Mapping[str, type], kind: str, record: Mapping) -> BaseEstimator:
    """Rebuild a fitted estimator of class ``kind`` around an ``EBFlowDensity``."""
    density = classes["EBFlowDensity"]
    wrapper = _decode_params(classes[kind], record, "the file")
    template = field(record, "estimator", (dict, type(None)), "the file")
    if template is not None:
        if field(template, "class", str, "the estimator parameter") != "EBFlowDensity":
            raise ValueError(
                "the file is damaged: the estimator parameter is not an EBFlowDensity."
            )
        wrapper.set_params(estimator=_decode_params(density, template, "the estimator"))
    _set_attributes(wrapper, record, "the file")
    fitted = field(record, "estimator_", dict, "the file")
    if field(fitted, "class", str, "estimator_") != "EBFlowDensity":
        raise ValueError("the file is damaged: estimator_ is not an EBFlowDensity.")
    wrapper.estimator_ = _density_from_record(density, fitted, "estimator_")
    return wrapper

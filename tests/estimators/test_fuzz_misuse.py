"""Property-based fuzzing of misuse, damage and interruption (issues 12 and 24).

Whatever a user does to an estimator (calls in any order, bad parameters and bad data, a
damaged model file, Ctrl-C at any moment of training), skebflow answers with a
``ValueError``, a ``TypeError`` or scikit-learn's ``NotFittedError`` and leaves its
estimator usable, or gives a correct result: never another exception type (a torch
``RuntimeError``, a ``KeyError``, an ``IndexError``, ...), a model half old and half new,
a silently different model, or a hang. ``tests/estimators/test_fuzz.py`` fuzzes single
calls; this file fuzzes what happens around them.

Input classes
-------------
Sequences of calls (a hypothesis state machine on one small ``EBFlowDensity``):
  ``fit``, ``partial_fit`` and ``fit_preprocessing`` on float64/float32 data of 2 or 3
  columns; ``score_samples``, ``score``, ``score_gradient`` and ``sample`` (valid and
  invalid counts); ``set_params`` with valid values (architecture, n_blocks,
  hidden_features, max_iter, batch_size, learning_rate, ema_decay, early_stopping,
  preprocessing, training_dtype, warm_start, random_state), invalid values (out of range,
  wrong type, unknown strings, an unknown device) and unknown names; restoring the
  parameters; ``save`` and ``skebflow.load`` round trips, continuing with the loaded model
  or not; a fresh clone (calls before fitting); and every call with refused input
  (NaN, inf, None, strings, bytes, complex, structured and nested arrays, sparse, ragged,
  dicts, scalars, 1-D, 3-D, no rows, no columns, another number of columns).
  A change of parameters may be followed at once by a call (an invalid value is then
  usually put back). Invariants after every step: a model that says it is fitted scores
  fixed probe rows bit for bit as it did after the last call that changed it (a call
  that raised changed nothing), finitely; a save/load round trip scores and samples
  identically.
Damaged model files (a density, an outlier detector and an imputer, saved once):
  one or several byte flips, overwritten runs (random bytes or zeros) and truncations at
  any offset, the offsets drawn over the whole file and over each zip entry's header,
  each entry's data and the central directory; appended bytes; the empty file. Each
  damaged file is refused by ``skebflow.load`` with a ``ValueError`` that says why, or
  loads a model whose outputs (scores, gradients, samples, decisions, imputations, the
  fitted attributes) equal the undamaged model's exactly.
Interruptions (``KeyboardInterrupt`` raised at the k-th call, before or after it runs, of
  one training function: every optimizer step, every epoch's validation score, the start
  of a run, the untrained flow's baseline score, the end-of-fit checks, the
  log-normalizer), during ``fit`` (fresh, refit, warm start), ``partial_fit`` (first
  call, after ``fit``, continuing) and the detector's and imputer's ``fit``: the
  interrupt always propagates. Inside ``fit``'s epochs the best model so far is kept
  (exactly the model of a fit with ``max_iter`` = the epochs validated); anywhere else
  (``_unchanged_on_error``) the estimator is exactly as before the call. A following fit
  or ``partial_fit`` works, and gives the uninterrupted model wherever the interrupted
  training state was discarded.
Failures the fuzzing found, fixed (each has a regression test at the end of the file):
  ``partial_fit`` after ``fit`` skipped scikit-learn's parameter validation and fails with a
  ``KeyError`` or ``ZeroDivisionError`` on invalid values; ``save`` wrote files that
  ``load`` refuses (parameters it rejects); ``fit_preprocessing`` on a fitted model with
  another number of columns left it fitted with a flow of the old width, whose
  ``score_samples`` raised a torch ``RuntimeError``; a detector or imputer whose first
  fit failed (an invalid parameter, Ctrl-C) said it was fitted and raised an
  ``AttributeError`` in ``predict``/``transform``.
"""

from __future__ import annotations

import io
import pkgutil
import shutil
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.sparse
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, DataDimensionalityWarning, NotFittedError

import skebflow
from skebflow import EBFlowDensity, EBFlowImputer, EBFlowOutlierDetector
from tests.estimators.fuzzing import fuzz_settings as _settings
from tests.estimators.fuzzing import no_hang  # noqa: F401 (autouse: a hang fails)

#: The errors a misuse may end in (NotFittedError is a ValueError too; scikit-learn's
#: InvalidParameterError is both a ValueError and a TypeError).
ERRORS = (ValueError, TypeError, NotFittedError)
#: Warnings that short fits may give; anything else (a RuntimeWarning, ...) fails.
ALLOWED_WARNINGS = (DataDimensionalityWarning, ConvergenceWarning, UserWarning)
#: The smallest flow the file fits: float64, so that every comparison is bit for bit.
FAST = {
    "architecture": "fc",
    "n_blocks": 1,
    "hidden_features": 4,
    "max_iter": 2,
    "training_dtype": "float64",
    "device": "cpu",
    "random_state": 0,
}
seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------- helpers
@contextmanager
def _checked_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the block's warnings; fail on any that is not in ALLOWED_WARNINGS."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record
    unexpected = [w for w in record if not issubclass(w.category, ALLOWED_WARNINGS)]
    assert not unexpected, [f"{w.category.__name__}: {w.message}" for w in unexpected]


def _data(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _probes(d: int) -> np.ndarray:
    """Fixed rows inside the range of every training set here (a finite density)."""
    return np.random.default_rng(2024).normal(size=(6, d))


def _density(**params: object) -> EBFlowDensity:
    return EBFlowDensity(**{**FAST, **params})


def _is_fitted(est: object) -> bool:
    return bool(est.__sklearn_is_fitted__())


def _public_attributes(est: object) -> dict:
    """The fitted attributes that are plain values (the flow and wrapped models aside)."""
    skip = ("flow_", "preprocessing_", "estimator_", "report_", "feature_names_in_")
    return {
        key: value
        for key, value in vars(est).items()
        if key.endswith("_") and not key.startswith("_") and key not in skip
    }


def _fail_on_other_errors(what: str, call: Callable[[], object]) -> object:
    """Run ``call``; an exception other than ERRORS fails, naming its type and the call."""
    try:
        return call()
    except ERRORS:
        raise
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc} (not a ValueError, TypeError or "
            "NotFittedError)"
        ) from exc


# ------------------------------------------------------------ misuse: call sequences
VALID_PARAMS = {
    "architecture": ["fc", "spline"],
    "n_blocks": [1, 2],
    "hidden_features": [4, 8],
    "max_iter": [1, 2, 3],
    "batch_size": ["auto", 8],
    "learning_rate": ["auto", 1e-2],
    "ema_decay": ["auto", None, 0.5],
    "early_stopping": [True, False],
    "preprocessing": ["standardize", None],
    "training_dtype": ["float64", "float32"],
    "warm_start": [False, True],
    "random_state": [0, 1],
}
#: Values fit refuses (scikit-learn's parameter validation, or a ValueError of its own).
INVALID_PARAMS = [
    ("max_iter", 0),
    ("max_iter", 1.5),
    ("hidden_features", 0),
    ("n_blocks", 0),
    ("learning_rate", -1.0),
    ("learning_rate", "fast"),
    ("batch_size", 0),
    ("batch_size", 0.5),
    ("validation_fraction", 1.5),
    ("architecture", "nope"),
    ("objective", "nope"),
    ("preprocessing", "nope"),
    ("training_dtype", "float16"),
    ("tol", -1.0),
    ("ema_decay", 2.0),
    ("max_grad_norm", 0.0),
    ("device", "nope"),
    ("bounds", "ab"),
    ("image_shape", (1, 2, 2)),
    ("n_slices", 0),
    ("lr_schedule", "x"),
    ("warm_start", "yes"),
    ("random_state", "x"),
]
#: Parameters that decide the flow's and the preprocessing's structure (save compares the
#: fitted ones with those the parameters build).
STRUCTURAL = (
    "architecture",
    "n_blocks",
    "hidden_features",
    "preprocessing",
    "bounds",
    "dequantize",
    "whiten",
    "objective",
    "image_shape",
)


def _with_value(X: np.ndarray, value: object, dtype: object = None) -> np.ndarray:
    X = X.astype(dtype if dtype is not None else X.dtype)
    X[len(X) // 2, X.shape[1] - 1] = value
    return X


def _structured(X: np.ndarray) -> np.ndarray:
    return np.zeros(len(X), dtype=[(f"c{j}", float) for j in range(X.shape[1])])


def _nested(X: np.ndarray) -> np.ndarray:
    out = X.astype(object)
    out[0, 0] = np.zeros(2)
    return out


#: Input every method refuses, whatever the model: name -> how to make it from good rows.
BAD_INPUTS: dict[str, Callable[[np.ndarray], object]] = {
    "nan": lambda X: _with_value(X, np.nan),
    "inf": lambda X: _with_value(X, -np.inf),
    "none": lambda X: _with_value(X, None, object),
    "string": lambda X: _with_value(X, "x1", object),
    "bytes": lambda X: _with_value(X.astype(bytes), b"?"),
    "complex": lambda X: X + 1j,
    "structured": _structured,
    "nested": _nested,
    "sparse": scipy.sparse.csr_matrix,
    "ragged": lambda X: [*X.tolist(), [1.0]],
    "dict": lambda X: {"a": X[:, 0]},
    "scalar": lambda X: np.float64(X[0, 0]),
    "1-D": lambda X: X[:, 0],
    "3-D": lambda X: X[:, :, None],
    "no rows": lambda X: X[:0],
    "no columns": lambda X: X[:, :0],
}
SCORING = ("score_samples", "score", "score_gradient")


class MisuseMachine(RuleBasedStateMachine):
    """One ``EBFlowDensity`` put through any sequence of calls, good and bad.

    ``reference`` holds the probe rows' scores after the last call that changed the model
    (None while it is not fitted), ``width`` its number of features, ``invalid`` the
    parameters set to invalid values, ``pending`` the width of a ``fit_preprocessing``
    sample that the next ``partial_fit`` must match; ``built_with`` the structural
    parameters the flow was built with and ``stale`` whether a continued training ran
    under others (then ``save`` may refuse, with a ValueError).
    """

    def __init__(self) -> None:
        super().__init__()
        self.est = _density()
        self.reference: np.ndarray | None = None
        self.width: int | None = None
        self.invalid: dict[str, object] = {}
        self.pending: int | None = None
        self.built_with: dict | None = None
        self.stale = False
        self.folder = Path(tempfile.mkdtemp(prefix="skebflow-misuse-"))
        self.n_saved = 0

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # ----------------------------------------------------------------- helpers
    def _attempt(self, what: str, call: Callable[[], object], *, must_succeed: bool) -> tuple:
        """Return ``(result, None)``, or ``(None, error)`` for a ValueError/TypeError."""
        try:
            with _checked_warnings():
                result = _fail_on_other_errors(what, call)
        except ERRORS as exc:
            event(f"{what.partition('(')[0]}: {type(exc).__name__}")
            assert not must_succeed, f"{what} raised {type(exc).__name__}: {exc}"
            assert str(exc), f"{what} raised {type(exc).__name__} without a message"
            return None, exc
        event(f"{what.partition('(')[0]}: ok")
        return result, None

    def _structure(self) -> dict:
        params = self.est.get_params()
        return {key: params[key] for key in STRUCTURAL}

    def _trained(self, *, continued: bool) -> None:
        """Record the model a successful fit or partial_fit left (finite on the probes)."""
        assert _is_fitted(self.est)
        self.width = int(self.est.n_features_in_)
        scores = self.est.score_samples(_probes(self.width))
        assert np.isfinite(scores).all(), scores
        self.reference, self.pending = scores, None
        if not continued:
            self.built_with, self.stale = self._structure(), False
        elif self._structure() != self.built_with:
            self.stale = True

    def _warm(self) -> bool:
        return self.est.get_params()["warm_start"] is True and self.reference is not None

    # ------------------------------------------------------------------- rules
    @rule(seed=seeds, n=st.integers(10, 40), d=st.sampled_from([2, 3]), as32=st.booleans())
    def fit(self, seed: int, n: int, d: int, as32: bool) -> None:
        warm = self._warm()
        d = self.width if warm else d
        X = _data(seed, n, d).astype(np.float32 if as32 else np.float64)
        _, error = self._attempt("fit", lambda: self.est.fit(X), must_succeed=not self.invalid)
        if self.invalid:
            assert error is not None, f"fit accepted the invalid parameters {self.invalid}"
        else:
            self._trained(continued=warm)

    @rule(seed=seeds, n=st.integers(2, 30), d=st.sampled_from([2, 3]))
    def partial_fit(self, seed: int, n: int, d: int) -> None:
        continued = self.reference is not None and self.pending is None
        d = self.pending or self.width or d
        X = _data(seed, n, d)
        _, error = self._attempt(
            "partial_fit", lambda: self.est.partial_fit(X), must_succeed=not self.invalid
        )
        if self.invalid:  # validated on every call, fitted or not
            assert error is not None, f"partial_fit accepted the invalid parameters {self.invalid}"
        if error is None:
            self._trained(continued=continued)

    @rule(seed=seeds, n=st.integers(2, 30), d=st.sampled_from([2, 3]))
    def fit_preprocessing(self, seed: int, n: int, d: int) -> None:
        X = _data(seed, n, d)
        _, error = self._attempt(
            "fit_preprocessing",
            lambda: self.est.fit_preprocessing(X),
            must_succeed=not self.invalid,
        )
        if self.invalid:
            assert error is not None, f"fit_preprocessing accepted {self.invalid}"
            return
        # It fits no model and discards a fitted one: the next partial_fit starts over
        # from these statistics.
        assert not _is_fitted(self.est), "fit_preprocessing kept a fitted model"
        self.pending = d
        self.reference = self.width = None

    @rule(method=st.sampled_from(SCORING))
    def score(self, method: str) -> None:
        rows = _probes(self.width or 3)
        result, error = self._attempt(
            method, lambda: getattr(self.est, method)(rows), must_succeed=self.reference is not None
        )
        if self.reference is None:
            assert isinstance(error, NotFittedError), error
        elif method == "score_samples":
            np.testing.assert_array_equal(result, self.reference)
        elif method == "score":
            assert result == float(np.mean(self.reference))
        else:
            assert result.shape == rows.shape and np.isfinite(result).all()

    @rule(
        n_samples=st.one_of(
            st.integers(1, 20), st.sampled_from([0, -1, 2.5, "3", None, True, np.float64(2.0)])
        ),
        seed=seeds,
    )
    def sample(self, n_samples: object, seed: int) -> None:
        valid = isinstance(n_samples, int) and not isinstance(n_samples, bool) and n_samples >= 1
        result, error = self._attempt(
            f"sample({n_samples!r})",
            lambda: self.est.sample(n_samples, random_state=seed),
            must_succeed=valid and self.reference is not None,
        )
        if self.reference is None:
            assert isinstance(error, NotFittedError), error
        elif not valid:
            assert error is not None and "n_samples" in str(error)
        else:
            assert result.shape == (n_samples, self.width) and np.isfinite(result).all()
            np.testing.assert_array_equal(result, self.est.sample(n_samples, random_state=seed))

    def _then(self, then: str, seed: int) -> None:
        """Make the call ``then`` (right after a change of parameters)."""
        if then == "fit":
            self.fit(seed=seed, n=20, d=3, as32=False)
        elif then == "partial_fit":
            self.partial_fit(seed=seed, n=20, d=3)
        elif then == "fit_preprocessing":
            self.fit_preprocessing(seed=seed, n=20, d=3)
        elif then == "save":
            self.save_and_load(adopt=False)

    @rule(
        change=st.sampled_from([(k, v) for k, values in VALID_PARAMS.items() for v in values]),
        then=st.sampled_from(["nothing", "fit", "partial_fit", "save"]),
        seed=seeds,
    )
    def set_valid_parameter(self, change: tuple[str, object], then: str, seed: int) -> None:
        key, value = change
        self.est.set_params(**{key: value})
        self.invalid.pop(key, None)
        self._then(then, seed)

    @rule(
        change=st.sampled_from([*INVALID_PARAMS, ("n_layers", 3), ("estimator__x", 1)]),
        then=st.sampled_from(["nothing", "fit", "partial_fit", "fit_preprocessing", "save"]),
        keep=st.sampled_from([False, False, True]),
        seed=seeds,
    )
    def set_invalid_parameter(
        self, change: tuple[str, object], then: str, keep: bool, seed: int
    ) -> None:
        """Set an invalid value, make one call, and (unless ``keep``) put the value back."""
        key, value = change
        before = self.est.get_params()
        if key not in before:
            _, error = self._attempt(
                "set_params", lambda: self.est.set_params(**{key: value}), must_succeed=False
            )
            assert isinstance(error, ValueError) and key.split("__")[0] in str(error)
            assert self.est.get_params() == before
            return
        was_invalid = key in self.invalid
        self.est.set_params(**{key: value})
        self.invalid[key] = value
        self._then(then, seed)
        if not keep:
            self.est.set_params(**{key: before[key]})
            if was_invalid:
                self.invalid[key] = before[key]
            else:
                del self.invalid[key]

    @rule()
    def restore_parameters(self) -> None:
        self.est.set_params(**{**EBFlowDensity().get_params(), **FAST})
        self.invalid = {}

    @rule()
    def start_over_with_a_clone(self) -> None:
        self.est = clone(self.est)
        self.reference = self.width = self.pending = self.built_with = None
        self.stale = False

    @rule(adopt=st.booleans())
    def save_and_load(self, adopt: bool) -> None:
        path = self.folder / f"model-{self.n_saved}.skebflow"
        self.n_saved += 1
        saveable = not self.invalid and not self.stale and self._structure() == self.built_with
        _, error = self._attempt(
            "save",
            lambda: self.est.save(path),
            must_succeed=self.reference is not None and saveable,
        )
        if self.reference is None:
            assert isinstance(error, NotFittedError), error
        if error is not None:
            assert not path.exists(), "a refused save wrote a file"
            return
        # A file that save wrote must load (save refuses what load would refuse).
        loaded, _ = self._attempt("load", lambda: skebflow.load(path), must_succeed=True)
        assert type(loaded) is EBFlowDensity
        assert loaded.get_params() == self.est.get_params()
        np.testing.assert_array_equal(loaded.score_samples(_probes(self.width)), self.reference)
        np.testing.assert_array_equal(
            loaded.sample(4, random_state=0), self.est.sample(4, random_state=0)
        )
        if adopt:  # go on with the loaded model (no training state, a rebuilt flow)
            self.est = loaded
            self.pending, self.built_with, self.stale = None, self._structure(), False

    def _refused(self, method: str, what: str, X: object) -> None:
        _, error = self._attempt(
            f"{method}({what})", lambda: getattr(self.est, method)(X), must_succeed=False
        )
        assert error is not None, f"{method} accepted {what} input"
        if method in SCORING and self.reference is None:
            assert isinstance(error, NotFittedError), error

    @rule(
        method=st.sampled_from(["fit", "partial_fit", "fit_preprocessing", *SCORING]),
        bad=st.sampled_from(sorted(BAD_INPUTS)),
        seed=seeds,
    )
    def call_with_bad_input(self, method: str, bad: str, seed: int) -> None:
        X = _data(seed, 8, self.pending or self.width or 3)
        self._refused(method, bad, BAD_INPUTS[bad](X))

    @rule(
        method=st.sampled_from(["fit", "partial_fit", *SCORING]),
        extra=st.sampled_from([-1, 1, 2]),
        seed=seeds,
    )
    def call_with_another_width(self, method: str, extra: int, seed: int) -> None:
        """Rows of another width where the width is fixed: scoring, a warm fit, a
        partial_fit that continues (elsewhere they start a new model: not a misuse)."""
        fixed = {
            "fit": self._warm(),
            "partial_fit": self.pending is not None or self.reference is not None,
        }.get(method, True)
        d = self.pending or self.width or 3
        if fixed:
            self._refused(method, f"{d + extra} columns", _data(seed, 8, d + extra))

    # -------------------------------------------------------------- invariants
    @invariant()
    def a_fitted_model_scores_as_recorded(self) -> None:
        """Fitted exactly when expected; a failed call changed nothing (bit for bit)."""
        assert _is_fitted(self.est) == (self.reference is not None)
        if self.reference is not None:
            assert self.est.n_features_in_ == self.width, (
                f"the model says it has {self.est.n_features_in_} features; its flow was "
                f"fitted on {self.width}"
            )
            scores = _fail_on_other_errors(
                "score_samples", lambda: self.est.score_samples(_probes(self.width))
            )
            np.testing.assert_array_equal(scores, self.reference)


def test_any_sequence_of_calls_ends_in_documented_errors_and_leaves_the_model_intact():
    """Every call of any sequence succeeds or raises ValueError/TypeError/NotFittedError;
    a call that raised leaves the fitted model scoring bit for bit as before; save/load
    round trips score identically; fitted models score the probe rows finitely."""
    run_state_machine_as_test(
        MisuseMachine, settings=_settings(60, shrink=False, stateful_step_count=40)
    )


# ------------------------------------------------------------------ damaged files
def _imputer_queries() -> np.ndarray:
    queries = _data(5, 6, 3)
    queries[::2, 1] = np.nan
    queries[1, 0] = np.nan
    return queries


def _density_outputs(est: EBFlowDensity) -> list:
    rows = _probes(3)
    return [
        type(est),
        est.get_params(),
        _public_attributes(est),
        est.score_samples(rows),
        est.score_gradient(rows),
        est.sample(5, random_state=0),
    ]


def _detector_outputs(det: EBFlowOutlierDetector) -> list:
    rows = np.vstack([_probes(3), [[4.0, -4.0, 4.0]]])
    return [
        type(det),
        repr(det),
        _public_attributes(det),
        det.decision_function(rows),
        det.predict(rows),
        *_density_outputs(det.estimator_),
    ]


def _imputer_outputs(imp: EBFlowImputer) -> list:
    report = imp.report_
    return [
        type(imp),
        repr(imp),
        _public_attributes(imp),
        imp._seed,
        imp.transform(_imputer_queries()),
        report.acceptance,
        report.rhat,
        report.step_size,
        report.n_steps,
        *_density_outputs(imp.estimator_),
    ]


def _fit_detector() -> EBFlowOutlierDetector:
    det = EBFlowOutlierDetector(estimator=_density(), contamination=0.1, random_state=0)
    return det.fit(_data(0, 40, 3))


def _fit_imputer() -> EBFlowImputer:
    X = _data(0, 40, 3)
    X[::4, 1] = np.nan
    return EBFlowImputer(_density(), n_steps=5, random_state=0).fit(X)


SAVED: dict[str, tuple[Callable[[], object], Callable[[object], list]]] = {
    "density": (lambda: _density().fit(_data(0, 40, 3)), _density_outputs),
    "detector": (_fit_detector, _detector_outputs),
    "imputer": (_fit_imputer, _imputer_outputs),
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, tuple[bytes, list]]:
    """Each estimator's model file (its bytes) and the outputs of the saved model."""
    folder = tmp_path_factory.mktemp("saved")
    out = {}
    for name, (make, outputs) in SAVED.items():
        with _checked_warnings():
            model = make()
            model.save(folder / name)
            out[name] = ((folder / name).read_bytes(), outputs(model))
    return out


def _regions(content: bytes) -> list[tuple[int, int]]:
    """The zip's parts: each entry's local header and its data, and the central directory."""
    regions, end = [], 0
    for info in zipfile.ZipFile(io.BytesIO(content)).infolist():
        start = info.header_offset
        name_length, extra_length = struct.unpack("<HH", content[start + 26 : start + 30])
        data = start + 30 + name_length + extra_length
        end = data + info.compress_size
        regions += [(start, data), (data, end)] if info.compress_size else [(start, data)]
    return [*regions, (end, len(content))]


@st.composite
def damages(draw: st.DrawFn, content: bytes) -> tuple[str, bytes]:
    """A damaged copy of ``content`` and what was done to it."""
    n, regions = len(content), _regions(content)
    offsets = st.one_of(
        st.integers(0, n - 1),
        st.sampled_from(regions).flatmap(lambda r: st.integers(r[0], r[1] - 1)),
    )
    kind = draw(st.sampled_from(["flip", "flips", "overwrite", "zeros", "truncate", "append"]))
    damaged = bytearray(content)
    if kind in ("flip", "flips"):
        count = 1 if kind == "flip" else draw(st.integers(2, 8))
        where = []
        for _ in range(count):
            i = draw(offsets)
            damaged[i] ^= draw(st.integers(1, 255))
            where.append(i)
        what = f"{kind} at {where}"
    elif kind in ("overwrite", "zeros"):
        i = draw(offsets)
        length = draw(st.integers(1, 64))
        run = (
            bytes(length) if kind == "zeros" else draw(st.binary(min_size=length, max_size=length))
        )
        damaged[i : i + length] = run[: n - i]
        what = f"{kind} of {length} bytes at {i}"
    elif kind == "truncate":
        length = draw(st.one_of(st.integers(0, n - 1), st.sampled_from([r[0] for r in regions])))
        damaged = damaged[:length]
        what = f"truncated to {length} bytes"
    else:
        extra = draw(st.binary(min_size=1, max_size=200))
        damaged += extra
        what = f"{len(extra)} bytes appended"
    if bytes(damaged) == content:
        return "unchanged (an overwrite with the same bytes)", content
    event(f"damage: {kind}")
    return what, bytes(damaged)


def _assert_same_outputs(got: list, expected: list, what: str) -> None:
    assert len(got) == len(expected)
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: output {index} differs")
        else:
            assert a == b, f"{what}: output {index} differs: {a!r} != {b!r}"


def _load_damaged(path: Path, what: str) -> object | None:
    """Load ``path``: the model, or None when refused with a ValueError that says why."""
    try:
        with _checked_warnings():
            return _fail_on_other_errors(f"load ({what})", lambda: skebflow.load(path))
    except ERRORS as exc:
        assert isinstance(exc, ValueError), f"{what}: {type(exc).__name__}: {exc}"
        assert str(path) in str(exc) and len(str(exc)) > len(str(path)) + 10, str(exc)
        return None


@pytest.mark.parametrize("name", sorted(SAVED))
@_settings(80)
@given(data=st.data())
def test_damaged_model_files_are_refused_or_load_the_same_model(
    name, data, saved_models, tmp_path_factory
):
    """A damaged file raises a ValueError with a message, or loads exactly the saved model."""
    content, expected = saved_models[name]
    what, damaged = data.draw(damages(content), label="damage")
    path = tmp_path_factory.getbasetemp() / f"damaged-{name}.skebflow"
    path.write_bytes(damaged)
    loaded = _load_damaged(path, what)
    event(f"{'refused' if loaded is None else 'loaded'}")
    if loaded is not None:
        with _checked_warnings():
            got = SAVED[name][1](loaded)
        _assert_same_outputs(got, expected, what)


@pytest.mark.parametrize("name", sorted(SAVED))
def test_an_empty_or_cut_model_file_is_refused(name, saved_models, tmp_path):
    """The empty file, and the file cut at the start of each of its parts, are refused."""
    content, _ = saved_models[name]
    for length in [0, *sorted({start for start, _ in _regions(content)} - {0})]:
        path = tmp_path / f"cut-{length}"
        path.write_bytes(content[:length])
        assert _load_damaged(path, f"cut to {length} bytes") is None, length


# ------------------------------------------------------------------- interruption
class _CtrlC:
    """Patch ``target`` so that its ``k``-th call raises ``KeyboardInterrupt``.

    The call runs first when ``after`` (Ctrl-C right after it returned), not at all
    otherwise. ``k=None`` only counts the calls (``calls``); ``fired`` says whether the
    interrupt was raised.
    """

    def __init__(self, target: str, k: int | None = None, *, after: bool = False) -> None:
        self.target, self.k, self.after = target, k, after
        self.calls, self.fired = 0, False

    def __enter__(self) -> _CtrlC:
        original = pkgutil.resolve_name(self.target)

        def wrapper(*args: object, **kwargs: object) -> object:
            self.calls += 1
            if self.calls != self.k:
                return original(*args, **kwargs)
            self.fired = True
            if self.after:
                original(*args, **kwargs)
            raise KeyboardInterrupt

        self._patch = mock.patch(self.target, new=wrapper)
        self._patch.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._patch.stop()


RUN = "skebflow.estimators._training_run"
#: Where a fit can be interrupted, and whether it is inside the epochs (where the trainer
#: catches the interrupt and keeps the best model so far).
FIT_POINTS = {
    "step": ("skebflow.training._trainer.train_step", True),
    "validation": (f"{RUN}.ValidationScore.__call__", True),
    "start": (f"{RUN}._degenerate_jitter", False),
    "baseline": (f"{RUN}._untrained_score", False),
    "checks": (f"{RUN}.diagnose", False),
    "log-normalizer": (f"{RUN}.TrainingRun._log_normalizer", False),
}
PARTIAL_FIT_POINTS = {
    "step": "skebflow.training._trainer.train_step",
    "epoch": "skebflow.training._trainer.Trainer.epoch",
    "start": f"{RUN}._degenerate_jitter",
    "log-normalizer": f"{RUN}.TrainingRun._log_normalizer",
}


def _state(est: EBFlowDensity) -> tuple | None:
    """What a fitted density is: its probe scores, epochs and losses (None: not fitted)."""
    if not _is_fitted(est):
        return None
    d = est.n_features_in_
    scores = _fail_on_other_errors("score_samples", lambda: est.score_samples(_probes(d)))
    return (scores, d, est.n_iter_, list(est.loss_curve_))


def _assert_same_state(got: tuple | None, expected: tuple | None) -> None:
    assert (got is None) == (expected is None), (got, expected)
    if expected is not None:
        np.testing.assert_array_equal(got[0], expected[0])
        assert got[1:] == expected[1:]


def _interrupted(call: Callable[[], object], ctrl_c: _CtrlC) -> list[warnings.WarningMessage]:
    """Run ``call`` under ``ctrl_c``; the interrupt must come out when it fired."""
    with _checked_warnings() as record, ctrl_c:
        try:
            call()
        except KeyboardInterrupt:
            assert ctrl_c.fired, "a KeyboardInterrupt that was not raised here"
            return record
    assert not ctrl_c.fired, "the KeyboardInterrupt was swallowed"
    return record


def _prepared(params: dict, before: str, width: int = 3) -> EBFlowDensity:
    """A density in the state ``before``: new, fitted (to ``width`` columns), or fitted
    and set to warm-start."""
    est = _density(**params)
    with _checked_warnings():
        if before != "new":
            est.fit(_data(99, 30, width))
        if before == "warm":
            est.set_params(warm_start=True)
    return est


@_settings(60, shrink=False)
@given(
    point=st.sampled_from(sorted(FIT_POINTS)),
    before=st.sampled_from(["new", "fitted", "warm"]),
    n=st.integers(20, 40),
    batch_size=st.sampled_from([4, 8, 16]),
    max_iter=st.integers(1, 3),
    after=st.booleans(),
    width_before=st.sampled_from([2, 3]),
    seed=seeds,
    data=st.data(),
)
def test_ctrl_c_during_fit_keeps_the_best_model_or_changes_nothing(
    point, before, n, batch_size, max_iter, after, width_before, seed, data
):
    """Ctrl-C anywhere in fit propagates; inside the epochs the best model so far is kept
    (that of a fit with max_iter = the epochs validated), elsewhere nothing changed; a
    following fit works (and, without a warm start, gives the uninterrupted model)."""
    target, in_epochs = FIT_POINTS[point]
    params = {"batch_size": batch_size, "max_iter": max_iter, "n_iter_no_change": 50}
    X = _data(seed, n, 3)
    # A refit may change the number of columns (a warm start may not).
    width_before = 3 if before == "warm" else width_before
    twin = _prepared(params, before, width_before)  # uninterrupted, counting the calls
    with _checked_warnings(), _CtrlC(target) as count:
        twin.fit(X)
    k = data.draw(st.integers(1, max(count.calls, 1)), label="k")
    est = _prepared(params, before, width_before)
    state_before = _state(est)
    record = _interrupted(lambda: est.fit(X), ctrl_c := _CtrlC(target, k, after=after))
    event(f"{point}: {'interrupted' if ctrl_c.fired else 'not reached'}")
    event(f"before: {before}, {width_before} columns")
    if not ctrl_c.fired:  # the point is not on this fit's path (a warm start has no baseline)
        _assert_same_state(_state(est), _state(twin))
        return
    if not in_epochs:
        # _unchanged_on_error: exactly as before the call (fitted or not).
        _assert_same_state(_state(est), state_before)
        assert not [w for w in record if "Training interrupted" in str(w.message)]
    else:
        assert _is_fitted(est)
        assert [w for w in record if "Training interrupted" in str(w.message)]
        assert np.isfinite(est.score_samples(_probes(3))).all()
        steps = count.calls // twin.n_iter_ if point == "step" else None
        # Epochs that ran to their end, and those whose validation score was taken.
        ran = (k - 1) // steps if point == "step" else k
        validated = ran if point == "step" else k - 1
        assert est.n_iter_ == ran and len(est.loss_curve_) == ran
        assert len(est.validation_scores_) == validated
        if before != "warm":
            assert 0 <= est.best_iteration_ <= validated
            if validated:  # the best of the epochs validated, as a fit that stopped there
                shorter = _prepared({**params, "max_iter": validated}, before, width_before)
                with _checked_warnings():
                    shorter.fit(X)
                np.testing.assert_array_equal(
                    est.score_samples(_probes(3)), shorter.score_samples(_probes(3))
                )
                assert est.best_iteration_ == shorter.best_iteration_
        elif validated:
            assert 1 <= est.best_iteration_ <= validated
    with _checked_warnings():
        est.fit(X)
    assert np.isfinite(est.score_samples(_probes(3))).all()
    if before != "warm":  # the interrupted run is gone: the same model as without Ctrl-C
        _assert_same_state(_state(est), _state(twin))


@pytest.mark.parametrize("point", [p for p, (_, inside) in FIT_POINTS.items() if not inside])
def test_ctrl_c_outside_the_epochs_of_a_refit_of_another_width_changes_nothing(point):
    """Ctrl-C before or after the epochs of a refit on rows of another width leaves the
    previous model exactly as it was (its number of features included)."""
    est = _prepared({}, "fitted", 2)
    before = _state(est)
    _interrupted(lambda: est.fit(_data(0, 30, 3)), ctrl_c := _CtrlC(FIT_POINTS[point][0], 1))
    assert ctrl_c.fired
    _assert_same_state(_state(est), before)


@_settings(40, shrink=False)
@given(
    point=st.sampled_from(sorted(PARTIAL_FIT_POINTS)),
    before=st.sampled_from(["new", "fitted", "partial_fit"]),
    n_chunks=st.integers(1, 2),
    n=st.integers(8, 30),
    batch_size=st.sampled_from([4, 8, 16]),
    after=st.booleans(),
    seed=seeds,
    data=st.data(),
)
def test_ctrl_c_during_partial_fit_changes_nothing(
    point, before, n_chunks, n, batch_size, after, seed, data
):
    """Ctrl-C in partial_fit propagates and leaves the estimator exactly as before
    (_unchanged_on_error); the next partial_fit works, counts only finished epochs, and
    where no run was kept gives the uninterrupted model."""
    target = PARTIAL_FIT_POINTS[point]
    chunk = _data(seed, n, 3)

    def prepared() -> EBFlowDensity:
        est = _prepared({"batch_size": batch_size}, "new" if before == "new" else "fitted")
        with _checked_warnings():
            for i in range(n_chunks if before == "partial_fit" else 0):
                est.partial_fit(_data(seed + i + 1, n, 3))
        return est

    twin = prepared()
    with _checked_warnings(), _CtrlC(target) as count:
        twin.partial_fit(chunk)
    k = data.draw(st.integers(1, max(count.calls, 1)), label="k")
    est = prepared()
    state_before = _state(est)
    _interrupted(lambda: est.partial_fit(chunk), ctrl_c := _CtrlC(target, k, after=after))
    event(f"{point}: {'interrupted' if ctrl_c.fired else 'not reached'}")
    if ctrl_c.fired:
        _assert_same_state(_state(est), state_before)
        with _checked_warnings():
            est.partial_fit(chunk)
    assert np.isfinite(est.score_samples(_probes(3))).all()
    # The trainer of a kept run counts an epoch that ran to its end before the interrupt.
    finished = ctrl_c.fired and (point == "log-normalizer" or (point == "epoch" and after))
    expected = n_chunks + 1 + finished if before == "partial_fit" else 1
    assert est.n_iter_ == len(est.loss_curve_) == expected
    if before != "partial_fit" or not ctrl_c.fired:
        # No run was kept (or none was touched): the model of an uninterrupted call.
        _assert_same_state(_state(est), _state(twin))


def _detector() -> EBFlowOutlierDetector:
    return EBFlowOutlierDetector(estimator=_density(), contamination=0.1, random_state=0)


def _imputer(n_rounds: int) -> EBFlowImputer:
    return EBFlowImputer(_density(), n_rounds=n_rounds, n_steps=5, random_state=0)


def _wrapper_outputs(est: object) -> list | None:
    """A detector's decisions or an imputer's fills (None: not fitted, NotFittedError)."""
    if isinstance(est, EBFlowImputer):
        call = lambda: est.transform(_imputer_queries())  # noqa: E731
    else:
        call = lambda: est.decision_function(_probes(3))  # noqa: E731
    try:
        with _checked_warnings():
            return [_fail_on_other_errors(f"{type(est).__name__} after the failed fit", call)]
    except NotFittedError:
        return None


@pytest.mark.parametrize("prefitted", [False, True], ids=["new", "fitted"])
@_settings(10, shrink=False)
@given(
    kind=st.sampled_from(["detector", "imputer"]),
    n_rounds=st.integers(1, 2),
    point=st.sampled_from(["step", "baseline", "checks"]),
    seed=seeds,
    data=st.data(),
)
def test_ctrl_c_stops_the_detector_and_imputer_fits(prefitted, kind, n_rounds, point, seed, data):
    """Ctrl-C in the detector's or imputer's fit (their density's fits, the calibration
    folds' included) propagates; a new estimator stays unfitted, a fitted one keeps its
    previous model; a following fit gives the uninterrupted model."""
    X = _data(seed, 40, 3)
    if kind == "imputer":
        X[::3, 2] = np.nan

    def make() -> object:
        est = _detector() if kind == "detector" else _imputer(n_rounds)
        if prefitted:
            with _checked_warnings():
                est.fit(_data(99, 30, 3))
        return est

    target = FIT_POINTS[point][0]
    twin = make()
    with _checked_warnings(), _CtrlC(target) as count:
        twin.fit(X)
    k = data.draw(st.integers(1, count.calls), label="k")
    est = make()
    outputs_before = _wrapper_outputs(est)
    _interrupted(lambda: est.fit(X), _CtrlC(target, k))
    outputs = _wrapper_outputs(est)
    assert (outputs is None) == (outputs_before is None)
    if outputs is not None:
        np.testing.assert_array_equal(outputs[0], outputs_before[0])
    with _checked_warnings():
        est.fit(X)
    np.testing.assert_array_equal(_wrapper_outputs(est)[0], _wrapper_outputs(twin)[0])


# ------------------------------------------ failures the fuzzing found (issue 24)
# The detector and the imputer set n_features_in_ (validate_data) before their density's
# fit; when that fit fails, scikit-learn's check_is_fitted takes n_features_in_ for a fit.
@pytest.mark.parametrize("kind", ["detector", "imputer"])
@pytest.mark.parametrize("failure", ["invalid parameter", "ctrl-c"])
def test_a_failed_first_fit_of_a_detector_or_imputer_leaves_it_unfitted(kind, failure):
    """A detector or imputer whose first fit failed raises NotFittedError, not an
    AttributeError, when used."""
    est = _detector() if kind == "detector" else _imputer(1)
    X = _data(0, 30, 3)
    if failure == "invalid parameter":
        est.set_params(estimator=_density(max_iter=0))
        with pytest.raises(ValueError, match="max_iter"):
            est.fit(X)
    else:
        _interrupted(lambda: est.fit(X), _CtrlC(FIT_POINTS["baseline"][0], 1))
    assert _wrapper_outputs(est) is None


# partial_fit after fit trained a new run from resolve_settings(get_params()), but
# scikit-learn's _fit_context skips parameter validation for partial_fit once fitted.
@pytest.mark.parametrize(
    ("key", "value"), INVALID_PARAMS, ids=[f"{k}={v!r}" for k, v in INVALID_PARAMS]
)
def test_partial_fit_after_fit_with_invalid_parameters_raises_value_or_type_errors(key, value):
    """Invalid parameters make partial_fit after fit raise scikit-learn's
    InvalidParameterError (a ValueError), never another exception, and leave the model
    unchanged."""
    X = _data(0, 30, 3)
    with _checked_warnings():
        est = _density().fit(X)
    before = _state(est)
    est.set_params(**{key: value})
    with pytest.raises(ValueError):
        with _checked_warnings():
            _fail_on_other_errors(f"partial_fit with {key}={value!r}", lambda: est.partial_fit(X))
    _assert_same_state(_state(est), before)


# save encoded any parameters; load validates them and refused the file save had written.
@pytest.mark.parametrize(
    ("key", "value"), INVALID_PARAMS, ids=[f"{k}={v!r}" for k, v in INVALID_PARAMS]
)
def test_save_writes_only_files_that_load(key, value, tmp_path):
    """save refuses (ValueError/TypeError) a model that load would refuse; a file it
    writes loads and scores as the saved model."""
    with _checked_warnings():
        est = _density().fit(_data(0, 30, 3))
    est.set_params(**{key: value})
    path = tmp_path / "model.skebflow"
    try:
        _fail_on_other_errors("save", lambda: est.save(path))
    except ERRORS:
        assert not path.exists()
        return
    loaded = _fail_on_other_errors(
        f"load of a file saved with {key}={value!r}", lambda: skebflow.load(path)
    )
    np.testing.assert_array_equal(loaded.score_samples(_probes(3)), est.score_samples(_probes(3)))


# fit_preprocessing's validate_data(reset=True) set n_features_in_ to the sample's width
# on a fitted model whose flow keeps the old one.
def test_fit_preprocessing_of_another_width_leaves_a_fitted_model_usable():
    """fit_preprocessing on rows of another width discards the fitted model (it had kept
    a flow of the old width beside the new n_features_in_: a torch error when scoring);
    the next partial_fit trains on the new width."""
    with _checked_warnings():
        est = _density().fit(_data(0, 30, 3))
    est.fit_preprocessing(_data(1, 30, 2))
    assert not _is_fitted(est) and est.n_features_in_ == 2
    with pytest.raises(NotFittedError):
        est.score_samples(_probes(2))
    with _checked_warnings():
        est.partial_fit(_data(2, 30, 2))
    assert est.n_features_in_ == 2 and np.isfinite(est.score_samples(_probes(2))).all()

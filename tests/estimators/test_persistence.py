"""Safe model files: bit-exact round trips, plain content, and every refusal on load."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KernelDensity

import skebflow
from skebflow import EBFlowDensity, EBFlowImputer, EBFlowOutlierDetector
from skebflow.estimators import DEQUANTIZED_LOGIT_EPS, load, save
from skebflow.estimators._model_file import FORMAT, FORMAT_VERSION, content_checksum
from skebflow.exceptions import ModelVersionWarning, NotAModelFileError
from tests.helpers import failing_on, fit_quietly, ignore_short_fit, quietly, tiny

pytestmark = ignore_short_fit

CONFIGS = {
    "spline": {"architecture": "spline"},
    "coupling": {"architecture": "coupling"},
    "fc": {"architecture": "fc"},
    "autoregressive": {"architecture": "autoregressive"},
    "logit-bounds-dequantize": {"preprocessing": "logit", "bounds": (0, 15), "dequantize": True},
    "no-preprocessing": {"preprocessing": None},
    "inside-ssm": {"match_after_preprocessing": False, "objective": "ssm"},
    "whitened-dsm": {"objective": "dsm"},
    "whitened-ml": {"whiten": True},
}


def data(config: dict) -> np.ndarray:
    rng = np.random.default_rng(0)
    if config.get("dequantize"):
        return rng.integers(0, 16, size=(60, 3)).astype(np.float64)
    return rng.normal(size=(60, 3)) * [1.0, 3.0, 0.5] + [0.0, 5.0, -1.0]


@pytest.fixture(scope="module")
def fitted() -> EBFlowDensity:
    return fit_quietly(tiny(), data({}))


@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "model.skebflow"
    save(fitted, path)
    return path


def rewrite(source: Path, target: Path, change: object, *, reseal: bool = True) -> Path:
    """Write a copy of a model file whose content ``change(payload)`` edited in place.

    With ``reseal`` the checksum is recomputed, as a crafted file would do, so that the
    checks behind the checksum are what is tested.
    """
    payload = torch.load(source, weights_only=True)
    change(payload)
    if reseal and "checksum" in payload:
        with contextlib.suppress(ValueError):  # a hidden object has no checksum
            payload["checksum"] = content_checksum(payload)
    torch.save(payload, target)
    return target


def assert_same_model(original: EBFlowDensity, loaded: EBFlowDensity, X: np.ndarray) -> None:
    np.testing.assert_array_equal(loaded.score_samples(X), original.score_samples(X))
    np.testing.assert_array_equal(
        loaded.sample(7, random_state=3), original.sample(7, random_state=3)
    )
    np.testing.assert_array_equal(loaded.score_gradient(X), original.score_gradient(X))


# ------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_is_bit_exact(name, tmp_path):
    config = CONFIGS[name]
    X = data(config)
    original = tiny(**config).fit(X)
    save(original, tmp_path / "m.skebflow")
    with failing_on(ModelVersionWarning):  # same versions: no warning
        loaded = load(tmp_path / "m.skebflow")
    assert type(loaded) is EBFlowDensity
    assert_same_model(original, loaded, X)
    assert loaded.get_params() == original.get_params()
    for key in ("architecture_", "objective_", "log_normalizer_", "n_iter_", "loss_curve_"):
        assert getattr(loaded, key) == getattr(original, key)


def test_every_fitted_attribute_comes_back(fitted, model_file):
    loaded = load(model_file)
    for key, value in vars(fitted).items():
        if key.endswith("_") and not key.startswith("_") and key not in ("flow_", "preprocessing_"):
            assert getattr(loaded, key) == value, key
            assert type(getattr(loaded, key)) is type(value), key
    assert {key for key in vars(loaded) if key.endswith("_")} == {
        key for key in vars(fitted) if key.endswith("_")
    }


def test_loaded_flow_is_cpu_float64_frozen_and_in_eval_mode(fitted, model_file):
    loaded = load(model_file)
    assert loaded.device_ == torch.device("cpu")
    assert not loaded.flow_.training
    assert loaded.preprocessing_.training == fitted.preprocessing_.training  # as fit leaves it
    for tensor in [*loaded.flow_.parameters(), *loaded.preprocessing_.buffers()]:
        assert tensor.device.type == "cpu"
        assert not tensor.requires_grad
    assert {p.dtype for p in loaded.flow_.parameters()} == {torch.float64}
    assert {b.dtype for b in loaded.preprocessing_.buffers()} == {torch.float64}


def test_tuple_parameters_and_feature_names_come_back(tmp_path):
    X = data({"dequantize": True})
    original = tiny(preprocessing="logit", bounds=(0, 15)).fit(X)
    original.feature_names_in_ = np.asarray(["a", "b", "c"], dtype=object)
    save(original, tmp_path / "m.skebflow")
    loaded = load(tmp_path / "m.skebflow")
    assert loaded.bounds == (0, 15) and isinstance(loaded.bounds, tuple)
    assert loaded.feature_names_in_.dtype == object
    np.testing.assert_array_equal(loaded.feature_names_in_, original.feature_names_in_)


def test_numpy_values_in_parameters_are_saved_as_python_values(tmp_path):
    X = data({})
    original = tiny(tol=np.float64(1e-3), max_iter=np.int64(2), device=torch.device("cpu")).fit(X)
    save(original, tmp_path / "m.skebflow")
    loaded = load(tmp_path / "m.skebflow")
    assert type(loaded.tol) is float and type(loaded.max_iter) is int and loaded.device == "cpu"
    assert_same_model(original, loaded, X)


def test_a_loaded_model_refits_and_warm_starts(model_file):
    X = data({})
    loaded = load(model_file)
    before = loaded.score(X)
    loaded.set_params(warm_start=True, max_iter=1).fit(X)
    assert loaded.n_iter_ == 1 and np.isfinite(loaded.score(X)) and loaded.score(X) != before


def test_outlier_detector_round_trip(tmp_path):
    X = data({})
    for template in (tiny(), None):
        detector = EBFlowOutlierDetector(estimator=template, contamination=0.1, random_state=0)
        if template is None:  # the default flow, shortened
            detector.fit(X[:20])
        else:
            detector.fit(X)
        save(detector, tmp_path / "d.skebflow")
        loaded = load(tmp_path / "d.skebflow")
        assert type(loaded) is EBFlowOutlierDetector
        assert loaded.offset_ == detector.offset_
        assert loaded.get_params(deep=True).keys() == detector.get_params(deep=True).keys()
        assert repr(loaded) == repr(detector)
        np.testing.assert_array_equal(loaded.decision_function(X), detector.decision_function(X))
        np.testing.assert_array_equal(loaded.predict(X), detector.predict(X))
        assert_same_model(detector.estimator_, loaded.estimator_, X)


def test_every_estimator_saves_with_its_method_and_with_skebflow_save(tmp_path):
    X = data({})
    detector = EBFlowOutlierDetector(estimator=tiny(), random_state=0)
    fit_quietly(detector, X)
    detector.save(tmp_path / "method.skebflow")
    skebflow.save(detector, tmp_path / "function.skebflow")
    assert (tmp_path / "method.skebflow").read_bytes() == (
        tmp_path / "function.skebflow"
    ).read_bytes()
    loaded = skebflow.load(tmp_path / "method.skebflow")
    np.testing.assert_array_equal(loaded.decision_function(X), detector.decision_function(X))


@pytest.mark.parametrize("with_missing", [True, False])
def test_imputer_round_trip_fills_the_same_values(tmp_path, with_missing):
    X = data({})
    if with_missing:
        X[::4, 1] = np.nan
    imputer = EBFlowImputer(tiny(), n_rounds=2, n_steps=10, random_state=0)
    with quietly():
        imputer.fit(X)
    imputer.save(tmp_path / "imputer.skebflow")
    loaded = load(tmp_path / "imputer.skebflow")
    assert type(loaded) is EBFlowImputer and repr(loaded) == repr(imputer)
    assert_same_model(imputer.estimator_, loaded.estimator_, data({}))
    queries = data({})[:12].copy()
    queries[::3, 0] = np.nan
    with quietly():
        np.testing.assert_array_equal(loaded.transform(queries), imputer.transform(queries))
    if with_missing:
        for name in ("acceptance", "rhat", "step_size"):
            np.testing.assert_array_equal(
                getattr(loaded.report_, name), getattr(imputer.report_, name)
            )
        assert loaded.report_.n_steps == imputer.report_.n_steps
    else:
        assert loaded.report_ is None


def test_the_file_holds_only_plain_data_and_tensors(model_file):
    payload = torch.load(model_file, weights_only=True, map_location="cpu")
    assert payload["format"] == FORMAT and payload["format_version"] == FORMAT_VERSION
    assert payload["skebflow_version"] == skebflow.__version__
    assert payload["torch_version"] == str(torch.__version__)
    assert set(payload) == {
        "format",
        "format_version",
        "skebflow_version",
        "torch_version",
        "class",
        "params",
        "tuple_params",
        "attributes",
        "flow",
        "preprocessing",
        "checksum",
    }
    assert payload["checksum"] == content_checksum(payload)
    assert set(payload["flow"]) == {"architecture", "n_features", "modules", "state_dict"}
    assert set(payload["preprocessing"]) == {"modules", "buffers"}

    def walk(value: object) -> None:
        if isinstance(value, dict):
            assert type(value) is dict and all(type(key) is str for key in value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            assert type(value) is list
            for item in value:
                walk(item)
        else:
            assert value is None or type(value) in (str, int, float, bool, torch.Tensor), value

    walk(payload)


# ------------------------------------------------------------------- refusals on save
def test_saving_refuses_other_estimators_and_unfitted_ones(tmp_path):
    with pytest.raises(
        TypeError, match="EBFlowOutlierDetector or EBFlowImputer, got KernelDensity"
    ):
        save(KernelDensity().fit(data({})), tmp_path / "x")
    with pytest.raises(NotFittedError):
        save(EBFlowDensity(), tmp_path / "x")
    kde = EBFlowOutlierDetector(estimator=KernelDensity()).fit(data({}))
    with pytest.raises(TypeError, match="only when it wraps an EBFlowDensity; this one wraps a"):
        save(kde, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_saving_refuses_parameters_that_are_not_plain_values(tmp_path):
    X = data({})
    est = tiny(random_state=np.random.RandomState(0)).fit(X)
    with pytest.raises(TypeError, match="parameter random_state of EBFlowDensity is RandomState"):
        save(est, tmp_path / "x")
    detector = EBFlowOutlierDetector(estimator=tiny()).fit(X)
    detector.estimator = KernelDensity()  # fitted with a flow, then the parameter changed
    with pytest.raises(TypeError, match="estimator of EBFlowOutlierDetector must be None or an"):
        save(detector, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_saving_refuses_a_flow_its_parameters_no_longer_describe(tmp_path):
    est = tiny().fit(data({}))
    est.set_params(n_blocks=2)
    with pytest.raises(ValueError, match=r"flow_ .* does not match the estimator's parameters"):
        save(est, tmp_path / "x")
    est.set_params(n_blocks=1, preprocessing=None)
    with pytest.raises(ValueError, match="preprocessing_ does not match"):
        save(est, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------- refusals on load
def test_random_bytes_empty_and_truncated_files_are_refused(model_file, tmp_path):
    (tmp_path / "random").write_bytes(np.random.default_rng(0).bytes(2000))
    (tmp_path / "empty").write_bytes(b"")
    content = model_file.read_bytes()
    (tmp_path / "half").write_bytes(content[: len(content) // 2])
    for name in ("random", "empty", "half"):
        with pytest.raises(NotAModelFileError, match="is not a skebflow model file: torch cannot"):
            load(tmp_path / name)
    assert issubclass(NotAModelFileError, ValueError)


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope")


def test_foreign_torch_files_are_refused(tmp_path):
    torch.save({"weight": torch.ones(3)}, tmp_path / "dict.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(NotAModelFileError, match="holds a dict without the format marker"):
        load(tmp_path / "dict.pt")
    with pytest.raises(NotAModelFileError, match="holds a list without the format marker"):
        load(tmp_path / "list.pt")


def _write_marker(path: str) -> None:
    """What a malicious file would run on loading (here: harmless, it leaves a marker)."""
    Path(path).write_text("this ran while loading")


class _Payload:
    """An object whose unpickling calls ``_write_marker``, as a pickle exploit would."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (_write_marker, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle-2", "pickle-5", "joblib", "torch.save", "in-model"])
def test_pickles_that_would_run_code_are_refused_unrun(writer, model_file, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.skebflow"
    if writer == "pickle-2":
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    elif writer == "pickle-5":
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=5))
    elif writer == "joblib":
        joblib.dump(_Payload(marker), path)
    elif writer == "torch.save":
        torch.save(_Payload(marker), path)
    else:  # a genuine model file with the exploit hidden in a parameter
        rewrite(model_file, path, lambda p: p["params"].update(verbose=_Payload(marker)))
    # The file is live: an ordinary unpickler runs the payload.
    if writer in ("pickle-2", "pickle-5", "joblib"):
        joblib.load(path) if writer == "joblib" else pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    expected = "pickle file" if writer.startswith(("pickle", "joblib")) else "torch file holding"
    with pytest.raises(NotAModelFileError, match=f"{expected}.*can run arbitrary code"):
        load(path)
    assert not marker.exists()


def test_a_newer_format_version_is_refused(model_file, tmp_path):
    path = rewrite(
        model_file, tmp_path / "m", lambda p: p.update(format_version=FORMAT_VERSION + 1)
    )
    newer = rf"format version {FORMAT_VERSION + 1} .* newer than version {FORMAT_VERSION}.*upgrade"
    with pytest.raises(ValueError, match=newer):
        load(path)


def test_another_major_skebflow_version_is_refused(model_file, tmp_path):
    major = int(skebflow.__version__.split(".")[0])
    newer = f"{major + 1}.0.0"
    path = rewrite(model_file, tmp_path / "m", lambda p: p.update(skebflow_version=newer))
    with pytest.raises(ValueError, match=f"saved by skebflow {newer}, whose major version differs"):
        load(path)


def test_other_minor_skebflow_and_torch_versions_warn(model_file, tmp_path):
    X = data({})
    reference = load(model_file)
    major = skebflow.__version__.split(".")[0]
    path = rewrite(model_file, tmp_path / "m", lambda p: p.update(skebflow_version=f"{major}.99"))
    with pytest.warns(ModelVersionWarning, match=rf"saved by skebflow {major}\.99, this is"):
        loaded = load(path)
    np.testing.assert_array_equal(loaded.score_samples(X), reference.score_samples(X))
    path = rewrite(model_file, tmp_path / "t", lambda p: p.update(torch_version="1.0.0+cu99"))
    with pytest.warns(ModelVersionWarning, match="saved with torch 1.0.0.cu99, this is torch"):
        load(path)
    local = f"{str(torch.__version__).split('+')[0]}+other"  # another build of the same torch
    path = rewrite(model_file, tmp_path / "b", lambda p: p.update(torch_version=local))
    with failing_on(ModelVersionWarning):
        load(path)


def _grow_weight(payload: dict) -> None:
    state = payload["flow"]["state_dict"]
    state["layers.1.weight"] = torch.zeros(4, 4, dtype=torch.float64)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_grow_weight, r"'layers.1.weight' has shape \(4, 4\) .* needs \(3, 3\)"),
        (
            lambda p: p["flow"]["state_dict"].pop("layers.1.bias"),
            r"missing \['layers.1.bias'\], unexpected none",
        ),
        (
            lambda p: p["flow"]["state_dict"].update(extra=torch.ones(1)),
            r"missing none, unexpected \['extra'\]",
        ),
        (
            lambda p: p["flow"]["state_dict"].update(
                {"layers.1.weight": torch.eye(3, dtype=torch.float32)}
            ),
            r"\(torch.float32\) in the file, the architecture needs \(3, 3\) \(torch.float64\)",
        ),
        (
            lambda p: p["params"].update(n_blocks=2),
            "rebuilt from the saved parameters does not match",
        ),
        (lambda p: p["flow"]["modules"][1].update(type="Other"), "module 'layers' is ModuleList"),
        (
            lambda p: p["preprocessing"]["buffers"].update(
                {"transforms.0.mean": torch.zeros(2, dtype=torch.float64)}
            ),
            r"'transforms.0.mean' is shape \(2,\) .* float64 tensor of shape \(3,\)",
        ),
        (
            lambda p: p["preprocessing"]["buffers"].pop("transforms.0.scale"),
            "statistics do not match",
        ),
        (
            lambda p: p["params"].update(preprocessing="logit"),
            "preprocessing rebuilt from the saved",
        ),
        (
            lambda p: p["flow"]["state_dict"]["layers.1.weight"].mul_(2.0),
            "weights give the log-normalizer",
        ),
        (lambda p: p["params"].update(learning_rate=-1.0), "parameters this skebflow rejects"),
        (lambda p: p["params"].update(colour="blue"), r"does not have: \['colour'\]"),
        (lambda p: p["attributes"].update(fit="x"), "sets the attribute 'fit'"),
        (lambda p: p.pop("flow"), "the file has no 'flow'"),
        (lambda p: p["attributes"].pop("log_normalizer_"), "no 'log_normalizer_'"),
        (
            lambda p: p["flow"].update(n_features="3"),
            "'n_features' of the flow is of type str, expected int",
        ),
        (lambda p: p["flow"].update(architecture="maf"), "unknown architecture 'maf'"),
        (lambda p: p.update(format_version=True), "'format_version' of the file is of type bool"),
        (
            lambda p: p.update({"class": "Pipeline"}),
            "holds a 'Pipeline', which this skebflow cannot",
        ),
    ],
    ids=[
        "weight-shape",
        "missing-weight",
        "unexpected-weight",
        "weight-dtype",
        "other-n-blocks",
        "other-module",
        "statistic-shape",
        "missing-statistic",
        "other-preprocessing",
        "tampered-weights",
        "invalid-param",
        "unknown-param",
        "method-as-attribute",
        "missing-flow",
        "missing-log-z",
        "mistyped-field",
        "unknown-architecture",
        "bool-format-version",
        "unknown-class",
    ],
)
def test_damaged_contents_are_refused_with_the_reason(model_file, tmp_path, change, message):
    path = rewrite(model_file, tmp_path / "m", change)
    with pytest.raises(ValueError, match=message) as info:
        load(path)
    assert str(info.value).startswith(f"cannot load {path}: ")
    assert not isinstance(info.value, NotAModelFileError)


def test_a_file_with_the_old_logit_squeeze_is_refused(tmp_path):
    """Dequantized chains squeeze by λ = 0.05; a file written with 1e-6 names the change."""
    config = CONFIGS["logit-bounds-dequantize"]
    est = fit_quietly(tiny(**config), data(config))
    assert est.preprocessing_.transforms[1].eps == DEQUANTIZED_LOGIT_EPS
    save(est, tmp_path / "new")

    def old_squeeze(payload: dict) -> None:
        for module in payload["preprocessing"]["modules"]:
            if module["type"] == "Logit":
                module["options"]["eps"] = 1e-6

    path = rewrite(tmp_path / "new", tmp_path / "old", old_squeeze)
    with pytest.raises(ValueError, match=r"Logit .*'eps': 0\.05.* here, Logit .*'eps': 1e-06"):
        load(path)


def test_load_on_another_device(model_file):
    assert load(model_file, device="auto").device_.type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    with pytest.raises(ValueError, match="is not a device torch knows"):
        load(model_file, device="nonsense")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_onto_cuda_scores_as_on_the_cpu(fitted, model_file):
    loaded = load(model_file, device="cuda")
    assert loaded.device_.type == "cuda" and next(loaded.flow_.parameters()).is_cuda
    X = data({})
    np.testing.assert_allclose(loaded.score_samples(X), fitted.score_samples(X), rtol=1e-10)


def test_new_fitted_attributes_of_a_later_version_are_kept(model_file, tmp_path):
    path = rewrite(model_file, tmp_path / "m", lambda p: p["attributes"].update(extra_=[1, 2]))
    assert load(path).extra_ == [1, 2]


DATA = Path(__file__).parent / "data"


def test_files_written_before_the_estimators_redesign_load_and_score_the_same():
    """Model files of skebflow 0.1.0.dev0 as it was before the estimators room was rebuilt
    (a logit-dequantized spline flow and an outlier detector) load bit for bit."""
    expected = np.load(DATA / "expected_0.1.0.dev0.npz")
    with quietly(ModelVersionWarning):  # a newer torch or skebflow
        density = load(DATA / "density_0.1.0.dev0.skebflow")
        detector = load(DATA / "detector_0.1.0.dev0.skebflow")
    np.testing.assert_array_equal(density.score_samples(expected["X"]), expected["density"])
    np.testing.assert_array_equal(detector.decision_function(expected["X"]), expected["detector"])
    assert detector.novelty is True  # saved as calibration="held-out", renamed since


def test_the_detectors_old_calibration_parameter_is_read_as_novelty(tmp_path):
    """``calibration="held-out"|"training"`` of older files is ``novelty=True|False``;
    another value is refused like any parameter this skebflow rejects."""
    with quietly(ModelVersionWarning):
        old = load(DATA / "detector_0.1.0.dev0.skebflow")
    path = tmp_path / "d.skebflow"
    old.save(path)
    for value, novelty in (("training", False), ("held-out", True)):

        def to_old(payload: dict, value: str = value) -> None:
            payload["params"].pop("novelty")
            payload["params"]["calibration"] = value

        assert load(rewrite(path, tmp_path / value, to_old)).novelty is novelty

    def bad(payload: dict) -> None:
        payload["params"].pop("novelty")
        payload["params"]["calibration"] = "sometimes"

    with pytest.raises(ValueError, match="calibration='sometimes'"):
        load(rewrite(path, tmp_path / "bad", bad))


# --------------------------------------------------------------- damage and crafted files
def _load_or_refuse(path: Path) -> EBFlowDensity | None:
    """Load ``path``; None when refused with a ValueError (any other exception fails)."""
    try:
        with quietly(ModelVersionWarning):
            return load(path)
    except ValueError:
        return None


def test_a_file_changed_after_saving_fails_its_checksum(model_file, tmp_path):
    path = rewrite(
        model_file,
        tmp_path / "m",
        lambda p: p["flow"]["state_dict"]["layers.1.weight"].add_(1e-12),
        reseal=False,
    )
    with pytest.raises(ValueError, match="does not match the checksum it was saved with"):
        load(path)


def test_random_damage_is_refused_or_changes_nothing(fitted, model_file, tmp_path):
    """Single-byte flips and 16-byte overwrites anywhere in a file: every damaged file is
    refused with a ValueError or scores exactly as the saved model (bytes torch never
    reads, such as zip padding); none loads and scores differently, none crashes."""
    original = model_file.read_bytes()
    X = data({})
    expected = fitted.score_samples(X)
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.skebflow"
    refused = 0
    damages = [("flip", int(i)) for i in rng.choice(len(original), size=300, replace=False)]
    damages += [("overwrite", int(i)) for i in rng.integers(0, len(original) - 16, size=60)]
    for kind, index in damages:
        damaged = bytearray(original)
        if kind == "flip":
            damaged[index] ^= int(rng.integers(1, 256))
        else:
            damaged[index : index + 16] = rng.integers(0, 256, size=16, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(damaged))
        loaded = _load_or_refuse(path)
        if loaded is None:
            refused += 1
            continue
        np.testing.assert_array_equal(loaded.score_samples(X), expected, err_msg=f"{kind} {index}")
    assert refused > 0.5 * len(damages)


def test_a_version_1_file_holding_a_checksum_is_refused(model_file, tmp_path):
    path = rewrite(model_file, tmp_path / "m", lambda p: p.update(format_version=1), reseal=False)
    with pytest.raises(ValueError, match="format version 1, which has no checksum"):
        load(path)


@pytest.mark.parametrize(
    "params",
    [{"hidden_features": 10**12}, {"n_blocks": 10**9}, {"n_blocks": 10**4}],
    ids=["huge-hidden", "huge-n-blocks", "many-blocks"],
)
def test_parameters_of_a_huge_flow_are_refused_before_anything_is_allocated(
    model_file, tmp_path, params
):
    """A crafted file (checksum recomputed) whose parameters describe a flow of terabytes,
    or of more blocks than it holds weights, is refused without building that flow."""
    path = rewrite(model_file, tmp_path / "m", lambda p: p["params"].update(params))
    with pytest.raises(ValueError, match="cannot load"):
        load(path)


def _set_first(payload: dict, suffix: str, value: object) -> None:
    state = payload["flow"]["state_dict"]
    key = next(key for key in state if key.endswith(suffix))
    state[key] = value(state[key])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: _set_first(p, "cond_index", lambda t: torch.full_like(t, 99)),
            "fixed buffer .*cond_index",
        ),
        (
            lambda p: _set_first(p, "net.0.weight", lambda t: torch.full_like(t, torch.nan)),
            "holds NaN or infinity",
        ),
        (
            lambda p: p["preprocessing"]["buffers"].update(
                {"transforms.0.scale": -torch.ones(3, dtype=torch.float64)}
            ),
            "'transforms.0.scale' is not positive",
        ),
        (
            lambda p: p["preprocessing"]["buffers"].update(
                {"transforms.0.mean": torch.full((3,), torch.inf, dtype=torch.float64)}
            ),
            "'transforms.0.mean' holds NaN or infinity",
        ),
    ],
    ids=["index-buffer", "nan-weight", "negative-scale", "infinite-mean"],
)
def test_crafted_values_are_refused(model_file, tmp_path, change, message):
    path = rewrite(model_file, tmp_path / "m", change)
    with pytest.raises(ValueError, match=message):
        load(path)


def test_crossed_bounds_are_refused(tmp_path):
    config = CONFIGS["logit-bounds-dequantize"]
    save(fit_quietly(tiny(**config), data(config)), tmp_path / "logit")

    def cross(payload: dict) -> None:
        buffers = payload["preprocessing"]["buffers"]
        low = next(key for key in buffers if key.endswith("low"))
        high = low[: -len("low")] + "high"
        buffers[low], buffers[high] = buffers[high], buffers[low]

    path = rewrite(tmp_path / "logit", tmp_path / "crossed", cross)
    with pytest.raises(ValueError, match="low < high"):
        load(path)


# ------------------------------------------------------------------------ atomic saving
def test_a_failed_save_leaves_the_previous_file_whole(fitted, model_file, tmp_path, monkeypatch):
    """A full disk during the write (simulated at the flush to disk) raises, leaves the
    previous model as it was, and leaves no partial file behind."""
    path = tmp_path / "model.skebflow"
    path.write_bytes(model_file.read_bytes())
    before = path.read_bytes()

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        fitted.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.skebflow"]
    np.testing.assert_array_equal(
        load(path).score_samples(data({})), fitted.score_samples(data({}))
    )


def test_save_keeps_permissions_and_replaces_a_links_target(fitted, tmp_path):
    target = tmp_path / "target.skebflow"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.skebflow"
    link.symlink_to(target)
    fitted.save(link)
    assert link.is_symlink() and (target.stat().st_mode & 0o777) == 0o640
    assert load(target).n_features_in_ == fitted.n_features_in_
    with pytest.raises(IsADirectoryError):
        fitted.save(tmp_path)

"""The one settings step: every "auto" parameter resolved once, purely, for a fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skebflow.estimators._defaults as auto
from skebflow import EBFlowDensity
from skebflow.estimators._settings import build_flow, resolve_settings
from tests.helpers import fit_quietly, tiny


def _resolved(est: EBFlowDensity, n_features: int) -> tuple[str, str]:
    settings = resolve_settings(est.get_params(), n_features)
    return settings.architecture, settings.objective


@pytest.mark.parametrize(
    ("n_features", "architecture", "objective"),
    [
        (2, "spline", "ml"),
        (128, "spline", "ml"),
        (129, "coupling", "ml"),  # the best measured above 128 features (docs/defaults.md)
        (2047, "coupling", "ml"),
        (2048, "fc", "ssm"),
    ],
)
def test_auto_choices_follow_the_documented_thresholds(n_features, architecture, objective):
    settings = resolve_settings(EBFlowDensity().get_params(), n_features)
    assert (settings.architecture, settings.objective) == (architecture, objective)


@pytest.mark.parametrize(
    ("n_train", "batch_size", "ema_decay", "fit_ema_decay"),
    [
        (100, 32, 0.9, 0.9),
        (1300, 64, 1 - 1 / 21, 1 - 1 / 21),
        (10_000, 512, 1 - 1 / 20, 1 - 1 / 20),
        (1_000_000, 512, 0.999, 1 - 1 / 20),  # fit's epochs are 10,240 rows: 20 steps
    ],
)
def test_auto_batch_size_and_ema_follow_the_number_of_rows(
    n_train, batch_size, ema_decay, fit_ema_decay
):
    """The EMA spans about one epoch: a whole pass (partial_fit's chunk), or fit's
    bounded epoch of at most MAX_EPOCH_ROWS rows."""
    settings = resolve_settings(EBFlowDensity().get_params(), 2)
    assert settings.batch_and_ema(n_train) == pytest.approx((batch_size, ema_decay))
    config = settings.train_config(n_train)
    assert (config.batch_size, config.ema_decay) == pytest.approx((batch_size, fit_ema_decay))
    whole = settings.train_config(n_train, whole_passes=True)
    assert (whole.batch_size, whole.ema_decay) == pytest.approx((batch_size, ema_decay))


def test_auto_choices_with_an_image_shape():
    assert _resolved(EBFlowDensity(image_shape=(1, 28, 28)), 784) == ("conv", "ml")
    assert _resolved(EBFlowDensity(image_shape=(1, 32, 32)), 1024) == ("conv", "ssm")
    assert _resolved(EBFlowDensity(image_shape=(3, 32, 32)), 3072) == ("conv", "ssm")
    glow = EBFlowDensity(architecture="glow", image_shape=(1, 28, 28))
    assert _resolved(glow, 784)[1] == "ml"
    assert auto.AUTO_IMAGE_SM_MIN_FEATURES == 1024
    # A tabular architecture keeps the tabular rule, even with an image shape.
    assert _resolved(EBFlowDensity(architecture="fc", image_shape=(3, 32, 32)), 3072)[1] == "ssm"


def _squeezes(architecture: str, image_shape: tuple[int, int, int]) -> int:
    flow = build_flow(
        architecture,
        image_shape[0] * image_shape[1] * image_shape[2],
        n_blocks=None,
        hidden_features=4,
        image_shape=image_shape,
        generator=torch.Generator().manual_seed(0),
    )
    return sum(type(module).__name__ == "Squeeze" for module in flow.modules())


def test_default_blocks_follow_what_the_image_allows():
    # conv: 3 blocks with a squeeze between two; glow: 2 levels of one squeeze each,
    # fewer when the image allows fewer 2x2 squeezes.
    assert _squeezes("conv", (1, 28, 28)) == 2
    assert _squeezes("conv", (1, 6, 6)) == 1
    assert _squeezes("glow", (1, 8, 8)) == 2
    assert _squeezes("glow", (3, 5, 5)) == 0


def test_resolving_writes_nothing_on_the_estimator():
    est = EBFlowDensity(image_shape=(1, 2, -1))
    before = dict(vars(est))
    settings = resolve_settings(est.get_params(), 8)
    assert settings.image_shape == (1, 2, 4)
    assert vars(est) == before


def test_the_settings_are_frozen():
    settings = resolve_settings(EBFlowDensity().get_params(), 2)
    with pytest.raises(AttributeError):
        settings.objective = "ssm"


@pytest.mark.parametrize(
    ("objective", "n_features", "architecture"),
    [
        ("ssm", 2, "coupling"),
        ("sm", 64, "coupling"),
        ("ssm", 129, "fc"),
        ("dsm", 2, "spline"),
        ("fdssm", 2, "spline"),
        ("dsm", 3, "coupling"),
        ("fdssm", 128, "coupling"),
        ("dsm", 129, "fc"),
        ("ml", 2, "spline"),
    ],
)
def test_second_order_objectives_get_a_smooth_architecture(objective, n_features, architecture):
    """SSM and SM need a twice-differentiable energy (tests/nn/test_second_derivatives.py)."""
    assert _resolved(EBFlowDensity(objective=objective), n_features) == (architecture, objective)
    explicit = EBFlowDensity(objective=objective, architecture="spline")
    assert _resolved(explicit, 2)[0] == "spline"  # an explicit choice is kept


@pytest.mark.parametrize(
    ("params", "n_features", "whiten"),
    [
        ({"objective": "dsm"}, 2, False),  # the spline flow keeps the data's axes
        ({"objective": "dsm"}, 3, True),
        ({"objective": "ssm"}, 2, True),
        ({"objective": "ssm"}, 30, True),
        ({"objective": "dsm", "architecture": "autoregressive"}, 30, False),
        ({"objective": "fdssm"}, 300, True),
        ({"objective": "ml"}, 30, False),
        ({"objective": "ml", "whiten": True}, 30, True),
        ({"objective": "dsm", "whiten": False}, 30, False),
        ({"objective": "ssm", "image_shape": (1, 8, 8)}, 64, False),
        ({"objective": "dsm", "match_after_preprocessing": False}, 3, False),
    ],
)
def test_whiten_auto_whitens_score_matching_on_the_coupling_and_fc_flows(
    params, n_features, whiten
):
    settings = resolve_settings(EBFlowDensity(**params).get_params(), n_features)
    assert settings.whiten is whiten
    flow = settings.build_flow(torch.Generator().manual_seed(0))
    assert (type(flow.layers[0]).__name__ == "Whitening") is whiten


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"whiten": True, "image_shape": (1, 8, 8)}, "tabular flows"),
        ({"whiten": True, "architecture": "conv", "image_shape": (1, 8, 8)}, "tabular flows"),
        ({"whiten": True, "match_after_preprocessing": False}, "match_after_preprocessing=True"),
    ],
)
def test_whiten_where_it_cannot_apply_is_a_clear_error(params, match):
    with pytest.raises(ValueError, match=match):
        resolve_settings(EBFlowDensity(**params).get_params(), 64)


@pytest.mark.parametrize(
    ("params", "n_features", "batch_size", "learning_rate"),
    [
        ({"objective": "ml", "architecture": "coupling"}, 3, 32, 3e-3),
        ({"objective": "dsm"}, 2, 512, 3e-3),  # the spline flow
        ({"objective": "dsm"}, 2, 128, 1.5e-3),
        ({"objective": "dsm"}, 3, 512, 1e-3),  # the coupling flow: at most 1e-3
        ({"objective": "dsm"}, 3, 64, 1e-3),
        ({"objective": "ssm"}, 2, 32, 7.5e-4),
        ({"objective": "fdssm"}, 300, 64, 1e-3),  # the FC flow keeps its rate
        ({"objective": "dsm", "learning_rate": 0.01}, 3, 64, 0.01),
    ],
)
def test_auto_learning_rate_of_score_matching_shrinks_with_the_batch(
    params, n_features, batch_size, learning_rate
):
    settings = resolve_settings(EBFlowDensity(**params).get_params(), n_features)
    assert settings.learning_rate_for(batch_size) == pytest.approx(learning_rate)


def test_the_fitted_learning_rate_is_the_one_training_used():
    X = np.random.default_rng(0).normal(size=(300, 3))
    est = fit_quietly(tiny(objective="dsm"), X)
    assert est.batch_size_ == 32
    assert est.learning_rate_ == pytest.approx(3e-3 * (32 / 512) ** 0.5)


def test_an_epoch_holds_twenty_batches_of_a_batch_larger_than_the_row_bound():
    """A batch of 16,384 rows was cut to one step of 10,240 rows (the bound came before
    the batching); a batch of 4,096 gave 2.5 steps per epoch."""
    from skebflow.estimators import _defaults as auto

    for batch_size, rows in ((512, auto.MAX_EPOCH_ROWS), (4096, 20 * 4096), (16384, 20 * 16384)):
        settings = resolve_settings(EBFlowDensity(batch_size=batch_size).get_params(), 2)
        assert settings.train_config(10**6).max_epoch_rows == rows

"""diagnose: what went wrong in a finished run that ended without a NaN.

How the estimator turns the findings into a warning with remedies is tested in
``tests/estimators/test_divergence.py``.
"""

from __future__ import annotations

import torch

from skebflow.nn._architectures import build_fc
from skebflow.training._config import TrainResult
from skebflow.training._diagnostics import diagnose


def test_diagnose_sees_samples_far_outside_the_data():
    flow = build_fc(3, n_blocks=1).double()
    with torch.no_grad():
        flow.layers[0].weight.mul_(1e-4)  # the inverse stretches base draws 10^4 times
    result = TrainResult(flow=flow, loss_curve=[1.0, 0.5], validation_scores=[-3.0, -2.0])
    y = torch.randn(100, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = diagnose(
        result,
        initial_score=-4.0,
        flow=flow,
        y_train=y,
        generator=torch.Generator().manual_seed(1),
    )
    assert len(seen) == 1 and seen[0].startswith("samples reach")


def test_diagnose_says_when_no_epoch_beat_the_untrained_flow():
    flow = build_fc(3, n_blocks=1).double()
    y = torch.randn(100, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kept = TrainResult(flow=flow, loss_curve=[1.0, 0.9], validation_scores=[-3.0, -3.5])
    kept.best_epoch = 0  # the untrained flow was kept
    seen = diagnose(
        kept, initial_score=-2.5, flow=flow, y_train=y, generator=torch.Generator().manual_seed(1)
    )
    assert seen == [
        "no epoch improved on the untrained flow's held-out log-likelihood (-2.5 per sample; "
        "the best epoch reached -3), so the untrained flow was kept"
    ]
    improved = TrainResult(flow=flow, loss_curve=[1.0, 0.9], validation_scores=[-3.0, -2.0])
    improved.best_epoch = 2
    assert (
        diagnose(
            improved,
            initial_score=-2.5,
            flow=flow,
            y_train=y,
            generator=torch.Generator().manual_seed(1),
        )
        == []
    )


def test_diagnose_ignores_gaps_within_the_tolerance_of_noise():
    """A best epoch 0.005 nats below the untrained flow is noise when the validation score's
    standard error is larger; a gap beyond the tolerance is still reported."""
    flow = build_fc(3, n_blocks=1).double()
    y = torch.randn(100, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kept = TrainResult(flow=flow, loss_curve=[1.0, 0.9], validation_scores=[-4.205, -4.21])
    kept.best_epoch = 0

    def seen(tolerance: float) -> list[str]:
        return diagnose(
            kept,
            initial_score=-4.2,
            flow=flow,
            y_train=y,
            generator=torch.Generator().manual_seed(1),
            tolerance=tolerance,
        )

    assert seen(0.09) == []
    assert len(seen(0.001)) == 1 and seen(0.001)[0].startswith("no epoch improved")

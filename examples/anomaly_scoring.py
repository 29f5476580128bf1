"""Score anomalies by log-density with EBFlowDensity.

Fit on clean data, take the 1 % quantile of the training log-densities as a threshold, and
flag held-out points below it. Run with ``python examples/anomaly_scoring.py``.
"""

import numpy as np

from skebflow import EBFlowDensity
from skebflow.datasets import make_toy

rng = np.random.default_rng(0)
X = make_toy("rings", 3000, random_state=0)
inliers = make_toy("rings", 500, random_state=1)
outliers = rng.uniform(-6, 6, size=(500, 2))

est = EBFlowDensity(max_iter=60, random_state=0).fit(X)
threshold = np.quantile(est.score_samples(X), 0.01)
flagged_inliers = np.mean(est.score_samples(inliers) < threshold)
flagged_outliers = np.mean(est.score_samples(outliers) < threshold)
print(f"threshold log p(x) = {threshold:.3f}")
print(f"flagged: {flagged_inliers:.1%} of held-out inliers,", end=" ")
print(f"{flagged_outliers:.1%} of uniform noise")

"""Flag anomalies by log-density with EBFlowOutlierDetector.

Fit on clean data; with ``contamination="auto"`` the threshold ``offset_`` is the 1 %
quantile of held-out log-densities of the training rows (the boundary of the fitted
density's 99 % highest-density region; ``calibration_`` says how they were held out), and
new points below it are flagged (``predict`` gives -1): about 1 % of fresh inliers.
Run with ``python examples/anomaly_scoring.py``.
"""

import numpy as np

from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow.datasets import make_toy

rng = np.random.default_rng(0)
X = make_toy("rings", 3000, random_state=0)
inliers = make_toy("rings", 500, random_state=1)
outliers = rng.uniform(-6, 6, size=(500, 2))

detector = EBFlowOutlierDetector(estimator=EBFlowDensity(max_iter=60, random_state=0)).fit(X)
flagged_inliers = np.mean(detector.predict(inliers) == -1)
flagged_outliers = np.mean(detector.predict(outliers) == -1)
print(f"threshold log p(x) = {detector.offset_:.3f} ({detector.calibration_} scores)")
print(f"flagged: {flagged_inliers:.1%} of held-out inliers,", end=" ")
print(f"{flagged_outliers:.1%} of uniform noise")

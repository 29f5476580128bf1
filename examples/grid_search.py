"""Tune EBFlowDensity with GridSearchCV (the score is the held-out log-likelihood).

Run with ``python examples/grid_search.py``.
"""

import numpy as np
from sklearn.model_selection import GridSearchCV

from skebflow import EBFlowDensity
from skebflow.datasets import make_toy, toy_log_density

X = make_toy("swirl", 2000, random_state=0)
X_test = make_toy("swirl", 2000, random_state=1)
search = GridSearchCV(
    EBFlowDensity(max_iter=40, random_state=0),
    {"objective": ["ml", "ssm", "dsm"], "n_blocks": [2, 4]},
    cv=3,
    n_jobs=2,
).fit(X)
for params, score in zip(
    search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
):
    print(f"{params}: {score:.3f}")
print("best:", search.best_params_)
print(f"held-out log-likelihood {search.score(X_test):.3f} ", end="")
print(f"(true density {np.mean(toy_log_density('swirl', X_test)):.3f})")

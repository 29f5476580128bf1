"""
Fit time and held-out likelihood as the dimension grows
=======================================================

How do :class:`~skebflow.EBFlowDensity` (defaults: the spline flow trained by maximum
likelihood, here with a cap on the number of epochs),
:class:`~sklearn.mixture.GaussianMixture` and :class:`~sklearn.neighbors.KernelDensity`
compare in cost and in accuracy as the number of features grows? The data come from a
random Gaussian-mixture "teacher" of 5 components with full covariances
(:func:`skebflow.datasets.make_mixture_teacher`), whose exact log-density is known, so
each model's held-out *excess* negative log-likelihood (the teacher's held-out
log-likelihood minus the model's, per feature; 0 is perfect) can be measured.

The comparison is tilted on purpose: a 5-component ``GaussianMixture`` is the teacher's
own model family, so it shows what a correctly specified parametric model reaches, not
what to expect on real data. ``KernelDensity`` (Scott's bandwidth) is the
assumption-free baseline.
"""

import os
import sys
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity

from skebflow import EBFlowDensity
from skebflow.datasets import (
    make_mixture_teacher,
    mixture_teacher_log_density,
    sample_mixture_teacher,
)

# The test suite runs a quick version (fewer dimensions, rows and epochs):
# SKEBFLOW_EXAMPLES_QUICK=1 or --quick.
QUICK = os.environ.get("SKEBFLOW_EXAMPLES_QUICK") == "1" or "--quick" in sys.argv
# sphinx_gallery_start_ignore
# The test suite also asks for the figures in a folder.
FIGDIR = os.environ.get("SKEBFLOW_EXAMPLES_FIGDIR")
# sphinx_gallery_end_ignore

torch.set_num_threads(1)
warnings.simplefilter("ignore", ConvergenceWarning)  # capped fits

# %%
# Fit every model at every dimension
# ----------------------------------
dimensions = [2, 8] if QUICK else [2, 4, 8, 16, 32]
n_train = 500 if QUICK else 2000
max_iter = 3 if QUICK else 20


def models() -> dict[str, object]:
    """Fresh, unfitted models of the comparison.

    Returns
    -------
    dict of str to estimator
        The estimators, by the name shown in the figure.
    """
    return {
        "EBFlowDensity": EBFlowDensity(max_iter=max_iter, random_state=0),
        "GaussianMixture(5)": GaussianMixture(5, covariance_type="full", random_state=0),
        "KernelDensity": KernelDensity(bandwidth="scott"),
    }


# The first fit in a process pays a one-time start-up cost (torch's lazy set-up), which
# would land on the first dimension's timing: pay it outside the measurement.
EBFlowDensity(max_iter=1, random_state=0).fit(np.random.default_rng(0).normal(size=(64, 2)))

seconds = {name: [] for name in models()}
excess = {name: [] for name in models()}
for d in dimensions:
    teacher = make_mixture_teacher(d, random_state=0)
    X = sample_mixture_teacher(teacher, n_train, random_state=1)
    X_test = sample_mixture_teacher(teacher, 2000, random_state=2)
    best = float(np.mean(mixture_teacher_log_density(teacher, X_test)))
    for name, model in models().items():
        # time the fit and the scoring of the test rows: a kernel density's fit only
        # stores the rows, its cost is in scoring
        start = time.perf_counter()
        log_p = model.fit(X).score_samples(X_test)
        seconds[name].append(time.perf_counter() - start)
        excess[name].append((best - float(np.mean(log_p))) / d)
    print(
        f"D = {d:2d}: "
        + "; ".join(
            f"{name} {seconds[name][-1]:.2f} s, excess {excess[name][-1]:.3f} nats/feature"
            for name in seconds
        )
    )

# %%
# Two panels: cost and accuracy
# -----------------------------
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for name in seconds:
    left.plot(dimensions, seconds[name], "o-", label=name)
    right.plot(dimensions, excess[name], "o-", label=name)
left.set(xscale="log", yscale="log", xlabel="number of features D", ylabel="fit + scoring time (s)")
left.set_title(f"fit on {n_train} rows, score 2,000; one core")
right.set(
    xscale="log",
    xlabel="number of features D",
    ylabel="excess held-out NLL (nats per feature)",
)
right.set_title("distance from the teacher (lower is better)")
for ax in (left, right):
    ax.set_xticks(dimensions, [str(d) for d in dimensions])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
left.legend(fontsize=8)

# %%
# The printed lines give the numbers behind the figure: the two scikit-learn models
# need a fraction of a second, the flow seconds (it trains a neural network), and the
# right panel says whether that time buys a density closer to the teacher than the
# kernel density's at each D, with the correctly specified mixture as the reference.
# One teacher and one budget make no general ranking: ``docs/benchmarks.md`` compares
# the estimators on more data sets and teachers, with longer training.

# sphinx_gallery_start_ignore
if FIGDIR:
    for number in plt.get_fignums():
        plt.figure(number).savefig(os.path.join(FIGDIR, f"speed_vs_dimension_{number}.png"))
# sphinx_gallery_end_ignore
plt.show()

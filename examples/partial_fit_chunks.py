"""
Training chunk by chunk with partial_fit
========================================

When the training rows do not fit in memory, ``EBFlowDensity.partial_fit``
trains one epoch on each chunk it is given and continues, at the next call, the
weights, the optimizer, the learning-rate schedule and the moving average of the
weights. Here the rows live in a ``.npy`` file opened as a memory map
(``np.load(path, mmap_mode="r")``): each slice is read from disk only when
``partial_fit`` asks for it. The preprocessing statistics come from a sample of the file
(``fit_preprocessing``) so that every chunk is standardized alike. After every chunk the
model is a usable, normalized density, and the figure follows its held-out
log-likelihood chunk by chunk, against the exact log-likelihood of the teacher that
generated the data.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from skebflow import EBFlowDensity
from skebflow.datasets import (
    make_mixture_teacher,
    mixture_teacher_log_density,
    sample_mixture_teacher,
)

# The test suite runs a quick version (fewer chunks):
# SKEBFLOW_EXAMPLES_QUICK=1 or --quick.
QUICK = os.environ.get("SKEBFLOW_EXAMPLES_QUICK") == "1" or "--quick" in sys.argv
# sphinx_gallery_start_ignore
# The test suite also asks for the figures in a folder.
FIGDIR = os.environ.get("SKEBFLOW_EXAMPLES_FIGDIR")
# sphinx_gallery_end_ignore

torch.set_num_threads(1)

# %%
# A data file larger than we want to hold
# ---------------------------------------
# 8-D samples of a Gaussian-mixture teacher, written to a float32 ``.npy`` file (the
# example keeps it small; the same loop runs over files of any size, ``docs/scaling.md``).
n_features = 8
chunk_size = 2000
n_chunks = 4 if QUICK else 24
teacher = make_mixture_teacher(n_features, random_state=0)
folder = tempfile.TemporaryDirectory()
path = Path(folder.name) / "rows.npy"
np.save(path, sample_mixture_teacher(teacher, chunk_size * n_chunks, random_state=1).astype("f4"))
X_test = sample_mixture_teacher(teacher, 5000, random_state=2)
teacher_score = float(np.mean(mixture_teacher_log_density(teacher, X_test)))

# %%
# Passes over the file
# --------------------
# ``partial_fit`` has no validation split and no early stopping: the caller decides how
# many chunks and passes to make. Each call reads one slice of the memory map.
n_passes = 1 if QUICK else 2
X = np.load(path, mmap_mode="r")
est = EBFlowDensity(random_state=0).fit_preprocessing(np.asarray(X[:chunk_size]))
scores, start = [], time.perf_counter()
for epoch in range(n_passes):
    for i in range(n_chunks):
        est.partial_fit(X[i * chunk_size : (i + 1) * chunk_size])
        scores.append(est.score(X_test))
    print(f"after pass {epoch + 1}: held-out log-likelihood {scores[-1]:.3f}")
seconds = time.perf_counter() - start
print(f"{est.n_iter_} calls in {seconds:.1f} s; the teacher's own score: {teacher_score:.3f}")
folder.cleanup()

# %%
# The learning curve
# ------------------
rows_seen = chunk_size * np.arange(1, len(scores) + 1)
fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
ax.plot(rows_seen, scores, ".-", label="EBFlowDensity.partial_fit")
ax.axhline(teacher_score, color="k", ls="--", label="teacher (exact density)")
for epoch in range(1, n_passes):
    ax.axvline(epoch * chunk_size * n_chunks, color="gray", lw=0.8)
ax.set_xlabel("training rows seen (one chunk per call; grey: a new pass)")
ax.set_ylabel("held-out log-likelihood")
ax.set_title(f"8-D mixture teacher, chunks of {chunk_size} rows from a memory map")
ax.legend(loc="lower right")
ax.grid(alpha=0.3)

# %%
# Each call costs one epoch over its chunk, so the cost grows with the rows read, while
# memory stays that of one chunk and the model. The printed scores show how far the
# passes over this file get; every call continues from where the last one stopped, so
# more passes, or new chunks as they arrive, continue the same curve.

# sphinx_gallery_start_ignore
if FIGDIR:
    for number in plt.get_fignums():
        plt.figure(number).savefig(os.path.join(FIGDIR, f"partial_fit_chunks_{number}.png"))
# sphinx_gallery_end_ignore
plt.show()

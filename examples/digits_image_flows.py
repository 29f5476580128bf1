"""
Image flows on 8×8 digits: samples next to real digits
======================================================

With ``image_shape=(C, H, W)`` each row of ``X`` is read as an image, and
:class:`~skebflow.EBFlowDensity` can use the paper's convolutional flow
(``architecture="conv"``: unconstrained 7×7 convolutions and smooth leaky ReLUs) or a
multi-scale Glow (``architecture="glow"``). Pixels are integers in ``[0, 16]``, so the
data go through the logit chain for bounded data (``preprocessing="logit"``,
``bounds=(0, 16)``) with ``dequantize=True``: uniform noise in training, and
``exp(score_samples)`` is the probability of the integer image. The figure shows exact
samples (``sample``) of each fitted flow under a row of real test digits; the held-out
negative log-likelihood (nats per image, lower is better) is printed and in the titles.
"""

import math
import os
import sys
import time
import warnings

import matplotlib.pyplot as plt
import torch
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.datasets import load_digits_integer

# The test suite runs a quick version (fewer images and epochs):
# SKEBFLOW_EXAMPLES_QUICK=1 or --quick.
QUICK = os.environ.get("SKEBFLOW_EXAMPLES_QUICK") == "1" or "--quick" in sys.argv
# sphinx_gallery_start_ignore
# The test suite also asks for the figures in a folder.
FIGDIR = os.environ.get("SKEBFLOW_EXAMPLES_FIGDIR")
# sphinx_gallery_end_ignore

torch.set_num_threads(1)
warnings.simplefilter("ignore", ConvergenceWarning)  # capped fits

# %%
# Data and models
# ---------------
# scikit-learn's 1,797 digits, 80 % for training (fewer in quick mode) and 20 % for the
# held-out score. The CNN and the Glow are trained by maximum likelihood, and the CNN
# once more by denoising score matching, each for a capped number of epochs: longer
# training lowers the NLL further (``docs/benchmarks.md`` has longer runs).
train, test = load_digits_integer(random_state=0)
if QUICK:
    train = train[:300]
max_iter = 2 if QUICK else 20
pixels = {"preprocessing": "logit", "bounds": (0, 16), "dequantize": True}
models = {
    "conv (paper's CNN), ML": EBFlowDensity(architecture="conv", image_shape=(1, 8, 8), **pixels),
    "glow, ML": EBFlowDensity(architecture="glow", image_shape=(1, 8, 8), **pixels),
    # the paper's pairing: the CNN trained by denoising score matching, no determinant
    # in training (a smaller step than the image flows' default 1e-2, as in the paper)
    "conv, DSM": EBFlowDensity(
        architecture="conv",
        image_shape=(1, 8, 8),
        objective="dsm",
        learning_rate=1e-3,
        **pixels,
    ),
}
samples, nll = {}, {}
for name, est in models.items():
    start = time.perf_counter()
    est.set_params(max_iter=max_iter, random_state=0).fit(train)
    seconds = time.perf_counter() - start
    nll[name] = -est.score(test)
    samples[name] = est.sample(16, random_state=1)
    print(
        f"{name}: held-out NLL {nll[name]:.1f} nats per image "
        f"({nll[name] / 64 / math.log(2):.3f} bits per pixel), fit {seconds:.1f} s"
    )

# %%
# Samples
# -------
# Samples come back as integers in ``[0, 16]`` (``dequantize=True`` floors them), the
# same kind of values as the data.
rows = {"real test digits": test[:16], **samples}
fig = plt.figure(figsize=(12, 1.2 * len(rows)), layout="constrained")
for subfig, (name, images) in zip(fig.subfigures(len(rows), 1), rows.items(), strict=True):
    title = name if name not in nll else f"{name}: held-out NLL {nll[name]:.1f} nats"
    subfig.suptitle(title, fontsize=10)
    for ax, image in zip(subfig.subplots(1, len(images)), images, strict=True):
        ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
        ax.set_xticks([])
        ax.set_yticks([])

# %%
# What the full run shows (the quick mode of the test suite trains for 2 epochs on 300
# images, too little for any of this): the two flows trained by maximum likelihood draw
# rough, blurry digits, and the printed NLL ranks them. The CNN trained by DSM is far
# behind after the same number of epochs: many of its samples are grey noise, and its
# NLL is the highest of the three. Denoising score matching never computes the
# convolutions' log-determinants, which is what makes it cheap on large images
# (``docs/benchmarks.md``: on 3×32×32 digits it came close to ML's final NLL in a fraction
# of ML's time); on 64 pixels and a short budget it does not pay off.

# sphinx_gallery_start_ignore
if FIGDIR:
    for number in plt.get_fignums():
        plt.figure(number).savefig(os.path.join(FIGDIR, f"digits_image_flows_{number}.png"))
# sphinx_gallery_end_ignore
plt.show()

"""skebflow: energy-based normalizing flows trained by score matching, for scikit-learn.

The package splits the log-density of a normalizing flow into an energy, which
training touches, and a log-normalizer made of the log-determinants of the linear
layers, which is computed once after training.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training Energy-Based
   Normalizing Flow with Score-Matching Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from skebflow._version import __version__
from skebflow.estimators import (
    EBFlowDensity,
    EBFlowImputer,
    EBFlowOutlierDetector,
    load,
    save,
)
from skebflow.exceptions import (
    DivergenceWarning,
    DriftWarning,
    GrossOutlierWarning,
    ModelVersionWarning,
    PointMassWarning,
)

__all__ = [
    "DivergenceWarning",
    "DriftWarning",
    "EBFlowDensity",
    "EBFlowImputer",
    "EBFlowOutlierDetector",
    "GrossOutlierWarning",
    "ModelVersionWarning",
    "PointMassWarning",
    "__version__",
    "load",
    "save",
]

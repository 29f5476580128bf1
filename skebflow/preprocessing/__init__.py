"""Invertible preprocessing of the data (torch only) and its optional place inside the flow."""

from skebflow.preprocessing._degeneracy import find_degeneracy
from skebflow.preprocessing._gross_outliers import GrossOutliers, find_gross_outliers
from skebflow.preprocessing._inside import (
    PreprocessingLayer,
    with_preprocessing,
    without_preprocessing,
)
from skebflow.preprocessing._point_masses import PointMasses, find_point_masses
from skebflow.preprocessing._transforms import (
    PREPROCESSING,
    Chain,
    Dequantize,
    Logit,
    Standardize,
    Transform,
    make_preprocessing,
)

__all__ = [
    "PREPROCESSING",
    "Chain",
    "Dequantize",
    "GrossOutliers",
    "Logit",
    "PointMasses",
    "PreprocessingLayer",
    "Standardize",
    "Transform",
    "find_degeneracy",
    "find_gross_outliers",
    "find_point_masses",
    "make_preprocessing",
    "with_preprocessing",
    "without_preprocessing",
]

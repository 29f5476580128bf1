"""Invertible preprocessing of the data (torch only) and its optional place inside the flow."""

from skebflow.preprocessing.inside import (
    PreprocessingLayer,
    with_preprocessing,
    without_preprocessing,
)
from skebflow.preprocessing.transforms import (
    Chain,
    Dequantize,
    Logit,
    Standardize,
    Transform,
    make_preprocessing,
)

__all__ = [
    "Chain",
    "Dequantize",
    "Logit",
    "PreprocessingLayer",
    "Standardize",
    "Transform",
    "make_preprocessing",
    "with_preprocessing",
    "without_preprocessing",
]

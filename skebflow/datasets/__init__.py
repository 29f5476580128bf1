"""Data: generated 2-D toys, scikit-learn's bundled tables, and teachers with exact densities."""

from skebflow.datasets._tables import TABLE_DATASETS, load_digits_integer, load_table
from skebflow.datasets._teachers import (
    MixtureTeacher,
    make_mixture_teacher,
    make_teacher,
    mixture_teacher_log_density,
    sample_mixture_teacher,
    sample_teacher,
    teacher_log_density,
)
from skebflow.datasets._toys import TOY_DATASETS, make_toy, toy_log_density

__all__ = [
    "TABLE_DATASETS",
    "TOY_DATASETS",
    "MixtureTeacher",
    "load_digits_integer",
    "load_table",
    "make_mixture_teacher",
    "make_teacher",
    "make_toy",
    "mixture_teacher_log_density",
    "sample_mixture_teacher",
    "sample_teacher",
    "teacher_log_density",
    "toy_log_density",
]

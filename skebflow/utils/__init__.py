"""Helpers shared by every layer of the package: devices, seeds, tensor conversion, threads."""

from skebflow.utils._stack import user_stacklevel
from skebflow.utils._tensors import (
    DTYPES,
    as_tensor,
    intra_op_threads,
    make_generator,
    resolve_device,
    seed_from_random_state,
    to_numpy,
)

__all__ = [
    "DTYPES",
    "as_tensor",
    "intra_op_threads",
    "make_generator",
    "resolve_device",
    "seed_from_random_state",
    "to_numpy",
    "user_stacklevel",
]

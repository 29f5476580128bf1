"""Helpers of the benchmark tests."""

import math


def is_finite_float(value: object) -> bool:
    """A finite number as the benchmarks' JSON reports hold it (a float, not None)."""
    return isinstance(value, float) and math.isfinite(value)

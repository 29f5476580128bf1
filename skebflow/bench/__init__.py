"""The benchmarks behind ``python -m skebflow bench`` (speed, nll, truth, quality)."""

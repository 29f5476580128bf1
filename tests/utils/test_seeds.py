"""Seeds from scikit-learn style ``random_state`` values (``sample``, ``impute``, ...)."""

from __future__ import annotations

import numpy as np
import pytest

from skebflow.utils._tensors import make_generator, seed_from_random_state


@pytest.mark.parametrize("value", [0, 7, 2**63, 2**64 - 1, np.uint64(2**64 - 1), np.int8(5)])
def test_every_64_bit_seed_is_used_as_it_is(value):
    assert seed_from_random_state(value) == int(value)
    assert make_generator(value, "cpu").initial_seed() == int(value)


@pytest.mark.parametrize("value", [-1, 2**64, 2**70, np.int64(-3)])
def test_seeds_outside_64_bits_are_value_errors_that_say_the_range(value):
    """A seed of 2**70 reached torch and failed with 'Overflow when unpacking long long'."""
    with pytest.raises(ValueError, match=r"random_state must be an integer in \[0, 2\*\*64 - 1\]"):
        seed_from_random_state(value)


def test_generators_and_random_states_advance_and_none_draws_fresh_entropy():
    rng = np.random.default_rng(0)
    assert seed_from_random_state(rng) != seed_from_random_state(rng)
    assert seed_from_random_state(None) != seed_from_random_state(None)
    with pytest.raises(ValueError, match="cannot be used to seed"):
        seed_from_random_state("seven")

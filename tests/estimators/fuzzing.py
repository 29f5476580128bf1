"""What the fuzz modules share: hypothesis settings for CI and a guard against hangs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, settings

#: A test that runs longer than this is a hang (SIGALRM turns it into a failure).
HANG_SECONDS = 300


def fuzz_settings(max_examples: int, *, shrink: bool = True, **extra: object) -> settings:
    """Derandomized, bounded hypothesis settings (reproducible in CI, no database).

    ``shrink=False`` for tests that fit a model per example: shrinking a failure there
    can take minutes; the first failing example is reported as it was generated.
    """
    phases = tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
        **extra,
    )


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Turn a hang into a failure (SIGALRM, where the platform has it); autouse in every
    module that imports it."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"the test ran for more than {HANG_SECONDS} s: a hang")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

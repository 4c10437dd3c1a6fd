"""LogThrottle: a burst per interval, then counting, reported on the next line."""

from __future__ import annotations

import pytest

from conclave.ops.throttle import LogThrottle


def test_a_burst_then_silence_then_the_count() -> None:
    now = [0.0]
    throttle = LogThrottle(burst=3, interval=10.0, clock=lambda: now[0])
    assert [throttle.admit() for _ in range(3)] == [0, 0, 0]
    assert [throttle.admit() for _ in range(5)] == [None] * 5
    now[0] = 9.9
    assert throttle.admit() is None
    now[0] = 10.0  # a new interval: the first line says what was left out
    assert throttle.admit() == 6
    assert throttle.admit() == 0


@pytest.mark.parametrize(("burst", "interval"), [(0, 10.0), (1, 0.0)])
def test_bad_settings(burst: int, interval: float) -> None:
    with pytest.raises(ValueError):
        LogThrottle(burst=burst, interval=interval)

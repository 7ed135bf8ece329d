"""Deadlines derived from the caller's, and retries of unreachable backends within them."""

from __future__ import annotations

import time

import pytest
from dedup_server.deadline import Deadline, backend_deadline, retry_async, retry_sync
from dedup_server.errors import BackendError, BackendUnavailable


class FlakyBackend:
    """Unreachable for the first `failures` calls; records the timeout each call was given."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or BackendUnavailable("connection refused")
        self.timeouts: list[float] = []

    def __call__(self, timeout_s: float) -> str:
        self.timeouts.append(timeout_s)
        if len(self.timeouts) <= self.failures:
            raise self.error
        return "ok"

    async def call_async(self, timeout_s: float) -> str:
        return self(timeout_s)


@pytest.mark.parametrize(
    ("time_remaining", "earliest", "latest"),
    [
        pytest.param(None, None, None, id="no-deadline"),
        pytest.param(10.0, 9.4, 9.5, id="half-second-margin"),
        pytest.param(1.0, 0.85, 0.9, id="ten-percent-margin"),
    ],
)
def test_caller_deadline_leaves_time_to_answer(
    time_remaining: float | None, earliest: float | None, latest: float | None
) -> None:
    deadline = Deadline.from_time_remaining(time_remaining)
    if earliest is None or latest is None:
        assert deadline is None
        return
    assert deadline is not None
    assert earliest <= deadline.remaining() <= latest


def test_backend_deadline_is_the_latest_caller_capped_by_the_wait() -> None:
    soon, later = Deadline.after(1), Deadline.after(5)
    assert backend_deadline([soon, later], wait_cap_s=30) == later
    assert 29 < backend_deadline([soon, None], wait_cap_s=30).remaining() <= 30  # one caller waits for ever
    assert 2 < backend_deadline([later], wait_cap_s=3).remaining() <= 3


def test_timeout_is_what_is_left_at_most_the_cap() -> None:
    assert Deadline.after(100).timeout(30) == 30
    assert 4 < Deadline.after(5).timeout(30) <= 5
    assert Deadline.after(-1).timeout(30) > 0  # a call past its deadline still fails fast rather than hangs


def test_unavailable_backend_is_retried_until_it_answers() -> None:
    backend = FlakyBackend(failures=3)
    assert retry_sync(backend, Deadline.after(10), cap_s=2, what="test") == "ok"
    assert len(backend.timeouts) == 4 and all(0 < t <= 2 for t in backend.timeouts)


async def test_retries_stop_at_the_deadline_with_the_last_error() -> None:
    backend = FlakyBackend(failures=1000)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="connection refused"):
        await retry_async(backend.call_async, Deadline.after(1.0), cap_s=5, what="test")
    assert 0.7 < time.monotonic() - started < 2.0
    assert len(backend.timeouts) >= 3
    assert backend.timeouts[-1] <= 0.5  # each try gets what is left, not the cap


def test_errors_that_are_not_unavailability_are_not_retried() -> None:
    backend = FlakyBackend(failures=1, error=BackendError("bad tensor shape"))
    with pytest.raises(BackendError):
        retry_sync(backend, Deadline.after(10), cap_s=2, what="test")
    assert len(backend.timeouts) == 1

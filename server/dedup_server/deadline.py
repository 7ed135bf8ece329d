"""Deadlines and retries of backend calls.

A request (or stream item) carries its caller's gRPC deadline, a little early so that the caller receives our
status rather than its own DEADLINE_EXCEEDED; streams usually have none. Each backend call (for a batch: for
the latest of its callers) may take until that deadline, but at most `backend_wait_s` from when it starts.
A call that failed because a backend is unreachable (`BackendUnavailable`) is tried again with backoff while
time remains, each attempt with a timeout taken from what is left: a Triton or Milvus restart shorter than
the deadline costs latency, not errors. What still fails raises the last `BackendUnavailable` (UNAVAILABLE,
or FAILED in a stream).

The retried calls must be idempotent: inference and search are reads, and writes are Milvus upserts of
client-chosen ids, so a write that was applied but whose answer was lost is harmless to repeat.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from .errors import BackendUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The answer needs time to travel back: stop this much before the caller's deadline (at most 10% of it).
_REPLY_MARGIN_S = 0.5
# A call gets at least this timeout, even with (almost) no time left: it fails fast instead of not trying.
_MIN_CALL_TIMEOUT_S = 0.05
# No new attempt with less than this left; a backoff is cut short so that one last attempt still fits.
_LAST_ATTEMPT_S = 0.2
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Deadline:
    """An instant on the time.monotonic() clock by which a request must be answered."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_time_remaining(cls, time_remaining: float | None) -> Deadline | None:
        """The caller's deadline, a little early; None when the caller set none."""
        if time_remaining is None:
            return None
        return cls.after(time_remaining - min(_REPLY_MARGIN_S, 0.1 * max(0.0, time_remaining)))

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def timeout(self, cap_s: float) -> float:
        """Timeout of one backend call: what is left, at most `cap_s`."""
        return max(_MIN_CALL_TIMEOUT_S, min(cap_s, self.remaining()))


def backend_deadline(callers: Iterable[Deadline | None], *, wait_cap_s: float) -> Deadline:
    """Deadline of one backend call made for `callers` (a batch): the latest of theirs, at most `wait_cap_s` from
    now (the cap counts from the call, not from the request: time spent queueing is not lost for retries)."""
    capped = Deadline.after(wait_cap_s)
    deadlines = list(callers)
    if not deadlines or any(d is None for d in deadlines):
        return capped
    return min(capped, max(d for d in deadlines if d is not None))


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
        logger.log(level, "%s: %s; trying again (attempt %d)", what, error, state.attempt_number + 1)

    return log


def _policy(deadline: Deadline, what: str) -> dict[str, object]:
    # Jitter (tenacity's default is up to 1 s) spreads the retries of concurrent batches a little.
    backoff = wait_exponential_jitter(initial=_FIRST_BACKOFF_S, max=_MAX_BACKOFF_S, jitter=_FIRST_BACKOFF_S)

    def out_of_time(state: RetryCallState) -> bool:
        return deadline.remaining() < _LAST_ATTEMPT_S

    def wait(state: RetryCallState) -> float:
        return max(0.0, min(backoff(state), deadline.remaining() - _LAST_ATTEMPT_S))

    return {
        "retry": retry_if_exception_type(BackendUnavailable),
        "stop": out_of_time,  # then the last error is raised
        "wait": wait,
        "before_sleep": _log_retry(what),
        "reraise": True,
    }


async def retry_async(
    call: Callable[[float], Awaitable[T]], deadline: Deadline, *, cap_s: float, what: str
) -> T:
    """Await `call(timeout)` until it succeeds, retrying BackendUnavailable while `deadline` allows."""
    async for attempt in AsyncRetrying(**_policy(deadline, what)):  # type: ignore[arg-type]
        with attempt:
            return await call(deadline.timeout(cap_s))
    raise AssertionError("unreachable: tenacity re-raises the last error")


def retry_sync(call: Callable[[float], T], deadline: Deadline, *, cap_s: float, what: str) -> T:
    """`retry_async` for blocking calls (pymilvus, run in a worker thread)."""
    for attempt in Retrying(**_policy(deadline, what)):  # type: ignore[arg-type]
        with attempt:
            return call(deadline.timeout(cap_s))
    raise AssertionError("unreachable: tenacity re-raises the last error")

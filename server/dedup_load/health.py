"""Watch a front's grpc.health.v1 status from a thread and keep its transitions with their times."""

from __future__ import annotations

import dataclasses
import threading
import time
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_POLL_S = 0.2
_CHECK_TIMEOUT_S = 1.0
SERVING = "SERVING"


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    at: float  # time.monotonic()
    status: str  # SERVING, NOT_SERVING, or UNREACHABLE when the front does not answer


class HealthLog:
    def __init__(self, target: str, service: str = "dedup.v1.Deduplication") -> None:
        self._target = target
        self._service = service
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._transitions: list[Transition] = []
        self._thread = threading.Thread(target=self._watch, name="health-log", daemon=True)

    @property
    def transitions(self) -> list[Transition]:
        with self._lock:
            return list(self._transitions)

    @property
    def status(self) -> str | None:
        with self._lock:
            return self._transitions[-1].status if self._transitions else None

    def seen(self, status: str, since: float = 0.0) -> Transition | None:
        """The first transition to `status` at or after `since` (time.monotonic())."""
        return next((t for t in self.transitions if t.status == status and t.at >= since), None)

    def wait_for(self, status: str, *, since: float = 0.0, timeout_s: float = 60.0) -> Transition:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.seen(status, since)
            if found is not None:
                return found
            time.sleep(_POLL_S / 2)
        raise TimeoutError(f"health never became {status} within {timeout_s:.0f} s: {self.transitions}")

    def wait_until(self, status: str, *, timeout_s: float = 60.0) -> None:
        """Until the current status is `status` (maybe it never changed)."""
        deadline = time.monotonic() + timeout_s
        while self.status != status:
            if time.monotonic() > deadline:
                raise TimeoutError(f"health is not {status} after {timeout_s:.0f} s: {self.transitions}")
            time.sleep(_POLL_S / 2)

    def __enter__(self) -> HealthLog:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        with grpc.insecure_channel(self._target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self._stop.is_set():
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=self._service), timeout=_CHECK_TIMEOUT_S)
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.RpcError:
                    status = "UNREACHABLE"
                with self._lock:
                    if not self._transitions or self._transitions[-1].status != status:
                        self._transitions.append(Transition(time.monotonic(), status))
                self._stop.wait(_POLL_S)

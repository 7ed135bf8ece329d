"""The gRPC front (`python -m dedup_server`) as a child process, ready once grpc.health.v1 says SERVING.

Its output is not redirected: in `make run` the front's log is what the developer wants to see in the terminal
(Triton's and Milvus' much noisier logs go to files). The readiness probe speaks what the front speaks: TLS when
DEDUP_TLS_CERT is set (and presents the front's own key pair under mutual TLS), as deploy/grpc_health_check.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dedup_stack.process import ChildProcess

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 2.0
_ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}


@dataclass(frozen=True, kw_only=True)
class FrontConfig:
    command: tuple[str, ...]
    env: Mapping[str, str]
    host: str
    port: int
    cwd: Path | None = None
    log_path: Path | None = None  # None: share the supervisor's stdout/stderr
    startup_timeout_s: float = 120.0
    stop_grace_s: float = 10.0

    @property
    def probe_address(self) -> str:
        host = "127.0.0.1" if self.host in _ANY_ADDRESS else self.host
        return f"{host}:{self.port}"


class FrontProcess:
    def __init__(self, config: FrontConfig) -> None:
        self.config = config
        self._child: ChildProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def child(self) -> ChildProcess | None:
        return self._child

    def start(self, cancel: threading.Event | None = None) -> None:
        """Start and wait until it reports SERVING; on failure it is stopped before the error propagates."""
        if self._child is not None:
            raise RuntimeError("FrontProcess was already started")
        started = time.monotonic()
        self._child = ChildProcess(
            name="gRPC front",
            argv=list(self.config.command),
            env=self.config.env,
            cwd=self.config.cwd,
            log_path=self.config.log_path,
        )
        try:
            self._child.spawn()
            with _HealthProbe(self.config.probe_address, self.config.env) as probe:
                self._child.wait_ready(
                    probe, timeout_s=self.config.startup_timeout_s, cancel=cancel, what="SERVING"
                )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(self.config.stop_grace_s)


class _HealthProbe:
    """True once grpc.health.v1 Check("") answers SERVING (or, for a front without the health service, once
    the port accepts RPCs at all)."""

    def __init__(self, address: str, env: Mapping[str, str] | None = None) -> None:
        self._channel = probe_channel(address, env or {})
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self._last_status: str | None = None

    def __call__(self) -> bool:
        try:
            reply = self._stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=_PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                logger.warning("the front has no grpc.health.v1 service; treating 'accepts RPCs' as ready")
                return True
            return False
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if status != self._last_status:
            logger.debug("front health: %s", status)
            self._last_status = status
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def __enter__(self) -> _HealthProbe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._channel.close()


def probe_channel(address: str, env: Mapping[str, str]) -> grpc.Channel:
    """A channel to the front as its DEDUP_TLS_* say it listens: plaintext, TLS, or mutual TLS (the front's own
    certificate and key are the probe's identity). The root CA: DEDUP_HEALTHCHECK_CA, else DEDUP_TLS_CLIENT_CA,
    else the certificate itself (self-signed, or a chain ending in its root); the name checked: localhost, or
    DEDUP_HEALTHCHECK_TLS_NAME."""
    cert = env.get("DEDUP_TLS_CERT", "").strip()
    if not cert:
        return grpc.insecure_channel(address)
    client_ca = env.get("DEDUP_TLS_CLIENT_CA", "").strip()
    root_ca = env.get("DEDUP_HEALTHCHECK_CA", "").strip() or client_ca or cert
    mutual: dict[str, Any] = {}
    if client_ca:
        mutual = {"private_key": Path(env["DEDUP_TLS_KEY"]).read_bytes(), "certificate_chain": Path(cert).read_bytes()}
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(root_ca).read_bytes(), **mutual)
    name = env.get("DEDUP_HEALTHCHECK_TLS_NAME", "").strip() or "localhost"
    return grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", name)])


def front_env(base: Mapping[str, str], overrides: Mapping[str, str], extra_pythonpath: Sequence[str]) -> dict[str, str]:
    """base + overrides, with extra_pythonpath put in front of PYTHONPATH."""
    env = dict(base)
    env.update(overrides)
    paths = [*extra_pythonpath, *(p for p in env.get("PYTHONPATH", "").split(":") if p)]
    env["PYTHONPATH"] = ":".join(dict.fromkeys(paths))  # keep order, drop duplicates
    return env

"""StackConfig: everything `python -m dedup_stack` needs, read once from DEDUP_* environment variables.

An empty variable counts as unset. DEDUP_MILVUS_URI / DEDUP_TRITON_URL switch the embedded server off: when set,
that service is assumed to run elsewhere (or, for Milvus, to be a Milvus Lite file path) and the URI is only
passed on to the front. So does DEDUP_ETCD_ENDPOINTS for etcd, through which the fronts sharing the Milvus take
turns writing (DEDUP_ETCD=off: no etcd, the front alone serialises its writes). With all three set, only a front
starts: one that joins the stack whose `join:` line gave them.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_DEFAULT_FRONT_COMMAND = (sys.executable, "-m", "dedup_server")


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    data_dir: Path = Path(".dedup-data")
    host: str = "127.0.0.1"
    port: int = 50051
    triton_grpc_port: int = 8001
    triton_http_port: int = 8000
    triton_metrics_port: int = 8002
    milvus_port: int = 19530
    # Not etcd's 2379/2380: Milvus standalone runs its own embedded etcd there.
    etcd_port: int = 23790
    etcd_peer_port: int = 23800
    model_repository: Path = Path("triton_models")
    triton_model: str = "embedder"
    milvus_uri: str | None = None  # set: do not start the embedded Milvus
    triton_url: str | None = None  # set: do not start Triton
    etcd_endpoints: str | None = None  # set: do not start etcd (the front joins this one)
    etcd: bool = True  # False (DEDUP_ETCD=off): no etcd at all, writes serialised by the one front only
    # The gRPC front; tests point this at a stand-in while dedup_server is not there.
    front_command: tuple[str, ...] = _DEFAULT_FRONT_COMMAND
    startup_timeout_s: float = 180.0
    # For the front and Triton: longer than the front's own DEDUP_SHUTDOWN_GRACE_S (10 s) so it can drain.
    stop_grace_s: float = 15.0
    milvus_stop_grace_s: float = 5.0  # Milvus 2.3.5 often hangs on SIGTERM once it holds data; then it is killed

    def __post_init__(self) -> None:
        for name in (
            "port", "triton_grpc_port", "triton_http_port", "triton_metrics_port", "milvus_port", "etcd_port",
            "etcd_peer_port",
        ):
            value = getattr(self, name)
            if not 0 < value < 65536:
                raise ValueError(f"{name} must be between 1 and 65535, got {value}")
        if not self.triton_model:
            raise ValueError("triton_model must not be empty")
        if not self.front_command:
            raise ValueError("front_command must not be empty")
        if self.startup_timeout_s <= 0 or self.stop_grace_s < 0 or self.milvus_stop_grace_s < 0:
            raise ValueError("timeouts must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def get_int(name: str, default: int) -> int:
            value = get(name)
            if value is None:
                return default
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {value!r}") from None

        def get_float(name: str, default: float) -> float:
            value = get(name)
            if value is None:
                return default
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {value!r}") from None

        front = get("DEDUP_FRONT_COMMAND")
        etcd = (get("DEDUP_ETCD") or "on").lower()
        if etcd not in ("on", "off"):
            raise ValueError(f"DEDUP_ETCD must be on or off, got {etcd!r}")
        return cls(
            data_dir=Path(get("DEDUP_DATA_DIR") or ".dedup-data"),
            host=get("DEDUP_HOST") or "127.0.0.1",
            port=get_int("DEDUP_PORT", 50051),
            triton_grpc_port=get_int("DEDUP_TRITON_GRPC_PORT", 8001),
            triton_http_port=get_int("DEDUP_TRITON_HTTP_PORT", 8000),
            triton_metrics_port=get_int("DEDUP_TRITON_METRICS_PORT", 8002),
            milvus_port=get_int("DEDUP_MILVUS_PORT", 19530),
            etcd_port=get_int("DEDUP_ETCD_PORT", 23790),
            etcd_peer_port=get_int("DEDUP_ETCD_PEER_PORT", 23800),
            model_repository=Path(get("DEDUP_MODEL_REPOSITORY") or "triton_models"),
            triton_model=get("DEDUP_TRITON_MODEL") or "embedder",
            milvus_uri=get("DEDUP_MILVUS_URI"),
            triton_url=get("DEDUP_TRITON_URL"),
            etcd_endpoints=get("DEDUP_ETCD_ENDPOINTS"),
            etcd=etcd == "on",
            front_command=tuple(shlex.split(front)) if front else _DEFAULT_FRONT_COMMAND,
            startup_timeout_s=get_float("DEDUP_STARTUP_TIMEOUT_S", 180.0),
            stop_grace_s=get_float("DEDUP_STOP_GRACE_S", 15.0),
            milvus_stop_grace_s=get_float("DEDUP_MILVUS_STOP_GRACE_S", 5.0),
        )

    @property
    def start_milvus(self) -> bool:
        return self.milvus_uri is None

    @property
    def start_triton(self) -> bool:
        return self.triton_url is None

    @property
    def milvus_lite(self) -> bool:
        """A Milvus Lite file: one process opens it, so no second front can share it (nor needs etcd)."""
        return not self.front_milvus_uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def start_etcd(self) -> bool:
        return self.etcd and self.etcd_endpoints is None and not self.milvus_lite

    @property
    def front_etcd_endpoints(self) -> str:
        """What the front's DEDUP_ETCD_ENDPOINTS says: "" for no coordination."""
        if not self.etcd:
            return ""
        if self.etcd_endpoints is not None:
            return self.etcd_endpoints
        return "" if self.milvus_lite else f"127.0.0.1:{self.etcd_port}"

    @property
    def joins(self) -> bool:
        """Nothing but the front is started: it joins an existing stack."""
        return not (self.start_milvus or self.start_triton or self.start_etcd)

    @property
    def front_milvus_uri(self) -> str:
        return self.milvus_uri if self.milvus_uri is not None else f"http://127.0.0.1:{self.milvus_port}"

    @property
    def front_triton_url(self) -> str:
        return self.triton_url if self.triton_url is not None else f"127.0.0.1:{self.triton_grpc_port}"

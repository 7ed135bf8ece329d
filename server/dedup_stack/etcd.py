"""Run Debian's `etcd-server` (3.4) as a child process: the coordinator of the fronts' writes.

Every front that shares a Milvus serialises the writes of a collection through it (dedup_server.coordination).
`make run` starts one, its data under the data dir, so that a second front can join the stack; production uses the
etcd of the Milvus release or a dedicated one. A single member: its data survives a restart in the same dir.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dedup_stack.errors import StackError
from dedup_stack.ports import PortClaim, check_ports_free, pick_free_ports
from dedup_stack.process import ChildProcess, ManagedService

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 2.0
#: Where Debian's package puts it (`apt-get install etcd-server`).
DEBIAN_BINARY = Path("/usr/bin/etcd")


@dataclass(frozen=True, kw_only=True)
class EtcdConfig:
    data_dir: Path  # e.g. .dedup-data/etcd; the member's data and its log go here
    client_port: int = 2379
    peer_port: int = 2380
    host: str = "127.0.0.1"  # where it listens; 0.0.0.0 to let fronts on other machines join
    binary: Path | None = None  # default: `etcd` on PATH, else /usr/bin/etcd
    startup_timeout_s: float = 30.0
    stop_grace_s: float = 5.0

    def __post_init__(self) -> None:
        if self.client_port == self.peer_port:
            raise ValueError(f"etcd client and peer ports must differ: {self.client_port}")
        if self.startup_timeout_s <= 0 or self.stop_grace_s < 0:
            raise ValueError("etcd timeouts must be positive")

    @classmethod
    def on_free_ports(cls, data_dir: Path, **overrides: object) -> EtcdConfig:
        client, peer = pick_free_ports(2)
        return cls(data_dir=data_dir, client_port=client, peer_port=peer, **overrides)  # type: ignore[arg-type]

    @property
    def endpoint(self) -> str:
        """What a front's DEDUP_ETCD_ENDPOINTS names (host:port of the client URL)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "etcd.log"

    def port_claims(self) -> list[PortClaim]:
        return [
            PortClaim(host=self.host, port=self.client_port, purpose="etcd client"),
            PortClaim(host=self.host, port=self.peer_port, purpose="etcd peer"),
        ]


def find_binary(configured: Path | None = None) -> Path:
    """The etcd binary; StackError naming the Debian package when there is none."""
    if configured is not None:
        if not configured.is_file():
            raise StackError(f"etcd binary {configured} does not exist")
        return configured
    found = shutil.which("etcd")
    if found:
        return Path(found)
    if DEBIAN_BINARY.is_file():
        return DEBIAN_BINARY
    raise StackError(
        "etcd is not installed: `apt-get install etcd-server` (Debian's 3.4), or point the front at an existing "
        "etcd with DEDUP_ETCD_ENDPOINTS (DEDUP_ETCD=off runs a single front without one)"
    )


def build_argv(config: EtcdConfig, binary: Path) -> list[str]:
    data = config.data_dir.absolute()
    client = f"http://{config.host}:{config.client_port}"
    peer = f"http://{config.host}:{config.peer_port}"
    advertised_client = f"http://{config.endpoint}"
    advertised_peer = f"http://{config.endpoint.rsplit(':', 1)[0]}:{config.peer_port}"
    return [
        str(binary),
        "--name=dedup",
        f"--data-dir={data / 'member'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={advertised_client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={advertised_peer}",
        f"--initial-cluster=dedup={advertised_peer}",
        # Every hand-over of a write lock is a revision: keep an hour of history, not all of it.
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1h",
        "--logger=zap",
        f"--log-outputs={config.log_path}",
    ]


class EtcdProcess(ManagedService):
    """etcd as a child process; `start()` returns once its /health says true."""

    def __init__(self, config: EtcdConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    def start(self, cancel: threading.Event | None = None) -> None:
        if self._child is not None:
            raise RuntimeError("EtcdProcess was already started")
        started = time.monotonic()
        binary = find_binary(self.config.binary)
        check_ports_free(self.config.port_claims())
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._child = ChildProcess(
            name="etcd",
            argv=build_argv(self.config, binary),
            # Ours without ETCD_*: etcd reads every such variable as a flag.
            env={name: value for name, value in os.environ.items() if not name.startswith("ETCD")},
            cwd=self.config.data_dir.absolute(),
            log_path=self.config.data_dir / "etcd-stdout.log",
        )
        try:
            self._child.spawn()
            self._child.wait_ready(
                _EtcdProbe(self.config.endpoint), timeout_s=self.config.startup_timeout_s, cancel=cancel,
                what="healthy",
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "etcd ready on %s in %.1f s (pid %s, data %s)", self.endpoint, self.startup_seconds, self._child.pid,
            self.config.data_dir,
        )

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(self.config.stop_grace_s)

    def log_tail(self) -> str:
        from dedup_stack.process import tail_text

        return tail_text(self.config.log_path) if self.config.log_path.exists() else ""


class _EtcdProbe:
    def __init__(self, endpoint: str) -> None:
        self._url = f"http://{endpoint}/health"

    def __call__(self) -> bool:
        try:
            with urllib.request.urlopen(self._url, timeout=_PROBE_TIMEOUT_S) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, urllib.error.URLError, ValueError):
            return False

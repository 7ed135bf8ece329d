"""Run the real Milvus 2.3.5 standalone server shipped in the PyPI `milvus` wheel, owned by this process.

We use the wheel's pieces (binary unpacking, config template) but spawn the binary ourselves instead of calling
`MilvusServer.start()`, because that class:

* checks ports by binding without SO_REUSEADDR, so a restart on the same port fails while the previous run's
  connections sit in TIME_WAIT ("set proxy_port=..., but bind failed");
* moves any port it finds busy to another one silently, and leaves the embedded etcd on 2379/2380 whatever
  `etcd_port` says (the embedded etcd reads its listen URLs only from the file in ETCD_CONFIG_PATH);
* spawns the binary in our process group and kills it after 1 s on stop.

Measured here (2 cores): SIGTERM with no data exits at once (with a Go panic, after "All cleanup done"); with
data loaded it hangs in its shutdown (the query node retries the already stopped coordinators) — so stop() sends
SIGTERM, waits `stop_grace_s`, then SIGKILLs the group. Data survives that: inserts are in rocksmq and etcd on disk
and are replayed on the next start in the same base dir.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path

from dedup_stack.errors import StackError
from dedup_stack.ports import WILDCARD_HOST, PortClaim, check_ports_free, pick_free_ports
from dedup_stack.process import ChildProcess, ManagedService

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 3.0
# Milvus writes /tmp/milvus/server_id_<pid> on start and never removes it when killed (fixed path in 2.3.5).
_SERVER_ID_DIR = Path("/tmp/milvus")


@dataclass(frozen=True, kw_only=True)
class MilvusPorts:
    """Every port Milvus standalone listens on; defaults are Milvus' own. All must be free before start."""

    proxy: int = 19530  # the client port (MilvusClient uri)
    proxy_internal: int = 19529
    metrics: int = 9091  # /healthz and Prometheus metrics
    etcd_client: int = 2379
    etcd_peer: int = 2380
    # Milvus' own default, 53100, lies in Linux's ephemeral range (32768-60999): any outgoing connection
    # (Milvus' own components talk over the host address) can hold it, and the stack then refuses to start.
    root_coord: int = 19540
    query_coord: int = 19531
    query_node: int = 21123
    index_coord: int = 22930  # written to the config, but standalone 2.3.5 does not listen on it
    index_node: int = 21121
    data_coord: int = 13333
    data_node: int = 21124

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        if len(set(values)) != len(values):
            raise ValueError(f"Milvus ports must all differ: {self}")

    @classmethod
    def with_proxy(cls, port: int) -> MilvusPorts:
        return cls(proxy=port)

    @classmethod
    def pick_free(cls) -> MilvusPorts:
        """All ports picked among free ephemeral ports (tests; lets several instances run side by side)."""
        names = [f.name for f in fields(cls)]
        return cls(**dict(zip(names, pick_free_ports(len(names)), strict=True)))

    def port_claims(self) -> list[PortClaim]:
        return [
            PortClaim(host=WILDCARD_HOST, port=getattr(self, f.name), purpose=f"Milvus {f.name.replace('_', ' ')}")
            for f in fields(self)
            if f.name != "index_coord"
        ]

    def template_values(self) -> dict[str, int]:
        """Values for the `{{ x_port }}` placeholders of the wheel's config.yaml.template."""
        return {
            "proxy_port": self.proxy,
            "proxy_internal_port": self.proxy_internal,
            "etcd_port": self.etcd_client,
            "root_coord_port": self.root_coord,
            "query_coord_port": self.query_coord,
            "query_node_port": self.query_node,
            "index_coord_port": self.index_coord,
            "index_node_port": self.index_node,
            "data_coord_port": self.data_coord,
            "data_node_port": self.data_node,
        }


@dataclass(frozen=True, kw_only=True)
class MilvusConfig:
    """Base dir (configs, data, logs; data persists across restarts), ports, and timeouts."""

    base_dir: Path
    ports: MilvusPorts = field(default_factory=MilvusPorts)
    # Where the 246 MB of unpacked binaries go (default base_dir); tests share one to unpack once.
    install_dir: Path | None = None
    startup_timeout_s: float = 120.0
    stop_grace_s: float = 5.0
    # Lease of each component's registration in etcd. After a kill, the dead instance's sessions linger this long
    # and block load_collection on the next start (measured: ~25 s with Milvus' default of 30 s).
    session_ttl_s: int = 10
    # Milvus' segment size (dataCoord.segment.maxSize, MB) and the share of it at which a growing segment is sealed.
    # Every search visits every sealed segment, each an HNSW graph of its own: 2.3.5's defaults (512 MB, 23 %) cut
    # 1M rows of our schema into 45 segments of ~20k. Larger segments (2048, 0.25: 12 of ~87k at 1M) were measured
    # at 200k to lose hit@1 at the same ef (0.926 against 0.980 at 100k in 20k-row segments; deploy/CAPACITY.md), so
    # the defaults stay Milvus' own until a sweep at equal hit@1 says otherwise.
    segment_max_size_mb: int = 512
    segment_seal_proportion: float = 0.23
    # 2.3.5 also seals a growing segment at this many binlog files (dataCoord.segment.maxBinlogFileNumber), one per
    # 16 MB flush of the data node's insert buffer: its default of 32 caps a segment at ~512 MB whatever maxSize says
    # (the 12 segments of ~87k seen at 1M with maxSize 2048).
    segment_max_binlog_files: int = 32

    def __post_init__(self) -> None:
        if self.startup_timeout_s <= 0 or self.stop_grace_s < 0 or self.session_ttl_s <= 0:
            raise ValueError("Milvus timeouts must be positive")
        if self.segment_max_size_mb <= 0 or not 0 < self.segment_seal_proportion <= 1:
            raise ValueError("Milvus segment size must be positive and its seal proportion in (0, 1]")
        if self.segment_max_binlog_files <= 0:
            raise ValueError("Milvus' binlog files per segment must be positive")

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.ports.proxy}"

    @property
    def resolved_install_dir(self) -> Path:
        return self.install_dir if self.install_dir is not None else self.base_dir

    @property
    def log_path(self) -> Path:
        """stdout and stderr of the binary (Go panics land here; its own logs are next to it)."""
        return self.base_dir / "logs" / "milvus-stdout.log"


def unpack_binaries(install_dir: Path) -> Path:
    """Unpack the wheel's lzma-compressed binaries into install_dir/bin (skipped when unchanged); return it."""
    import milvus  # the wheel; imported here because it unpacks nothing at import but is large

    install_dir.mkdir(parents=True, exist_ok=True)
    # Two supervisors (or tests) starting at once must not write the same binary concurrently.
    with open(install_dir / ".unpack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Private helper of the pinned wheel (2.3.5): it compares an md5 marker per file, so it is cheap when done.
        milvus._initialize_data_files(str(install_dir))
    return install_dir / "bin"


def write_configs(config: MilvusConfig) -> Path:
    """Render milvus.yaml and embedEtcd.yaml into base_dir/configs; return that dir."""
    from milvus import MilvusServerConfig

    base = config.base_dir.absolute()
    server_config = MilvusServerConfig(data_dir=str(base))
    for key, value in config.ports.template_values().items():
        server_config.set(key, value)
    server_config.set("common.session.ttl", config.session_ttl_s)  # no placeholder: replaced by key path
    server_config.set("dataCoord.segment.maxSize", config.segment_max_size_mb)
    server_config.set("dataCoord.segment.sealProportion", config.segment_seal_proportion)
    server_config.set("dataCoord.segment.maxBinlogFileNumber", config.segment_max_binlog_files)
    server_config.resolve_storage()  # sets the data/log paths under base and creates the dirs
    unresolved = [k for k, (_, v) in server_config.configurable_items.items() if v is None]
    if unresolved:
        raise StackError(f"Milvus config template has unresolved values: {unresolved}")
    server_config.write_config()
    configs_dir = base / "configs"
    etcd_client = f"http://127.0.0.1:{config.ports.etcd_client}"
    etcd_peer = f"http://127.0.0.1:{config.ports.etcd_peer}"
    (configs_dir / "embedEtcd.yaml").write_text(
        "# Written by dedup_stack: the embedded etcd takes its listen URLs only from this file.\n"
        "name: default\n"
        f"listen-client-urls: {etcd_client}\n"
        f"advertise-client-urls: {etcd_client}\n"
        f"listen-peer-urls: {etcd_peer}\n"
        f"initial-advertise-peer-urls: {etcd_peer}\n"
        f"initial-cluster: default={etcd_peer}\n",
        encoding="utf-8",
    )
    return configs_dir


class MilvusProcess(ManagedService):
    """Milvus standalone as a child process; `start()` returns once MilvusClient can list collections."""

    def __init__(self, config: MilvusConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def uri(self) -> str:
        return self.config.uri

    def start(self, cancel: threading.Event | None = None) -> None:
        """Start and wait until ready; on any failure the process is stopped before the error propagates."""
        if self._child is not None:
            raise RuntimeError("MilvusProcess was already started")
        started = time.monotonic()
        check_ports_free(self.config.ports.port_claims())
        bin_dir = unpack_binaries(self.config.resolved_install_dir.absolute())
        configs_dir = write_configs(self.config)
        env = dict(os.environ)
        env.update(
            DEPLOY_MODE="STANDALONE",
            MILVUSCONF=str(configs_dir),
            METRICS_PORT=str(self.config.ports.metrics),
            ETCD_CONFIG_PATH=str(configs_dir / "embedEtcd.yaml"),
            LD_LIBRARY_PATH=os.pathsep.join(p for p in (str(bin_dir), os.environ.get("LD_LIBRARY_PATH", "")) if p),
        )
        self._child = ChildProcess(
            name="Milvus",
            argv=[str(bin_dir / "milvus"), "run", "standalone"],
            env=env,
            cwd=self.config.base_dir.absolute(),  # it also looks for ./configs/milvus.yaml
            log_path=self.config.log_path,
        )
        try:
            self._child.spawn()
            self._child.wait_ready(
                _MilvusProbe(self.config), timeout_s=self.config.startup_timeout_s, cancel=cancel, what="serving"
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "Milvus ready on %s in %.1f s (pid %s, data %s)",
            self.uri,
            self.startup_seconds,
            self._child.pid,
            self.config.base_dir,
        )

    def stop(self) -> None:
        if self._child is None:
            return
        pid = self._child.pid
        self._child.stop(self.config.stop_grace_s)
        if pid is not None:
            (_SERVER_ID_DIR / f"server_id_{pid}").unlink(missing_ok=True)



class _MilvusProbe:
    """True once /healthz says OK and a MilvusClient can list collections.

    /healthz first because it is a cheap stateless HTTP call; a MilvusClient made while the server is still down
    leaves pymilvus connection-recovery threads logging warnings.
    """

    def __init__(self, config: MilvusConfig) -> None:
        self._health_url = f"http://127.0.0.1:{config.ports.metrics}/healthz"
        self._uri = config.uri

    def __call__(self) -> bool:
        try:
            with urllib.request.urlopen(self._health_url, timeout=_PROBE_TIMEOUT_S) as resp:
                if b"OK" not in resp.read():
                    return False
        except (OSError, urllib.error.URLError):
            return False
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        try:
            # dedicated: a shared pymilvus connection would outlive this probe (and this server) in a registry.
            client = MilvusClient(uri=self._uri, timeout=_PROBE_TIMEOUT_S, dedicated=True)
        except MilvusException:
            return False
        try:
            client.list_collections()
        except MilvusException:
            return False
        finally:
            client.close()
        return True

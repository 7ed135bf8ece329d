"""Server configuration: one frozen dataclass, built once from the environment (DEDUP_*)."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Index types this service knows how to build and search, with the backends that really build them.
#: Milvus Lite accepts more names but silently searches brute force for what it cannot build, so an
#: index type is only allowed where it is known to be built (../shared/notes/milvus.md).
INDEX_TYPES_BY_BACKEND: Mapping[str, frozenset[str]] = {
    "lite": frozenset({"FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW"}),
    "server": frozenset({"FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW"}),
}


def milvus_backend_kind(uri: str) -> str:
    """'lite' for a local Milvus Lite database path, 'server' for a Milvus server URI."""
    return "server" if uri.startswith(("http://", "https://", "tcp://", "unix:")) else "lite"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


#: Front processes (DEDUP_WORKERS) one host runs at most by default; more is allowed when asked for.
MAX_DEFAULT_WORKERS = 4
MAX_WORKERS = 64


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's CPU limit).

    os.cpu_count() counts the machine's cores, which in a Kubernetes pod are the node's, not the pod's limit.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup's quota: v2 `cpu.max` ("max 100000" or "200000 100000"), else v1's cfs files."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def default_workers(*, cpus: int, coordinated: bool, milvus_server: bool) -> int:
    """DEDUP_WORKERS when unset: one front process per core, at most MAX_DEFAULT_WORKERS, where they can be fronts.

    Workers are fronts like any other: their writes are race-free only through etcd, and Milvus Lite opens its
    file in one process only; without both, one process. Four at most: every worker is a whole front (its own
    clients, batchers and memory, see README), splits the micro-batches that reach Triton, and contends for the
    write locks; past four the front's own CPU is rarely what bounds a host (Triton's is, or the GPU's).
    """
    if not (coordinated and milvus_server):
        return 1
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexConfig:
    index_type: str = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    # make bench-scale at 1M (2026-12-07, 50 segments of ~20k): hit@1 of planted copies 0.985 at ef 64 and 0.995 at
    # 128 (c1 p50 36 against 54 ms); at 100k 0.980 against 0.990 (7.4 against 8.7 ms). 128 is the smallest ef that
    # keeps hit@1 >= 0.99 at both sizes (deploy/CAPACITY.md).
    hnsw_ef: int = 128
    ivf_nlist: int = 1024
    ivf_nprobe: int = 16

    def build_params(self) -> dict[str, int]:
        if self.index_type == "HNSW":
            return {"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction}
        if self.index_type in ("IVF_FLAT", "IVF_SQ8", "IVF_PQ"):
            params = {"nlist": self.ivf_nlist}
            if self.index_type == "IVF_PQ":
                params["m"] = 16
            return params
        return {}

    def search_params(self, top_k: int) -> dict[str, int]:
        if self.index_type == "HNSW":
            # ef must be >= top_k; more ef = better recall of near-duplicates at some latency.
            return {"ef": max(self.hnsw_ef, top_k)}
        if self.index_type in ("IVF_FLAT", "IVF_SQ8", "IVF_PQ"):
            return {"nprobe": self.ivf_nprobe}
        return {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchConfig:
    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    max_queue: int = 1024
    max_in_flight: int = 2

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < self.max_batch_size or self.max_in_flight < 1:
            raise ConfigError(f"invalid batching config: {self}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    max_image_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 50_000_000  # declared width*height, checked before decoding (decompression bombs)
    max_message_bytes: int = 40 * 1024 * 1024
    max_id_bytes: int = 512
    max_metadata_bytes: int = 16 * 1024
    max_top_k: int = 100
    max_delete_ids: int = 10_000
    stream_window: int = 256  # items of one IndexStream in flight at once
    max_stream_items: int = 100_000  # items one IndexStream may carry; then RESOURCE_EXHAUSTED ends it
    max_concurrent_rpcs: int = 512

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ConfigError(f"limit {field.name} must be at least 1, got {getattr(self, field.name)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoordinationConfig:
    """etcd, through which the fronts sharing one Milvus serialise each collection's writes (coordination/).

    No endpoints: one front, serialised by its own write batcher, no etcd (DEDUP_ETCD_ENDPOINTS unset).
    """

    endpoints: tuple[str, ...] = ()  # etcd client URLs, host:port (DEDUP_ETCD_ENDPOINTS, comma-separated)
    prefix: str = "/dedup/"  # of every key; fronts that share a Milvus must share it (DEDUP_ETCD_PREFIX)
    # A front that dies holds its collections' write locks this long (etcd counts whole seconds).
    lease_ttl_s: int = 10
    call_timeout_s: float = 2.0  # the longest one etcd call may take (less when the deadline is nearer)
    # Writes stop this long before the lease could expire: room for a Milvus call already sent to be applied.
    margin_s: float = 1.0

    def __post_init__(self) -> None:
        if self.enabled and not all(self.endpoints):
            raise ConfigError(f"DEDUP_ETCD_ENDPOINTS has an empty entry: {','.join(self.endpoints)!r}")
        for endpoint in self.endpoints if len(self.endpoints) > 1 else ():
            host = endpoint.removeprefix("http://").rsplit(":", 1)[0].strip("[]")
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ConfigError(
                    f"DEDUP_ETCD_ENDPOINTS: with several endpoints each must be an IP address ({endpoint!r} is not);"
                    " or give one DNS name that resolves to every member (dns:///etcd:2379)"
                ) from None
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ConfigError(f"DEDUP_ETCD_PREFIX must start and end with '/', got {self.prefix!r}")
        if self.lease_ttl_s < 2:
            raise ConfigError(f"DEDUP_ETCD_LEASE_TTL_S must be at least 2 (etcd's minimum), got {self.lease_ttl_s}")
        if not self.call_timeout_s > 0:
            raise ConfigError(f"DEDUP_ETCD_TIMEOUT_S must be > 0 seconds, got {self.call_timeout_s}")
        # A refresh every third of the TTL leaves at least 2/3 of it; the margin must leave room to write.
        if not 0 <= self.margin_s < self.lease_ttl_s / 3:
            raise ConfigError(
                f"DEDUP_ETCD_MARGIN_S must be in [0, TTL/3) = [0, {self.lease_ttl_s / 3:.2f}), got {self.margin_s}"
            )

    @property
    def enabled(self) -> bool:
        return bool(self.endpoints)


#: Bearer tokens travel in an HTTP/2 header and are compared in full: printable ASCII, long enough
#: not to be guessed (e.g. `openssl rand -hex 32`).
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True when only this machine can connect to `host` (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # 0.0.0.0 is an address; any other name may resolve to a public one


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecurityConfig:
    """TLS (server certificate; client certificates too when a client CA is set) and bearer tokens."""

    tls_cert: Path | None = None  # PEM certificate chain of the server
    tls_key: Path | None = None  # PEM private key of the server
    tls_client_ca: Path | None = None  # PEM CA bundle: when set, clients must present a certificate it signed
    auth_tokens: tuple[str, ...] = ()
    auth_token_file: Path | None = None  # one token per line (blank lines and # comments skipped)
    allow_insecure: bool = False  # listen beyond loopback without TLS and tokens

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("DEDUP_TLS_CERT and DEDUP_TLS_KEY go together: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("DEDUP_TLS_CLIENT_CA (mutual TLS) needs DEDUP_TLS_CERT and DEDUP_TLS_KEY too")
        for variable, path in (
            ("DEDUP_TLS_CERT", self.tls_cert), ("DEDUP_TLS_KEY", self.tls_key),
            ("DEDUP_TLS_CLIENT_CA", self.tls_client_ca), ("DEDUP_AUTH_TOKEN_FILE", self.auth_token_file),
        ):
            if path is not None and not path.is_file():
                raise ConfigError(f"{variable}={path} is not a file")
        for variable, path, label in (
            ("DEDUP_TLS_CERT", self.tls_cert, "CERTIFICATE"), ("DEDUP_TLS_KEY", self.tls_key, "PRIVATE KEY"),
            ("DEDUP_TLS_CLIENT_CA", self.tls_client_ca, "CERTIFICATE"),
        ):
            if path is not None:
                _check_pem(path, variable, label)
        for token in self.auth_tokens:
            _check_token(token, "DEDUP_AUTH_TOKEN")
        if self.auth_token_file is not None and not self.file_tokens():
            raise ConfigError(f"DEDUP_AUTH_TOKEN_FILE={self.auth_token_file} holds no token")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def mutual_tls(self) -> bool:
        return self.tls_client_ca is not None

    @property
    def token_required(self) -> bool:
        return bool(self.auth_tokens) or self.auth_token_file is not None

    def file_tokens(self) -> tuple[str, ...]:
        if self.auth_token_file is None:
            return ()
        try:
            lines = self.auth_token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"DEDUP_AUTH_TOKEN_FILE={self.auth_token_file} cannot be read: {exc}") from exc
        tokens = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
        for token in tokens:
            _check_token(token, "DEDUP_AUTH_TOKEN_FILE")
        return tokens

    def accepted_tokens(self) -> tuple[str, ...]:
        """Every token a client may present: DEDUP_AUTH_TOKEN's and the file's (read now)."""
        return self.auth_tokens + self.file_tokens()


def _check_pem(path: Path, variable: str, label: str) -> None:
    """A readable PEM file with a `label` block; gRPC itself would only fail at the first handshake."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={path} cannot be read: {exc}") from exc
    if not re.search(rb"-----BEGIN [A-Z ]*" + label.encode() + rb"-----", text):
        raise ConfigError(f"{variable}={path} is not PEM: it has no '-----BEGIN ...{label}-----' block")


def _check_token(token: str, variable: str) -> None:
    # The token itself is never put in a message.
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{variable}: a token has {len(token)} characters, fewer than {MIN_TOKEN_LENGTH}")
    if not all(33 <= ord(ch) <= 126 for ch in token) or "," in token:
        raise ConfigError(f"{variable}: a token has characters other than printable ASCII without spaces or commas")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: Path = Path(".dedup-data")
    triton_url: str = "127.0.0.1:8001"
    triton_model: str = "embedder"
    triton_timeout_s: float = 60.0  # the longest one inference call may take (less when the deadline is nearer)
    # Tensors through Triton system shared memory: "auto" when Triton is on this host (falls back to the wire),
    # "on" (required: an error when it cannot be set up), "off" (always gRPC).
    triton_shared_memory: str = "auto"
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_timeout_s: float = 30.0  # the longest one Milvus call may take (less when the deadline is nearer)
    # How long a request or stream item waits for a backend that is down or restarting (retrying with backoff)
    # before it is answered UNAVAILABLE (FAILED in a stream); a caller's earlier deadline wins.
    backend_wait_s: float = 30.0
    milvus_token: str = ""
    collection_prefix: str = "dedup_"
    default_collection: str = "default"
    threshold: float = 0.0  # 0 = the calibrated default of the served model
    default_top_k: int = 10
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    embed_batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)
    write_batch: BatchConfig = dataclasses.field(
        # One write batch at a time: check-and-insert is serialised, which makes it race-free.
        default_factory=lambda: BatchConfig(max_batch_size=128, max_delay_ms=2.0, max_queue=4096, max_in_flight=1)
    )
    # Concurrent checks' Milvus searches, merged: two calls in flight, a third gathers what arrives meanwhile.
    search_batch: BatchConfig = dataclasses.field(
        default_factory=lambda: BatchConfig(max_batch_size=64, max_delay_ms=2.0, max_queue=1024, max_in_flight=2)
    )
    limits: Limits = dataclasses.field(default_factory=Limits)
    security: SecurityConfig = dataclasses.field(default_factory=SecurityConfig)
    decode_threads: int = max(2, os.cpu_count() or 2)
    health_interval_s: float = 2.0
    shutdown_grace_s: float = 10.0
    metrics_port: int | None = 9464  # Prometheus /metrics on metrics_host:port; 0 = a free port, None = off
    # Loopback unless told otherwise: /metrics has no token or TLS. In a pod, 0.0.0.0 lets Prometheus scrape the
    # pod's address (keep the port off public Services; a NetworkPolicy can limit it to the scraper).
    metrics_host: str = "127.0.0.1"
    coordination: CoordinationConfig = dataclasses.field(default_factory=CoordinationConfig)
    # Front processes on one port (SO_REUSEPORT) under one supervisor (workers/); 1: this process serves alone.
    # From the environment the default is default_workers(); here 1, what tests and embedders expect.
    workers: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"DEDUP_PORT must be 0..65535, got {self.port}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"DEDUP_WORKERS must be 1..{MAX_WORKERS}, got {self.workers}")
        if self.workers > 1 and not self.coordination.enabled:
            raise ConfigError(
                f"DEDUP_WORKERS={self.workers} needs DEDUP_ETCD_ENDPOINTS: each worker is a front, and fronts "
                "take turns writing only through etcd (without it their insert_if_unique would race)"
            )
        if self.workers > 1 and milvus_backend_kind(self.milvus_uri) == "lite":
            raise ConfigError(
                f"DEDUP_WORKERS={self.workers} needs a Milvus server: Milvus Lite ({self.milvus_uri}) serves one "
                "process only"
            )
        for name in ("triton_timeout_s", "milvus_timeout_s", "backend_wait_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"DEDUP_{name.upper()} must be > 0 seconds, got {getattr(self, name)}")
        self._check_exposure()
        if self.triton_shared_memory not in ("auto", "on", "off"):
            raise ConfigError(f"DEDUP_TRITON_SHM must be auto, on or off, got {self.triton_shared_memory!r}")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"DEDUP_METRICS_PORT must be 0..65535 or off, got {self.metrics_port}")
        if not (self.threshold == 0 or 0 < self.threshold <= 1) or math.isnan(self.threshold):
            raise ConfigError(f"DEDUP_THRESHOLD must be in (0, 1] (0 = calibrated default), got {self.threshold}")
        if not 1 <= self.default_top_k <= self.limits.max_top_k:
            raise ConfigError(f"DEDUP_TOP_K must be 1..{self.limits.max_top_k}, got {self.default_top_k}")
        backend = milvus_backend_kind(self.milvus_uri)
        allowed = INDEX_TYPES_BY_BACKEND[backend]
        if self.index.index_type not in allowed:
            raise ConfigError(
                f"DEDUP_INDEX_TYPE={self.index.index_type} is not built by the {backend} Milvus backend "
                f"({self.milvus_uri}); choose one of {sorted(allowed)}"
            )

    def _check_exposure(self) -> None:
        """Beyond loopback, serve only with TLS and a token, unless told otherwise (DEDUP_ALLOW_INSECURE=1)."""
        if is_loopback(self.host) or self.security.allow_insecure:
            return
        missing = [
            what
            for what, present in (
                ("TLS (DEDUP_TLS_CERT and DEDUP_TLS_KEY)", self.security.tls),
                ("a bearer token (DEDUP_AUTH_TOKEN or DEDUP_AUTH_TOKEN_FILE)", self.security.token_required),
            )
            if not present
        ]
        if missing:
            raise ConfigError(
                f"DEDUP_HOST={self.host} accepts connections from other machines, but {' and '.join(missing)} "
                f"{'are' if len(missing) > 1 else 'is'} not configured: configure it, or set DEDUP_ALLOW_INSECURE=1 "
                "where something else "
                "(a service mesh, a private network) protects the port"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, prefix: str = "DEDUP_") -> ServerConfig:
        env = os.environ if env is None else env
        reader = _EnvReader(env, prefix)
        defaults = cls()
        coordination = CoordinationConfig(
            endpoints=tuple(e.strip() for e in reader.text("ETCD_ENDPOINTS", "").split(",") if e.strip()),
            prefix=reader.text("ETCD_PREFIX", CoordinationConfig.prefix),
            lease_ttl_s=reader.integer("ETCD_LEASE_TTL_S", CoordinationConfig.lease_ttl_s),
            call_timeout_s=reader.number("ETCD_TIMEOUT_S", CoordinationConfig.call_timeout_s),
            margin_s=reader.number("ETCD_MARGIN_S", CoordinationConfig.margin_s),
        )
        milvus_uri = reader.text("MILVUS_URI", defaults.milvus_uri)
        workers = (
            default_workers(cpus=available_cpus(), coordinated=coordination.enabled,
                            milvus_server=milvus_backend_kind(milvus_uri) == "server")
            if reader.text("WORKERS", "auto").lower() == "auto"
            else reader.integer("WORKERS", 1)
        )
        index = IndexConfig(
            index_type=reader.text("INDEX_TYPE", IndexConfig.index_type).upper(),
            hnsw_m=reader.integer("HNSW_M", IndexConfig.hnsw_m),
            hnsw_ef_construction=reader.integer("HNSW_EF_CONSTRUCTION", IndexConfig.hnsw_ef_construction),
            hnsw_ef=reader.integer("HNSW_EF", IndexConfig.hnsw_ef),
            ivf_nlist=reader.integer("IVF_NLIST", IndexConfig.ivf_nlist),
            ivf_nprobe=reader.integer("IVF_NPROBE", IndexConfig.ivf_nprobe),
        )
        embed_batch = BatchConfig(
            max_batch_size=reader.integer("BATCH_SIZE", BatchConfig.max_batch_size),
            max_delay_ms=reader.number("BATCH_DELAY_MS", BatchConfig.max_delay_ms),
            max_queue=reader.integer("BATCH_QUEUE", BatchConfig.max_queue),
            max_in_flight=reader.integer("BATCH_IN_FLIGHT", BatchConfig.max_in_flight),
        )
        limits = Limits(
            max_image_bytes=reader.integer("MAX_IMAGE_BYTES", Limits.max_image_bytes),
            max_pixels=reader.integer("MAX_PIXELS", Limits.max_pixels),
            max_message_bytes=reader.integer("MAX_MESSAGE_BYTES", Limits.max_message_bytes),
            max_top_k=reader.integer("MAX_TOP_K", Limits.max_top_k),
            stream_window=reader.integer("STREAM_WINDOW", Limits.stream_window),
            max_stream_items=reader.integer("MAX_STREAM_ITEMS", Limits.max_stream_items),
            max_concurrent_rpcs=reader.integer("MAX_CONCURRENT_RPCS", Limits.max_concurrent_rpcs),
        )
        return cls(
            host=reader.text("HOST", defaults.host),
            port=reader.integer("PORT", defaults.port),
            data_dir=Path(reader.text("DATA_DIR", str(defaults.data_dir))),
            triton_url=reader.text("TRITON_URL", defaults.triton_url),
            triton_model=reader.text("TRITON_MODEL", defaults.triton_model),
            triton_timeout_s=reader.number("TRITON_TIMEOUT_S", defaults.triton_timeout_s),
            triton_shared_memory=reader.text("TRITON_SHM", defaults.triton_shared_memory).lower(),
            milvus_uri=milvus_uri,
            milvus_timeout_s=reader.number("MILVUS_TIMEOUT_S", defaults.milvus_timeout_s),
            backend_wait_s=reader.number("BACKEND_WAIT_S", defaults.backend_wait_s),
            milvus_token=reader.text("MILVUS_TOKEN", defaults.milvus_token),
            threshold=reader.number("THRESHOLD", defaults.threshold),
            default_top_k=reader.integer("TOP_K", defaults.default_top_k),
            index=index,
            embed_batch=embed_batch,
            limits=limits,
            security=SecurityConfig(
                tls_cert=reader.path("TLS_CERT"),
                tls_key=reader.path("TLS_KEY"),
                tls_client_ca=reader.path("TLS_CLIENT_CA"),
                auth_tokens=tuple(t.strip() for t in reader.text("AUTH_TOKEN", "").split(",") if t.strip()),
                auth_token_file=reader.path("AUTH_TOKEN_FILE"),
                allow_insecure=reader.flag("ALLOW_INSECURE", False),
            ),
            # Per worker: N workers share the cores (one worker: the CPU count, as always).
            decode_threads=reader.integer("DECODE_THREADS", max(2, (os.cpu_count() or 2) // max(1, workers))),
            shutdown_grace_s=reader.number("SHUTDOWN_GRACE_S", defaults.shutdown_grace_s),
            metrics_port=(
                None if reader.text("METRICS_PORT", "").lower() == "off"
                else reader.integer("METRICS_PORT", defaults.metrics_port or 0)
            ),
            metrics_host=reader.text("METRICS_HOST", defaults.metrics_host),
            coordination=coordination,
            workers=workers,
        )


@dataclasses.dataclass(frozen=True)
class _EnvReader:
    env: Mapping[str, str]
    prefix: str

    def _raw(self, name: str) -> str | None:
        value = self.env.get(self.prefix + name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int) -> int:
        return self._parse(name, default, int)

    def number(self, name: str, default: float) -> float:
        return self._parse(name, default, float)

    def path(self, name: str) -> Path | None:
        value = self._raw(name)
        return None if value is None else Path(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self.prefix}{name}={value!r} is not a flag (1/0, true/false, yes/no, on/off)")

    def _parse(self, name: str, default: Any, kind: type) -> Any:
        value = self._raw(name)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError as exc:
            raise ConfigError(f"{self.prefix}{name}={value!r} is not a valid {kind.__name__}") from exc

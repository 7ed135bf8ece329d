"""Run the tritonserver binary bundled in the nvidia-pytriton wheel, with a plain model repository.

The wheel ships tritonserver 2.51 with the Python backend only. Three things make that backend work from a venv
on a pyenv Python (each one measured here; see shared/notes/triton.md):

* the backend dir needs the stub built for the running Python version next to libtriton_python.so;
* LD_LIBRARY_PATH must list the running interpreter's libpython dir first, or the stub loads the system
  libpython with pyenv's stdlib and model load fails ('_thread.RLock' object has no attribute '_recursion_count');
* the venv's bin dir must come first on PATH: the stub ignores PYTHONPATH and derives sys.prefix from the
  `python3` it finds on PATH. Otherwise it imports another numpy (pyenv's global 2.x) and tensors are silently
  corrupted (inputs read as all ones, outputs empty) instead of failing.
"""

from __future__ import annotations

import filecmp
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dedup_stack.errors import StackError
from dedup_stack.ports import WILDCARD_HOST, PortClaim, check_ports_free
from dedup_stack.process import ChildProcess, ManagedService

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, kw_only=True)
class TritonConfig:
    """Where the model repository and Triton's working files are, which models to load, which ports."""

    model_repository: Path
    work_dir: Path  # backend dir and log go here, e.g. .dedup-data/triton
    models: tuple[str, ...] = ("embedder",)
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    log_path: Path | None = None  # default: work_dir/logs/tritonserver.log
    startup_timeout_s: float = 120.0
    stop_grace_s: float = 15.0
    log_verbose: int = 0

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("TritonConfig.models must name at least one model")
        ports = (self.grpc_port, self.http_port, self.metrics_port)
        if len(set(ports)) != len(ports):
            raise ValueError(f"Triton ports must differ: {ports}")
        if self.startup_timeout_s <= 0 or self.stop_grace_s < 0:
            raise ValueError("Triton timeouts must be positive")

    @property
    def url(self) -> str:
        """gRPC address for tritonclient (host:port, no scheme)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def resolved_log_path(self) -> Path:
        return self.log_path if self.log_path is not None else self.work_dir / "logs" / "tritonserver.log"

    def port_claims(self) -> list[PortClaim]:
        return [
            PortClaim(host=WILDCARD_HOST, port=self.grpc_port, purpose="Triton gRPC"),
            PortClaim(host=WILDCARD_HOST, port=self.http_port, purpose="Triton HTTP"),
            PortClaim(host=WILDCARD_HOST, port=self.metrics_port, purpose="Triton metrics"),
        ]


@dataclass(frozen=True, kw_only=True)
class TritonDistribution:
    """Paths inside the installed nvidia-pytriton wheel."""

    server_binary: Path
    python_backend_dir: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for the running Python version
    libs_dir: Path  # nvidia_pytriton.libs: the binary's bundled shared libraries

    @classmethod
    def find(cls) -> TritonDistribution:
        # find_spec, not import: importing pytriton pulls in much more than we need here.
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise StackError("nvidia-pytriton is not installed in this Python environment")
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        dist = package_dir / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        found = cls(
            server_binary=dist / "bin" / "tritonserver",
            python_backend_dir=dist / "backends" / "python",
            stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
            libs_dir=package_dir.parent / "nvidia_pytriton.libs",
        )
        for path in (found.server_binary, found.python_backend_dir, found.stub):
            if not path.exists():
                raise StackError(f"nvidia-pytriton install is incomplete (Python {version}): {path} is missing")
        return found


def prepare_backend_dir(dist: TritonDistribution, work_dir: Path) -> Path:
    """Lay out work_dir/backends/python as Triton expects it; return work_dir/backends."""
    backends = work_dir / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "libtriton_python.so": dist.python_backend_dir / "libtriton_python.so",
        "triton_python_backend_utils.py": dist.python_backend_dir / "triton_python_backend_utils.py",
        "triton_python_backend_stub": dist.stub,
    }
    for name, source in files.items():
        _install_file(source, python_dir / name)
    return backends


def _install_file(source: Path, dest: Path) -> None:
    if dest.exists() and filecmp.cmp(source, dest, shallow=False):
        return
    # Copy then rename: a Triton already running from this dir keeps its mapped .so (old inode) intact.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copy2(source, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, dest)


def build_env(dist: TritonDistribution, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its Python-backend stubs (see the module docstring for why)."""
    env = dict(os.environ if base is None else base)
    lib_dirs = [d for d in (sysconfig.get_config_var("LIBDIR"), str(dist.libs_dir)) if d]
    if env.get("LD_LIBRARY_PATH"):
        lib_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
    return env


def build_argv(config: TritonConfig, dist: TritonDistribution, backend_dir: Path) -> list[str]:
    argv = [
        str(dist.server_binary),
        f"--model-repository={config.model_repository.absolute()}",
        f"--backend-directory={backend_dir.absolute()}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in config.models),
        f"--grpc-port={config.grpc_port}",
        f"--http-port={config.http_port}",
        f"--metrics-port={config.metrics_port}",
        "--allow-metrics=true",
        # Ready only when every loaded model is ready, so the health probe below means "can infer".
        "--strict-readiness=true",
        # Exit, rather than serve without the model, when a model fails to load.
        "--exit-on-error=true",
        # Triton waits this long for in-flight requests on SIGTERM; keep it inside our grace period.
        f"--exit-timeout-secs={max(1, int(config.stop_grace_s / 2))}",
        f"--log-verbose={config.log_verbose}",
    ]
    return argv


class TritonProcess(ManagedService):
    """tritonserver as a child process; `start()` returns once the server and every model in config.models are
    ready, `stop()` stops it and its stubs. Usable as a context manager."""

    def __init__(self, config: TritonConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def url(self) -> str:
        return self.config.url

    def start(self, cancel: threading.Event | None = None) -> None:
        """Start and wait until ready; on any failure the process is stopped before the error propagates."""
        if self._child is not None:
            raise RuntimeError("TritonProcess was already started")
        started = time.monotonic()
        check_ports_free(self.config.port_claims())
        dist = TritonDistribution.find()
        backend_dir = prepare_backend_dir(dist, self.config.work_dir)
        self._child = ChildProcess(
            name="Triton",
            argv=build_argv(self.config, dist, backend_dir),
            env=build_env(dist),
            cwd=self.config.work_dir,
            log_path=self.config.resolved_log_path,
        )
        try:
            self._child.spawn()
            with _HealthProbe(self.config.url, self.config.models) as probe:
                self._child.wait_ready(
                    probe, timeout_s=self.config.startup_timeout_s, cancel=cancel, what="serving its models"
                )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "Triton ready on %s with %s in %.1f s (pid %s, log %s)",
            self.config.url,
            ", ".join(self.config.models),
            self.startup_seconds,
            self._child.pid,
            self.config.resolved_log_path,
        )

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(self.config.stop_grace_s)



class _HealthProbe:
    """Callable that is True once Triton is live, ready and has every model ready."""

    def __init__(self, url: str, models: tuple[str, ...]) -> None:
        import tritonclient.grpc as grpcclient  # heavy import, only needed while starting

        self._client = grpcclient.InferenceServerClient(url)
        self._models = models
        self._exception_type = grpcclient.InferenceServerException

    def __call__(self) -> bool:
        try:
            return (
                self._client.is_server_live(client_timeout=_PROBE_TIMEOUT_S)
                and self._client.is_server_ready(client_timeout=_PROBE_TIMEOUT_S)
                and all(self._client.is_model_ready(m, client_timeout=_PROBE_TIMEOUT_S) for m in self._models)
            )
        except self._exception_type:
            return False  # not listening yet

    def __enter__(self) -> _HealthProbe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()


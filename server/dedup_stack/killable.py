"""The local stack on free ports, with a handle on each process to kill, pause and restart it.

For `make eval`, `make bench`, the load generator (when no --target is given), `make chaos` and the fault tests.
Unlike `make run` (fixed, documented ports, foreground) it picks free ports for every process, so it runs beside
`make run` or a test session. With `fronts` > 1 or `workers` > 1 it also starts an etcd (the fronts' write
coordinator), and runs that many fronts ("front", "front2", ...), each of `workers` processes. Ports are picked
once, so a
restarted process comes back on the same address and the front (which knows its backends only by address)
reconnects by itself. Each process runs in its own process group, so a signal reaches what it spawned too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from dedup_stack.etcd import EtcdConfig, EtcdProcess
from dedup_stack.front import FrontConfig, FrontProcess, front_env
from dedup_stack.milvus import MilvusConfig, MilvusPorts, MilvusProcess
from dedup_stack.ports import pick_free_ports
from dedup_stack.process import ChildProcess
from dedup_stack.stack import check_model_repository
from dedup_stack.triton import TritonConfig, TritonProcess

logger = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[2]
_FRONT_PYTHONPATH = [str(REPO_DIR / "server"), str(REPO_DIR / "clients" / "python")]
BACKENDS = ("triton", "milvus")


def front_name(number: int) -> str:
    """The name of front `number` (0-based) in child(), kill() and the logs: front, front2, front3, ..."""
    return "front" if number == 0 else f"front{number + 1}"


class KillableStack:
    """Milvus standalone, Triton, etcd when fronts share the Milvus, and the gRPC fronts (`python -m dedup_server`),
    each on free ports under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        front_overrides: Mapping[str, str] | None = None,
        model_repository: Path = REPO_DIR / "triton_models",
        triton_model: str = "embedder",
        startup_timeout_s: float = 180.0,
        front_grace_s: float = 10.0,
        fronts: int = 1,
        workers: int = 1,
        etcd: bool | None = None,  # None: when there are several fronts or workers
    ) -> None:
        check_model_repository(model_repository, triton_model)
        if fronts < 1 or workers < 1:
            raise ValueError(f"fronts and workers must be at least 1, got {fronts} and {workers}")
        self.root = root.absolute()
        self._starts = {"milvus": 0, "triton": 0, **{front_name(n): 0 for n in range(fronts)}}
        self.milvus_config = MilvusConfig(
            base_dir=self.root / "milvus",
            install_dir=REPO_DIR / ".dedup-data" / "milvus-install",  # unpacked once per checkout
            ports=MilvusPorts.pick_free(),
            startup_timeout_s=startup_timeout_s,
            # With data loaded it ignores SIGTERM; what it acknowledged survives the SIGKILL that follows.
            stop_grace_s=2.0,
        )
        grpc_port, http_port, metrics_port, *self.front_ports = pick_free_ports(3 + fronts)
        self.front_port = self.front_ports[0]
        # Several fronts (or workers) on one Milvus take turns writing through etcd.
        with_etcd = (fronts > 1 or workers > 1) if etcd is None else etcd
        self.etcd_config = EtcdConfig.on_free_ports(self.root / "etcd") if with_etcd else None
        self.triton_config = TritonConfig(
            model_repository=model_repository.absolute(),
            work_dir=self.root / "triton",
            models=(triton_model,),
            grpc_port=grpc_port,
            http_port=http_port,
            metrics_port=metrics_port,
            startup_timeout_s=startup_timeout_s,
        )
        self.front_env = {
            "DEDUP_HOST": "127.0.0.1",
            "DEDUP_PORT": str(self.front_port),
            "DEDUP_TRITON_URL": self.triton_config.url,
            "DEDUP_TRITON_MODEL": triton_model,
            "DEDUP_MILVUS_URI": self.milvus_config.uri,
            "DEDUP_DATA_DIR": str(self.root / "front"),
            "DEDUP_METRICS_PORT": "off",  # its fixed default would clash with `make run` or another stack
            "DEDUP_SHUTDOWN_GRACE_S": str(front_grace_s),
            "DEDUP_WORKERS": str(workers),
            **({"DEDUP_ETCD_ENDPOINTS": self.etcd_config.endpoint} if self.etcd_config else {}),
            **(front_overrides or {}),
        }
        self._front_grace_s = front_grace_s
        self._startup_timeout_s = startup_timeout_s
        self.milvus: MilvusProcess | None = None
        self.triton: TritonProcess | None = None
        self.etcd: EtcdProcess | None = None
        self.fronts: list[FrontProcess | None] = [None] * fronts

    @property
    def front(self) -> FrontProcess | None:
        return self.fronts[0]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.front_port}"

    @property
    def targets(self) -> list[str]:
        """host:port of every front, in order (front, front2, ...)."""
        return [f"127.0.0.1:{port}" for port in self.front_ports]

    @property
    def milvus_uri(self) -> str:
        return self.milvus_config.uri

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> KillableStack:
        started = time.monotonic()
        try:
            if self.etcd_config is not None:
                self.etcd = EtcdProcess(self.etcd_config)
                self.etcd.start()
            self.start_milvus()
            self.start_triton()
            for number in range(len(self.fronts)):
                self.start_front(number)
        except BaseException:
            self.close()
            raise
        logger.info("stack up in %.1f s: front%s %s (logs under %s)", time.monotonic() - started,
                    "s" * (len(self.fronts) > 1), " ".join(self.targets), self.root)
        return self

    def start_milvus(self) -> float:
        """Start (or restart, on the same ports and data) Milvus; returns the seconds it took to be ready."""
        self._starts["milvus"] += 1
        self.milvus = MilvusProcess(self.milvus_config)
        self.milvus.start()
        return self.milvus.startup_seconds or 0.0

    def start_triton(self) -> float:
        self._starts["triton"] += 1
        log = self.root / "logs" / f"triton-{self._starts['triton']}.log"
        self.triton = TritonProcess(dataclasses.replace(self.triton_config, log_path=log))
        self.triton.start()
        return self.triton.startup_seconds or 0.0

    def start_front(self, number: int = 0, **overrides: str) -> float:
        """Start front `number` (0: "front"); returns once it reports SERVING. `overrides`: DEDUP_* variables for
        this start only."""
        name = front_name(number)
        self._starts[name] += 1
        variables = {**self.front_env, "DEDUP_PORT": str(self.front_ports[number]), **overrides}
        if number:
            variables["DEDUP_DATA_DIR"] = str(self.root / name)
        front = FrontProcess(
            FrontConfig(
                command=(sys.executable, "-m", "dedup_server"),
                env=front_env(os.environ, variables, _FRONT_PYTHONPATH),
                host="127.0.0.1",
                port=self.front_ports[number],
                log_path=self.root / "logs" / f"{name}-{self._starts[name]}.log",
                startup_timeout_s=self._startup_timeout_s,
                stop_grace_s=self._front_grace_s + 5,
            )
        )
        self.fronts[number] = front
        front.start()
        return front.startup_seconds or 0.0

    def close(self) -> None:
        """Stop whatever runs: the fronts first, then the backends."""
        for process in (*self.fronts, self.triton, self.milvus, self.etcd):
            if process is not None:
                self._resume(process.child)  # a paused process cannot handle SIGTERM
                process.stop()

    def __enter__(self) -> KillableStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- faults -----------------------------------------------------------------------------------------------

    def child(self, name: str) -> ChildProcess:
        """The process of "milvus", "triton", "etcd", "front", "front2", ..."""
        fronts = {front_name(n): front for n, front in enumerate(self.fronts)}
        process = {"milvus": self.milvus, "triton": self.triton, "etcd": self.etcd, **fronts}[name]
        if process is None or process.child is None or process.child.pid is None:
            raise RuntimeError(f"{name} is not running")
        return process.child

    def kill(self, name: str) -> None:
        """SIGKILL the process group of `name` ("milvus", "triton", "front") and reap it."""
        child = self.child(name)
        logger.info("killing %s (pid %s) with SIGKILL", name, child.pid)
        _signal_group(child, signal.SIGKILL)
        child.stop(0)  # reaps the leader and waits until nothing of the group is left

    def terminate_front(self, timeout_s: float) -> int:
        """SIGTERM the front and wait for it to exit by itself; returns its exit code."""
        child = self.child("front")
        logger.info("sending SIGTERM to the front (pid %s)", child.pid)
        assert child.pid is not None  # child() checked it
        os.kill(child.pid, signal.SIGTERM)  # the leader only: it drains and stops on its own
        code = child.wait(timeout_s)
        child.stop(0)
        return code

    def pause(self, name: str) -> None:
        """SIGSTOP the process group: a backend that accepts connections but never answers (a slow backend)."""
        logger.info("pausing %s with SIGSTOP", name)
        _signal_group(self.child(name), signal.SIGSTOP)

    def resume(self, name: str) -> None:
        logger.info("resuming %s with SIGCONT", name)
        self._resume(self.child(name))

    @staticmethod
    def _resume(child: ChildProcess | None) -> None:
        if child is not None and child.pid is not None and child.poll() is None:
            _signal_group(child, signal.SIGCONT)


def _signal_group(child: ChildProcess, sig: signal.Signals) -> None:
    if child.pid is None:  # never signal group 0: that is our own
        return
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass

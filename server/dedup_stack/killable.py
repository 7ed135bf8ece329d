"""The local stack on free ports, with a handle on each process to kill, pause and restart it.

For `make eval`, `make bench`, the load generator (when no --target is given), `make chaos` and the fault tests.
Unlike `make run` (fixed, documented ports, foreground) it picks free ports for every process, so it runs beside
`make run` or a test session. Ports are picked once, so a
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


class KillableStack:
    """Milvus standalone, Triton and the gRPC front (`python -m dedup_server`), each on free ports under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        front_overrides: Mapping[str, str] | None = None,
        model_repository: Path = REPO_DIR / "triton_models",
        triton_model: str = "embedder",
        startup_timeout_s: float = 180.0,
        front_grace_s: float = 10.0,
    ) -> None:
        check_model_repository(model_repository, triton_model)
        self.root = root.absolute()
        self._starts = {"milvus": 0, "triton": 0, "front": 0}
        self.milvus_config = MilvusConfig(
            base_dir=self.root / "milvus",
            install_dir=REPO_DIR / ".dedup-data" / "milvus-install",  # unpacked once per checkout
            ports=MilvusPorts.pick_free(),
            startup_timeout_s=startup_timeout_s,
            # With data loaded it ignores SIGTERM; what it acknowledged survives the SIGKILL that follows.
            stop_grace_s=2.0,
        )
        grpc_port, http_port, metrics_port, self.front_port = pick_free_ports(4)
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
            **(front_overrides or {}),
        }
        self._front_grace_s = front_grace_s
        self._startup_timeout_s = startup_timeout_s
        self.milvus: MilvusProcess | None = None
        self.triton: TritonProcess | None = None
        self.front: FrontProcess | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.front_port}"

    @property
    def milvus_uri(self) -> str:
        return self.milvus_config.uri

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> KillableStack:
        started = time.monotonic()
        try:
            self.start_milvus()
            self.start_triton()
            self.start_front()
        except BaseException:
            self.close()
            raise
        logger.info("stack up in %.1f s: front %s (logs under %s)", time.monotonic() - started, self.target, self.root)
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

    def start_front(self, **overrides: str) -> float:
        """Start the front; returns once it reports SERVING. `overrides`: DEDUP_* variables for this start only."""
        self._starts["front"] += 1
        self.front = FrontProcess(
            FrontConfig(
                command=(sys.executable, "-m", "dedup_server"),
                env=front_env(os.environ, {**self.front_env, **overrides}, _FRONT_PYTHONPATH),
                host="127.0.0.1",
                port=self.front_port,
                log_path=self.root / "logs" / f"front-{self._starts['front']}.log",
                startup_timeout_s=self._startup_timeout_s,
                stop_grace_s=self._front_grace_s + 5,
            )
        )
        self.front.start()
        return self.front.startup_seconds or 0.0

    def close(self) -> None:
        """Stop whatever runs: the front first, then the backends."""
        for process in (self.front, self.triton, self.milvus):
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
        process = {"milvus": self.milvus, "triton": self.triton, "front": self.front}[name]
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

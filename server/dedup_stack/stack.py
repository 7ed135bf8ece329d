"""Stack: start Milvus, Triton and etcd side by side, then the gRPC front; watch them all; stop them in order.

Everything that can happen to the supervisor (a signal, a child got ready or failed to, a child died) arrives as
one event on a queue.SimpleQueue, which is documented as safe to put() from a signal handler. The main thread
only ever blocks on that queue, so Ctrl-C is handled at once in every phase and no handler touches a lock.
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from dedup_stack.config import StackConfig
from dedup_stack.errors import ModelRepositoryError, ProcessStartError, StackError, StartCancelled
from dedup_stack.etcd import EtcdConfig, EtcdProcess, find_binary
from dedup_stack.front import FrontConfig, FrontProcess, front_env
from dedup_stack.milvus import MilvusConfig, MilvusPorts, MilvusProcess
from dedup_stack.ports import PortClaim, check_ports_free
from dedup_stack.process import ChildProcess, describe_exit
from dedup_stack.triton import TritonConfig, TritonProcess

logger = logging.getLogger(__name__)

# The front imports dedup_server (next to this package in server/) and the generated dedup.v1 stubs (in
# clients/python/); put both on its PYTHONPATH so it starts whatever the caller's cwd and PYTHONPATH are.
_REPO_DIR = Path(__file__).resolve().parents[2]
_FRONT_PYTHONPATH = [str(d) for d in (_REPO_DIR / "server", _REPO_DIR / "clients" / "python") if d.is_dir()]

EXIT_OK = 0
EXIT_FAILED = 1  # a child failed to start or died
EXIT_PRECONDITION = 2  # nothing was started: model not built, port taken, bad configuration


@dataclass(frozen=True)
class _Signal:
    signum: int


@dataclass(frozen=True)
class _Started:
    name: str
    error: BaseException | None


@dataclass(frozen=True)
class _Exited:
    name: str
    returncode: int


_Event = _Signal | _Started | _Exited


def check_model_repository(repository: Path, model: str) -> None:
    """Raise ModelRepositoryError unless `make model` has produced the model's files."""
    required = [repository / model / "config.pbtxt", repository / model / "1" / "model.onnx"]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise ModelRepositoryError(
            f"the Triton model repository is not built (missing {', '.join(missing)}): run `make model` first"
        )


class Stack:
    """The local stack, driven by `run()`; the processes are attributes so tests can inspect them."""

    def __init__(self, config: StackConfig, *, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._env = dict(os.environ if env is None else env)
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._cancel = threading.Event()  # tells starting children to give up
        data_dir = config.data_dir.absolute()
        self.milvus = (
            MilvusProcess(
                MilvusConfig(
                    base_dir=data_dir / "milvus",
                    # Shared with the integration tests' Milvus (same path) so the 246 MB are unpacked once.
                    install_dir=data_dir / "milvus-install",
                    ports=MilvusPorts.with_proxy(config.milvus_port),
                    startup_timeout_s=config.startup_timeout_s,
                    stop_grace_s=config.milvus_stop_grace_s,
                )
            )
            if config.start_milvus
            else None
        )
        self.triton = (
            TritonProcess(
                TritonConfig(
                    model_repository=config.model_repository.absolute(),
                    work_dir=data_dir / "triton",
                    models=(config.triton_model,),
                    grpc_port=config.triton_grpc_port,
                    http_port=config.triton_http_port,
                    metrics_port=config.triton_metrics_port,
                    startup_timeout_s=config.startup_timeout_s,
                    stop_grace_s=config.stop_grace_s,
                )
            )
            if config.start_triton
            else None
        )
        self.etcd = (
            EtcdProcess(
                EtcdConfig(
                    data_dir=data_dir / "etcd",
                    client_port=config.etcd_port,
                    peer_port=config.etcd_peer_port,
                    startup_timeout_s=config.startup_timeout_s,
                )
            )
            if config.start_etcd
            else None
        )
        self.front = FrontProcess(
            FrontConfig(
                command=config.front_command,
                env=front_env(
                    self._env,
                    {
                        "DEDUP_HOST": config.host,
                        "DEDUP_PORT": str(config.port),
                        "DEDUP_TRITON_URL": config.front_triton_url,
                        "DEDUP_TRITON_MODEL": config.triton_model,
                        "DEDUP_MILVUS_URI": config.front_milvus_uri,
                        "DEDUP_DATA_DIR": str(data_dir),
                        "DEDUP_ETCD_ENDPOINTS": config.front_etcd_endpoints,
                    },
                    _FRONT_PYTHONPATH,
                ),
                host=config.host,
                port=config.port,
                startup_timeout_s=config.startup_timeout_s,
                stop_grace_s=config.stop_grace_s,
            )
        )

    # -- phases -----------------------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Checks that need no process: the model is built and every port is free. Raises StackError."""
        if self.triton is not None:
            check_model_repository(self.config.model_repository, self.config.triton_model)
        claims: list[PortClaim] = [PortClaim(host=self.config.host, port=self.config.port, purpose="gRPC front")]
        if self.triton is not None:
            claims += self.triton.config.port_claims()
        if self.milvus is not None:
            claims += self.milvus.config.ports.port_claims()
        if self.etcd is not None:
            find_binary(self.etcd.config.binary)
            claims += self.etcd.config.port_claims()
        check_ports_free(claims)

    def run(self) -> int:
        """Start everything, stay in the foreground until a signal or a child's death, stop everything.

        Must be called from the main thread (it installs SIGINT/SIGTERM handlers). Returns the exit code.
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        started = time.monotonic()
        try:
            self.preflight()
        except StackError as exc:
            logger.error("not starting: %s", exc)
            return EXIT_PRECONDITION
        try:
            backends: dict[str, Callable[[threading.Event], None]] = {}
            if self.milvus is not None:
                backends["Milvus"] = self.milvus.start
            if self.triton is not None:
                backends["Triton"] = self.triton.start
            if self.etcd is not None:
                backends["etcd"] = self.etcd.start
            self._start_together(backends)
            self._start_together({"gRPC front": self.front.start})
        except StartCancelled:
            return EXIT_OK  # asked to stop (logged when the signal came); not a failure
        except StackError as exc:  # ProcessStartError, or e.g. a port taken since the preflight
            logger.error("startup failed: %s", exc)
            return EXIT_FAILED
        logger.info("%s", self._serving_line(time.monotonic() - started))
        # stdout, one line, for people and scripts: what a second front needs to join this stack.
        print(self.join_line(), flush=True)
        return self._supervise()

    def _start_together(self, starters: Mapping[str, Callable[[threading.Event], None]]) -> None:
        """Run the start functions in threads; return when all succeeded, raise the first real error otherwise.

        A failure or a signal cancels the others; each start function stops its own process when it fails.
        """

        def start_one(name: str, start: Callable[[threading.Event], None]) -> None:
            try:
                start(self._cancel)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
                self._events.put(_Started(name, exc))
            else:
                self._events.put(_Started(name, None))

        threads = [
            threading.Thread(target=start_one, args=(name, start), name=f"start-{name}", daemon=True)
            for name, start in starters.items()
        ]
        for thread in threads:
            thread.start()
        pending = set(starters)
        error: BaseException | None = None
        while pending:
            event = self._events.get()
            if isinstance(event, _Signal):
                self._cancel.set()
                if error is None:
                    logger.info("received %s while starting; stopping", signal.Signals(event.signum).name)
                    error = StartCancelled(f"received {signal.Signals(event.signum).name} while starting")
            elif isinstance(event, _Exited):
                self._cancel.set()
                error = error or ProcessStartError(
                    f"{event.name} {describe_exit(event.returncode)} while the rest was starting",
                    log_tail=self._log_tail(event.name),
                )
            elif isinstance(event, _Started):
                pending.discard(event.name)
                if event.error is None:
                    self._watch(event.name)
                else:
                    self._cancel.set()
                    # The first real failure wins over the StartCancelled it causes in the others.
                    cancelled_only = error is None or isinstance(error, StartCancelled)
                    if cancelled_only and not isinstance(event.error, StartCancelled):
                        error = event.error
                    error = error or event.error
        for thread in threads:
            thread.join()
        if error is not None:
            raise error

    def _supervise(self) -> int:
        while True:
            event = self._events.get()
            if isinstance(event, _Signal):
                logger.info("received %s; stopping", signal.Signals(event.signum).name)
                return EXIT_OK
            if isinstance(event, _Exited):
                tail = self._log_tail(event.name)
                logger.error(
                    "%s stopped unexpectedly (%s); stopping the rest%s",
                    event.name,
                    describe_exit(event.returncode),
                    f"\n--- last lines of its log ---\n{tail}" if tail else "",
                )
                return EXIT_FAILED

    def stop(self) -> None:
        """Stop the front first (it holds clients of the others), then Triton and Milvus side by side."""
        self._cancel.set()
        if self.front.child is not None:
            logger.info("stopping the gRPC front")
            self.front.stop()
        backends = [p for p in (self.triton, self.milvus, self.etcd) if p is not None and p.child is not None]
        if not backends:
            return
        logger.info("stopping %s", " and ".join(type(p).__name__.removesuffix("Process") for p in backends))
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="stop") as pool:
            list(pool.map(lambda p: p.stop(), backends))  # list(): re-raise what a stop() raised
        logger.info("stopped")

    # -- helpers ----------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self._events.put(_Signal(signum))

    def _children(self) -> dict[str, ChildProcess | None]:
        return {
            "Milvus": self.milvus.child if self.milvus else None,
            "Triton": self.triton.child if self.triton else None,
            "etcd": self.etcd.child if self.etcd else None,
            "gRPC front": self.front.child,
        }

    def _watch(self, name: str) -> None:
        """Report the child's exit as an event; exits after stop() began are expected and go unread."""
        child = self._children()[name]
        if child is None:
            return

        def wait() -> None:
            self._events.put(_Exited(name, child.wait()))

        threading.Thread(target=wait, name=f"watch-{name}", daemon=True).start()

    def _log_tail(self, name: str) -> str:
        child = self._children().get(name)
        return child.log_tail() if child is not None else ""

    def _serving_line(self, elapsed_s: float) -> str:
        cfg = self.config
        triton = (
            f"Triton {cfg.front_triton_url} model {cfg.triton_model}"
            if self.triton
            else f"Triton {cfg.front_triton_url} (external)"
        )
        milvus = f"Milvus {cfg.front_milvus_uri}" if self.milvus else f"Milvus {cfg.front_milvus_uri} (external)"
        if not cfg.front_etcd_endpoints:
            etcd = "no etcd: writes serialised by this front alone"
        else:
            etcd = f"etcd {cfg.front_etcd_endpoints}" + ("" if self.etcd else " (external)")
        parts = [
            f"{name} {proc.startup_seconds:.1f} s"
            for name, proc in (("Milvus", self.milvus), ("Triton", self.triton), ("etcd", self.etcd),
                               ("front", self.front))
            if proc is not None and proc.startup_seconds is not None
        ]
        return (
            f"serving on {cfg.host}:{cfg.port} ({triton}, {milvus}, {etcd}); up in {elapsed_s:.1f} s "
            f"({', '.join(parts)})"
        )

    def join_line(self) -> str:
        """`join: VAR=value ...`: the environment another front needs to share this stack's Triton, Milvus and
        etcd (with its own DEDUP_PORT and DEDUP_DATA_DIR; on another machine, with this machine's address)."""
        cfg = self.config
        if not cfg.etcd:
            return "join: not possible: DEDUP_ETCD=off (a second front's writes would race with this one's)"
        if cfg.milvus_lite:
            return f"join: not possible: Milvus Lite ({cfg.front_milvus_uri}) serves one process only"
        variables = {
            "DEDUP_TRITON_URL": cfg.front_triton_url,
            "DEDUP_TRITON_MODEL": cfg.triton_model,
            "DEDUP_MILVUS_URI": cfg.front_milvus_uri,
            "DEDUP_ETCD_ENDPOINTS": cfg.front_etcd_endpoints,
            # Beside this front on one machine, the default metrics port is taken: pick a free one.
            "DEDUP_METRICS_PORT": "0",
        }
        return "join: " + " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())

"""The supervisor of DEDUP_WORKERS fronts on one port: start them, restart the dead, drain them all on SIGTERM.

Everything the supervisor waits for is a file descriptor in one selector: each worker's pipe (READY once it
serves, end of file when it exits) and a pipe its signal handlers write to. So it blocks in one place, wakes for
what happened (or for the next restart that is due), and a signal is handled at once in every phase.

The port: SO_REUSEPORT lets the workers listen on one port, but each must bind the same number, so port 0 cannot be
left to each of them. The supervisor binds the address first without SO_REUSEPORT (which fails when anything holds
the port, another front's SO_REUSEPORT listener too: no silent sharing with a stranger), then sets SO_REUSEPORT on
that socket and keeps it bound, never listening, for its whole life: the port stays ours while a worker restarts,
and a socket that does not listen is never given a connection.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from ..config import ServerConfig
from ..metrics import MetricsServer, multiprocess_registry, start_metrics_server

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # the port could not be had, or a worker crash-looped
EXIT_CONFIG = 2  # a worker found the configuration wrong: restarting it cannot help

READY = b"serving\n"
WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "dedup_server.workers")
METRICS_DIR_NAME = "prometheus-multiproc"
# Beyond a worker's own grace (DEDUP_SHUTDOWN_GRACE_S): closing its clients after the last answer.
_CLOSE_MARGIN_S = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """A worker that dies is restarted after a delay that doubles with each crash of the last `window_s`; more than
    `max_crashes` of them there is a crash loop, and the supervisor gives up (stops every worker, exits 1)."""

    max_crashes: int = 5
    window_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_crashes < 0 or self.window_s <= 0 or not 0 <= self.first_delay_s <= self.max_delay_s:
            raise ValueError(f"invalid restart policy: {self}")


class CrashLoop:
    """The recent crashes of one worker slot, and what to do about the latest."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._crashes: collections.deque[float] = collections.deque()

    @property
    def recent(self) -> int:
        return len(self._crashes)

    @property
    def window_s(self) -> float:
        return self._policy.window_s

    def record(self, now: float) -> float | None:
        """A crash at `now` (time.monotonic()): the delay before the restart, or None to give up."""
        self._crashes.append(now)
        while self._crashes[0] <= now - self._policy.window_s:
            self._crashes.popleft()
        if len(self._crashes) > self._policy.max_crashes:
            return None
        return min(self._policy.first_delay_s * 2 ** (len(self._crashes) - 1), self._policy.max_delay_s)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port), not listening, SO_REUSEPORT set after the bind. Raises OSError
    naming the address when the port is taken."""
    bare = host.strip("[]")
    try:
        family, _, _, _, address = socket.getaddrinfo(bare or None, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        sock.bind(address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def fresh_metrics_dir(path: Path) -> Path:
    """An empty PROMETHEUS_MULTIPROC_DIR: the files of a previous run would be summed into this one's."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclasses.dataclass(eq=False)
class _Worker:
    index: int
    crashes: CrashLoop
    proc: subprocess.Popen[bytes] | None = None
    pipe: int | None = None  # our end: READY, then end of file when the worker exits
    serving: bool = False
    restart_at: float | None = None  # time.monotonic() of a restart that is due
    started: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0


class Supervisor:
    """Run `config.workers` workers until a signal (exit 0) or a crash loop (exit 1); see the module docstring."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = WORKER_COMMAND,
        policy: RestartPolicy | None = None,
    ) -> None:
        self.config = config
        self._env = dict(os.environ if env is None else env)
        self._command = tuple(command)
        policy = policy or RestartPolicy()
        self._workers = [_Worker(index, CrashLoop(policy)) for index in range(1, config.workers + 1)]
        self.metrics_dir = config.data_dir.absolute() / METRICS_DIR_NAME
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._signal: int | None = None
        self._give_up: int | None = None  # the exit code, once a worker crash-looped
        self._announced = False

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGINT/SIGTERM (0) or a crash loop (1, or 2 for a configuration error). Main thread only."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        metrics: MetricsServer | None = None
        reservation: socket.socket | None = None
        try:
            try:
                reservation = reserve_port(self.config.host, self.config.port)
            except OSError as exc:
                logger.error("%s", exc)
                return EXIT_FAILED
            self.port = reservation.getsockname()[1]
            fresh_metrics_dir(self.metrics_dir)
            if self.config.metrics_port is not None:
                metrics = start_metrics_server(self.config.metrics_host, self.config.metrics_port,
                                               registry=multiprocess_registry(self.metrics_dir))
                self.metrics_port = metrics.port
                logger.info("Prometheus metrics of every worker on http://%s:%d/metrics", self.config.metrics_host,
                            metrics.port)
            logger.info("supervisor (pid %d): %d workers on %s:%d", os.getpid(), len(self._workers),
                        self.config.host, self.port)
            for worker in self._workers:
                self._start(worker)
            return self._supervise()
        finally:
            self._stop_all()
            if metrics is not None:
                metrics.close()
            if reservation is not None:
                reservation.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()
            os.close(self._wake_read)
            os.close(self._wake_write)
            logger.info("supervisor stopped")

    def _supervise(self) -> int:
        while True:
            if self._signal is not None:
                logger.info("received %s; draining %d workers", signal.Signals(self._signal).name,
                            sum(w.proc is not None for w in self._workers))
                return EXIT_OK
            if self._give_up is not None:
                return self._give_up
            due = [w.restart_at for w in self._workers if w.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            self._handle(self._selector.select(timeout))
            now = time.monotonic()
            for worker in self._workers:
                if worker.restart_at is not None and worker.restart_at <= now and self._signal is None:
                    self._start(worker)

    def _stop_all(self) -> None:
        """SIGTERM every worker (each drains: NOT_SERVING, grace, close), SIGKILL what is left after the grace."""
        for worker in self._workers:
            worker.restart_at = None
            if worker.proc is not None:
                _send(worker.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_grace_s + _CLOSE_MARGIN_S
        while any(w.proc is not None for w in self._workers) and time.monotonic() < deadline:
            self._handle(self._selector.select(max(0.0, deadline - time.monotonic())))
        for worker in self._workers:
            if worker.proc is not None:
                logger.warning("worker %d (pid %d) did not stop within %.0f s; killing it", worker.index, worker.pid,
                               self.config.shutdown_grace_s + _CLOSE_MARGIN_S)
                _send(worker.proc, signal.SIGKILL)
                self._reaped(worker)

    # -- events -----------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self._signal is None:
            self._signal = signum
        try:
            os.write(self._wake_write, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the loop wakes up anyway

    def _handle(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in events:
            worker: _Worker | None = key.data
            if worker is None:
                try:
                    while os.read(self._wake_read, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            try:
                data = os.read(key.fd, 512)
            except BlockingIOError:
                continue
            if data:
                self._serving(worker)
            else:
                self._reaped(worker)

    def _serving(self, worker: _Worker) -> None:
        worker.serving = True
        if self._announced:
            logger.info("worker %d (pid %d) is SERVING again", worker.index, worker.pid)
        elif all(w.serving for w in self._workers):
            self._announced = True
            logger.info("all %d workers SERVING on %s:%d (pids %s)", len(self._workers), self.config.host, self.port,
                        ", ".join(str(w.pid) for w in self._workers))

    def _start(self, worker: _Worker) -> None:
        assert self.port is not None
        read, write = os.pipe()
        env = {
            **self._env,
            "DEDUP_PORT": str(self.port),
            "DEDUP_WORKERS": "1",  # a worker serves; it supervises nothing
            "DEDUP_METRICS_PORT": "off",  # the supervisor serves every worker's metrics
            "DEDUP_DECODE_THREADS": str(self.config.decode_threads),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
        }
        argv = [*self._command, "--index", str(worker.index), "--ready-fd", str(write), "--parent", str(os.getpid())]
        try:
            proc = subprocess.Popen(argv, env=env, pass_fds=(write,), stdin=subprocess.DEVNULL)
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)
        os.set_blocking(read, False)
        worker.proc, worker.pipe, worker.serving, worker.restart_at = proc, read, False, None
        worker.started += 1
        self._selector.register(read, selectors.EVENT_READ, worker)
        logger.info("worker %d started (pid %d)", worker.index, proc.pid)

    def _reaped(self, worker: _Worker) -> None:
        """The worker exited (its pipe closed, or it was killed): collect it, then restart it unless stopping."""
        proc = worker.proc
        assert proc is not None and worker.pipe is not None
        self._selector.unregister(worker.pipe)
        os.close(worker.pipe)
        code = proc.wait()
        mark_process_dead(proc.pid, str(self.metrics_dir))  # its live gauges leave the sums; counters stay
        worker.proc, worker.pipe, worker.serving = None, None, False
        stopping = self._signal is not None or self._give_up is not None
        if stopping:
            log = logger.info if code == 0 else logger.warning
            log("worker %d (pid %d) %s", worker.index, proc.pid, describe_exit(code))
            return
        if code == EXIT_CONFIG:
            logger.error("worker %d (pid %d) found the configuration wrong (its log says why); giving up",
                         worker.index, proc.pid)
            self._give_up = EXIT_CONFIG
            return
        delay = worker.crashes.record(time.monotonic())
        if delay is None:
            logger.error("worker %d (pid %d) %s: %d crashes in %.0f s, a crash loop; giving up (stopping every "
                         "worker)", worker.index, proc.pid, describe_exit(code), worker.crashes.recent,
                         worker.crashes.window_s)
            self._give_up = EXIT_FAILED
            return
        logger.error("worker %d (pid %d) %s; restarting it in %.1f s (%d crash%s in the last %.0f s)", worker.index,
                     proc.pid, describe_exit(code), delay, worker.crashes.recent,
                     "" if worker.crashes.recent == 1 else "es", worker.crashes.window_s)
        worker.restart_at = time.monotonic() + delay

    # -- for tests --------------------------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.proc is not None]


def _send(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass

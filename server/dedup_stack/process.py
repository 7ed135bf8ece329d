"""One child process in its own process group: spawn, wait for readiness, stop the whole group.

Each child gets its own session (start_new_session), for two reasons: Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in order; and killing the group also kills what the child spawned
(Triton's Python-backend stubs), so nothing is left behind when the child itself dies first.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

from dedup_stack.errors import ProcessStartError, StartCancelled

logger = logging.getLogger(__name__)

# How long to wait for stragglers in the group after the leader is gone and SIGKILL was sent.
_GROUP_GONE_TIMEOUT_S = 5.0
_POLL_INTERVAL_S = 0.2


class ChildProcess:
    """A child process whose stdout and stderr go to a log file (or to ours when log_path is None)."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._log_path = log_path
        self._log_file: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def spawn(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started")
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
        logger.debug("starting %s: %s", self.name, " ".join(self._argv))
        self._proc = subprocess.Popen(
            self._argv,
            env=self._env,
            cwd=self._cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT if self._log_file else None,
            start_new_session=True,
        )

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child exits; raise subprocess.TimeoutExpired after `timeout` seconds."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.wait(timeout)

    def wait_ready(
        self,
        probe: Callable[[], bool],
        *,
        timeout_s: float,
        cancel: threading.Event | None = None,
        what: str = "ready",
    ) -> None:
        """Call `probe` until it returns True; raise if the child exits, the deadline passes or `cancel` is set.

        There is no event to wait on for "a server in another process is ready", so this polls, sleeping on the
        cancel event so that a stop request interrupts the wait at once.
        """
        deadline = time.monotonic() + timeout_s
        waiter = cancel if cancel is not None else threading.Event()
        while True:
            if cancel is not None and cancel.is_set():
                raise StartCancelled(f"{self.name}: start cancelled")
            code = self.poll()
            if code is not None:
                raise ProcessStartError(
                    f"{self.name} {describe_exit(code)} before it was {what}", log_tail=self.log_tail()
                )
            if probe():
                return
            if time.monotonic() >= deadline:
                raise ProcessStartError(
                    f"{self.name} was not {what} after {timeout_s:.0f} s", log_tail=self.log_tail()
                )
            waiter.wait(_POLL_INTERVAL_S)

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM the group, wait `grace_s`, then SIGKILL whatever is left in it. Safe to call more than once."""
        try:
            return self._stop_group(grace_s)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def _stop_group(self, grace_s: float) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        pgid = proc.pid  # the child leads its own session, so its pid is the group id
        if proc.poll() is None:
            logger.debug("stopping %s (pid %d) with SIGTERM", self.name, proc.pid)
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                logger.info("%s did not stop within %.0f s; killing it", self.name, grace_s)
        # Also after a clean exit: children of the leader may have outlived it.
        _signal_group(pgid, signal.SIGKILL)
        proc.wait()
        _wait_group_gone(pgid, self.name)
        return proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return tail_text(self._log_path, lines)


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'killed by SIGKILL' (Popen reports death by signal N as -N)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def tail_text(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a text file, reading at most `max_bytes` from its end."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        data = fh.read()
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already empty


def _wait_group_gone(pgid: int, name: str) -> None:
    """Wait until no live process is left in the group.

    Killed members that were not our children become zombies until init reaps them (about 1 s here), and a
    zombie still counts for killpg(pgid, 0); so look at /proc and ignore zombies where it exists.
    """
    deadline = time.monotonic() + _GROUP_GONE_TIMEOUT_S
    while time.monotonic() < deadline:
        if not group_has_live_members(pgid):
            return
        time.sleep(0.05)
    logger.warning("processes of %s (group %d) still exist after SIGKILL", name, pgid)


def group_has_live_members(pgid: int) -> bool:
    """True while a process of group `pgid` exists that is not a zombie."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


_Service = TypeVar("_Service", bound="ManagedService")


class ManagedService:
    """What Milvus and Triton share: one ChildProcess, `start()` that returns once it is ready, `stop()`,
    and use as a context manager. Subclasses implement start() and stop()."""

    def __init__(self) -> None:
        self._child: ChildProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def child(self) -> ChildProcess | None:
        return self._child

    def start(self, cancel: threading.Event | None = None) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Service) -> _Service:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""The worker supervisor with stand-in workers (real processes, no backends): readiness, restarts, the crash loop,
SIGTERM draining, /metrics summed over workers; its plain parts (restart policy, port reservation, CPU count)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from dedup_server.config import ConfigError, ServerConfig, available_cpus, default_workers
from dedup_server.workers.supervisor import CrashLoop, RestartPolicy, fresh_metrics_dir, reserve_port

from tests.conftest import REPO

PYTHONPATH = os.pathsep.join(str(REPO / d) for d in ("server", "clients/python"))

# -- plain parts -------------------------------------------------------------------------------------------------


def test_restart_delay_doubles_then_a_crash_loop_gives_up() -> None:
    loop = CrashLoop(RestartPolicy(max_crashes=3, window_s=60, first_delay_s=0.5, max_delay_s=1.5))
    assert [loop.record(t) for t in (0.0, 1.0, 2.0)] == [0.5, 1.0, 1.5]
    assert loop.record(3.0) is None  # the fourth crash within a minute


def test_crashes_older_than_the_window_are_forgotten() -> None:
    loop = CrashLoop(RestartPolicy(max_crashes=2, window_s=10, first_delay_s=1, max_delay_s=8))
    assert loop.record(0.0) == 1 and loop.record(5.0) == 2
    assert loop.record(100.0) == 1  # a worker that ran for a while starts over
    assert loop.recent == 1


def test_restart_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="restart policy"):
        RestartPolicy(first_delay_s=10, max_delay_s=1)


def test_port_zero_is_reserved_and_workers_can_share_it() -> None:
    reservation = reserve_port("127.0.0.1", 0)
    port = reservation.getsockname()[1]
    try:
        assert port > 0
        with socket.socket() as stranger:  # anything else (without SO_REUSEPORT) is kept out
            with pytest.raises(OSError):
                stranger.bind(("127.0.0.1", port))
        workers = [socket.socket() for _ in range(2)]
        for worker in workers:  # what gRPC does with grpc.so_reuseport
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen()
        for worker in workers:
            worker.close()
    finally:
        reservation.close()


def test_a_taken_port_is_refused_with_the_address() -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # gRPC's default: no silent sharing either
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            reserve_port("127.0.0.1", port)


def test_metrics_dir_is_emptied(tmp_path: Path) -> None:
    old = tmp_path / "m" / "counter_123.db"
    old.parent.mkdir()
    old.write_bytes(b"old run")
    assert list(fresh_metrics_dir(tmp_path / "m").iterdir()) == []


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        pytest.param("max 100000\n", None, id="no-quota"),
        pytest.param("150000 100000\n", 2, id="1.5-cpus-round-up"),
        pytest.param("100000 100000\n", 1, id="one-cpu"),
    ],
)
def test_available_cpus_honours_a_cgroup_quota(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (affinity if expected is None else min(affinity, expected))


def test_available_cpus_reads_cgroup_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1
    assert available_cpus(tmp_path / "nothing-here") == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpus", "coordinated", "milvus_server", "expected"),
    [
        pytest.param(16, True, True, 4, id="capped-at-4"),
        pytest.param(2, True, True, 2, id="one-per-core"),
        pytest.param(16, False, True, 1, id="no-etcd-one-process"),
        pytest.param(16, True, False, 1, id="milvus-lite-one-process"),
    ],
)
def test_default_workers(cpus: int, coordinated: bool, milvus_server: bool, expected: int) -> None:
    assert default_workers(cpus=cpus, coordinated=coordinated, milvus_server=milvus_server) == expected


def test_workers_from_the_environment() -> None:
    etcd = {"DEDUP_ETCD_ENDPOINTS": "127.0.0.1:2379"}
    assert ServerConfig.from_env({}).workers == 1  # no etcd: today's single process
    assert ServerConfig.from_env(etcd).workers == min(available_cpus(), 4)
    assert ServerConfig.from_env({**etcd, "DEDUP_WORKERS": "auto"}).workers == min(available_cpus(), 4)
    three = ServerConfig.from_env({**etcd, "DEDUP_WORKERS": "3"})
    assert three.workers == 3
    assert three.decode_threads == max(2, (os.cpu_count() or 2) // 3)  # the cores shared out
    assert ServerConfig.from_env({"DEDUP_WORKERS": "1"}).decode_threads == ServerConfig().decode_threads


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"DEDUP_WORKERS": "2"}, "needs DEDUP_ETCD_ENDPOINTS", id="workers-without-etcd"),
        pytest.param({"DEDUP_WORKERS": "2", "DEDUP_ETCD_ENDPOINTS": "127.0.0.1:1", "DEDUP_MILVUS_URI": "/tmp/x.db"},
                     "Milvus Lite", id="workers-on-milvus-lite"),
        pytest.param({"DEDUP_WORKERS": "0"}, "DEDUP_WORKERS must be", id="zero"),
        pytest.param({"DEDUP_WORKERS": "many"}, "not a valid int", id="not-a-number"),
    ],
)
def test_bad_workers_setting_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig.from_env(env)


# -- the supervisor with stand-in workers ------------------------------------------------------------------------

FAKE_WORKER = textwrap.dedent(
    """
    import argparse, os, signal, sys, time
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=int); parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--parent", type=int)
    args = parser.parse_args()
    mode = os.environ.get("FAKE_WORKER", "serve")
    if mode == "crash":
        sys.exit(3)
    if mode == "config":
        sys.exit(2)
    from prometheus_client import Counter  # multiprocess mode: PROMETHEUS_MULTIPROC_DIR comes from the supervisor
    Counter("fake_requests", "requests", ["worker"]).labels("any").inc(10)
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    os.write(args.ready_fd, b"serving\\n")
    print(f"fake worker {args.index} pid {os.getpid()} port {os.environ['DEDUP_PORT']} "
          f"threads {os.environ['DEDUP_DECODE_THREADS']} workers {os.environ['DEDUP_WORKERS']}", flush=True)
    while not stopped and os.getppid() == args.parent:
        time.sleep(0.05)
    if mode == "slow-stop":
        time.sleep(60)
    """
)

DRIVER = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from dedup_server.config import CoordinationConfig, ServerConfig
    from dedup_server.workers import RestartPolicy, Supervisor
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    config = ServerConfig(port=0, workers=2, data_dir=Path(sys.argv[1]), milvus_uri="http://127.0.0.1:1",
                          coordination=CoordinationConfig(endpoints=("127.0.0.1:1",)), metrics_port=0,
                          shutdown_grace_s=float(sys.argv[3]))
    policy = RestartPolicy(max_crashes=2, window_s=30, first_delay_s=0.1, max_delay_s=0.2)
    sys.exit(Supervisor(config, command=[sys.executable, sys.argv[2]], policy=policy).run())
    """
)


class Driven:
    def __init__(self, tmp_path: Path, mode: str, grace_s: float = 2.0) -> None:
        (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
        (tmp_path / "driver.py").write_text(DRIVER)
        self.log = tmp_path / "supervisor.log"
        env = {**os.environ, "PYTHONPATH": PYTHONPATH, "FAKE_WORKER": mode}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "data"), str(tmp_path / "fake_worker.py"),
                 str(grace_s)], stdout=out, stderr=subprocess.STDOUT, env=env,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float = 20, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.text())
            if len(found) >= count:
                return found
            time.sleep(0.05)
        self.proc.kill()
        pytest.fail(f"{pattern!r} x{count} not in the supervisor's log:\n{self.text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # its stand-in workers notice their parent is gone and exit
            self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_workers_serve_a_killed_one_is_restarted_and_sigterm_drains_all(tmp_path: Path) -> None:
    driven = Driven(tmp_path, "serve")
    try:
        driven.wait_for(r"all 2 workers SERVING on 127\.0\.0\.1:\d+")
        lines = driven.wait_for(r"fake worker (\d) pid (\d+) port (\d+) threads (\d+) workers (\d+)", count=2)
        pids = {int(index): int(pid) for index, pid, *_ in lines}
        assert len({port for *_, port, _, _ in lines}) == 1 and "0" not in {port for *_, port, _, _ in lines}
        assert {workers for *_, workers in lines} == {"1"}
        (metrics_port,) = driven.wait_for(r"metrics of every worker on http://127\.0\.0\.1:(\d+)/metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            assert 'fake_requests_total{worker="any"} 20.0' in reply.read().decode()  # both workers' 10

        os.kill(pids[1], signal.SIGKILL)
        driven.wait_for(rf"worker 1 \(pid {pids[1]}\) was killed by SIGKILL; restarting it in 0\.1 s")
        driven.wait_for(r"worker 1 \(pid \d+\) is SERVING again")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            assert 'fake_requests_total{worker="any"} 30.0' in reply.read().decode()  # counters survive restarts

        driven.proc.send_signal(signal.SIGTERM)
        assert driven.proc.wait(20) == 0, driven.text()
        assert "received SIGTERM; draining 2 workers" in driven.text()
        assert not any(_alive(pid) for pid in pids.values())
    finally:
        driven.close()


def test_a_crash_loop_gives_up_with_exit_1(tmp_path: Path) -> None:
    driven = Driven(tmp_path, "crash")
    try:
        assert driven.proc.wait(30) == 1, driven.text()
        text = driven.text()
        assert "exited with code 3; restarting it in 0.1 s (1 crash in the last 30 s)" in text
        assert "3 crashes in 30 s, a crash loop; giving up" in text
    finally:
        driven.close()


def test_a_worker_configuration_error_stops_at_once_with_exit_2(tmp_path: Path) -> None:
    driven = Driven(tmp_path, "config")
    try:
        assert driven.proc.wait(30) == 2, driven.text()
        assert "restarting" not in driven.text()
    finally:
        driven.close()


def test_a_worker_that_does_not_drain_is_killed_after_the_grace(tmp_path: Path) -> None:
    driven = Driven(tmp_path, "slow-stop", grace_s=0.5)
    try:
        driven.wait_for(r"all 2 workers SERVING")
        started = time.monotonic()
        driven.proc.send_signal(signal.SIGTERM)
        assert driven.proc.wait(30) == 0, driven.text()
        assert time.monotonic() - started < 15
        assert "did not stop within 6 s; killing it" in driven.text()
    finally:
        driven.close()

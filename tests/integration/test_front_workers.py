"""A front of DEDUP_WORKERS=2 (a supervisor and two worker processes on one port) beside a plain front, on the
session's Triton and Milvus and an etcd of this module's own.

Client threads race `insert_if_unique` for photos x near-identical copies over both fronts (each call on a
connection of its own, so the kernel spreads them over the workers): one copy of each photo is stored. Health
answers SERVING on every connection; the supervisor's /metrics counts what both workers answered; a SIGKILLed
worker is restarted; SIGTERM to the supervisor drains every worker and it exits 0.
"""

from __future__ import annotations

import os
import queue
import random
import re
import shutil
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from dedup_client import DedupClient
from dedup_stack.etcd import EtcdConfig, EtcdProcess
from dedup_stack.front import FrontConfig, FrontProcess, front_env
from dedup_stack.milvus import MilvusProcess
from dedup_stack.ports import pick_free_ports
from dedup_stack.triton import TritonProcess
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO
from tests.integration.test_multi_front import THRESHOLD, Answers, near_copies, photo, photo_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PHOTOS = 40
COPIES = 4
THREADS = 16
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 << 20)]


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {f"p{p:03d}-c{c}": data for p in range(PHOTOS) for c, data in enumerate(near_copies(photo(5000 + p)))}


class WorkerFronts:
    """fronts[0]: `python -m dedup_server` with DEDUP_WORKERS=2; fronts[1]: one with DEDUP_WORKERS=1."""

    def __init__(self, root: Path, triton: TritonProcess, milvus: MilvusProcess, etcd: EtcdProcess) -> None:
        ports = pick_free_ports(3)
        self.metrics_port = ports[2]
        self.root = root
        self.processes = []
        for number, workers in enumerate((2, 1)):
            variables = {
                "DEDUP_HOST": "127.0.0.1", "DEDUP_PORT": str(ports[number]),
                "DEDUP_DATA_DIR": str(root / f"front{number}"), "DEDUP_TRITON_URL": triton.url,
                "DEDUP_MILVUS_URI": milvus.uri, "DEDUP_ETCD_ENDPOINTS": etcd.endpoint, "DEDUP_WORKERS": str(workers),
                "DEDUP_METRICS_PORT": str(self.metrics_port) if number == 0 else "off",
                "DEDUP_SHUTDOWN_GRACE_S": "2",
            }
            self.processes.append(FrontProcess(FrontConfig(
                command=(sys.executable, "-m", "dedup_server"),
                env=front_env(os.environ, variables, [str(REPO / "server"), str(REPO / "clients" / "python")]),
                host="127.0.0.1", port=ports[number], log_path=root / "logs" / f"front{number}.log",
                startup_timeout_s=180, stop_grace_s=10,
            )))

    @property
    def supervisor(self) -> FrontProcess:
        return self.processes[0]

    def target(self, number: int) -> str:
        return f"127.0.0.1:{self.processes[number].config.port}"

    def log(self) -> str:
        return (self.root / "logs" / "front0.log").read_text(errors="replace")

    def wait_logged(self, pattern: str, timeout_s: float = 120, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            time.sleep(0.1)
        pytest.fail(f"{pattern!r} not logged by the supervisor:\n{self.log()[-4000:]}")

    def supervisor_pid(self) -> int:
        child = self.supervisor.child
        assert child is not None and child.pid is not None
        return child.pid

    def worker_pids(self) -> list[int]:
        """Live children of the supervisor that are workers."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[1]) == self.supervisor_pid() and fields[0] != "Z" and b"dedup_server.workers" in cmdline:
                pids.append(int(entry.name))
        return sorted(pids)

    def metrics(self) -> dict[tuple[str, str], float]:
        """grpc_server_handled_total of the supervisor's /metrics, by (method, code)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            return _handled(reply.read().decode())


def _handled(text: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "grpc_server_handled_total":
                key = (sample.labels["grpc_method"], sample.labels["grpc_code"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def handled_by_pid(metrics_dir: Path, scratch: Path) -> dict[int, dict[tuple[str, str], float]]:
    """Each worker's own counters: its counter_<pid>.db alone, summed by prometheus_client as /metrics does."""
    result = {}
    for path in metrics_dir.glob("counter_*.db"):
        alone = scratch / path.stem
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        result[int(path.stem.split("_")[1])] = _handled(generate_latest(registry).decode())
    return result


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    process = EtcdProcess(EtcdConfig.on_free_ports(tmp_path_factory.mktemp("workers") / "etcd"))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def fronts(
    tmp_path_factory: pytest.TempPathFactory, triton: TritonProcess, milvus: MilvusProcess, coordinator: EtcdProcess
) -> Iterator[WorkerFronts]:
    group = WorkerFronts(tmp_path_factory.mktemp("worker-fronts"), triton, milvus, coordinator)
    try:
        for process in group.processes:
            process.start()
        group.wait_logged(r"all 2 workers SERVING on 127\.0\.0\.1:\d+")
        yield group
    finally:
        for process in group.processes:
            process.stop()


def _health_on_new_connections(target: str, count: int) -> list[str]:
    statuses = []
    for _ in range(count):
        # A channel of its own each time (no shared subchannel): a new TCP connection, a new pick of worker.
        with grpc.insecure_channel(target, options=OWN_CONNECTION) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "dedup.v1.Deduplication"):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return statuses


def test_every_worker_answers_health(fronts: WorkerFronts) -> None:
    assert len(fronts.worker_pids()) == 2
    assert set(_health_on_new_connections(fronts.target(0), 8)) == {"SERVING"}


def test_insert_if_unique_over_two_workers_and_a_front_stores_each_photo_once(
    fronts: WorkerFronts, photos: dict[str, bytes], collection: str, tmp_path: Path
) -> None:
    before = fronts.metrics().get(("CheckDuplicate", "OK"), 0.0)
    work: queue.Queue[str] = queue.Queue()
    ids = list(photos)
    random.Random(7).shuffle(ids)
    for image_id in ids:
        work.put(image_id)
    answers = Answers()
    answered_by = [0, 0]

    def client_thread(number: int) -> None:
        while True:
            try:
                image_id = work.get_nowait()
            except queue.Empty:
                return
            front = number % 2
            # A connection per call (gRPC shares one between channels to a target unless told not to): each is
            # a new pick of worker by the kernel, as calls from many clients are.
            with grpc.insecure_channel(fronts.target(front), options=OWN_CONNECTION) as channel:
                result = dedup_pb2_grpc.DeduplicationStub(channel).CheckDuplicate(dedup_pb2.CheckDuplicateRequest(
                    image=photos[image_id], collection=collection, id=image_id, insert_if_unique=True,
                    threshold=THRESHOLD, cosine_only=True, top_k=COPIES,
                ), timeout=60)
            with answers.lock:
                answered_by[front] += 1
                if result.inserted:
                    answers.inserted.add(image_id)
                else:
                    answers.duplicates[image_id] = {m.id for m in result.matches}

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(answers.inserted) + len(answers.duplicates) == PHOTOS * COPIES
    assert answered_by[0] > 0 and answered_by[1] > 0

    time.sleep(1.0)  # the delete's lookup reads Session consistency: let the other fronts' last writes arrive
    with DedupClient(fronts.target(1), timeout=60) as client:
        (stats,) = client.stats(collection=collection).collections
        deleted = client.delete(list(photos), collection=collection)
    stored = set(photos) - set(deleted.not_found)
    assert len(stored) == deleted.deleted_count == stats.image_count == PHOTOS, sorted(stored)
    assert {photo_of(i) for i in stored} == {photo_of(i) for i in photos}  # one per photo
    assert answers.inserted == stored  # every `inserted` is stored, nothing else is
    for image_id, named in answers.duplicates.items():
        assert named and named <= stored and {photo_of(i) for i in named} == {photo_of(image_id)}, image_id

    # /metrics of the supervisor: every check the worker front answered, summed over both workers.
    assert fronts.metrics()[("CheckDuplicate", "OK")] - before == answered_by[0]
    per_worker = handled_by_pid(fronts.root / "front0" / "prometheus-multiproc", tmp_path)
    checks = {pid: counts.get(("CheckDuplicate", "OK"), 0.0) for pid, counts in per_worker.items()}
    assert set(fronts.worker_pids()) <= set(checks)
    assert all(checks[pid] > 0 for pid in fronts.worker_pids()), checks  # both workers answered some


def test_a_killed_worker_is_restarted(fronts: WorkerFronts) -> None:
    victim, survivor = fronts.worker_pids()
    os.kill(victim, signal.SIGKILL)
    fronts.wait_logged(rf"worker \d \(pid {victim}\) was killed by SIGKILL; restarting it in 0\.5 s", timeout_s=30)
    fronts.wait_logged(r"worker \d \(pid \d+\) is SERVING again", timeout_s=120)
    pids = fronts.worker_pids()
    assert len(pids) == 2 and survivor in pids and victim not in pids
    assert set(_health_on_new_connections(fronts.target(0), 8)) == {"SERVING"}


def test_sigterm_drains_every_worker_and_the_supervisor_exits_0(fronts: WorkerFronts) -> None:
    child = fronts.supervisor.child
    assert child is not None
    workers = fronts.worker_pids()
    os.kill(fronts.supervisor_pid(), signal.SIGTERM)  # the supervisor only: it passes it on
    assert child.wait(30) == 0, fronts.log()[-4000:]
    log = fronts.log()
    assert "received SIGTERM; draining 2 workers" in log
    for pid in workers:
        assert f"(pid {pid}) exited with code 0" in log
    assert log.count("] dedup_server.app: stopped") >= 2  # each worker: NOT_SERVING, grace, close, stopped
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)

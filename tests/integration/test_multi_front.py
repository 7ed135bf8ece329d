"""Three fronts on one Milvus and one etcd race to store copies of the same photos: each photo is stored once.

Each front is a real `python -m dedup_server` process (so it can be SIGKILLed and SIGSTOPped), on the session's
Milvus standalone and Triton, and on an etcd of this module's own (the last test kills it). 32 client threads
send 100 photos x 4 near-identical copies (different ids) in random order, spread over the fronts.

"Consistent with what is stored": every copy answered `inserted` is stored; every copy answered as a duplicate
names only stored copies of its own photo; exactly one copy of each photo is stored. What is stored is read at the
end with DeleteImages (its `not_found` lists what was not there) and checked against GetStats' Strong count.
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import random
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from dedup_client import DedupClient, IndexItem, IndexStatus
from dedup_client.errors import DedupError
from dedup_stack.etcd import EtcdConfig, EtcdProcess
from dedup_stack.front import FrontConfig, FrontProcess, front_env
from dedup_stack.milvus import MilvusProcess
from dedup_stack.ports import pick_free_ports
from dedup_stack.triton import TritonProcess
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from tests.conftest import REPO, encode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRONTS = 3
PHOTOS = 100
COPIES = 4
THREADS = 32
LEASE_TTL_S = 2
# With the served model (EfficientNet-Lite0, measured through ONNX Runtime on these generated photos), copies score
# 0.98-1.0 against each other and different photos at most 0.88: a threshold halfway makes every answer plain.
THRESHOLD = 0.935
RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL", "RESOURCE_EXHAUSTED"}


# -- photos ------------------------------------------------------------------------------------------------------


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A photo-like picture of its own: a smooth colour field, overlapping shapes, blur and sensor noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.fromarray((rng.random((4, 3, 3)) * 255).astype(np.uint8), "RGB").resize(size, Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            corners = int(rng.integers(3, 6))
            draw.polygon([(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(corners)],
                         fill=colour)
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    return Image.fromarray(np.clip(blurred + rng.normal(0, 8, blurred.shape), 0, 255).astype(np.uint8))


def near_copies(image: Image.Image) -> list[bytes]:
    """What several users upload of one photo: re-encoded at other qualities, slightly brighter, as PNG."""
    return [
        encode(image, quality=95),
        encode(image, quality=88),
        encode(ImageEnhance.Brightness(image).enhance(1.02), quality=92),
        encode(image, "PNG"),
    ]


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """id -> JPEG bytes; the id `p042-c3` is copy 3 of photo 42."""
    return {
        f"p{p:03d}-c{c}": data for p in range(PHOTOS) for c, data in enumerate(near_copies(photo(1000 + p)))
    }


def photo_of(image_id: str) -> str:
    return image_id.split("-")[0]


# -- fronts ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """This module's own etcd: the last test kills it."""
    process = EtcdProcess(EtcdConfig.on_free_ports(tmp_path_factory.mktemp("multi-front") / "etcd"))
    process.start()
    yield process
    process.stop()


class Fronts:
    """`python -m dedup_server` processes sharing one Triton, one Milvus and one etcd."""

    def __init__(self, root: Path, triton: TritonProcess, milvus: MilvusProcess, etcd: EtcdProcess) -> None:
        self.processes: list[FrontProcess] = []
        for number, port in enumerate(pick_free_ports(FRONTS)):
            variables = {
                "DEDUP_HOST": "127.0.0.1", "DEDUP_PORT": str(port), "DEDUP_DATA_DIR": str(root / f"front{number}"),
                "DEDUP_TRITON_URL": triton.url, "DEDUP_MILVUS_URI": milvus.uri,
                "DEDUP_ETCD_ENDPOINTS": etcd.endpoint, "DEDUP_ETCD_LEASE_TTL_S": str(LEASE_TTL_S),
                "DEDUP_ETCD_MARGIN_S": "0.5", "DEDUP_METRICS_PORT": "off", "DEDUP_SHUTDOWN_GRACE_S": "2",
                # One process per front: the faults below map the lock holder's pid to its front
                # (test_front_workers.py races fronts of several workers).
                "DEDUP_WORKERS": "1",
            }
            self.processes.append(FrontProcess(FrontConfig(
                command=(sys.executable, "-m", "dedup_server"),
                env=front_env(os.environ, variables, [str(REPO / "server"), str(REPO / "clients" / "python")]),
                host="127.0.0.1", port=port, log_path=root / "logs" / f"front{number}.log", startup_timeout_s=180,
                stop_grace_s=5,
            )))
        self.alive = frozenset(range(FRONTS))  # replaced, never changed in place: client threads read it

    def start(self) -> None:
        errors: list[BaseException] = []

        def start(process: FrontProcess) -> None:
            try:
                process.start()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(p,)) for p in self.processes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.stop()
            raise errors[0]

    def target(self, number: int) -> str:
        return f"127.0.0.1:{self.processes[number].config.port}"

    def pid(self, number: int) -> int:
        child = self.processes[number].child
        assert child is not None and child.pid is not None
        return child.pid

    def number_of(self, pid: int) -> int:
        return next(n for n in range(FRONTS) if self.pid(n) == pid)

    def kill(self, number: int) -> None:
        os.killpg(self.pid(number), signal.SIGKILL)
        self.alive = self.alive - {number}

    def stop(self) -> None:
        for number, process in enumerate(self.processes):
            if process.child is not None and process.child.poll() is None:
                os.killpg(self.pid(number), signal.SIGCONT)
            process.stop()


@pytest.fixture(scope="module")
def fronts(
    tmp_path_factory: pytest.TempPathFactory, triton: TritonProcess, milvus: MilvusProcess, coordinator: EtcdProcess
) -> Iterator[Fronts]:
    group = Fronts(tmp_path_factory.mktemp("fronts"), triton, milvus, coordinator)
    group.start()
    yield group
    group.stop()


# -- the race ----------------------------------------------------------------------------------------------------


@dataclass
class Answers:
    inserted: set[str] = field(default_factory=set)
    duplicates: dict[str, set[str]] = field(default_factory=dict)  # id -> the ids its answer named
    failed: dict[str, str] = field(default_factory=dict)  # id -> the last error, when no front answered
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def race_checks(fronts: Fronts, photos: dict[str, bytes], collection: str, *, seed: int, timeout: float = 20.0,
                during: threading.Event | None = None) -> Answers:
    """32 threads send every copy with insert_if_unique, each to "its" front; a call that fails is sent to the
    next live front (what a load balancer does), until one answers or every front failed."""
    work: queue.Queue[str] = queue.Queue()
    ids = list(photos)
    random.Random(seed).shuffle(ids)
    for image_id in ids:
        work.put(image_id)
    answers = Answers()
    clients = [[DedupClient(fronts.target(n), timeout=timeout) for n in range(FRONTS)] for _ in range(THREADS)]

    def worker(number: int) -> None:
        while True:
            try:
                image_id = work.get_nowait()
            except queue.Empty:
                return
            if during is not None and work.qsize() < len(ids) * 3 // 4:
                during.set()  # a quarter is sent: the faults may start
            last = ""
            for attempt in range(2 * FRONTS):
                alive = sorted(fronts.alive)
                front = alive[(number + attempt) % len(alive)]
                try:
                    result = clients[number][front].check(
                        photos[image_id], collection=collection, id=image_id, insert_if_unique=True,
                        threshold=THRESHOLD, cosine_only=True, top_k=COPIES,
                    )
                except DedupError as exc:
                    if exc.code not in RETRYABLE:
                        raise
                    last = f"{exc.code}: {exc}"
                    with answers.lock:
                        answers.retries += 1
                    continue
                with answers.lock:
                    if result.inserted:
                        answers.inserted.add(image_id)
                    else:
                        answers.duplicates[image_id] = {m.id for m in result.matches}
                break
            else:
                with answers.lock:
                    answers.failed[image_id] = last

    threads = [threading.Thread(target=worker, args=(n,), name=f"client-{n}") for n in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
    finally:
        for row in clients:
            for client in row:
                client.close()
    return answers


def stored_ids(fronts: Fronts, photos: dict[str, bytes], collection: str) -> set[str]:
    """What is stored, exactly: GetStats' count (Strong), and DeleteImages' not_found (which deletes the rest)."""
    time.sleep(1.0)  # the delete's lookup reads Session consistency: let the other fronts' last writes arrive
    with DedupClient(fronts.target(min(fronts.alive)), timeout=30) as client:
        (stats,) = client.stats(collection=collection).collections
        deleted = client.delete(list(photos), collection=collection)
    stored = set(photos) - set(deleted.not_found)
    assert len(stored) == deleted.deleted_count == stats.image_count
    return stored


def assert_consistent(answers: Answers, stored: set[str], photos: dict[str, bytes]) -> None:
    by_photo: dict[str, list[str]] = {}
    for image_id in stored:
        by_photo.setdefault(photo_of(image_id), []).append(image_id)
    doubled = {p: ids for p, ids in by_photo.items() if len(ids) > 1}
    assert not doubled, f"stored twice: {doubled}"
    assert len(by_photo) == PHOTOS, f"photos never stored: {sorted({photo_of(i) for i in photos} - set(by_photo))}"
    lost = answers.inserted - stored
    assert not lost, f"acknowledged as inserted but not stored: {sorted(lost)}"
    for image_id, named in answers.duplicates.items():
        assert named, f"{image_id}: a duplicate answer without a match"
        assert named <= stored, f"{image_id}: its answer names {sorted(named - stored)}, which are not stored"
        assert {photo_of(i) for i in named} == {photo_of(image_id)}, f"{image_id} matched {sorted(named)}"


def test_insert_if_unique_from_three_fronts_stores_each_photo_once(
    fronts: Fronts, photos: dict[str, bytes], collection: str
) -> None:
    started = time.monotonic()
    answers = race_checks(fronts, photos, collection, seed=1)
    elapsed = time.monotonic() - started
    assert answers.failed == {} and answers.retries == 0
    assert len(answers.inserted) == PHOTOS, f"{len(answers.inserted)} answered inserted for {PHOTOS} photos"
    assert len(answers.inserted) + len(answers.duplicates) == PHOTOS * COPIES
    assert_consistent(answers, stored_ids(fronts, photos, collection), photos)
    print(f"\n{PHOTOS * COPIES} checks from {THREADS} threads over {FRONTS} fronts: {elapsed:.1f} s")


def test_skip_duplicate_streams_from_three_fronts_store_each_photo_once(
    fronts: Fronts, photos: dict[str, bytes], collection: str
) -> None:
    ids = list(photos)
    random.Random(2).shuffle(ids)
    shares = [ids[n::THREADS] for n in range(THREADS)]
    answers = Answers()

    def stream(number: int) -> None:
        items = [IndexItem(id=i, image=photos[i], collection=collection, skip_duplicates=True, threshold=THRESHOLD)
                 for i in shares[number]]
        with DedupClient(fronts.target(number % FRONTS), timeout=60) as client:
            for result in client.index(items, timeout=120):
                with answers.lock:
                    if result.status is IndexStatus.INDEXED:
                        answers.inserted.add(result.id)
                    elif result.status is IndexStatus.DUPLICATE:
                        answers.duplicates[result.id] = {m.id for m in result.matches}
                    else:
                        answers.failed[result.id] = f"{result.status.name}: {result.error}"

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert answers.failed == {}
    assert len(answers.inserted) == PHOTOS
    assert len(answers.inserted) + len(answers.duplicates) == PHOTOS * COPIES
    assert_consistent(answers, stored_ids(fronts, photos, collection), photos)


def test_a_killed_and_a_paused_front_lose_nothing_and_store_nothing_twice(
    fronts: Fronts, photos: dict[str, bytes], collection: str, coordinator: EtcdProcess
) -> None:
    """Mid-race, the front holding the collection's write lock is paused (SIGSTOP) for twice its lease, and
    another front is killed (SIGKILL). Calls to them fail over to the third."""
    faults_may_start = threading.Event()
    events: list[str] = []

    def faults() -> None:
        faults_may_start.wait(60)
        holder = _lock_holder_pid(coordinator, f"dedup_{collection}", deadline_s=10)
        paused = fronts.number_of(holder) if holder is not None else 0
        os.killpg(fronts.pid(paused), signal.SIGSTOP)
        killed = (paused + 1) % FRONTS
        fronts.kill(killed)
        fronts.alive = fronts.alive - {paused}  # clients stop choosing it; calls already sent to it wait
        events.append(f"paused front {paused} (lock holder: {holder is not None}), killed front {killed}")
        time.sleep(2 * LEASE_TTL_S)
        os.killpg(fronts.pid(paused), signal.SIGCONT)
        fronts.alive = fronts.alive | {paused}
        events.append("resumed")

    chaos = threading.Thread(target=faults)
    chaos.start()
    answers = race_checks(fronts, photos, collection, seed=3, timeout=10, during=faults_may_start)
    chaos.join(60)
    assert len(events) == 2, events
    assert answers.failed == {}, answers.failed
    assert answers.retries > 0  # the faults did hit calls in flight
    assert_consistent(answers, stored_ids(fronts, photos, collection), photos)
    print(f"\n{events}; {answers.retries} calls failed over")


def test_etcd_down_writes_are_unavailable_and_checks_answer(
    fronts: Fronts, photos: dict[str, bytes], collection: str, coordinator: EtcdProcess
) -> None:
    target = fronts.target(min(fronts.alive))
    first, second = list(photos)[:2]
    with DedupClient(target, timeout=10) as client:
        assert client.check(photos[first], collection=collection, id=first, insert_if_unique=True,
                            threshold=THRESHOLD).inserted
        coordinator.stop()
        started = time.monotonic()
        with pytest.raises(DedupError) as refused:
            client.check(photos[second], collection=collection, id=second, insert_if_unique=True, timeout=4)
        assert refused.value.code == "UNAVAILABLE", refused.value
        assert time.monotonic() - started < 4.0  # our answer, before the caller's own deadline
        plain = client.check(photos[second], collection=collection, threshold=THRESHOLD, timeout=4)
        assert [m.id for m in plain.matches] == [first]  # reads need no etcd


def _lock_holder_pid(etcd: EtcdProcess, milvus_name: str, *, deadline_s: float) -> int | None:
    """The pid of the front owning the collection's write lock (etcd's JSON gateway; its id is host-pid)."""
    prefix = f"/dedup/write-locks/{milvus_name}/".encode()
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    body = json.dumps({"key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(end).decode(),
                       "sort_target": "CREATE", "sort_order": "ASCEND", "limit": 1}).encode()
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        request = urllib.request.Request(f"http://{etcd.endpoint}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=2) as reply:
            kvs = json.load(io.TextIOWrapper(reply)).get("kvs", [])
        if kvs:
            return int(base64.b64decode(kvs[0]["value"]).decode().rsplit("-", 1)[1])
        time.sleep(0.05)
    return None

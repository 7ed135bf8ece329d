"""Session fixtures: real Milvus standalone + real Triton (started here), the gRPC front in-process.

The front runs on its own event loop in a thread, on port 0, so tests talk to it through the real
gRPC API with the synchronous client and CLI.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dedup_client import DedupClient
from dedup_server.app import running_server
from dedup_server.config import ServerConfig
from dedup_server.telemetry import configure_tracing
from dedup_stack.etcd import EtcdConfig, EtcdProcess
from dedup_stack.milvus import MilvusConfig, MilvusPorts, MilvusProcess
from dedup_stack.ports import pick_free_ports
from dedup_stack.triton import TritonConfig, TritonProcess
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def milvus(stack_dir: Path) -> Iterator[MilvusProcess]:
    # Binaries are unpacked once per checkout (246 MB) and shared by every test session.
    process = MilvusProcess(
        MilvusConfig(base_dir=stack_dir / "milvus", ports=MilvusPorts.pick_free(),
                     install_dir=REPO / ".dedup-data" / "milvus-install")
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def etcd(stack_dir: Path) -> Iterator[EtcdProcess]:
    """Debian's etcd-server (`apt-get install etcd-server`): the coordinator of the fronts' writes."""
    process = EtcdProcess(EtcdConfig.on_free_ports(stack_dir / "etcd"))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def triton(stack_dir: Path) -> Iterator[TritonProcess]:
    model_repository = REPO / "triton_models"
    if not (model_repository / "embedder" / "1" / "model.onnx").is_file():
        pytest.fail("model repository not built: run `make model`")
    grpc_port, http_port, metrics_port = pick_free_ports(3)
    process = TritonProcess(
        TritonConfig(model_repository=model_repository, work_dir=stack_dir / "triton",
                     grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)
    )
    process.start()
    yield process
    process.stop()


class FrontThread:
    """The gRPC front on its own loop in a thread, started and stopped by the fixtures."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self.metrics_port: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="front", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(120) or self._error is not None:
            raise RuntimeError(f"front did not start: {self._error!r}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running_server(self.config) as running:
            if not await running.monitor.wait_ready(120):
                raise RuntimeError("backends never became ready")
            self.port = running.port
            self.metrics_port = running.metrics_port
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    """Every finished span of the session. Tracing is set up once per process, as `python -m dedup_server`
    does (OTEL_* exporters included), before any front exists: the Triton channel is instrumented when created."""
    exporter = InMemorySpanExporter()
    configure_tracing(span_processors=[SimpleSpanProcessor(exporter)])
    return exporter


@pytest.fixture(scope="session")
def front_config(
    milvus: MilvusProcess, triton: TritonProcess, stack_dir: Path, spans: InMemorySpanExporter
) -> ServerConfig:
    """The base of every front of the session (`spans`: tracing is set up before any of them is built)."""
    return ServerConfig(
        port=0,
        data_dir=stack_dir / "front",
        triton_url=triton.url,
        milvus_uri=milvus.uri,
        health_interval_s=0.5,
        shutdown_grace_s=5,
        metrics_port=0,
    )


@pytest.fixture(scope="session")
def front(front_config: ServerConfig) -> Iterator[FrontThread]:
    thread = FrontThread(front_config)
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def client(front: FrontThread) -> Iterator[DedupClient]:
    with DedupClient(f"127.0.0.1:{front.port}", timeout=60) as dedup:
        yield dedup


@pytest.fixture
def collection(request: pytest.FixtureRequest) -> str:
    """A fresh collection name per test, so tests do not see each other's images."""
    return "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:100] + f"_{os.getpid()}"

"""Health is SERVING only while Triton and Milvus answer, and the front recovers by itself."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import grpc
import pytest
from dedup_client import DedupClient, DedupError
from dedup_server.config import ServerConfig
from dedup_stack.ports import pick_free_ports
from dedup_stack.triton import TritonConfig, TritonProcess
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REPO
from tests.integration.conftest import FrontThread

pytestmark = pytest.mark.integration


def _wait_for_health(stub: health_pb2_grpc.HealthStub, want: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = stub.Check(health_pb2.HealthCheckRequest(service="dedup.v1.Deduplication"), timeout=5).status
        if status == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"health stayed {status}, wanted {want}")


def test_triton_down_means_not_serving_and_unavailable_then_recovery(
    front_config: ServerConfig, tmp_path: Path, eval_dir: Path
) -> None:
    grpc_port, http_port, metrics_port = pick_free_ports(3)
    triton_config = TritonConfig(
        model_repository=REPO / "triton_models", work_dir=tmp_path / "triton",
        grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
    )
    own_triton = TritonProcess(triton_config)
    own_triton.start()
    front = FrontThread(dataclasses.replace(front_config, triton_url=own_triton.url, milvus_uri=str(tmp_path / "m.db")))
    front.start()
    image = (eval_dir / "base_images/ukbench00120.jpg").read_bytes()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel, DedupClient(
            f"127.0.0.1:{front.port}", timeout=30
        ) as client:
            stub = health_pb2_grpc.HealthStub(channel)
            _wait_for_health(stub, health_pb2.HealthCheckResponse.SERVING)
            assert client.check(image, insert_if_unique=True, id="a").inserted

            own_triton.stop()
            _wait_for_health(stub, health_pb2.HealthCheckResponse.NOT_SERVING)
            with pytest.raises(DedupError) as caught:
                # The front retries an unreachable Triton until just before the caller's deadline.
                client.check(image, timeout=3)
            assert caught.value.code == "UNAVAILABLE" and "Triton" in caught.value.details

            own_triton = TritonProcess(triton_config)
            own_triton.start()
            _wait_for_health(stub, health_pb2.HealthCheckResponse.SERVING)
            assert client.check(image).matches[0].id == "a"
    finally:
        front.stop()
        own_triton.stop()

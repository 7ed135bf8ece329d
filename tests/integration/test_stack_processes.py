"""The stack supervisor against real processes: Milvus standalone, tritonserver with a throwaway Python model,
and `python -m dedup_stack` with a stand-in front. Each test checks that nothing it started is left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dedup_stack.errors import ProcessStartError
from dedup_stack.milvus import MilvusConfig, MilvusPorts, MilvusProcess
from dedup_stack.ports import pick_free_ports
from dedup_stack.process import group_has_live_members
from dedup_stack.triton import TritonConfig, TritonProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Same dir as the integration conftest and `make run` use: the 246 MB of Milvus binaries are unpacked once.
MILVUS_INSTALL_DIR = REPO / ".dedup-data" / "milvus-install"
PYTHONPATH = os.pathsep.join(str(REPO / d) for d in ("server", "clients/python"))


def processes_mentioning(path: Path) -> list[str]:
    """Live processes whose command line or cwd mentions `path` (what a test started there and left behind)."""
    needle = str(path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rfind(")") + 2] == "Z":
                continue  # killed, waiting for init to reap it
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if needle in cmdline or cwd.startswith(needle):
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    assert processes_mentioning(tmp_path) == []


# -- Milvus -----------------------------------------------------------------------------------------------------


def milvus_config(base_dir: Path, ports: MilvusPorts) -> MilvusConfig:
    return MilvusConfig(base_dir=base_dir, ports=ports, install_dir=MILVUS_INSTALL_DIR, stop_grace_s=2.0)


def test_milvus_keeps_data_across_restart(tmp_path: Path, no_leftovers: None) -> None:
    from pymilvus import MilvusClient

    config = milvus_config(tmp_path / "milvus", MilvusPorts.pick_free())
    vectors = np.random.default_rng(0).random((20, 8), dtype=np.float32)

    milvus = MilvusProcess(config)
    milvus.start()
    pgid = milvus.child.pid if milvus.child else None
    try:
        client = MilvusClient(uri=milvus.uri, dedicated=True)
        client.create_collection("images", dimension=8, consistency_level="Strong")
        client.insert("images", [{"id": i, "vector": v.tolist()} for i, v in enumerate(vectors)])
        client.close()
    finally:
        milvus.stop()
    assert pgid is not None and not group_has_live_members(pgid)

    with MilvusProcess(config) as restarted:
        client = MilvusClient(uri=restarted.uri, dedicated=True)
        try:
            assert client.list_collections() == ["images"]
            client.load_collection("images")
            rows = client.query("images", filter="id >= 0", output_fields=["id"])
            assert sorted(r["id"] for r in rows) == list(range(20))
            hits = client.search("images", data=[vectors[7].tolist()], limit=1)
            assert hits[0][0]["id"] == 7
        finally:
            client.close()


def test_milvus_refuses_to_start_on_a_taken_port(tmp_path: Path, no_leftovers: None) -> None:
    import socket

    from dedup_stack.errors import PortInUseError

    ports = MilvusPorts.pick_free()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.etcd_peer))
        busy.listen()
        with pytest.raises(PortInUseError, match=rf"port {ports.etcd_peer} \(Milvus etcd peer\)"):
            MilvusProcess(milvus_config(tmp_path / "milvus", ports)).start()


# -- Triton -----------------------------------------------------------------------------------------------------

MEAN_MODEL_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "IMAGE" data_type: TYPE_UINT8 dims: [ -1 ] }} ]
output [ {{ name: "MEAN" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

MEAN_MODEL_PY = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            mean = images.reshape(images.shape[0], -1).mean(axis=1, keepdims=True).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("MEAN", mean)]))
        return responses
"""


def make_mean_model(repository: Path, name: str = "mean", model_py: str = MEAN_MODEL_PY) -> Path:
    """A throwaway Python-backend model: the mean of each uint8 row, as FP32."""
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(MEAN_MODEL_CONFIG.format(name=name))
    (repository / name / "1" / "model.py").write_text(model_py)
    return repository


def triton_config(tmp_path: Path, repository: Path, model: str) -> TritonConfig:
    grpc_port, http_port, metrics_port = pick_free_ports(3)
    return TritonConfig(
        model_repository=repository, work_dir=tmp_path / "triton", models=(model,), grpc_port=grpc_port,
        http_port=http_port, metrics_port=metrics_port, startup_timeout_s=60, stop_grace_s=10,
    )


def test_triton_serves_python_model_and_stops(tmp_path: Path, no_leftovers: None) -> None:
    import tritonclient.grpc as grpcclient

    config = triton_config(tmp_path, make_mean_model(tmp_path / "repo"), "mean")
    with TritonProcess(config) as triton:
        assert triton.startup_seconds is not None
        pgid = triton.child.pid if triton.child else None
        client = grpcclient.InferenceServerClient(triton.url)
        try:
            images = np.array([[1, 2, 3, 6], [10, 20, 30, 40]], dtype=np.uint8)
            request = grpcclient.InferInput("IMAGE", list(images.shape), "UINT8")
            request.set_data_from_numpy(images)
            result = client.infer("mean", [request]).as_numpy("MEAN")
        finally:
            client.close()
    # Exact values: a stub running another numpy than the venv's returns garbage here instead of failing.
    np.testing.assert_array_equal(result, np.array([[3.0], [25.0]], dtype=np.float32))
    assert pgid is not None and not group_has_live_members(pgid)  # server and its stub
    assert config.resolved_log_path.is_file()


def test_triton_start_failure_shows_the_log_tail(tmp_path: Path, no_leftovers: None) -> None:
    broken = "raise RuntimeError('model is broken on purpose')\n" + MEAN_MODEL_PY
    config = triton_config(tmp_path, make_mean_model(tmp_path / "repo", model_py=broken), "mean")
    triton = TritonProcess(config)
    with pytest.raises(ProcessStartError, match=r"(?s)Triton exited with code \d+.*broken on purpose"):
        triton.start()


# -- python -m dedup_stack ----------------------------------------------------------------------------------

# Stand-in for dedup_server: grpc.health.v1 on DEDUP_PORT (SERVING after FAKE_FRONT_SERVING_AFTER seconds),
# records its environment, exits 0 on SIGTERM, and exits 3 by itself when the file FAKE_FRONT_DIE appears.
FAKE_FRONT = textwrap.dedent(
    """\
    import json, os, signal, sys, threading
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    serving = lambda: servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    threading.Timer(float(os.environ.get("FAKE_FRONT_SERVING_AFTER", "0")), serving).start()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ['DEDUP_HOST']}:{os.environ['DEDUP_PORT']}")
    server.start()
    with open(os.environ["FAKE_FRONT_RECORD"], "w") as fh:
        json.dump({k: v for k, v in os.environ.items() if k.startswith("DEDUP_")}, fh)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    die = os.environ.get("FAKE_FRONT_DIE", "")
    while not stop.wait(0.1):
        if die and os.path.exists(die):
            os._exit(3)
    server.stop(1).wait()
    """
)


def stack_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    front = tmp_path / "fake_front.py"
    front.write_text(FAKE_FRONT)
    port, etcd_port, etcd_peer_port = pick_free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEDUP_")}
    env.update(
        PYTHONPATH=PYTHONPATH,
        DEDUP_DATA_DIR=str(tmp_path / "data"),
        DEDUP_PORT=str(port),
        # The stack's own etcd (Debian's etcd-server), beside any `make run` on its fixed ports.
        DEDUP_ETCD_PORT=str(etcd_port),
        DEDUP_ETCD_PEER_PORT=str(etcd_peer_port),
        DEDUP_MILVUS_URI=str(tmp_path / "milvus.db"),  # external: no Milvus started
        DEDUP_TRITON_URL="127.0.0.1:1",  # external: no Triton started
        DEDUP_FRONT_COMMAND=f"{sys.executable} {front}",
        DEDUP_STOP_GRACE_S="5",
        FAKE_FRONT_RECORD=str(tmp_path / "front-env.json"),
    )
    env.update(overrides)
    return env


def start_stack(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dedup_stack"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )


def wait_for_line(proc: subprocess.Popen[bytes], log: Path, text: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.fail(f"{text!r} not logged by dedup_stack:\n{log.read_text(errors='replace')}")


def test_stack_serves_then_stops_on_sigterm(tmp_path: Path, no_leftovers: None) -> None:
    env = stack_env(tmp_path)
    log = tmp_path / "stack.log"
    proc = start_stack(env, log)
    content = wait_for_line(proc, log, "serving on", timeout_s=60)
    assert f"serving on 127.0.0.1:{env['DEDUP_PORT']}" in content
    assert "Triton 127.0.0.1:1 (external)" in content
    front_env = json.loads((tmp_path / "front-env.json").read_text())
    assert front_env["DEDUP_TRITON_URL"] == "127.0.0.1:1"
    assert front_env["DEDUP_MILVUS_URI"] == str(tmp_path / "milvus.db")
    assert front_env["DEDUP_TRITON_MODEL"] == "embedder"
    assert front_env["DEDUP_DATA_DIR"] == str(tmp_path / "data")
    # Milvus Lite serves one process: no second front can join, so no etcd is started for one.
    assert front_env["DEDUP_ETCD_ENDPOINTS"] == ""
    assert "join: not possible: Milvus Lite" in wait_for_line(proc, log, "join: ", timeout_s=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    assert "received SIGTERM; stopping" in log.read_text()


def test_stack_exits_nonzero_when_the_front_dies(tmp_path: Path, no_leftovers: None) -> None:
    die = tmp_path / "die"
    log = tmp_path / "stack.log"
    proc = start_stack(stack_env(tmp_path, FAKE_FRONT_DIE=str(die)), log)
    wait_for_line(proc, log, "serving on", timeout_s=60)
    die.touch()
    assert proc.wait(timeout=30) == 1
    assert "gRPC front stopped unexpectedly (exited with code 3)" in log.read_text()


def test_stack_stops_on_sigint_while_starting(tmp_path: Path, no_leftovers: None) -> None:
    log = tmp_path / "stack.log"
    proc = start_stack(stack_env(tmp_path, FAKE_FRONT_SERVING_AFTER="60"), log)
    deadline = time.monotonic() + 30
    while not (tmp_path / "front-env.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0, log.read_text()
    content = log.read_text()
    assert "received SIGINT while starting; stopping" in content
    assert "serving on" not in content


def test_stack_refuses_to_start_when_a_port_is_taken(tmp_path: Path, no_leftovers: None) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        log = tmp_path / "stack.log"
        proc = start_stack(stack_env(tmp_path, DEDUP_PORT=str(port)), log)
        assert proc.wait(timeout=30) == 2
    assert f"port {port} (gRPC front) on 127.0.0.1 is already in use" in log.read_text()
    assert not (tmp_path / "front-env.json").exists()


def test_stack_without_model_tells_to_run_make_model(tmp_path: Path, no_leftovers: None) -> None:
    log = tmp_path / "stack.log"
    env = stack_env(tmp_path, DEDUP_TRITON_URL="", DEDUP_MODEL_REPOSITORY=str(tmp_path / "empty"))
    proc = start_stack(env, log)
    assert proc.wait(timeout=30) == 2
    assert "run `make model` first" in log.read_text()


def test_full_stack_starts_real_backends_and_stops_on_sigint(tmp_path: Path, no_leftovers: None) -> None:
    # The real Milvus and Triton (with a throwaway model named like the real one), the stand-in front.
    repository = make_mean_model(tmp_path / "repo", name="embedder")
    (repository / "embedder" / "1" / "model.onnx").write_bytes(b"not used by this model.py")
    grpc_port, http_port, metrics_port, milvus_port = pick_free_ports(4)
    env = stack_env(
        tmp_path,
        DEDUP_MILVUS_URI="",
        DEDUP_TRITON_URL="",
        DEDUP_MODEL_REPOSITORY=str(repository),
        DEDUP_TRITON_GRPC_PORT=str(grpc_port),
        DEDUP_TRITON_HTTP_PORT=str(http_port),
        DEDUP_TRITON_METRICS_PORT=str(metrics_port),
        DEDUP_MILVUS_PORT=str(milvus_port),
        DEDUP_MILVUS_STOP_GRACE_S="2",
    )
    # Milvus' internal ports keep their defaults in the stack; skip rather than fail when another one runs.
    from dedup_stack.errors import PortInUseError
    from dedup_stack.ports import check_ports_free

    try:
        check_ports_free([c for c in MilvusPorts(proxy=milvus_port).port_claims() if c.port != milvus_port])
    except PortInUseError as exc:
        pytest.skip(f"another Milvus holds the default internal ports: {exc}")
    (tmp_path / "data").mkdir()
    # Reuse the unpacked binaries instead of unpacking 246 MB into this test's data dir.
    (tmp_path / "data" / "milvus-install").symlink_to(MILVUS_INSTALL_DIR, target_is_directory=True)
    MILVUS_INSTALL_DIR.mkdir(parents=True, exist_ok=True)

    log = tmp_path / "stack.log"
    proc = start_stack(env, log)
    content = wait_for_line(proc, log, "serving on", timeout_s=180)
    assert f"Triton 127.0.0.1:{grpc_port} model embedder" in content
    assert f"Milvus http://127.0.0.1:{milvus_port}" in content
    front_env = json.loads((tmp_path / "front-env.json").read_text())
    assert front_env["DEDUP_TRITON_URL"] == f"127.0.0.1:{grpc_port}"
    assert front_env["DEDUP_MILVUS_URI"] == f"http://127.0.0.1:{milvus_port}"
    # etcd too, its data under the data dir, and the line a second front joins with.
    assert front_env["DEDUP_ETCD_ENDPOINTS"] == f"127.0.0.1:{env['DEDUP_ETCD_PORT']}"
    assert (tmp_path / "data" / "etcd" / "member").is_dir()
    joined = wait_for_line(proc, log, "join: ", timeout_s=10)
    assert (f"DEDUP_MILVUS_URI=http://127.0.0.1:{milvus_port} DEDUP_ETCD_ENDPOINTS=127.0.0.1:{env['DEDUP_ETCD_PORT']}"
            in joined)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, log.read_text()

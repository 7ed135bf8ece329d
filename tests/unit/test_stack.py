"""Fast tests of the stack supervisor: config, port checks, Milvus/Triton launch preparation, process groups."""

from __future__ import annotations

import os
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dedup_stack.config import StackConfig
from dedup_stack.errors import ModelRepositoryError, PortInUseError, ProcessStartError
from dedup_stack.milvus import MilvusConfig, MilvusPorts, write_configs
from dedup_stack.ports import PortClaim, check_ports_free, pick_free_ports, port_is_free
from dedup_stack.process import ChildProcess, describe_exit, group_has_live_members, tail_text
from dedup_stack.stack import Stack, check_model_repository
from dedup_stack.triton import TritonConfig, TritonDistribution, build_argv, build_env, prepare_backend_dir

# -- config -----------------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = StackConfig.from_env({})
    assert config == StackConfig()
    assert config.data_dir == Path(".dedup-data")
    assert (config.host, config.port) == ("127.0.0.1", 50051)
    assert (config.triton_grpc_port, config.triton_http_port, config.triton_metrics_port) == (8001, 8000, 8002)
    assert config.milvus_port == 19530
    assert config.model_repository == Path("triton_models")
    assert config.triton_model == "embedder"
    assert config.start_milvus and config.start_triton
    assert config.front_milvus_uri == "http://127.0.0.1:19530"
    assert config.front_triton_url == "127.0.0.1:8001"
    assert config.front_command == (sys.executable, "-m", "dedup_server")


def test_config_from_env_overrides() -> None:
    config = StackConfig.from_env(
        {
            "DEDUP_DATA_DIR": "/tmp/x",
            "DEDUP_HOST": "0.0.0.0",
            "DEDUP_PORT": "6000",
            "DEDUP_TRITON_GRPC_PORT": "7001",
            "DEDUP_TRITON_HTTP_PORT": "7000",
            "DEDUP_TRITON_METRICS_PORT": "7002",
            "DEDUP_MILVUS_PORT": "29530",
            "DEDUP_MODEL_REPOSITORY": "/models",
            "DEDUP_TRITON_MODEL": "other",
            "DEDUP_FRONT_COMMAND": "python3 -c 'print(1)'",
            "DEDUP_STARTUP_TIMEOUT_S": "30",
        }
    )
    assert config.data_dir == Path("/tmp/x")
    assert (config.host, config.port) == ("0.0.0.0", 6000)
    assert (config.triton_grpc_port, config.triton_http_port, config.triton_metrics_port) == (7001, 7000, 7002)
    assert config.front_milvus_uri == "http://127.0.0.1:29530"
    assert config.front_triton_url == "127.0.0.1:7001"
    assert config.model_repository == Path("/models")
    assert config.triton_model == "other"
    assert config.front_command == ("python3", "-c", "print(1)")
    assert config.startup_timeout_s == 30.0


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("/data/milvus.db", id="milvus-lite-file"),
        pytest.param("http://milvus.internal:19530", id="remote"),
    ],
)
def test_config_external_milvus_is_passed_on_not_started(uri: str) -> None:
    config = StackConfig.from_env({"DEDUP_MILVUS_URI": uri})
    assert not config.start_milvus
    assert config.start_triton
    assert config.front_milvus_uri == uri


def test_config_external_triton_is_passed_on_not_started() -> None:
    config = StackConfig.from_env({"DEDUP_TRITON_URL": "gpu-box:8001"})
    assert not config.start_triton
    assert config.front_triton_url == "gpu-box:8001"


def test_config_empty_variables_count_as_unset() -> None:
    config = StackConfig.from_env({"DEDUP_MILVUS_URI": "", "DEDUP_TRITON_URL": "  ", "DEDUP_PORT": ""})
    assert config.start_milvus and config.start_triton
    assert config.port == 50051


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"DEDUP_PORT": "abc"}, "DEDUP_PORT must be an integer", id="not-int"),
        pytest.param({"DEDUP_PORT": "70000"}, "port must be between", id="too-big"),
        pytest.param({"DEDUP_MILVUS_PORT": "0"}, "milvus_port must be between", id="zero"),
        pytest.param({"DEDUP_STARTUP_TIMEOUT_S": "soon"}, "must be a number", id="not-float"),
        pytest.param({"DEDUP_STARTUP_TIMEOUT_S": "-1"}, "timeouts must be positive", id="negative"),
    ],
)
def test_config_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StackConfig.from_env(env)


def test_config_is_frozen() -> None:
    config = StackConfig()
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


# -- ports ------------------------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def test_check_ports_free_passes_for_free_ports() -> None:
    a, b = pick_free_ports(2)
    check_ports_free([PortClaim(host="0.0.0.0", port=a, purpose="A"), PortClaim(host="127.0.0.1", port=b, purpose="B")])


def test_check_ports_free_names_busy_port_and_purpose(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    (free,) = pick_free_ports(1)
    claims = [
        PortClaim(host="0.0.0.0", port=free, purpose="Triton HTTP"),
        PortClaim(host="0.0.0.0", port=port, purpose="Milvus proxy"),  # wildcard check sees the 127.0.0.1 listener
    ]
    with pytest.raises(PortInUseError, match=rf"port {port} \(Milvus proxy\).*already in use") as info:
        check_ports_free(claims)
    assert str(free) not in str(info.value)


def test_check_ports_free_rejects_same_port_twice() -> None:
    (port,) = pick_free_ports(1)
    claims = [PortClaim(host="0.0.0.0", port=port, purpose="gRPC front"),
              PortClaim(host="0.0.0.0", port=port, purpose="Triton gRPC")]
    with pytest.raises(PortInUseError, match="both gRPC front and Triton gRPC"):
        check_ports_free(claims)


def test_port_in_time_wait_counts_as_free() -> None:
    # A restart on the same port must not fail because the last run's connections are in TIME_WAIT
    # (the trap in the milvus wheel's own port check). Like Milvus (Go) and gRPC, the server sets SO_REUSEADDR;
    # its accepted connections inherit it, which is what lets a new bind pass their TIME_WAIT.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first, so the TIME_WAIT is on `port`
    time.sleep(0.05)
    client.close()
    server.close()
    assert port_is_free("0.0.0.0", port)


def test_pick_free_ports_are_distinct_and_free() -> None:
    ports = pick_free_ports(12)
    assert len(set(ports)) == 12
    assert all(port_is_free("127.0.0.1", p) for p in ports)


def test_port_claim_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        PortClaim(host="0.0.0.0", port=0, purpose="x")


# -- model repository and preflight -----------------------------------------------------------------------------


def make_repository(root: Path, model: str = "embedder") -> Path:
    (root / model / "1").mkdir(parents=True)
    (root / model / "config.pbtxt").write_text('name: "embedder"\n')
    (root / model / "1" / "model.onnx").write_bytes(b"onnx")
    return root


def test_model_repository_check_names_missing_file_and_make_model(tmp_path: Path) -> None:
    (tmp_path / "embedder" / "1").mkdir(parents=True)
    (tmp_path / "embedder" / "config.pbtxt").write_text("")
    with pytest.raises(ModelRepositoryError, match=r"1/model\.onnx.*run `make model` first"):
        check_model_repository(tmp_path, "embedder")


def test_model_repository_check_passes_when_built(tmp_path: Path) -> None:
    check_model_repository(make_repository(tmp_path), "embedder")


def test_stack_preflight_reports_busy_front_port(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    config = StackConfig(
        data_dir=tmp_path / "data",
        port=port,
        model_repository=make_repository(tmp_path / "repo"),
        milvus_uri=str(tmp_path / "m.db"),
        triton_url="127.0.0.1:1",
    )
    with pytest.raises(PortInUseError, match=rf"port {port} \(gRPC front\)"):
        Stack(config).preflight()


def test_stack_preflight_skips_model_check_with_external_triton(tmp_path: Path) -> None:
    (port,) = pick_free_ports(1)
    config = StackConfig(
        data_dir=tmp_path, port=port, model_repository=tmp_path / "absent", milvus_uri="x.db", triton_url="h:1"
    )
    Stack(config).preflight()
    assert Stack(config).milvus is None and Stack(config).triton is None


def test_stack_passes_backend_addresses_to_front(tmp_path: Path) -> None:
    config = StackConfig(data_dir=tmp_path / "d", port=6001, triton_grpc_port=7001, milvus_port=29530)
    env = Stack(config, env={"PYTHONPATH": "/elsewhere", "KEEP": "1"}).front.config.env
    assert env["DEDUP_TRITON_URL"] == "127.0.0.1:7001"
    assert env["DEDUP_MILVUS_URI"] == "http://127.0.0.1:29530"
    assert env["DEDUP_PORT"] == "6001"
    assert env["DEDUP_HOST"] == "127.0.0.1"
    assert env["DEDUP_TRITON_MODEL"] == "embedder"
    assert env["DEDUP_DATA_DIR"] == str((tmp_path / "d").absolute())
    assert env["KEEP"] == "1"
    paths = env["PYTHONPATH"].split(":")
    assert paths[-1] == "/elsewhere"
    assert any(p.endswith("/server") for p in paths)


# -- Milvus preparation -----------------------------------------------------------------------------------------


def test_milvus_ports_must_differ() -> None:
    with pytest.raises(ValueError, match="must all differ"):
        MilvusPorts(proxy=2379)


def test_milvus_port_claims_cover_every_listener() -> None:
    claims = MilvusPorts().port_claims()
    ports = {c.port for c in claims}
    assert {19530, 19529, 9091, 2379, 2380, 19540, 19531, 21123, 21121, 13333, 21124} == ports
    # None in Linux's ephemeral range, where any outgoing connection may hold them.
    assert all(port < 32768 for port in ports)
    assert 22930 not in ports  # index coord: configured but not listened on by standalone 2.3.5
    assert all(c.purpose.startswith("Milvus ") for c in claims)


def test_milvus_configs_carry_every_port(tmp_path: Path) -> None:
    ports = MilvusPorts.pick_free()
    configs = write_configs(MilvusConfig(base_dir=tmp_path, ports=ports, session_ttl_s=7))
    milvus_yaml = (configs / "milvus.yaml").read_text()
    for port in ports.template_values().values():
        assert f":{port}" in milvus_yaml or f" {port}" in milvus_yaml
    assert "ttl: 7" in milvus_yaml
    # The segment settings are ours to set (every search visits every segment); the defaults are Milvus' own.
    assert "maxSize: 512 # Maximum size of a segment in MB" in milvus_yaml
    assert "sealProportion: 0.23" in milvus_yaml
    larger = write_configs(MilvusConfig(base_dir=tmp_path / "larger", ports=ports, segment_max_size_mb=2048,
                                        segment_seal_proportion=0.25, segment_max_binlog_files=1024))
    assert "maxSize: 2048 # Maximum size of a segment in MB" in (larger / "milvus.yaml").read_text()
    assert "maxBinlogFileNumber: 1024" in (larger / "milvus.yaml").read_text()
    assert "maxBinlogFileNumber: 32" in milvus_yaml
    assert "{{" not in milvus_yaml
    assert str(tmp_path / "data") in milvus_yaml
    etcd_yaml = (configs / "embedEtcd.yaml").read_text()
    assert f"listen-client-urls: http://127.0.0.1:{ports.etcd_client}" in etcd_yaml
    assert f"listen-peer-urls: http://127.0.0.1:{ports.etcd_peer}" in etcd_yaml


# -- Triton preparation -----------------------------------------------------------------------------------------


def test_triton_env_puts_running_python_first() -> None:
    dist = TritonDistribution.find()
    env = build_env(dist, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib"})
    # The stub finds its interpreter as `python3` on PATH: it must be this venv's, or numpy is another one.
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert (Path(sys.executable).parent / "python3").exists()
    lib_dirs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert lib_dirs[0] == sysconfig.get_config_var("LIBDIR")
    assert str(dist.libs_dir) in lib_dirs
    assert lib_dirs[-1] == "/opt/lib"


def test_triton_argv(tmp_path: Path) -> None:
    config = TritonConfig(
        model_repository=tmp_path / "repo", work_dir=tmp_path, models=("a", "b"), grpc_port=1, http_port=2,
        metrics_port=3,
    )
    argv = build_argv(config, TritonDistribution.find(), tmp_path / "backends")
    assert argv[0].endswith("/tritonserver")
    for flag in (
        f"--model-repository={tmp_path / 'repo'}",
        f"--backend-directory={tmp_path / 'backends'}",
        "--model-control-mode=explicit",
        "--load-model=a",
        "--load-model=b",
        "--grpc-port=1",
        "--http-port=2",
        "--metrics-port=3",
        "--allow-metrics=true",
        "--strict-readiness=true",
    ):
        assert flag in argv


def test_triton_config_rejects_shared_ports(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must differ"):
        TritonConfig(model_repository=tmp_path, work_dir=tmp_path, grpc_port=1, http_port=1)


def test_backend_dir_has_stub_for_this_python_and_is_reused(tmp_path: Path) -> None:
    dist = TritonDistribution.find()
    assert f"/{sys.version_info.major}.{sys.version_info.minor}/" in str(dist.stub)
    backends = prepare_backend_dir(dist, tmp_path)
    python_dir = backends / "python"
    names = sorted(p.name for p in python_dir.iterdir())
    assert names == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert os.access(python_dir / "triton_python_backend_stub", os.X_OK)
    inode = (python_dir / "libtriton_python.so").stat().st_ino
    prepare_backend_dir(dist, tmp_path)
    assert (python_dir / "libtriton_python.so").stat().st_ino == inode  # unchanged files are not rewritten


# -- child processes --------------------------------------------------------------------------------------------


def test_stop_kills_the_whole_group_even_children_that_ignore_sigterm(tmp_path: Path) -> None:
    # The shell ignores SIGTERM and so does its background child (ignored dispositions are inherited).
    child = ChildProcess(
        name="stubborn",
        argv=["/bin/sh", "-c", "trap '' TERM; sleep 60 & echo started; wait"],
        env=dict(os.environ),
        log_path=tmp_path / "stubborn.log",
    )
    child.spawn()
    child.wait_ready(lambda: "started" in (tmp_path / "stubborn.log").read_text(), timeout_s=10)
    pgid = child.pid
    assert pgid is not None
    started = time.monotonic()
    returncode = child.stop(grace_s=0.3)
    assert returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert not group_has_live_members(pgid)
    assert child.stop(grace_s=0.3) == -signal.SIGKILL  # idempotent


def test_stop_after_leader_exited_still_kills_leftovers(tmp_path: Path) -> None:
    child = ChildProcess(
        name="leaky",
        argv=["/bin/sh", "-c", "sleep 60 & echo started"],  # the shell exits, its sleep stays in the group
        env=dict(os.environ),
        log_path=tmp_path / "leaky.log",
    )
    child.spawn()
    child.wait(timeout=10)
    pgid = child.pid
    assert pgid is not None and group_has_live_members(pgid)
    child.stop(grace_s=0.3)
    assert not group_has_live_members(pgid)


def test_wait_ready_reports_exit_with_log_tail(tmp_path: Path) -> None:
    child = ChildProcess(
        name="crasher",
        argv=["/bin/sh", "-c", "echo 'line one'; echo 'fatal: no model' >&2; exit 3"],
        env=dict(os.environ),
        log_path=tmp_path / "crasher.log",
    )
    child.spawn()
    with pytest.raises(ProcessStartError, match=r"crasher exited with code 3(.|\n)*fatal: no model"):
        child.wait_ready(lambda: False, timeout_s=10)
    child.stop(grace_s=0.1)


def test_wait_ready_times_out_with_log_tail(tmp_path: Path) -> None:
    child = ChildProcess(
        name="sleeper", argv=["/bin/sh", "-c", "echo waiting; sleep 60"], env=dict(os.environ),
        log_path=tmp_path / "sleeper.log",
    )
    child.spawn()
    try:
        with pytest.raises(ProcessStartError, match=r"not ready after 0 s(.|\n)*waiting"):
            child.wait_ready(lambda: False, timeout_s=0.5)
    finally:
        child.stop(grace_s=0.3)


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        pytest.param(3, "exited with code 3", id="code"),
        pytest.param(-9, "killed by SIGKILL", id="signal"),
        pytest.param(-200, "killed by signal 200", id="unknown-signal"),
    ],
)
def test_describe_exit(returncode: int, text: str) -> None:
    assert describe_exit(returncode) == text


def test_tail_text_returns_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_text(path, 3) == "line 97\nline 98\nline 99"


# -- etcd and joining -------------------------------------------------------------------------------------------


def test_stack_starts_etcd_by_default_and_passes_it_to_the_front(tmp_path: Path) -> None:
    config = StackConfig.from_env({"DEDUP_DATA_DIR": str(tmp_path)})
    assert config.start_etcd and (config.etcd_port, config.etcd_peer_port) == (23790, 23800)
    stack = Stack(config, env={})
    assert stack.etcd is not None and stack.etcd.config.data_dir == tmp_path.absolute() / "etcd"
    assert stack.front.config.env["DEDUP_ETCD_ENDPOINTS"] == "127.0.0.1:23790"
    assert stack.join_line() == (
        "join: DEDUP_TRITON_URL=127.0.0.1:8001 DEDUP_TRITON_MODEL=embedder DEDUP_MILVUS_URI=http://127.0.0.1:19530 "
        "DEDUP_ETCD_ENDPOINTS=127.0.0.1:23790 DEDUP_METRICS_PORT=0"
    )


def test_a_front_that_joins_starts_nothing_else(tmp_path: Path) -> None:
    env = {"DEDUP_TRITON_URL": "10.0.0.5:8001", "DEDUP_MILVUS_URI": "http://10.0.0.5:19530",
           "DEDUP_ETCD_ENDPOINTS": "10.0.0.5:23790", "DEDUP_PORT": "50052", "DEDUP_DATA_DIR": str(tmp_path)}
    config = StackConfig.from_env(env)
    assert config.joins
    stack = Stack(config, env={})
    assert (stack.milvus, stack.triton, stack.etcd) == (None, None, None)
    front_env = stack.front.config.env
    assert (front_env["DEDUP_ETCD_ENDPOINTS"], front_env["DEDUP_PORT"]) == ("10.0.0.5:23790", "50052")
    assert "DEDUP_ETCD_ENDPOINTS=10.0.0.5:23790" in stack.join_line()


def test_etcd_off_runs_one_front_without_coordination(tmp_path: Path) -> None:
    config = StackConfig.from_env({"DEDUP_ETCD": "off", "DEDUP_DATA_DIR": str(tmp_path)})
    stack = Stack(config, env={})
    assert stack.etcd is None and stack.front.config.env["DEDUP_ETCD_ENDPOINTS"] == ""
    assert stack.join_line().startswith("join: not possible")
    with pytest.raises(ValueError, match="DEDUP_ETCD must be on or off"):
        StackConfig.from_env({"DEDUP_ETCD": "maybe"})


def test_etcd_argv_keeps_data_under_the_data_dir(tmp_path: Path) -> None:
    from dedup_stack.etcd import EtcdConfig, build_argv

    config = EtcdConfig(data_dir=tmp_path / "etcd", client_port=23790, peer_port=23800)
    argv = build_argv(config, Path("/usr/bin/etcd"))
    assert f"--data-dir={tmp_path / 'etcd' / 'member'}" in argv
    assert "--listen-client-urls=http://127.0.0.1:23790" in argv
    assert "--initial-cluster=dedup=http://127.0.0.1:23800" in argv
    assert [claim.port for claim in config.port_claims()] == [23790, 23800]
    with pytest.raises(ValueError, match="must differ"):
        EtcdConfig(data_dir=tmp_path, client_port=1, peer_port=1)

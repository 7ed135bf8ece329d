"""Exit 0 when the front's grpc.health.v1 answers SERVING, 1 otherwise (message on stderr).

The container HEALTHCHECK (docker compose) and the Kubernetes exec probe of fronts that terminate TLS
themselves: kubelet's built-in gRPC probe speaks plaintext only. It reads the front's own DEDUP_*
variables, so it needs no arguments inside the front's container:

- DEDUP_PORT (50051): the port on 127.0.0.1 to ask;
- DEDUP_TLS_CERT: when set, the channel uses TLS; the root CA is DEDUP_HEALTHCHECK_CA, else
  DEDUP_TLS_CLIENT_CA, else the certificate itself (self-signed, or a chain ending in its root);
- DEDUP_TLS_CLIENT_CA: when set (mutual TLS), the probe presents DEDUP_TLS_CERT / DEDUP_TLS_KEY;
- DEDUP_HEALTHCHECK_TLS_NAME (localhost): the name the server certificate must carry;
- DEDUP_AUTH_TOKEN_FILE: when set, the first token is sent as `authorization: Bearer ...`;
- DEDUP_HEALTHCHECK_SERVICE (""): the health service name; "" is the whole server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 4.0


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def channel_for(env: Mapping[str, str]) -> grpc.Channel:
    target = f"127.0.0.1:{env.get('DEDUP_PORT') or '50051'}"
    cert = env.get("DEDUP_TLS_CERT")
    if not cert:
        return grpc.insecure_channel(target)
    client_ca = env.get("DEDUP_TLS_CLIENT_CA")
    root_ca = env.get("DEDUP_HEALTHCHECK_CA") or client_ca or cert
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(root_ca),
        # Mutual TLS: the front's own key pair is the probe's client identity.
        private_key=_read(env["DEDUP_TLS_KEY"]) if client_ca else None,
        certificate_chain=_read(cert) if client_ca else None,
    )
    name = env.get("DEDUP_HEALTHCHECK_TLS_NAME") or "localhost"
    return grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", name)])


def auth_metadata(env: Mapping[str, str]) -> list[tuple[str, str]]:
    token_file = env.get("DEDUP_AUTH_TOKEN_FILE")
    if not token_file:
        return []
    lines = (line.strip() for line in Path(token_file).read_text().splitlines())
    tokens = [line for line in lines if line and not line.startswith("#")]  # as the front reads the file
    return [("authorization", f"Bearer {tokens[0]}")] if tokens else []


def check(env: Mapping[str, str]) -> str:
    """The serving status name the front reports, e.g. 'SERVING'."""
    with channel_for(env) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=env.get("DEDUP_HEALTHCHECK_SERVICE", "")),
            timeout=TIMEOUT_S,
            metadata=auth_metadata(env),
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        status = check(env)
    except (grpc.RpcError, OSError, KeyError) as exc:
        detail = exc.details() if isinstance(exc, grpc.Call) else repr(exc)
        print(f"health check failed: {detail}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"front is {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

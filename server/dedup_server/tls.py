"""Server TLS credentials from the PEM files of SecurityConfig; mutual TLS when a client CA is given."""

from __future__ import annotations

import grpc

from .config import SecurityConfig


def server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    """Credentials for add_secure_port, or None when TLS is off (SecurityConfig checked the files)."""
    if security.tls_cert is None or security.tls_key is None:
        return None
    client_ca = security.tls_client_ca.read_bytes() if security.tls_client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(security.tls_key.read_bytes(), security.tls_cert.read_bytes())],
        root_certificates=client_ca,
        # With a client CA, a client without a certificate signed by it fails the handshake.
        require_client_auth=client_ca is not None,
    )

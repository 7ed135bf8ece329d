"""Check ports before starting anything, and pick free ports for tests.

Servers that find their port taken fail late and with misleading messages (pytriton, Milvus), so the supervisor
checks every port up front and names the purpose of each busy one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

from dedup_stack.errors import PortInUseError

# Triton and most Milvus listeners bind all interfaces; binding the wildcard address also fails when something
# listens on one specific address (127.0.0.1 included), so this is the strictest IPv4 check.
WILDCARD_HOST = "0.0.0.0"


@dataclass(frozen=True, kw_only=True)
class PortClaim:
    """A port the stack is about to listen on, and what for (shown in the error message)."""

    host: str
    port: int
    purpose: str

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port for {self.purpose} out of range: {self.port}")


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a listener on any one address counts for the wildcard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR, as the servers themselves set it: connections in TIME_WAIT from a previous run must not
        # count as "in use" (they would make a restart on the same port fail for a minute).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def check_ports_free(claims: Iterable[PortClaim]) -> None:
    """Raise PortInUseError naming every claimed port that is taken or claimed twice; return if all are free."""
    problems: list[str] = []
    seen: dict[int, str] = {}
    for claim in claims:
        if claim.port in seen:
            problems.append(f"port {claim.port} is configured for both {seen[claim.port]} and {claim.purpose}")
            continue
        seen[claim.port] = claim.purpose
        if not port_is_free(claim.host, claim.port):
            problems.append(f"port {claim.port} ({claim.purpose}) on {claim.host} is already in use")
    if problems:
        raise PortInUseError("; ".join(problems))


def pick_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return `count` distinct ports that were free a moment ago (for tests; another process may still take one)."""
    sockets: list[socket.socket] = []
    try:
        # Hold every socket open until all are picked, so the kernel cannot hand out the same port twice.
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()

"""Which Triton URLs get shared memory (the integration tests cover the transfer itself)."""

from __future__ import annotations

import pytest
from dedup_server.config import ConfigError, ServerConfig
from dedup_server.triton_shm import is_local_url, wants_shared_memory


@pytest.mark.parametrize(
    ("url", "local"),
    [
        pytest.param("127.0.0.1:8001", True, id="ipv4-loopback"),
        pytest.param("localhost:8001", True, id="localhost"),
        pytest.param("[::1]:8001", True, id="ipv6-loopback"),
        pytest.param("unix:///tmp/triton.sock", True, id="unix-socket"),
        pytest.param("triton:8001", False, id="service-name"),
        pytest.param("10.0.0.7:8001", False, id="other-host"),
        pytest.param("127.0.0.1.example.com:8001", False, id="lookalike-name"),
    ],
)
def test_local_urls(url: str, local: bool) -> None:
    assert is_local_url(url) is local
    assert wants_shared_memory("auto", url) is local
    assert wants_shared_memory("on", url) is True
    assert wants_shared_memory("off", url) is False


def test_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="auto"):
        wants_shared_memory("yes", "127.0.0.1:8001")
    with pytest.raises(ConfigError, match="DEDUP_TRITON_SHM"):
        ServerConfig.from_env({"DEDUP_TRITON_SHM": "sometimes"})
    assert ServerConfig.from_env({"DEDUP_TRITON_SHM": "OFF"}).triton_shared_memory == "off"
    assert ServerConfig.from_env({}).triton_shared_memory == "auto"

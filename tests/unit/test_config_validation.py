from __future__ import annotations

import math

import pytest
from dedup_server import validation
from dedup_server.config import ConfigError, Limits, ServerConfig
from dedup_server.errors import InvalidRequest


def test_defaults_work_out_of_the_box() -> None:
    config = ServerConfig.from_env({})
    assert (config.host, config.port, config.index.index_type) == ("127.0.0.1", 50051, "HNSW")
    assert config.milvus_uri.startswith("http://")


def test_environment_overrides() -> None:
    config = ServerConfig.from_env(
        {"DEDUP_PORT": "6000", "DEDUP_INDEX_TYPE": "ivf_flat", "DEDUP_BATCH_SIZE": "16", "DEDUP_THRESHOLD": "0.9"}
    )
    assert (config.port, config.index.index_type, config.embed_batch.max_batch_size, config.threshold) == (
        6000, "IVF_FLAT", 16, 0.9,
    )
    assert config.index.search_params(10) == {"nprobe": 16}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"DEDUP_PORT": "http"}, "not a valid int", id="port-not-int"),
        pytest.param({"DEDUP_THRESHOLD": "1.5"}, "THRESHOLD", id="threshold-over-1"),
        pytest.param({"DEDUP_INDEX_TYPE": "DISKANN"}, "not built by", id="unknown-index"),
        pytest.param({"DEDUP_INDEX_TYPE": "IVF_PQ", "DEDUP_MILVUS_URI": "/tmp/x.db"}, "lite", id="lite-ignores-ivf-pq"),
        pytest.param({"DEDUP_TOP_K": "0"}, "TOP_K", id="top-k-zero"),
    ],
)
def test_bad_configuration_is_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig.from_env(env)


LIMITS = Limits()


@pytest.mark.parametrize("value", [-0.1, 1.01, math.nan])
def test_threshold_out_of_range_is_invalid(value: float) -> None:
    with pytest.raises(InvalidRequest, match="threshold"):
        validation.threshold(value, 0.8)


def test_threshold_zero_means_default() -> None:
    assert validation.threshold(0.0, 0.8) == 0.8
    assert validation.threshold(0.5, 0.8) == 0.5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("", "required", id="empty"),
        pytest.param("a" * 513, "over the limit", id="too-long"),
        pytest.param("bad\nid", "control characters", id="control-chars"),
    ],
)
def test_bad_ids(value: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validation.image_id(value, LIMITS, required=True)


def test_top_k_and_collection_rules() -> None:
    assert validation.top_k(0, 10, LIMITS) == 10
    with pytest.raises(InvalidRequest, match="top_k"):
        validation.top_k(101, 10, LIMITS)
    assert validation.collection_name("", "default") == "default"
    with pytest.raises(InvalidRequest, match="collection name"):
        validation.collection_name("no spaces please", "default")


def test_metadata_size_limit() -> None:
    with pytest.raises(InvalidRequest, match="metadata"):
        validation.metadata({"k": "v" * 20_000}, LIMITS)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"DEDUP_ETCD_ENDPOINTS": "etcd-0:2379,etcd-1:2379"}, "must be an IP address", id="several-names"),
        pytest.param({"DEDUP_ETCD_ENDPOINTS": "e:2379", "DEDUP_ETCD_LEASE_TTL_S": "1"}, "at least 2", id="ttl"),
        pytest.param({"DEDUP_ETCD_ENDPOINTS": "e:2379", "DEDUP_ETCD_MARGIN_S": "4"}, "DEDUP_ETCD_MARGIN_S",
                     id="margin"),
        pytest.param({"DEDUP_ETCD_PREFIX": "dedup"}, "DEDUP_ETCD_PREFIX", id="prefix"),
    ],
)
def test_coordination_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig.from_env(env)


def test_coordination_is_off_without_endpoints_and_reads_every_setting() -> None:
    assert not ServerConfig.from_env({}).coordination.enabled
    config = ServerConfig.from_env({
        "DEDUP_ETCD_ENDPOINTS": "10.0.0.1:2379, 10.0.0.2:2379", "DEDUP_ETCD_LEASE_TTL_S": "6",
        "DEDUP_ETCD_MARGIN_S": "0.5", "DEDUP_ETCD_TIMEOUT_S": "1.5", "DEDUP_ETCD_PREFIX": "/tenant-a/",
    }).coordination
    assert config.endpoints == ("10.0.0.1:2379", "10.0.0.2:2379") and config.enabled
    assert (config.lease_ttl_s, config.margin_s, config.call_timeout_s, config.prefix) == (6, 0.5, 1.5, "/tenant-a/")

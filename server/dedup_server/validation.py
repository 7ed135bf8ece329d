"""Request field checks, before any decoding or backend work. Pure functions raising InvalidRequest."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from .config import Limits
from .errors import InvalidRequest
from .facts import RESERVED_PREFIX
from .flip import FlipPolicy
from .groups import KeepPolicy
from .index import validate_collection_name


def collection_name(value: str, default: str) -> str:
    """1-255 letters, digits, '-', '_', '.', never path-like ("" = the default); index.py maps it to Milvus."""
    name = value or default
    validate_collection_name(name)
    return name


def image_id(value: str, limits: Limits, *, required: bool, field: str = "id") -> str:
    if not value:
        if required:
            raise InvalidRequest(f"{field} is required")
        return value
    size = len(value.encode("utf-8"))
    if size > limits.max_id_bytes:
        raise InvalidRequest(f"{field} is {size} bytes long, over the limit of {limits.max_id_bytes}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidRequest(f"{field} {value!r} contains control characters")
    return value


def threshold(value: float, default: float) -> float:
    """0 means the server default; anything else must be a cosine similarity in (0, 1]."""
    if math.isnan(value) or not (value == 0 or 0 < value <= 1):
        raise InvalidRequest(f"threshold must be in (0, 1] (0 = the server default {default:.4f}), got {value}")
    return value or default


def top_k(value: int, default: int, limits: Limits) -> int:
    if value == 0:
        return default
    if not 1 <= value <= limits.max_top_k:
        raise InvalidRequest(f"top_k must be 1..{limits.max_top_k} (0 = the server default {default}), got {value}")
    return value


def metadata(value: Mapping[str, str], limits: Limits) -> dict[str, str]:
    result = dict(value)
    reserved = sorted(key for key in result if key.startswith(RESERVED_PREFIX))
    if reserved:
        # The server stores its own facts beside the client's (the layout, the image's size and format).
        raise InvalidRequest(
            f"metadata key {reserved[0]!r} is reserved for the server (keys starting with {RESERVED_PREFIX!r})"
        )
    size = len(json.dumps(result, ensure_ascii=False).encode("utf-8"))
    if size > limits.max_metadata_bytes:
        raise InvalidRequest(f"metadata is {size} bytes as JSON, over the limit of {limits.max_metadata_bytes}")
    return result


def flip_policy(value: int) -> FlipPolicy:
    try:
        return FlipPolicy(value)
    except ValueError:
        known = ", ".join(f"{p.value} ({p.name})" for p in FlipPolicy)
        raise InvalidRequest(f"flip_policy {value} is not one of {known}") from None


def keep_policy(value: int) -> KeepPolicy:
    try:
        return KeepPolicy(value)
    except ValueError:
        known = ", ".join(f"{p.value} ({p.name})" for p in KeepPolicy)
        raise InvalidRequest(f"keep {value} is not one of {known}") from None


def min_group_size(value: int) -> int:
    """0 (and 1) = 2: every group (a group has at least two images)."""
    return max(2, value)

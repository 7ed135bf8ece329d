"""Domain errors of the dedup service. No gRPC here: `status.py` maps them to status codes.

    DedupError
    ├── InvalidRequest          a field value is wrong (id, threshold, top_k, collection, metadata)
    │   └── InvalidImage        the bytes are not an image we accept (corrupt, too big, unknown format)
    ├── CollectionNotFound      the collection does not exist
    ├── ModelMismatch           the collection was built with another embedding model
    ├── Overloaded              a bounded queue is full: retry later
    ├── StreamTooLong           a stream carried more items than allowed: send the rest on a new one
    ├── BackendUnavailable      Triton or Milvus does not answer
    └── BackendError            Triton or Milvus answered with an error we cannot attribute to the input
"""

from __future__ import annotations

import re

#: An echoed value (a quoted repr in a message) longer than this is cut short, with an ellipsis; a whole message
#: longer than MAX_MESSAGE_CHARS too. A status message travels in an HTTP/2 trailer, and gRPC refuses metadata over
#: its 8 KiB soft limit: a 10 KB collection name echoed whole reached the client as RESOURCE_EXHAUSTED ("received
#: metadata size exceeds soft limit") instead of our INVALID_ARGUMENT.
MAX_ECHOED_CHARS = 200
MAX_MESSAGE_CHARS = 2_000
_ELLIPSIS = "\u2026"
# A quoted run longer than MAX_ECHOED_CHARS: '...' or "..." as repr() writes them (escapes included).
_LONG_QUOTED = re.compile(
    r"'(?:[^'\\\n]|\\.){%d,}'" % (MAX_ECHOED_CHARS + 1) + "|" + r'"(?:[^"\\\n]|\\.){%d,}"' % (MAX_ECHOED_CHARS + 1)
)


def shorten_message(message: str) -> str:
    """`message` with every long echoed value, and the whole, cut short (one rule, applied where statuses are made)."""
    if len(message) <= MAX_ECHOED_CHARS:
        return message
    message = _LONG_QUOTED.sub(
        lambda m: m.group(0)[: MAX_ECHOED_CHARS + 1] + _ELLIPSIS + m.group(0)[-1], message[:100_000]
    )
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + _ELLIPSIS
    return message


class DedupError(Exception):
    """Base of every error this service raises on purpose."""


class InvalidRequest(DedupError):
    """A request field is invalid; the message names the field and why."""


class InvalidImage(InvalidRequest):
    """The image bytes cannot be accepted (corrupt, unsupported format, over a limit)."""


class CollectionNotFound(DedupError):
    def __init__(self, collection: str) -> None:
        super().__init__(f"collection {collection!r} does not exist")
        self.collection = collection


class ModelMismatch(DedupError):
    def __init__(self, collection: str, collection_model: str, server_model: str) -> None:
        super().__init__(
            f"collection {collection!r} was built with model {collection_model!r}; this server embeds "
            f"with {server_model!r}: embeddings of different models cannot be compared"
        )
        self.collection = collection
        self.collection_model = collection_model
        self.server_model = server_model


class Overloaded(DedupError):
    """A bounded queue is full."""


class StreamTooLong(DedupError):
    """A stream carried more than the allowed number of items; every item before the limit was answered."""

    def __init__(self, limit: int, first_unread_id: str) -> None:
        super().__init__(
            f"a stream carries at most {limit} items (DEDUP_MAX_STREAM_ITEMS); each of the first {limit} was "
            f"answered, item {limit + 1} (id {first_unread_id!r}) and later were not read: send them on a new stream"
        )
        self.limit = limit
        self.first_unread_id = first_unread_id


class BackendUnavailable(DedupError):
    """A backend (Triton, Milvus) cannot be reached."""


class BackendError(DedupError):
    """A backend answered with an error."""

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

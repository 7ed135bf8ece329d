"""The one place where domain errors become gRPC status codes (most specific first)."""

from __future__ import annotations

import logging

import grpc

from .errors import (
    BackendError,
    BackendUnavailable,
    CollectionNotFound,
    InvalidRequest,
    ModelMismatch,
    Overloaded,
    StreamTooLong,
    shorten_message,
)

logger = logging.getLogger(__name__)

_STATUS_BY_ERROR: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),  # InvalidImage included
    (CollectionNotFound, grpc.StatusCode.NOT_FOUND),
    (ModelMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamTooLong, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (BackendError, grpc.StatusCode.INTERNAL),
)


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """Status code and message for an exception; unknown ones are INTERNAL with a generic message. Echoed values
    are cut short (errors.shorten_message): the message must fit gRPC's metadata limit."""
    for error_type, code in _STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return code, shorten_message(str(exc))
    logger.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"

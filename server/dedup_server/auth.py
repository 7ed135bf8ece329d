"""Bearer-token authentication of every RPC but health checks: a gRPC aio server interceptor.

Clients send the metadata ``authorization: Bearer <token>``. A missing or wrong token ends the call
with UNAUTHENTICATED before its handler runs (nothing is read, decoded or stored). grpc.health.v1
stays open, so load balancers and Kubernetes probes need no secret; it tells only SERVING or not.
Reflection is behind the token like the service itself: it describes the API to whoever asks.
The presented token is compared with every accepted one in constant time (hmac.compare_digest),
so response times tell nothing about how close a guess was or which token matched.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

logger = logging.getLogger(__name__)

#: Methods anyone may call. Health only: the answer is one status, and probes carry no secrets.
PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)

_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only with one of `tokens` (health checks always)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("BearerTokenInterceptor needs at least one accepted token")
        self._tokens = tuple(token.encode("utf-8") for token in tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        problem = None if method.startswith(PUBLIC_METHOD_PREFIXES) else self.problem(
            handler_call_details.invocation_metadata
        )
        handler = await continuation(handler_call_details)
        if problem is None or handler is None:  # unknown methods: UNIMPLEMENTED, as for everyone
            return handler
        logger.info("refused %s: %s", method, problem)  # never the token itself
        return _refusal(handler, problem)

    def problem(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """Why the call's credentials are refused, or None when they are accepted."""
        values = [value for key, value in metadata or () if key.lower() == "authorization"]
        if not values:
            return "missing bearer token: send the metadata 'authorization: Bearer <token>'"
        value = values[0] if isinstance(values[0], str) else values[0].decode("utf-8", "replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "malformed authorization metadata: expected 'Bearer <token>'"
        return None if self._accepts(token.strip()) else "invalid bearer token"

    def _accepts(self, token: str) -> bool:
        presented = token.encode("utf-8")
        matched = False
        for accepted in self._tokens:  # no early exit: every token costs the same time
            matched |= hmac.compare_digest(presented, accepted)
        return matched


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the call with UNAUTHENTICATED.

    Same kind, because interceptors outside this one (tracing, metrics) wrap streaming responses
    as async generators and unary ones as coroutines.
    """

    async def refuse_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # unreachable: abort raises; the yield makes this an async generator

    behavior = refuse_stream if handler.response_streaming else refuse_unary
    return _HANDLER_FACTORIES[(handler.request_streaming, handler.response_streaming)](
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )

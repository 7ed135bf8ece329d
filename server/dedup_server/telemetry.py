"""OpenTelemetry tracing for the process: provider and exporters from the standard OTEL_* variables.

The SDK's own configurator reads the environment, as `opentelemetry-instrument` would:
OTEL_TRACES_EXPORTER (console, otlp, none; unset = none), OTEL_EXPORTER_OTLP_ENDPOINT and the other
OTLP settings, OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*,
OTEL_SDK_DISABLED. Spans come from the contrib gRPC interceptors: the server one (installed in app.py)
opens the RPC span, the aio client one traces Triton's ModelInfer, and the service nests
decode / infer / search / insert in between.

Configure once per process, before the front is built: a global TracerProvider can be set only once,
and the Triton client channel gets its interceptor when it is created.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, filters
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace import SpanProcessor

from .config import ConfigError

DEFAULT_SERVICE_NAME = "dedup-front"

# tritonclient.grpc.aio builds its channel itself and takes no interceptors, so the contrib
# instrumentor (which wraps grpc.aio.insecure_channel / secure_channel) adds them. Only inference is
# traced: the health loop's readiness polls would otherwise open a root trace every few seconds.
TRITON_INFER_CALLS = filters.all_of(
    filters.service_name("inference.GRPCInferenceService"), filters.method_name("ModelInfer")
)

_configured = threading.Lock()


def configure_tracing(*, span_processors: Sequence[SpanProcessor] = ()) -> None:
    """Install the global TracerProvider (exporters from OTEL_* env) and instrument Triton's aio client.

    `span_processors` are added to the env-configured exporters (tests pass an in-memory one).
    Raises ConfigError for an OTEL_* setting the SDK rejects (an exporter that is not installed, say), and
    RuntimeError on a second call: the global provider cannot be replaced.
    """
    if not _configured.acquire(blocking=False):
        raise RuntimeError("tracing is already configured in this process")
    # The SDK defaults to "unknown_service"; an explicit OTEL_SERVICE_NAME still wins.
    os.environ.setdefault("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)
    # The SDK's configurator (private name, stable within the pinned SDK) is what reads OTEL_* exactly as
    # the spec and `opentelemetry-instrument` do, so no variable is parsed by hand here.
    try:
        _OTelSDKConfigurator().configure(span_processors=list(span_processors))
    except RuntimeError as exc:
        raise ConfigError(f"OpenTelemetry configuration (OTEL_* variables): {exc}") from exc
    GrpcAioInstrumentorClient(filter_=TRITON_INFER_CALLS).instrument()

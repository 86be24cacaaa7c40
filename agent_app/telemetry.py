"""Optional OpenTelemetry tracing, switched on by the standard ``OTEL_*`` variables.

OpenTelemetry is not a dependency of the image: when no ``OTEL_*`` variable is set, or the
SDK and an OTLP exporter are not installed, tracing is off and :func:`span` costs nothing.
The SDK itself reads the standard variables (endpoint, headers, service name, sampler).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from typing import Any

log = logging.getLogger("agent_app.telemetry")
_tracer: Any = None
_provider: Any = None


def _wanted() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return any(k.startswith("OTEL_") for k in os.environ)


def setup_tracing(service: str, app: Any = None) -> bool:
    """Install a tracer provider and exporter; True when tracing is on."""
    global _tracer, _provider
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    if not _wanted() or exporter_name == "none":
        return False
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    try:
        trace = importlib.import_module("opentelemetry.trace")
        sdk_trace = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
        resources = importlib.import_module("opentelemetry.sdk.resources")
        if exporter_name == "console":  # local debugging: spans as JSON on stdout
            processor = export.SimpleSpanProcessor(export.ConsoleSpanExporter())
        else:
            module = "grpc" if protocol == "grpc" else "http"
            exporter = importlib.import_module(f"opentelemetry.exporter.otlp.proto.{module}.trace_exporter")
            processor = export.BatchSpanProcessor(exporter.OTLPSpanExporter())
    except ImportError as exc:
        log.warning(
            "OTEL_* is set but OpenTelemetry is not installed; tracing stays off", extra={"error": str(exc)}
        )
        return False
    resource = resources.Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = sdk_trace.TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = trace.get_tracer("agent_app")
    if app is not None:
        try:
            importlib.import_module(
                "opentelemetry.instrumentation.fastapi"
            ).FastAPIInstrumentor.instrument_app(app)
        except ImportError:
            log.info(
                "opentelemetry-instrumentation-fastapi not installed; only the app's own spans are traced"
            )
    log.info("tracing on", extra={"exporter": exporter_name, "protocol": protocol})
    return True


def flush_tracing(timeout_s: float) -> None:
    """Export the spans still batched (the process is about to end), asking for at most
    ``timeout_s``: the SDK's batch processor may take longer, and the shutdown's watchdog
    bounds that."""
    if _provider is not None:
        _provider.force_flush(int(max(0.0, timeout_s) * 1000))


_NO_SPAN = contextlib.nullcontext()


def span(name: str, **attributes: str) -> contextlib.AbstractContextManager[object]:
    """A span around a block. With tracing off it is one shared no-op context, so the call
    on every turn builds no generator."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)

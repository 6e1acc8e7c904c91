"""OpenTelemetry traces: one server span per HTTP request (continuing the caller's trace from
its `traceparent`), and under it a span for each stage the request went through (tokenize,
queue, compute, serialize; see embedserve.stages), exported as OTLP over HTTP. Off unless an
endpoint is set; OpenTelemetry is imported only then (pip install "embedserve[otel]"). The
standard OTEL_TRACES_SAMPLER variables choose which requests are traced: an untraced one
records nothing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve import __version__, stages
from embedserve.api.routing import route_for
from embedserve.config import Settings
from embedserve.errors import ConfigError
from embedserve.logs import REQUEST_ID

TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces URL for a collector's base URL (http://collector:4318), as
    OTEL_EXPORTER_OTLP_ENDPOINT is read; a URL that already names it is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def endpoint_for(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """--otlp-endpoint, else OpenTelemetry's own variables, else None: tracing off."""
    if settings.otlp_endpoint:
        return traces_url(settings.otlp_endpoint)
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return traces_url(base) if base else None


class Tracing:
    """A tracer provider exporting to `endpoint` (batched, off the request path), or to
    `exporter` as each span ends (tests); `sampler`: which requests are traced (default:
    OTEL_TRACES_SAMPLER's, else every one)."""

    def __init__(
        self, endpoint: str | None = None, exporter: Any = None, sampler: Any = None
    ) -> None:
        try:
            from opentelemetry.propagators.textmap import DefaultGetter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            raise ConfigError(
                'traces need OpenTelemetry, which is not installed: pip install "embedserve[otel]"'
            ) from None
        resource = Resource.create({"service.name": "embedserve", "service.version": __version__})
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint)))
        else:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("embedserve", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.getter = DefaultGetter()
        stages.enable()

    def shutdown(self) -> None:
        """Export what is left, then stop."""
        self.provider.shutdown()


def tracing_for(settings: Settings, environ: Mapping[str, str] = os.environ) -> Tracing | None:
    endpoint = endpoint_for(settings, environ)
    return Tracing(endpoint) if endpoint else None


class TraceRequests:
    """Pure ASGI: a server span per HTTP request, its stages as child spans at their times."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        tracer = self.tracing.tracer
        headers = {k.decode("latin-1"): [v.decode("latin-1")] for k, v in scope["headers"]}
        caller = self.tracing.propagator.extract(headers, getter=self.tracing.getter)
        route = str(getattr(route_for(scope), "path", scope["path"]))
        span = tracer.start_span(
            f"{scope['method']} {route}",
            context=caller,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": scope["method"],
                "http.route": route,
                "url.path": scope["path"],
                "embedserve.request_id": REQUEST_ID.get(),
            },
        )
        if not span.is_recording():  # not sampled (OTEL_TRACES_SAMPLER): no stages either
            await self.app(scope, receive, send)
            return
        recording = stages.StageLog()
        token = stages.CURRENT.set(recording)
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            stages.CURRENT.reset(token)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            parent = set_span_in_context(span)
            for stage in recording.stages:
                child = tracer.start_span(
                    stage.name,
                    context=parent,
                    start_time=stage.start_ns,
                    attributes=stage.attributes,
                )
                child.end(end_time=stage.end_ns)
            span.end()

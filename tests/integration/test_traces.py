"""OpenTelemetry traces: a server span per request continuing the caller's trace, its stages
(tokenize, queue, compute, serialize, the embedding cache) as child spans with their figures;
exported over OTLP/HTTP by a real server process to a collector; nothing when off."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from embedserve.api.app import create_app
from embedserve.api.tracing import TraceRequests, Tracing, endpoint_for
from embedserve.config import Settings
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, fake_embedder, registry_with
from tests.processes import start, stop, wait_until_listening

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


def traced_client(
    minilm: ModelSource, exporter: InMemorySpanExporter, **settings: Any
) -> httpx.AsyncClient:
    registry = registry_with(minilm, fake_embedder(minilm, EchoBackend()))
    app = create_app(Settings(**settings), registry, tracing=Tracing(exporter=exporter))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_a_request_continues_the_callers_trace_with_a_span_per_stage(
    minilm: ModelSource,
) -> None:
    exporter = InMemorySpanExporter()
    async with traced_client(minilm, exporter) as client:
        answer = await client.post(
            "/v1/embeddings",
            json={"input": ["one text", "and another one"]},
            headers={"traceparent": TRACEPARENT},
        )
    assert answer.status_code == 200
    spans: dict[str, Any] = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["POST /v1/embeddings"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["embedserve.request_id"] == answer.headers["X-Request-ID"]
    stages = {"tokenize", "queue", "compute", "serialize"}
    assert stages <= set(spans)
    for name in stages:
        child = spans[name]
        assert child.parent.span_id == server.context.span_id
        assert child.context.trace_id == server.context.trace_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    compute = spans["compute"].attributes
    assert compute["rows"] == 2
    assert compute["tokens"] == answer.json()["usage"]["prompt_tokens"]
    assert compute["layout"] == "padded"  # the echo backend runs padded batches
    assert spans["tokenize"].attributes["inputs"] == 2
    assert spans["queue"].end_time <= spans["compute"].start_time


async def test_without_a_traceparent_a_request_starts_its_own_trace(minilm: ModelSource) -> None:
    exporter = InMemorySpanExporter()
    async with traced_client(minilm, exporter, embedding_cache=1 << 20) as client:
        for _ in range(2):
            assert (await client.post("/v1/embeddings", json={"input": "x"})).status_code == 200
        assert (await client.post("/v1/embeddings", json={"input": 3})).status_code == 400
    spans: list[Any] = list(exporter.get_finished_spans())
    servers = [span for span in spans if span.name == "POST /v1/embeddings"]
    assert len({span.context.trace_id for span in servers}) == 3
    assert all(span.parent is None for span in servers)
    cache = [span.attributes for span in spans if span.name == "embedding cache"]
    assert [(c["hits"], c["misses"]) for c in cache] == [(0, 1), (1, 0)]
    assert [span.name for span in spans].count("compute") == 1  # the second was a hit
    assert servers[-1].attributes["http.response.status_code"] == 400


async def test_a_request_the_sampler_leaves_out_records_nothing(minilm: ModelSource) -> None:
    exporter = InMemorySpanExporter()
    registry = registry_with(minilm, fake_embedder(minilm, EchoBackend()))
    tracing = Tracing(exporter=exporter, sampler=ALWAYS_OFF)
    transport = httpx.ASGITransport(app=create_app(Settings(), registry, tracing=tracing))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/v1/embeddings", json={"input": "x"})).status_code == 200
    assert exporter.get_finished_spans() == ()


def test_traces_are_off_unless_an_endpoint_is_set(minilm: ModelSource) -> None:
    registry = registry_with(minilm, fake_embedder(minilm, EchoBackend()))
    app = create_app(Settings(), registry)
    assert not [m for m in app.user_middleware if m.cls is TraceRequests]  # type: ignore[comparison-overlap]
    assert endpoint_for(Settings(), {}) is None
    assert endpoint_for(Settings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == (
        "http://c:4318/v1/traces"
    )
    given = Settings(otlp_endpoint="http://collector:4318")
    assert endpoint_for(given, {}) == "http://collector:4318/v1/traces"


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps the spans it is sent."""

    received: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                Collector.received.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_a_server_process_exports_its_traces_to_a_collector(tmp_path: Path, collector: str) -> None:
    process, base, log = start(tmp_path, "--otlp-endpoint", collector)
    try:
        wait_until_listening(process, base, log)
        answer = httpx.post(
            f"{base}/v1/embeddings", json={"input": "hello"}, headers={"traceparent": TRACEPARENT}
        )
        assert answer.status_code == 200
        deadline = time.monotonic() + 30  # the batch processor exports every 5 s
        while not any(s.name == "serialize" for s in Collector.received):
            assert time.monotonic() < deadline, "no trace reached the collector"
            time.sleep(0.1)
    finally:
        stop(process)
    ours = [s for s in Collector.received if s.trace_id.hex() == TRACE_ID]
    assert {"POST /v1/embeddings", "tokenize", "queue", "compute", "serialize"} <= {
        s.name for s in ours
    }

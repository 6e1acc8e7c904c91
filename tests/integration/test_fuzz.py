"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis): valid and
invalid requests alike never get a 5xx, every error is in its wire format's shape (OpenAI's
envelope, TEI's, Ollama's, Cohere's), and responses match the schema the server publishes. Runs
in-process on the real tokenizer, bounded."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from embedserve.api.app import create_app
from embedserve.config import Settings
from embedserve.engine.registry import ModelRegistry, ServedModel
from embedserve.models.source import resolve
from tests.fakes import EchoBackend, fake_embedder

# schemathesis runs the app's lifespan around each case: each loads a model of its own.
_model = ServedModel(resolve(None), lambda source: fake_embedder(source, EchoBackend(384)))
app = create_app(Settings(), ModelRegistry([_model]))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_schema_and_never_fails(case: schemathesis.Case[Any]) -> None:
    # Every check but "schema-valid data is accepted": whether a request is accepted also
    # depends on the served model (its dimension, vocabulary, maximum length with
    # truncate=false), which no static schema can state; those requests get a 400 envelope.
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert error_message(case.path, response.json())


def error_message(path: str, body: dict[str, Any]) -> str:
    """The message of an error body in the shape of `path`'s wire format."""
    if path.startswith("/v2/") or path == "/v1/embed":  # Cohere
        assert set(body) == {"message"}
        return str(body["message"])
    if path.startswith("/api/"):  # Ollama
        assert set(body) == {"error"}
        assert isinstance(body["error"], str)
        return body["error"]
    tei = ("/", "/embed", "/embed_all", "/similarity", "/tokenize", "/decode", "/info", "/rerank")
    if path in tei:  # TEI
        assert body["error_type"] in ("Validation", "Empty", "Overloaded", "Unhealthy", "Backend")
        return str(body["error"])
    error = body["error"]
    assert isinstance(error["type"], str)
    return str(error["message"])

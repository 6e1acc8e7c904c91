"""OpenAI's Batch API for /v1/embeddings: create, retrieve, list and cancel batches, and the
handling of one batch request line, which is the online endpoint's own (same parsing, limits,
routing and response body), computed as background work."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedserve.api.encoding import JSONBytes
from embedserve.api.errors import ApiError, body_error, from_domain, openai_error
from embedserve.api.files_routes import find_file, owned, owner, page, store_of
from embedserve.api.openai_protocol import EmbeddingRequest, embed_request, embeddings_body
from embedserve.api.wire import OPENAI, state_of
from embedserve.batches.runner import window_seconds
from embedserve.batches.store import BatchRecord, new_id, now
from embedserve.errors import EmbedServeError, InvalidInput
from embedserve.serving.policy import Serving

log = logging.getLogger("embedserve")
router = OPENAI.router("Batches")
ERRORS = OPENAI.responses

ENDPOINTS = ("/v1/embeddings",)


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = Field(default=None, max_length=16)


def batch_object(batch: BatchRecord) -> dict[str, Any]:
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id if _published(batch) else None,
        "error_file_id": batch.error_file_id if _published(batch) else None,
        "created_at": batch.created_at,
        "in_progress_at": batch.in_progress_at,
        "expires_at": batch.expires_at,
        "finalizing_at": batch.finalizing_at,
        "completed_at": batch.completed_at,
        "failed_at": batch.failed_at,
        "expired_at": batch.expired_at,
        "cancelling_at": batch.cancelling_at,
        "cancelled_at": batch.cancelled_at,
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "metadata": batch.metadata,
    }


def _published(batch: BatchRecord) -> bool:
    """A run's files are the batch's once it has ended (while it runs they are being written)."""
    return batch.status in ("completed", "cancelled", "expired")


def find_batch(request: Request, batch_id: str) -> BatchRecord:
    return owned(store_of(request).batch(batch_id, owner(request)), "batch", batch_id)


@router.post("/v1/batches", responses=ERRORS, summary="Create a batch of /v1/embeddings requests")
async def create_batch(body: BatchCreate, request: Request) -> JSONBytes:
    if body.endpoint not in ENDPOINTS:
        raise InvalidInput(
            f"this server runs batches for {', '.join(ENDPOINTS)} only, got {body.endpoint!r}",
            param="endpoint",
            code="unsupported_endpoint",
        )
    window = window_seconds(body.completion_window)
    if window is None:
        raise InvalidInput(
            f"'completion_window' must be 24h, got {body.completion_window!r}",
            param="completion_window",
        )
    source = find_file(request, body.input_file_id)
    if source.purpose != "batch":
        raise InvalidInput(
            f"the input file {source.id} has purpose {source.purpose!r}; upload it with "
            f"purpose 'batch'",
            param="input_file_id",
        )
    created = now()
    batch = BatchRecord(
        new_id("batch_"),
        owner(request),
        source.id,
        body.endpoint,
        body.completion_window,
        created,
        created + window,
        metadata=body.metadata,
    )
    state = state_of(request)
    store_of(request).save(batch)
    if state.batches.runner is not None:
        state.batches.runner.wake()
    return JSONBytes(batch_object(batch))


@router.get("/v1/batches/{batch_id}", responses=ERRORS, summary="One batch")
async def retrieve_batch(batch_id: str, request: Request) -> JSONBytes:
    return JSONBytes(batch_object(find_batch(request, batch_id)))


@router.get("/v1/batches", responses=ERRORS, summary="List batches, newest first")
async def list_batches(
    request: Request, limit: int = Query(20, ge=1, le=100), after: str | None = None
) -> JSONBytes:
    batches = store_of(request).batches(owner(request), limit + 1, after)
    return JSONBytes(page([batch_object(b) for b in batches], limit))


@router.post("/v1/batches/{batch_id}/cancel", responses=ERRORS, summary="Cancel a batch")
async def cancel_batch(batch_id: str, request: Request) -> JSONBytes:
    batch = find_batch(request, batch_id)
    if batch.status not in ("validating", "in_progress", "cancelling"):
        raise InvalidInput(
            f"batch {batch_id} is {batch.status}; only a validating or in-progress batch can be "
            f"cancelled",
            code="batch_not_cancellable",
        )

    def cancelling(current: BatchRecord) -> BatchRecord | None:
        if current.status not in ("validating", "in_progress"):
            return None
        return replace(current, status="cancelling", cancelling_at=now())

    batch = store_of(request).change(batch.id, cancelling)
    runner = state_of(request).batches.runner
    if runner is not None:
        runner.cancelled(batch.id)
    return JSONBytes(batch_object(batch))


async def run_line(serving: Serving, body: dict[str, Any]) -> tuple[int, Any]:
    """One batch line's body through the online endpoint's handling, behind online work."""
    try:
        parsed = EmbeddingRequest.model_validate(body)
        result = await serving.embed(replace(embed_request(parsed), background=True))
        return 200, embeddings_body(result, parsed.encoding_format)
    except ValidationError as exc:
        error = body_error(exc.errors())
    except EmbedServeError as exc:
        try:
            error = from_domain(exc)
        except LookupError:
            error = _fault(exc)
    except Exception as exc:  # a fault of ours: the line's answer says so, the batch goes on
        error = _fault(exc)
    return error.status, openai_error(error)


def _fault(exc: Exception) -> ApiError:
    log.error("internal error on a batch line: %s", exc, exc_info=exc)
    return ApiError(500, "the server had an error processing this request", "server_error")

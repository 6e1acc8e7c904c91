"""OpenAI's Files API, for the Batch API's input and output files: upload (multipart, streamed
to disk under --max-file-bytes), list, retrieve, content, delete. Each file is its owner's."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
from functools import partial
from typing import Any, Literal, TypeVar

from fastapi import Query, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.responses import FileResponse

from embedserve.api.auth import bearer
from embedserve.api.encoding import JSONBytes
from embedserve.api.limits import StreamedLimit
from embedserve.api.wire import OPENAI, state_of
from embedserve.batches.store import FileRecord, Store, new_id, now, owner_of
from embedserve.config import Settings
from embedserve.errors import InvalidInput, MissingDependency, NotFound, TooLarge

router = OPENAI.router("Files")
ERRORS = OPENAI.responses

Found = TypeVar("Found")
UPLOAD_PATH = "/v1/files"
PURPOSES = ("batch", "assistants", "fine-tune", "vision", "user_data", "evals")
MULTIPART_SLACK = 64 * 1024  # the form's boundaries and headers around the file
MULTIPART_INSTALLED = importlib.util.find_spec("python_multipart") is not None
"""Starlette parses forms with python-multipart, an install dependency; without it every
upload would fail, and that is the server's fault, not the client's."""


def owner(request: Request) -> str:
    """Whose files and batches a request sees: its key's (digest), or everyone's without keys."""
    return owner_of(bearer(request.scope)) if state_of(request).settings.api_keys else ""


def store_of(request: Request) -> Store:
    return state_of(request).batches.store()


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
    }


def find_file(request: Request, file_id: str) -> FileRecord:
    return owned(store_of(request).file(file_id, owner(request)), "file", file_id)


def owned(record: Found | None, kind: str, record_id: str) -> Found:
    """The record the request's owner asked for; a 404 where it is missing or another's."""
    if record is None:
        raise NotFound(f"no {kind} {record_id!r}", param=f"{kind}_id", code=f"{kind}_not_found")
    return record


def upload_limit(settings: Settings) -> StreamedLimit:
    """The upload's body limit (the file's and its form's), for the body-limit middleware."""
    return StreamedLimit(
        settings.max_file_bytes + MULTIPART_SLACK, partial(_too_large, settings.max_file_bytes)
    )


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the file is larger than this server's limit of {limit} bytes (--max-file-bytes)",
        param="file",
        code="file_too_large",
    )


@router.post(UPLOAD_PATH, responses=ERRORS, summary="Upload a file (multipart: file, purpose)")
async def upload_file(request: Request) -> JSONBytes:
    """The body streams in under `upload_limit` (the middleware refuses it past that)."""
    state = state_of(request)
    limit = state.settings.max_file_bytes
    if not MULTIPART_INSTALLED:
        raise MissingDependency(
            "uploads need the python-multipart package, which this installation lacks; "
            "reinstall embedserve (pip install -e .) or pip install python-multipart",
            code="missing_dependency",
        )
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidInput(
            "send the file as multipart/form-data with 'file' and 'purpose' "
            f"(got Content-Type {content_type!r}; with curl: -F purpose=batch -F file=@f.jsonl)"
        )
    try:
        form = await request.form(max_files=1, max_fields=8)
    except (MultiPartException, HTTPException) as exc:  # starlette raises the second in an app
        reason = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise InvalidInput(f"the upload is not a valid multipart form: {reason}") from None
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("'file' is required: the file, as a multipart part", param="file")
        if purpose not in PURPOSES:
            raise InvalidInput(
                f"'purpose' must be one of {', '.join(PURPOSES)}, got {purpose!r}", param="purpose"
            )
        if (upload.size or 0) > limit:
            raise _too_large(limit)
        store = store_of(request)
        record = FileRecord(
            new_id("file-"),
            owner(request),
            upload.filename or "upload",
            str(purpose),
            upload.size or 0,
            now(),
            now() + retention if (retention := state.batches.retention_s()) else None,
        )
        await asyncio.to_thread(_keep, upload, store, record.id)
        store.add_file(record)
    finally:
        await form.close()
    return JSONBytes(file_object(record))


def _keep(upload: UploadFile, store: Store, file_id: str) -> None:
    """The uploaded file under the store, whole or not at all."""
    target = store.path_of(file_id)
    staged = target.with_name(f".{file_id}.partial")
    upload.file.seek(0)
    try:
        with staged.open("wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
        staged.rename(target)
    finally:
        staged.unlink(missing_ok=True)


@router.get("/v1/files", responses=ERRORS, summary="List files")
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> JSONBytes:
    records = store_of(request).files(owner(request), purpose, limit + 1, order == "asc", after)
    return JSONBytes(page([file_object(r) for r in records], limit))


def page(objects: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """OpenAI's list object, from up to limit + 1 objects (the extra one says there are more)."""
    shown = objects[:limit]
    return {
        "object": "list",
        "data": shown,
        "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None,
        "has_more": len(objects) > limit,
    }


@router.get("/v1/files/{file_id}", responses=ERRORS, summary="One file")
async def retrieve_file(file_id: str, request: Request) -> JSONBytes:
    return JSONBytes(file_object(find_file(request, file_id)))


@router.get("/v1/files/{file_id}/content", responses=ERRORS, summary="A file's content")
async def file_content(file_id: str, request: Request) -> FileResponse:
    record = find_file(request, file_id)
    path = store_of(request).path_of(record.id)
    return FileResponse(path, media_type="application/octet-stream", filename=record.filename)


@router.delete("/v1/files/{file_id}", responses=ERRORS, summary="Delete a file")
async def delete_file(file_id: str, request: Request) -> JSONBytes:
    record = find_file(request, file_id)
    store_of(request).delete_file(record.id, record.owner)
    return JSONBytes({"id": record.id, "object": "file", "deleted": True})

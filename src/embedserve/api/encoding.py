"""Response bodies as bytes: orjson for JSON (numpy rows serialized natively), base64 from the
raw little-endian float32 buffer. No per-number Python loops."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from embedserve.serving.requests import Embedded


class JSONBytes(Response):
    """A JSON response serialized by orjson (numpy arrays included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return render_json(content)


def render_json(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def encoded_rows(result: Embedded, encoding: str) -> list[Any]:
    """The result's vectors as JSON rows in `encoding`: floats, base64 strings or integers."""
    if encoding == "base64":
        return base64_rows(result.vectors)
    return list(result.rows(encoding))


def base64_rows(vectors: np.ndarray) -> list[str]:
    """Each row as base64 of its little-endian float32 bytes (what the OpenAI SDK decodes)."""
    little_endian = vectors.astype("<f4", copy=False)
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian]

"""Response bodies as bytes: orjson for JSON (numpy rows serialized natively), base64 from the
raw little-endian float32 buffer. No per-number Python loops."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response


class JSONBytes(Response):
    """A JSON response serialized by orjson (numpy arrays included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return render_json(content)


def render_json(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def embeddings_body(
    vectors: np.ndarray, model_id: str, encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    if encoding_format == "base64":
        little_endian = vectors.astype("<f4", copy=False)
        rows: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian]
    else:
        rows = list(vectors)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(rows)
        ],
        "model": model_id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }

"""A served model backed by an OpenAI-compatible embeddings API (h2oGPT's --use_openai_embedding).

Same contract as the local embedder: inputs in, unit vectors and usage out. Calls go through one
pooled HTTP client; 429, 5xx and connection failures are retried with exponential backoff,
honouring Retry-After; requests larger than the upstream takes are split. Token arrays pass
through as they are (they are OpenAI's own ids). The API key is sent, never logged or echoed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from embedserve.engine.batcher import Batcher
from embedserve.engine.embedder import DEFAULT_OPTIONS, Embeddings, EmbedOptions, Item
from embedserve.engine.vectors import scaled_rows
from embedserve.errors import InvalidInput, UpstreamTimeout, UpstreamUnavailable
from embedserve.models.tokenizer import ModelTokenizer

log = logging.getLogger(__name__)

RETRYABLE = {408, 409, 429, 500, 502, 503, 504}


class UpstreamEmbedder:
    kind = "upstream"
    precision: str | None = None
    selection = "an OpenAI-compatible upstream API"
    tokenizer: ModelTokenizer | None = None  # the upstream's tokens are not known here
    batcher: Batcher | None = None  # the upstream batches on its side

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        max_inputs: int = 2048,
        attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_inputs = max_inputs
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.dimension: int | None = None  # learned from the first answer at full length
        self.max_tokens = 8191  # OpenAI's embedding models
        self._api_key = api_key
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never show the key
        return f"UpstreamEmbedder({self.base_url!r}, model={self.model!r})"

    async def embed(
        self, items: Sequence[Item], options: EmbedOptions = DEFAULT_OPTIONS
    ) -> Embeddings:
        """The upstream's vectors; it truncates as it does (OpenAI refuses over-long inputs)."""
        instruction = options.instruction
        inputs: list[Any] = [
            instruction + item if isinstance(item, str) else list(item) for item in items
        ]
        chunks = [inputs[i : i + self.max_inputs] for i in range(0, len(inputs), self.max_inputs)]
        calls = (self._call(chunk, options.dimensions) for chunk in chunks)
        answers = await asyncio.gather(*calls)
        vectors = scaled_rows(np.concatenate([a[0] for a in answers]), normalize=options.normalize)
        if options.dimensions is None:
            self.dimension = int(vectors.shape[1])
        return Embeddings(vectors, sum(a[1] for a in answers))

    async def quantization_ranges(
        self, dimensions: int | None = None, normalize: bool = True, *, measure: bool = True
    ) -> np.ndarray | None:
        return None  # the upstream's vectors are not calibrated here

    async def aclose(self) -> None:
        """Close the pooled HTTP client, on the loop that used it."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _call(self, inputs: list[Any], dimensions: int | None) -> tuple[np.ndarray, int]:
        body: dict[str, Any] = {"input": inputs, "model": self.model, "encoding_format": "base64"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        response = await self._post_with_retries(body)
        payload = response.json()
        rows = sorted(payload["data"], key=lambda d: d["index"])
        vectors = np.stack([_decode(row["embedding"]) for row in rows])
        return vectors, int(payload.get("usage", {}).get("prompt_tokens", 0))

    async def _post_with_retries(self, body: dict[str, Any]) -> httpx.Response:
        client = self._http()
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            try:
                response = await client.post("/embeddings", json=body)
            except httpx.TransportError as exc:  # timeouts included
                if last:
                    raise self._transport_error(exc) from exc
                await asyncio.sleep(self._backoff(attempt, None))
                continue
            if response.status_code == 200:
                return response
            if response.status_code in RETRYABLE and not last:
                log.warning("upstream answered %d; retrying", response.status_code)
                await asyncio.sleep(self._backoff(attempt, response.headers.get("retry-after")))
                continue
            raise self._error(response)
        raise AssertionError("unreachable")

    def _transport_error(self, exc: httpx.TransportError) -> Exception:
        where = f"the upstream embeddings service at {self.base_url}"
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"{where} did not answer in time ({self.attempts} attempts)")
        return UpstreamUnavailable(
            f"{where} is unreachable ({type(exc).__name__}, {self.attempts} attempts)"
        )

    def _error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        message = _upstream_message(response)
        if status in (401, 403):
            return UpstreamUnavailable(
                f"the upstream embeddings service refused this server's API key (HTTP {status}); "
                f"the operator must set a valid OPENAI_API_KEY"
            )
        if status == 404:
            return UpstreamUnavailable(
                f"the upstream has no embeddings model '{self.model}' (HTTP 404): {message}"
            )
        if 400 <= status < 500 and status != 429:
            return InvalidInput(
                f"the upstream refused the request: {message}", code="upstream_rejected"
            )
        return UpstreamUnavailable(
            f"the upstream embeddings service failed (HTTP {status}, after {self.attempts} "
            f"attempts): {message}"
        )

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff_s)
            except ValueError:
                pass
        delay = min(self.backoff_s * 2.0 ** (attempt - 1), self.max_backoff_s)
        return float(
            delay * (0.5 + random.random() / 2)
        )  # jitter: retries from many requests spread

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._api_key}"},
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        return self._client


def _decode(embedding: str | list[float]) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


def _upstream_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        message = error.get("message") if isinstance(error, dict) else str(error)
    except ValueError:
        message = None
    return str(message or response.text[:200] or response.reason_phrase)

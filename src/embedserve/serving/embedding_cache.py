"""An exact embedding cache: each text's pooled vector (before any cut or normalization) by
everything that determines it, so that every encoding, `dimensions` and `normalize` a request
asks for is served from one entry; the least recently used go first when the bytes run out."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embedserve import stages
from embedserve.engine.embedder import Embedder, Embeddings, EmbedOptions, check_token_total
from embedserve.engine.vectors import scaled_rows

CacheKey = tuple[Any, ...]
"""(model build key, backend, precision, instruction, truncate, truncate_left, max tokens,
text): a different instruction, truncation or engine is a different vector."""

ENTRY_OVERHEAD = 320
"""Bytes an entry costs beside its vector and text: the key tuple, the dict slot, the entry
and the array's header (tracemalloc over 2,000 entries: 322 bytes each)."""


@dataclass(frozen=True)
class Cached:
    vector: np.ndarray
    """float32 [dimension], read-only: the model's pooled output."""

    tokens: int
    """The tokens the model read for it (a hit reports them as usage)."""


class EmbeddingCache:
    """Pooled vectors within `max_bytes`; used from the event loop only (no lock)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[CacheKey, Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Cached | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: CacheKey, vector: np.ndarray, tokens: int) -> Cached:
        """Keep a copy of `vector` (not a view of its batch) and return the entry."""
        entry = Cached(np.array(vector, dtype=np.float32), tokens)
        entry.vector.flags.writeable = False
        cost = _cost(key, entry)
        if cost > self.max_bytes:
            return entry  # larger than the whole cache: served, not kept
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= _cost(key, old)
        self._entries[key] = entry
        self.bytes += cost
        while self.bytes > self.max_bytes:
            dropped_key, dropped = self._entries.popitem(last=False)
            self.bytes -= _cost(dropped_key, dropped)
        return entry


def _cost(key: CacheKey, entry: Cached) -> int:
    return entry.vector.nbytes + sys.getsizeof(key[-1]) + ENTRY_OVERHEAD


async def embed_through(
    cache: EmbeddingCache,
    build: str,
    service: Embedder,
    texts: Sequence[str],
    options: EmbedOptions,
) -> tuple[Embeddings, int]:
    """`texts` embedded as `options` say, each found in `cache` or computed (once, however
    often the request repeats it) and kept; and how many were found."""
    engine = (build, service.kind, service.precision, options.instruction, options.truncate)
    prefix = (*engine, options.truncate_left, service.max_tokens)
    keys = [(*prefix, text) for text in texts]
    recording = stages.current()
    started_ns = stages.now_if(recording)
    entries = [cache.get(key) for key in keys]
    hits = sum(entry is not None for entry in entries)
    if recording is not None:
        recording.add("embedding cache", started_ns, hits=hits, misses=len(texts) - hits)
    missing = list(dict.fromkeys(t for t, e in zip(texts, entries, strict=True) if e is None))
    if missing:
        counted = sum(entry.tokens for entry in entries if entry is not None)
        raw = replace(options, dimensions=None, normalize=False, counted_tokens=counted)
        computed = await service.embed(missing, raw)
        fresh = {
            text: cache.put((*prefix, text), vector, tokens)
            for text, vector, tokens in zip(
                missing, computed.vectors, computed.lengths, strict=True
            )
        }
        entries = [e or fresh[t] for t, e in zip(texts, entries, strict=True)]
    found = [entry for entry in entries if entry is not None]
    tokens = sum(entry.tokens for entry in found)
    check_token_total(tokens, options.max_tokens)  # hits and repeats count as if computed
    vectors = scaled_rows(
        np.stack([entry.vector for entry in found]),
        options.dimensions,
        normalize=options.normalize,
        layer_norm=service.layer_norm_before_cut,
    )
    return Embeddings(vectors, tokens), hits

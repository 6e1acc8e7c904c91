"""One served model's pipeline: inputs -> token ids -> batched forward -> vectors.

Tokenization runs in the default thread pool, overlapping other requests' inference; the
forward passes run in the model's batcher, which merges sequences from all requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from embedserve import stages
from embedserve.backends.base import Backend
from embedserve.config import TokenIdMode
from embedserve.engine.batcher import Batcher, BatchLimits, batcher_for, pad
from embedserve.engine.openai_tokens import OpenAITokenDecoder
from embedserve.engine.quantization import Calibration
from embedserve.engine.vectors import scaled_rows
from embedserve.errors import InvalidInput
from embedserve.models.tokenizer import ModelTokenizer

Item = str | Sequence[int]


@dataclass(frozen=True)
class EmbedOptions:
    """How one request's inputs are embedded; the serving layer decides each of these."""

    truncate: bool = True
    """Truncate over-long inputs to the model's maximum; False refuses them."""

    truncate_left: bool = False
    """Truncate from the start of an input (keep its end) instead of from its end."""

    instruction: str = ""
    """Text put before each input, as sentence-transformers' `prompt` does."""

    dimensions: int | None = None
    """Keep the first N components."""

    normalize: bool = True
    """Scale each vector to unit length; False returns the model's own output."""

    max_tokens: int | None = None
    """Most tokens the inputs may hold together (InvalidInput past it)."""

    counted_tokens: int = 0
    """Tokens of the same request counted against `max_tokens` elsewhere (its cached inputs)."""

    background: bool = False
    """Batch-job work: computed only when no online request waits."""


DEFAULT_OPTIONS = EmbedOptions()


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray
    """float32 [n_inputs, dimension], in input order (unit length unless asked otherwise)."""

    prompt_tokens: int
    """Tokens the model processed (after truncation, special tokens included), summed."""

    lengths: tuple[int, ...] = ()
    """Each input's tokens, where the model reports them (a batched local model)."""


class EmbeddingService(Protocol):
    """An embedding model as the serving layer sees it: a local model (batched or static) or
    an upstream API."""

    kind: str
    precision: str | None
    selection: str

    @property
    def tokenizer(self) -> ModelTokenizer | None:
        """None: an upstream's tokens are not known here."""

    @property
    def batcher(self) -> Batcher | None:
        """None: its requests share no forward passes (a static model, an upstream)."""

    @property
    def dimension(self) -> int | None: ...

    @property
    def max_tokens(self) -> int: ...

    async def embed(
        self, items: Sequence[Item], options: EmbedOptions = DEFAULT_OPTIONS
    ) -> Embeddings: ...

    async def aclose(self) -> None: ...

    async def quantization_ranges(
        self, dimensions: int | None = None, normalize: bool = True, *, measure: bool = True
    ) -> np.ndarray | None:
        """[2, dimension] minimums and maximums for int8/uint8 vectors (None: not calibrated,
        or not yet measured and not `measure`)."""


class LocalModel:
    """What every local embedding model has: its tokenizer and backend, token-id inputs and
    instructions, and the direct passes of warm-up, probes and calibration."""

    def __init__(
        self,
        tokenizer: ModelTokenizer,
        backend: Backend,
        *,
        token_ids: TokenIdMode = "tiktoken",
        pools_instruction: bool = True,
        selection: str = "",
    ) -> None:
        """`pools_instruction=False`: the instruction's tokens are read but left out of pooling
        (INSTRUCTOR models). `selection`: why it got its backend and precision."""
        self.tokenizer = tokenizer
        self.selection = selection
        self.calibration: Calibration | None = None  # where the loader keeps its int8 ranges
        self.layer_norm_before_cut = False  # nomic v1.5's Matryoshka cut (vectors.py)
        self.pools_instruction = pools_instruction
        self.backend = backend
        self.token_ids = token_ids
        self._openai_tokens = OpenAITokenDecoder() if token_ids == "tiktoken" else None
        self.kind = backend.kind
        self.precision: str | None = backend.precision

    @property
    def dimension(self) -> int:
        return self.backend.dimension

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.max_tokens

    async def quantization_ranges(
        self, dimensions: int | None = None, normalize: bool = True, *, measure: bool = True
    ) -> np.ndarray | None:
        if self.calibration is None or not (measure or self.calibration.known):
            return None
        ranges = await self.calibration.ranges(self._calibration_vectors)
        return ranges.ranges(dimensions, normalize, layer_norm=self.layer_norm_before_cut)

    async def token_vectors(
        self, items: Sequence[Item], options: EmbedOptions = DEFAULT_OPTIONS
    ) -> tuple[list[np.ndarray], int]:
        """Each input's token vectors (special tokens included, not pooled, not normalized) and
        the tokens read: TEI's /embed_all. Only a graph that ends before pooling has them."""
        run = getattr(self.backend, "token_vectors", None)
        if run is None:
            raise InvalidInput(
                f"this model is served by {self.kind} ({self.precision}) from a graph that ends "
                f"in its pooled vector, which has no per-token vectors; they come from the packed "
                f"graph OpenVINO serves (--backend openvino)",
                param="inputs",
                code="token_vectors_unavailable",
            )
        sequences = await self._sequences(items, options)
        vectors: list[np.ndarray] = await asyncio.to_thread(run, sequences)
        return vectors, sum(map(len, sequences))

    async def _sequences(self, items: Sequence[Item], options: EmbedOptions) -> list[list[int]]:
        """`items` tokenized as `options` say, within the request's token limit: on the event
        loop where that costs less than the hop to a worker thread, else on one."""
        tokenizing = (items, options.truncate, options.instruction, options.truncate_left)
        recording = stages.current()
        started_ns = stages.now_if(recording)
        inline = tokenizes_inline(items, options.instruction)
        if inline:
            sequences = self.tokenize(*tokenizing)
        else:
            loop = asyncio.get_running_loop()
            sequences = await loop.run_in_executor(None, self.tokenize, *tokenizing)
        if recording is not None:
            recording.add("tokenize", started_ns, inputs=len(items), inline=inline)
        check_request_tokens(sequences, options.max_tokens, counted=options.counted_tokens)
        return sequences

    async def _calibration_vectors(self, texts: list[str]) -> np.ndarray:
        # served as batch-job work is: behind every online request
        options = EmbedOptions(normalize=False, background=True)
        return (await self.embed(texts, options)).vectors

    async def embed(
        self, items: Sequence[Item], options: EmbedOptions = DEFAULT_OPTIONS
    ) -> Embeddings:
        raise NotImplementedError

    def pooled_sync(self, texts: Sequence[str]) -> np.ndarray:
        """The backend's pooled vectors of `texts` (truncated), in one direct pass."""
        return self.backend.embed(*pad(self.tokenizer.encode(texts), self.tokenizer.pad_id))

    def embed_sync(self, items: Sequence[Item], *, truncate: bool = True) -> Embeddings:
        """One direct forward pass, outside the batcher: for warm-up and start-up probes."""
        sequences = self.tokenize(items, truncate)
        pooled = self.backend.embed(*pad(sequences, self.tokenizer.pad_id))
        return Embeddings(scaled_rows(pooled), sum(map(len, sequences)))

    def tokenize(
        self, items: Sequence[Item], truncate: bool, instruction: str = "", left: bool = False
    ) -> list[list[int]]:
        """Framed token ids per input. Items are all text or all token-id sequences; `left`
        truncates an over-long input's start instead of its end."""
        # Cutting an input's start must not cut its instruction: with `left` the instruction is
        # tokenized apart and kept whole, as the head of every input.
        apart = bool(instruction) and left
        head = self.tokenizer.content_ids([instruction])[0] if apart else []
        joined = "" if apart else instruction
        texts = {i: self._instructed(joined, t) for i, t in enumerate(items) if isinstance(t, str)}
        id_lists = {i: item for i, item in enumerate(items) if not isinstance(item, str)}
        contents = self._token_id_contents(id_lists, joined, left) if id_lists else {}
        if texts:
            ids = self.tokenizer.content_ids(list(texts.values()), left=left)
            contents.update(zip(texts, ids, strict=True))
        frame = self.tokenizer.frame
        return [
            frame(head + contents[i], truncate=truncate, index=i, left=left, keep=len(head))
            for i in range(len(items))
        ]

    def _token_id_contents(
        self, id_lists: dict[int, Sequence[int]], instruction: str, left: bool
    ) -> dict[int, list[int]]:
        if self.token_ids == "reject":
            raise InvalidInput(
                "this server does not accept token-id inputs (started with --token-ids reject); "
                "send text instead",
                param="input",
                code="token_ids_not_accepted",
            )
        if self._openai_tokens is not None:
            texts = self._openai_tokens.decode(list(id_lists.values()), list(id_lists))
            texts = [self._instructed(instruction, text) for text in texts]
            return dict(zip(id_lists, self.tokenizer.content_ids(texts, left=left), strict=True))
        for index, ids in id_lists.items():
            self.tokenizer.check_native(ids, index)
        prefix = self.tokenizer.content_ids([instruction])[0] if instruction else []
        return {i: prefix + list(ids) for i, ids in id_lists.items()}

    def _instructed(self, instruction: str, text: str) -> str:
        # INSTRUCTOR strips the text before joining; sentence-transformers strips the join.
        return instruction + (text if self.pools_instruction else text.strip())


class Embedder(LocalModel):
    """A local model whose passes are batched: tokenizer, batcher and backend."""

    def __init__(
        self,
        tokenizer: ModelTokenizer,
        backend: Backend,
        *,
        token_ids: TokenIdMode = "tiktoken",
        limits: BatchLimits,
        pools_instruction: bool = True,
        selection: str = "",
    ) -> None:
        super().__init__(
            tokenizer,
            backend,
            token_ids=token_ids,
            pools_instruction=pools_instruction,
            selection=selection,
        )
        self.batcher = batcher_for(backend, tokenizer.pad_id, limits, tokenizer.max_tokens)

    async def embed(
        self, items: Sequence[Item], options: EmbedOptions = DEFAULT_OPTIONS
    ) -> Embeddings:
        """Vectors for `items`, embedded as `options` say (the serving layer has checked them:
        a dimension out of range here is a caller's bug)."""
        if options.dimensions is not None and not 1 <= options.dimensions <= self.dimension:
            raise ValueError(f"dimensions {options.dimensions} outside 1..{self.dimension}")
        sequences = await self._sequences(items, options)
        unpooled = None
        if options.instruction and not self.pools_instruction:
            unpooled = [self.tokenizer.unpooled_span(options.instruction)] * len(sequences)
        pooled = await self.batcher.submit(sequences, unpooled, background=options.background)
        vectors = scaled_rows(
            pooled,
            options.dimensions,
            normalize=options.normalize,
            layer_norm=self.layer_norm_before_cut,
        )
        lengths = tuple(map(len, sequences))
        return Embeddings(vectors, sum(lengths), lengths)

    def close(self) -> None:
        """Stop the batcher's threads (waiting for the pass in flight)."""
        self.batcher.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


INLINE_TOKENIZE_CHARS = 256
"""A request of one text this short is tokenized on the event loop: 15 us at 30 characters,
80 at 300, where the hop to a worker thread and back costs 75-140 us (docs/performance.md)."""


def tokenizes_inline(items: Sequence[Item], instruction: str) -> bool:
    """Whether tokenizing `items` costs less than the hop to the tokenizer's thread."""
    if len(items) != 1 or not isinstance(items[0], str):
        return False
    return len(items[0]) + len(instruction) <= INLINE_TOKENIZE_CHARS


def check_request_tokens(
    sequences: list[list[int]], limit: int | None, field: str = "input", counted: int = 0
) -> None:
    """At most --max-request-tokens tokens a request (`counted` of them not in `sequences`)."""
    check_token_total(counted + sum(map(len, sequences)), limit, field)


def check_token_total(total: int, limit: int | None, field: str = "input") -> None:
    if limit is not None and total > limit:
        raise InvalidInput(
            f"the request holds {total} tokens, more than this server's limit of {limit} per "
            f"request (--max-request-tokens); split it into several requests",
            param=field,
            code="too_many_tokens",
        )

"""A static model served: its token table looked up where the request is tokenized, in one
thread hop. There is no forward pass to share, so there is no batcher: a request never waits
for another's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from embedserve.backends.static import StaticBackend
from embedserve.config import TokenIdMode
from embedserve.engine.batcher import Batcher
from embedserve.engine.embedder import (
    DEFAULT_OPTIONS,
    Embeddings,
    EmbedOptions,
    Item,
    LocalModel,
    check_request_tokens,
)
from embedserve.engine.vectors import scaled_rows
from embedserve.models.tokenizer import ModelTokenizer


class StaticEmbedder(LocalModel):
    batcher: Batcher | None = None  # nothing to share: a request is looked up on its own thread

    def __init__(
        self,
        tokenizer: ModelTokenizer,
        backend: StaticBackend,
        *,
        token_ids: TokenIdMode = "tiktoken",
        selection: str = "",
    ) -> None:
        super().__init__(tokenizer, backend, token_ids=token_ids, selection=selection)
        self.table = backend

    async def embed(
        self, items: Sequence[Item], options: EmbedOptions = DEFAULT_OPTIONS
    ) -> Embeddings:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.embed_now, items, options
        )

    def embed_now(
        self, items: Sequence[Item], options: EmbedOptions = DEFAULT_OPTIONS
    ) -> Embeddings:
        """Tokenized, looked up and scaled on this thread."""
        if options.dimensions is not None and not 1 <= options.dimensions <= self.dimension:
            raise ValueError(f"dimensions {options.dimensions} outside 1..{self.dimension}")
        sequences = self.tokenize(
            items, options.truncate, options.instruction, options.truncate_left
        )
        check_request_tokens(sequences, options.max_tokens)
        pooled = self.table.bags(sequences)
        return Embeddings(
            scaled_rows(
                pooled,
                options.dimensions,
                normalize=options.normalize,
                layer_norm=self.layer_norm_before_cut,
            ),
            sum(map(len, sequences)),
        )

    def close(self) -> None:
        """Nothing runs in the background."""

    async def aclose(self) -> None:
        self.close()

"""A cross-encoder's tokenizer: (query, document) pairs framed as one sequence, truncated as
sentence-transformers' CrossEncoder does (the longer text first, token by token, to the
model's maximum)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from embedserve.errors import InvalidInput
from embedserve.models.tokenizer import pad_id_of


@dataclass(frozen=True)
class Pair:
    ids: list[int]
    second: int
    """Where the second text's tokens start (its token type is 1)."""


class PairTokenizer:
    def __init__(self, tokenizer_file: Path, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._whole = self._load(tokenizer_file)
        self._cut = {"right": self._load(tokenizer_file), "left": self._load(tokenizer_file)}
        for direction, tokenizer in self._cut.items():
            tokenizer.enable_truncation(max_tokens, strategy="longest_first", direction=direction)
        self.pad_id = pad_id_of(self._whole)

    @staticmethod
    def _load(path: Path) -> Tokenizer:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def pairs(
        self, query: str, documents: Sequence[str], *, truncate: bool = True, left: bool = False
    ) -> list[Pair]:
        """Each (query, document) as the model reads it; over-long pairs are cut (from the
        documents' ends, or with `left` their starts) or, unless `truncate`, refused."""
        inputs = [(query, document) for document in documents]
        encodings = self._whole.encode_batch_fast(inputs) if inputs else []
        long = [i for i, e in enumerate(encodings) if len(e.ids) > self.max_tokens]
        if long and not truncate:
            raise InvalidInput(
                f"the query with documents[{long[0]}] has {len(encodings[long[0]].ids)} tokens, "
                f"more than this model's maximum of {self.max_tokens}; shorten it or send "
                f'"truncate": true',
                param="documents",
                code="context_length_exceeded",
            )
        if long:
            cut = self._cut["left" if left else "right"].encode_batch_fast(
                [inputs[i] for i in long]
            )
            for i, encoding in zip(long, cut, strict=True):
                encodings[i] = encoding
        return [Pair(list(e.ids), _second(e.type_ids)) for e in encodings]


def _second(type_ids: list[int]) -> int:
    return next((i for i, t in enumerate(type_ids) if t == 1), 0)

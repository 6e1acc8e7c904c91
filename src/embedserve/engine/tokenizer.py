"""The model's own tokenizer: text (or native ids) in, framed token-id sequences out.

Content is tokenized without special tokens, truncated to the model's budget, then framed by
the model's special tokens, so text, decoded OpenAI token ids and native ids share one path and
produce exactly what the model's tokenizer would.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from embedserve.errors import InvalidInput


class ModelTokenizer:
    def __init__(self, tokenizer_file: Path, max_tokens: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.prefix, self.suffix = self._special_frame()
        self.max_tokens = max_tokens
        self.max_content = max_tokens - len(self.prefix) - len(self.suffix)
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.pad_id = self._pad_id()

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens and untruncated."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def frame(self, content: list[int], *, truncate: bool, index: int) -> list[int]:
        """Add the model's special tokens, truncating (or refusing) over-long content."""
        if len(content) > self.max_content:
            if not truncate:
                raise InvalidInput(
                    f"input[{index}] has {len(content) + len(self.prefix) + len(self.suffix)} "
                    f"tokens, more than this model's maximum of {self.max_tokens}; shorten it "
                    f'or send "truncate": true',
                    param="input",
                    code="context_length_exceeded",
                )
            content = content[: self.max_content]
        return self.prefix + content + self.suffix

    def check_native(self, ids: Sequence[int], index: int) -> None:
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise InvalidInput(
                f"input[{index}] holds token id {bad}, outside this model's vocabulary "
                f"(0..{self.vocab_size - 1})",
                param="input",
                code="invalid_token_id",
            )

    def _special_frame(self) -> tuple[list[int], list[int]]:
        probe = self._tokenizer.encode("a", add_special_tokens=True)
        content = [i for i, special in enumerate(probe.special_tokens_mask) if not special]
        first, last = (content[0], content[-1]) if content else (len(probe.ids), len(probe.ids))
        return list(probe.ids[:first]), list(probe.ids[last + 1 :])

    def _pad_id(self) -> int:
        padding = Tokenizer.from_str(self._tokenizer.to_str()).padding
        if padding:
            return int(padding["pad_id"])
        for token in ("[PAD]", "<pad>", "<|pad|>"):
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return 0

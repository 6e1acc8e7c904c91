"""The model's own tokenizer: text (or native ids) in, framed token-id sequences out.

Content is tokenized without special tokens, truncated to the model's budget, then framed by
the model's special tokens, so text, decoded OpenAI token ids and native ids share one path and
produce exactly what the model's tokenizer would.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from embedserve.errors import InvalidInput

# A head of (budget + margin) * 16 characters nearly always holds more tokens than the budget;
# the margin keeps tokens that a cut inside a whitespace run could change past what is read.
_MARGIN_TOKENS = 16
_HEAD_CHARS_PER_TOKEN = 16


def tokenize_on_calling_threads() -> None:
    """Turn off the tokenizers library's own thread pool, unless TOKENIZERS_PARALLELISM is set.
    Requests are tokenized in parallel already, each on a pool thread; spreading one request's
    few texts over rayon's spinning threads too only costs CPU."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Token:
    """One token of a text, as TEI's /tokenize lists it."""

    id: int
    text: str
    """The text it covers (a special token: its own name, "[CLS]")."""

    special: bool
    start: int | None
    """Byte offsets in the UTF-8 text (None for a special token)."""

    stop: int | None


class ModelTokenizer:
    def __init__(self, tokenizer_file: Path, max_tokens: int, *, static: bool = False) -> None:
        """`static`: a static model's, which reads texts as they are (no special tokens, not
        stripped), as sentence-transformers' StaticEmbedding tokenizes them."""
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._strip = not static
        self.prefix, self.suffix = ([], []) if static else self._special_frame()
        self.max_tokens = max_tokens
        self.max_content = max_tokens - len(self.prefix) - len(self.suffix)
        self._enough = self.max_content + _MARGIN_TOKENS
        self._head_chars = self._enough * _HEAD_CHARS_PER_TOKEN
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.pad_id = pad_id_of(self._tokenizer)
        self._spans: dict[str, int] = {}

    def content_ids(self, texts: Sequence[str], *, left: bool = False) -> list[list[int]]:
        """Token ids of each text, without special tokens.

        A long text is tokenized only up to a whitespace cut that still yields more tokens than
        the model reads (plus a margin): its head, or with `left` (truncation from the left) its
        tail. So a megabyte of text costs what its head costs. The ids are exact as far as
        framing reads them; a part too short to decide falls back to the whole text.
        """
        if self._strip:  # as sentence-transformers' Transformer module reads them
            texts = [text.strip() for text in texts]
        cut = _tail if left else _head
        parts = [cut(text, self._head_chars) for text in texts]
        ids = [e.ids for e in self._encode(parts)]
        undecided = [
            i for i, p in enumerate(parts) if p is not texts[i] and len(ids[i]) < self._enough
        ]
        for i, encoding in zip(undecided, self._encode([texts[i] for i in undecided]), strict=True):
            ids[i] = encoding.ids
        return ids

    def _encode(self, texts: list[str]) -> list[Encoding]:
        # Ids only: the fast variant skips the character offsets nothing here reads.
        return self._tokenizer.encode_batch_fast(texts, add_special_tokens=False) if texts else []

    def encode(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[int]]:
        """Framed token ids of each text, as the model reads them."""
        contents = self.content_ids(texts)
        return [self.frame(c, truncate=truncate, index=i) for i, c in enumerate(contents)]

    def frame(
        self, content: list[int], *, truncate: bool, index: int, left: bool = False, keep: int = 0
    ) -> list[int]:
        """Add the model's special tokens, truncating (or refusing) over-long content: its end,
        or with `left` its start after the first `keep` tokens (an instruction)."""
        if len(content) > self.max_content:
            if not truncate:
                raise InvalidInput(
                    f"input[{index}] has more tokens than this model's maximum of "
                    f'{self.max_tokens}; shorten it or send "truncate": true',
                    param="input",
                    code="context_length_exceeded",
                )
            room = self.max_content - keep
            if left and room > 0:
                content = content[:keep] + content[len(content) - room :]
            else:
                content = content[: self.max_content]
        return self.prefix + content + self.suffix

    def windows(self, texts: Sequence[str], size: int, overlap: int) -> list[list[tuple[int, int]]]:
        """Per text, the character spans of its chunks: windows of at most `size` content tokens,
        each starting `overlap` tokens before the previous one ends, cut at token boundaries. A
        text without tokens is one empty chunk."""
        step = size - overlap
        spans = []
        for encoding in self._tokenizer.encode_batch(list(texts), add_special_tokens=False):
            offsets = encoding.offsets
            if not offsets:
                spans.append([(0, 0)])
                continue
            chunks = []
            for first in range(0, len(offsets), step):
                last = min(first + size, len(offsets)) - 1
                chunks.append((offsets[first][0], offsets[last][1]))
                if last == len(offsets) - 1:
                    break
            spans.append(chunks)
        return spans

    def tokens(self, text: str, *, special: bool = True) -> list[Token]:
        """`text`'s tokens, with the model's special tokens unless not `special`."""
        encoding = self._tokenizer.encode(text, add_special_tokens=special)
        data = text.encode("utf-8")
        byte_at = _byte_offsets(text)
        tokens = []
        for token_id, name, (start, stop), mask in zip(
            encoding.ids,
            encoding.tokens,
            encoding.offsets,
            encoding.special_tokens_mask,
            strict=True,
        ):
            if mask:
                tokens.append(Token(token_id, name, True, None, None))
                continue
            first, last = byte_at[start], byte_at[stop]
            covered = data[first:last].decode("utf-8", errors="replace")
            tokens.append(Token(token_id, covered, False, first, last))
        return tokens

    def unpooled_span(self, instruction: str) -> int:
        """Leading tokens an INSTRUCTOR model leaves out of pooling after `instruction`: the
        instruction's framed length less one, or none for an instruction of one token or less
        (InstructorEmbedding's rule; sentence-transformers' include_prompt=False differs only
        in leaving out one token for a one-token instruction)."""
        if instruction not in self._spans:
            content = self.content_ids([instruction])[0]
            span = len(self.prefix) + len(content) + len(self.suffix) - 1
            self._spans[instruction] = span if span > 1 else 0
        return self._spans[instruction]

    def decode(self, ids: Sequence[Sequence[int]], *, skip_special: bool = True) -> list[str]:
        """The text of each id sequence (each id checked against the vocabulary first)."""
        for index, sequence in enumerate(ids):
            self.check_native(sequence, index, field="ids")
        return self._tokenizer.decode_batch(
            [list(sequence) for sequence in ids], skip_special_tokens=skip_special
        )

    def check_native(self, ids: Sequence[int], index: int, field: str = "input") -> None:
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise InvalidInput(
                f"{field}[{index}] holds token id {bad}, outside this model's vocabulary "
                f"(0..{self.vocab_size - 1})",
                param=field,
                code="invalid_token_id",
            )

    def _special_frame(self) -> tuple[list[int], list[int]]:
        probe = self._tokenizer.encode("a", add_special_tokens=True)
        content = [i for i, special in enumerate(probe.special_tokens_mask) if not special]
        first, last = (content[0], content[-1]) if content else (len(probe.ids), len(probe.ids))
        return list(probe.ids[:first]), list(probe.ids[last + 1 :])


def pad_id_of(tokenizer: Tokenizer) -> int:
    """The padding token's id: the tokenizer's padding setting, else a [PAD]-like token."""
    padding = Tokenizer.from_str(tokenizer.to_str()).padding
    if padding:
        return int(padding["pad_id"])
    for token in ("[PAD]", "<pad>", "<|pad|>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return 0


def _byte_offsets(text: str) -> list[int]:
    """The UTF-8 byte offset of each character offset of `text`, and of its end."""
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode("utf-8", errors="surrogatepass")))
    return offsets


def _tail(text: str, limit: int) -> str:
    """The text from its first whitespace within its last `limit` characters (the text itself
    if short, or if there is none)."""
    if len(text) <= limit:
        return text
    start = len(text) - limit
    found = [i for i in (text.find(c, start) for c in " \n\t\r") if i >= 0]
    return text[min(found) + 1 :] if found else text


def _head(text: str, limit: int) -> str:
    """The text up to its last whitespace before `limit` characters (the text itself if short,
    or if there is no whitespace to cut at: a cut inside a word could change its tokens)."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(c, 0, limit) for c in " \n\t\r")
    return text[:cut] if cut > 0 else text

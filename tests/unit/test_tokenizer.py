import os
import subprocess
import sys

import pytest

from embedserve.errors import InvalidInput
from embedserve.models.source import ModelSource
from embedserve.models.tokenizer import ModelTokenizer


@pytest.fixture(scope="module")
def tokenizer(minilm: ModelSource) -> ModelTokenizer:
    return ModelTokenizer(minilm.files / "tokenizer.json", 256)


def test_frame_matches_the_model_tokenizer(tokenizer: ModelTokenizer, minilm: ModelSource) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(minilm.files))
    texts = ["Hello world", "", "naïve café 東京 🙂", "word " * 400]
    for text, content in zip(texts, tokenizer.content_ids(texts), strict=True):
        expected = hf(text, truncation=True, max_length=256)["input_ids"]
        assert tokenizer.frame(content, truncate=True, index=0) == expected


def test_special_tokens_and_budget(tokenizer: ModelTokenizer) -> None:
    assert tokenizer.prefix == [101]  # [CLS]
    assert tokenizer.suffix == [102]  # [SEP]
    assert tokenizer.max_content == 254
    assert tokenizer.pad_id == 0


def test_over_long_content_is_truncated_or_refused(tokenizer: ModelTokenizer) -> None:
    content = [1000] * 300
    assert len(tokenizer.frame(content, truncate=True, index=0)) == 256
    with pytest.raises(InvalidInput, match=r"input\[3\] has more tokens than .* maximum of 256"):
        tokenizer.frame(content, truncate=False, index=3)


def test_native_ids_are_checked_against_the_vocabulary(tokenizer: ModelTokenizer) -> None:
    tokenizer.check_native([0, 1, tokenizer.vocab_size - 1], 0)
    with pytest.raises(InvalidInput, match="outside this model's vocabulary"):
        tokenizer.check_native([5, tokenizer.vocab_size], 0)
    with pytest.raises(InvalidInput):
        tokenizer.check_native([-1], 0)


LONG_TEXTS = [
    "word " * 200_000,  # 1 MB: only its head is tokenized
    "naïve café 東京 🙂 " * 5_000,
    " " * 20_000 + "late start " * 10,  # a head of whitespace: falls back to the whole text
    "x" * 50_000,  # no whitespace to cut at
    "line one\n\n\t  line two   " * 3_000,
    "short",
]


def test_long_texts_are_framed_exactly_as_the_full_tokenization(
    tokenizer: ModelTokenizer, minilm: ModelSource
) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(minilm.files))
    for text, content in zip(LONG_TEXTS, tokenizer.content_ids(LONG_TEXTS), strict=True):
        expected = hf(text, truncation=True, max_length=256)["input_ids"]
        assert tokenizer.frame(content, truncate=True, index=0) == expected


def test_a_megabyte_text_costs_only_its_head(tokenizer: ModelTokenizer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    real = tokenizer._encode

    def spy(texts: list[str]):  # type: ignore[no-untyped-def]
        seen.extend(map(len, texts))
        return real(texts)

    monkeypatch.setattr(tokenizer, "_encode", spy)
    (content,) = tokenizer.content_ids(["word " * 200_000])
    assert len(content) > tokenizer.max_content
    assert max(seen) < 10_000  # not the 1,000,000 characters sent


def test_unpooled_span_is_the_framed_instruction_less_one(tokenizer: ModelTokenizer) -> None:
    # [CLS] query : [SEP] -> 3 tokens left out: [CLS] and the instruction (InstructorEmbedding)
    assert tokenizer.unpooled_span("query: ") == 3
    assert tokenizer.unpooled_span("") == 0  # nothing to leave out


_THREADS_STARTED_BY_ENCODING = """
import os, sys
from embedserve.config import Settings
from embedserve.engine.loading import build_registry
from embedserve.models.tokenizer import ModelTokenizer

if sys.argv[2] == "serving":
    build_registry(Settings())  # what the server and every job start with, before any load
tokenizer = ModelTokenizer(sys.argv[1], 256)
before = len(os.listdir("/proc/self/task"))
tokenizer.encode(["a short text to embed"] * 256)
print(len(os.listdir("/proc/self/task")) - before, os.environ.get("TOKENIZERS_PARALLELISM"))
"""


@pytest.mark.parametrize(
    ("users_setting", "mode", "threads_start", "setting"),
    [
        (None, "serving", False, "false"),
        (None, "library", True, "None"),
        ("1", "serving", True, "1"),
    ],
)
def test_the_server_tokenizes_a_request_on_its_own_thread(
    minilm: ModelSource, users_setting: str | None, mode: str, threads_start: bool, setting: str
) -> None:
    """Serving turns the tokenizers library's thread pool off, unless the user chose, before it
    loads a model: encoding then starts no threads. Left on, rayon starts one per core on the
    first batch."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    if users_setting:
        env["TOKENIZERS_PARALLELISM"] = users_setting
    argv = [sys.executable, "-c", _THREADS_STARTED_BY_ENCODING]
    argv += [str(minilm.files / "tokenizer.json"), mode]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    started, seen = out.split()
    assert (int(started) > 0) is threads_start
    assert seen == setting


def test_left_truncation_keeps_what_the_tokenizers_library_keeps(
    tokenizer: ModelTokenizer, minilm: ModelSource
) -> None:
    """Truncating from the left (TEI's truncation_direction) keeps an input's last tokens,
    also when only the text's tail is tokenized."""
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(minilm.files / "tokenizer.json"))
    reference.no_padding()
    reference.enable_truncation(256, direction="left")
    texts = [
        "word " * 200_000 + "the very end",
        "naïve café 東京 🙂 " * 5_000,
        "late start " * 10 + " " * 20_000,
        "x" * 50_000,
        "short",
    ]
    for text, content in zip(texts, tokenizer.content_ids(texts, left=True), strict=True):
        expected = reference.encode(text.strip()).ids
        assert tokenizer.frame(content, truncate=True, index=0, left=True) == expected

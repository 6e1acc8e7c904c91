import pytest

from embedserve.engine.tokenizer import ModelTokenizer
from embedserve.errors import InvalidInput
from embedserve.models.source import ModelSource


@pytest.fixture(scope="module")
def tokenizer(minilm: ModelSource) -> ModelTokenizer:
    return ModelTokenizer(minilm.folder / "tokenizer.json", 256)


def test_frame_matches_the_model_tokenizer(tokenizer: ModelTokenizer, minilm: ModelSource) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(minilm.folder))
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
    with pytest.raises(InvalidInput, match=r"input\[3\] has 302 tokens.*maximum of 256"):
        tokenizer.frame(content, truncate=False, index=3)


def test_native_ids_are_checked_against_the_vocabulary(tokenizer: ModelTokenizer) -> None:
    tokenizer.check_native([0, 1, tokenizer.vocab_size - 1], 0)
    with pytest.raises(InvalidInput, match="outside this model's vocabulary"):
        tokenizer.check_native([5, tokenizer.vocab_size], 0)
    with pytest.raises(InvalidInput):
        tokenizer.check_native([-1], 0)

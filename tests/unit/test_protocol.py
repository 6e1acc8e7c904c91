import pytest
from pydantic import ValidationError

from embedserve.api.openai_protocol import EmbeddingRequest


@pytest.mark.parametrize(
    "value",
    ["", "text", ["a", "b"], [1, 2, 3], [[1, 2], [3]], [[]]],
)
def test_accepts_every_openai_input_shape(value: object) -> None:
    assert EmbeddingRequest.model_validate({"input": value}).input == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([], "must not be an empty array"),
        (["a", 1], "mixes strings"),
        ([[1], 2], "mixes strings"),
        ([1.5], "input[0] is not"),
        ([True, 2], "input[0] is not"),
        ([["x"]], "input[0] is not"),
        ({"a": 1}, "must be a string"),
        (42, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_rejects_bad_input_with_a_clear_message(value: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        EmbeddingRequest.model_validate({"input": value})
    assert fragment in info.value.errors()[0]["msg"]


def test_encoding_format_is_float_base64_or_an_integer_encoding() -> None:
    assert EmbeddingRequest.model_validate({"input": "x"}).encoding_format == "float"
    for encoding in ("int8", "uint8", "binary", "ubinary"):
        body = {"input": "x", "encoding_format": encoding}
        assert EmbeddingRequest.model_validate(body).encoding_format == encoding
    with pytest.raises(ValidationError):
        EmbeddingRequest.model_validate({"input": "x", "encoding_format": "float16"})


def test_unknown_fields_are_ignored_and_user_accepted() -> None:
    request = EmbeddingRequest.model_validate({"input": "x", "user": "u1", "foo": 1})
    assert request.user == "u1"

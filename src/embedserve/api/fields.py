"""The request fields and checks more than one wire format takes: texts (each checked for
Unicode), documents, a rerank query, `dimensions`, a truncation direction. A wire format's
module builds its bodies from these and keeps only what is its own."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic_core import PydanticCustomError

TruncationDirection = Literal["left", "right", "Left", "Right"]
"""TEI's spelling and ours."""

Dimensions = Annotated[
    StrictInt | None,
    Field(
        default=None,
        json_schema_extra={"minimum": 1},  # the model checks it, naming its own dimension
        description="Keep the first N components (1..model dimension), re-normalized.",
    ),
]


def cuts_left(direction: str | None) -> bool:
    """Whether an over-long input loses its start ("left", TEI's "Left"); right by default."""
    return (direction or "right").lower() == "left"


def text_list(value: Any, field: str, *, allow_empty: bool = False, one: bool = True) -> list[str]:
    """A string (unless not `one`) or an array of strings, for the wire formats that take only
    text (TEI's `inputs`, Ollama's `input`, Cohere's `texts`), as a list; each checked for
    Unicode."""
    texts = [value] if isinstance(value, str) and one else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        kinds = "a string or an array of strings" if one else "an array of strings"
        raise PydanticCustomError("invalid_input", f"'{field}' must be {kinds}")
    if not texts and not allow_empty:
        raise PydanticCustomError("empty_input", f"'{field}' must not be empty")
    for index, text in enumerate(texts):
        check_unicode(text, f"{field}[{index}]" if texts is value else f"'{field}'")
    return texts


def check_unicode(text: str, where: str) -> None:
    """JSON allows lone surrogates (\\ud800); they are not text and no tokenizer takes them.
    `where`: the field, as the message names it."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "invalid_input",
            f"{where} is not valid Unicode: it holds an unpaired surrogate at character "
            f"{exc.start}",
        ) from None


def document_texts(value: Any, field: str = "documents") -> list[str]:
    """Documents as strings or {"text": ...} objects, as text; at least one."""
    if not isinstance(value, list):
        raise PydanticCustomError("invalid_input", f"'{field}' must be an array of texts")
    if not value:
        raise PydanticCustomError("empty_input", f"'{field}' must not be empty")
    texts = []
    for index, item in enumerate(value):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise PydanticCustomError(
                "invalid_input",
                f'{field}[{index}] must be a string or an object {{"text": "..."}}',
            )
        check_unicode(text, f"{field}[{index}]")
        texts.append(text)
    return texts


class RerankQuery(BaseModel):
    """The query of every rerank body."""

    model_config = ConfigDict(extra="ignore")

    query: str = Field(description="The query the documents are scored against.")

    @field_validator("query", mode="before")
    @classmethod
    def _check_query(cls, value: Any) -> Any:
        if isinstance(value, str):
            check_unicode(value, "'query'")
        return value


class RerankDocuments(RerankQuery):
    """What Cohere's (v1 and v2), Jina's and Infinity's rerank bodies share."""

    model: str | None = Field(default=None, description="A served reranker or embedding model.")
    documents: list[str | dict[str, Any]] = Field(
        description='Texts, or objects {"text": ...}.', min_length=1
    )
    top_n: StrictInt | None = Field(
        default=None, json_schema_extra={"minimum": 1}, description="Keep the N best."
    )

    @field_validator("documents", mode="before")
    @classmethod
    def _check_documents(cls, value: Any) -> Any:
        return document_texts(value)

    @field_validator("top_n")
    @classmethod
    def _check_top_n(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise PydanticCustomError("invalid_input", f"'top_n' must be at least 1, got {value}")
        return value

    @property
    def texts(self) -> list[str]:
        return self.documents  # type: ignore[return-value]  # the validator made them text

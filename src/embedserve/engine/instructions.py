"""Query and document instructions: what text goes before an input, by model and input type.

h2oGPT embeds every input as a document; retrieval models (bge, e5, instructor) want their
queries marked. Precedence: an instruction set for the model at start-up, then the model's own
`prompts` (sentence-transformers config), then the known default of its family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

E5_INSTRUCT_QUERY = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "
)
"""The query format of e5-*-instruct and e5-mistral (their model cards' retrieval task)."""

# (whole parts of the model id that must all be there, query instruction, document instruction):
# the first family that matches gives a model its defaults, where its own prompts give none.
FAMILY_DEFAULTS: tuple[tuple[frozenset[str], str, str], ...] = (
    (
        frozenset({"instructor"}),
        "Represent the question for retrieving supporting documents: ",
        "Represent the document for retrieval: ",
    ),  # h2oGPT's instructions for instructor models
    (frozenset({"bge", "m3"}), "", ""),  # bge-m3 retrieves without instructions
    (frozenset({"bge"}), "Represent this sentence for searching relevant passages: ", ""),
    (frozenset({"e5", "instruct"}), E5_INSTRUCT_QUERY, ""),
    (frozenset({"e5"}), "query: ", "passage: "),
    (frozenset({"nomic", "embed"}), "search_query: ", "search_document: "),
)
_QUERY_KEYS = ("query", "search_query", "question")
_DOCUMENT_KEYS = ("document", "passage", "search_document", "corpus")


@dataclass(frozen=True)
class Instructions:
    query: str = ""
    document: str = ""

    def for_type(self, input_type: str) -> str:
        return self.query if input_type == "query" else self.document


def is_instructor(model_id: str) -> bool:
    """An INSTRUCTOR model (hkunlp/instructor-*): its pooling leaves the instruction out."""
    return "instructor" in name_parts(model_id)


def name_parts(model_id: str) -> set[str]:
    return set(re.split(r"[/_.\-]", model_id.lower()))


def instructions_for(
    model_id: str,
    prompts: dict[str, str] | None,
    query: str | None = None,
    document: str | None = None,
) -> Instructions:
    parts = name_parts(model_id)
    family = next((f for f in FAMILY_DEFAULTS if f[0] <= parts), None)
    prompts = prompts or {}
    if query is None:
        query = _first(prompts, _QUERY_KEYS)
    if document is None:
        document = _first(prompts, _DOCUMENT_KEYS)
    if query is None and family:
        query = family[1]
    if document is None and family:
        document = family[2]
    return Instructions(query=query or "", document=document or "")


def _first(prompts: dict[str, str], keys: tuple[str, ...]) -> str | None:
    return next((prompts[k] for k in keys if k in prompts), None)

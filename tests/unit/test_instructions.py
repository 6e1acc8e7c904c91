import pytest

from embedserve.engine.instructions import E5_INSTRUCT_QUERY, instructions_for


@pytest.mark.parametrize(
    ("model_id", "query", "document"),
    [
        ("BAAI/bge-small-en-v1.5", "Represent this sentence for searching relevant passages: ", ""),
        ("intfloat/multilingual-e5-small", "query: ", "passage: "),
        (
            "hkunlp/instructor-large",
            "Represent the question for retrieving supporting documents: ",
            "Represent the document for retrieval: ",
        ),
        ("sentence-transformers/all-MiniLM-L6-v2", "", ""),
        ("BAAI/bge-m3", "", ""),  # no instruction, though a bge
        (
            "intfloat/multilingual-e5-large-instruct",
            "Instruct: Given a web search query, retrieve relevant passages that answer the query"
            "\nQuery: ",
            "",
        ),
        ("intfloat/e5-mistral-7b-instruct", E5_INSTRUCT_QUERY, ""),
        ("nomic-ai/nomic-embed-text-v1.5", "search_query: ", "search_document: "),
        ("acme/abgex-e5x", "", ""),  # family names match whole name parts only
    ],
)
def test_family_defaults(model_id: str, query: str, document: str) -> None:
    instructions = instructions_for(model_id, None)
    assert (instructions.query, instructions.document) == (query, document)


def test_model_prompts_beat_family_defaults_and_flags_beat_both() -> None:
    prompts = {"query": "Q: ", "passage": "P: "}
    assert instructions_for("BAAI/bge-base-en", prompts).query == "Q: "
    assert instructions_for("BAAI/bge-base-en", prompts).document == "P: "
    overridden = instructions_for("BAAI/bge-base-en", prompts, query="mine: ", document="")
    assert (overridden.query, overridden.document) == ("mine: ", "")
    assert overridden.for_type("passage") == ""
    assert overridden.for_type("query") == "mine: "

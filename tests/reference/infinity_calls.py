"""Run in the infinity_client venv (tests/reference/venvs.py): Infinity's own generated client
against a server, as its users call Infinity; prints what it parsed as JSON.

    python infinity_calls.py BASE_URL"""

from __future__ import annotations

import json
import sys

from infinity_client import Client
from infinity_client.api.default import embeddings, models, rerank
from infinity_client.models import OpenAIEmbeddingInputText, RerankInput
from infinity_client.types import Unset

client = Client(base_url=sys.argv[1], raise_on_unexpected_status=True)
texts = ["Paris is the capital of France.", "The quick brown fox."]
embedded = embeddings.sync(client=client, body=OpenAIEmbeddingInputText(input_=texts))
listed = models.sync(client=client)
ranked = rerank.sync(
    client=client,
    body=RerankInput(query="capital of France", documents=texts, return_documents=True),
)
print(
    json.dumps(
        {
            "embedding_type": type(embedded).__name__,
            "vectors": [row.embedding for row in embedded.data],
            "models": [[m.id, list(m.capabilities or [])] for m in listed.data],
            "rerank_type": type(ranked).__name__,
            "ranked": [
                [r.index, r.relevance_score, None if isinstance(r.document, Unset) else r.document]
                for r in ranked.results
            ],
        }
    )
)

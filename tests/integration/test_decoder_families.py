"""The 2026 decoder embedders, generated small with their real transformers classes and module
stacks (random weights): Qwen3-Embedding (causal attention, last-token pooling, its query
instruction) and EmbeddingGemma (bidirectional Gemma3 with 8-token sliding windows, mean
pooling, two Dense layers, task prompts). Texts of two words to past 512 tokens, sent as
concurrent mixed-length requests so that they share batches and packed rows, equal
sentence-transformers' vectors in the default mode and in explicit OpenVINO fp32; explicit bf16
is held to the bar bf16 is held to elsewhere. An export made wrong on purpose is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedserve.backends import attention_masks
from embedserve.config import Settings
from embedserve.engine.embedder import EmbedOptions, LocalModel
from embedserve.engine.loading import load_service
from embedserve.errors import ModelUnavailable
from embedserve.models.source import resolve
from tests.conftest import REAL_SENTENCES, cosines
from tests.fakes import client_for, registry_with
from tests.generated import tiny_decoder_model

pytestmark = pytest.mark.slow  # exports models

WORDS = [
    "river", "bridge", "invoice", "harbour", "lantern", "meadow", "quartz", "violin", "orchard",
    "compass",
]  # fmt: skip
TEXTS = [
    "two words",
    *REAL_SENTENCES[:6],
    " ".join(WORDS * 3),  # ~30 tokens: past every 8-token window
    " ".join(WORDS * 25),  # ~250 tokens
    " ".join(WORDS * 60),  # ~600 tokens: past 512
]


@pytest.fixture(scope="module", params=["qwen3", "gemma3", "qwen2", "mistral"])
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    minilm = resolve(None)
    return tiny_decoder_model(tmp_path_factory.mktemp(request.param), minilm.files, request.param)


def reference(folder: Path, texts: list[str], prompt_name: str | None = None) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return np.asarray(model.encode(texts, normalize_embeddings=True, prompt_name=prompt_name))


async def served(model: Any, texts: list[str], instruction: str = "") -> np.ndarray:
    """Each text its own request, all at once: they meet in batches (and packed rows)."""
    options = EmbedOptions(instruction=instruction)
    results = await asyncio.gather(*(model.embed([text], options) for text in texts))
    return np.concatenate([r.vectors for r in results])


def prompt(folder: Path, name: str) -> str:
    import json

    return str(
        json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"][name]
    )


@pytest.mark.parametrize(
    "settings",
    [Settings(), Settings(backend="openvino", precision="fp32")],
    ids=["default", "openvino-fp32"],
)
async def test_documents_and_queries_equal_sentence_transformers(
    family: Path, settings: Settings
) -> None:
    model = load_service(resolve(str(family)), settings)
    assert isinstance(model, LocalModel)
    try:
        if settings.backend == "openvino":
            assert getattr(model.backend, "packs", False)  # mixed lengths in packed rows
        documents = await served(model, TEXTS, prompt(family, "document"))
        assert cosines(documents, reference(family, TEXTS, "document")).min() >= 0.9999
        queries = await served(model, TEXTS[:8], prompt(family, "query"))
        assert cosines(queries, reference(family, TEXTS[:8], "query")).min() >= 0.9999
    finally:
        model.close()  # type: ignore[attr-defined]


async def test_explicit_bf16_is_held_to_the_bf16_bar(family: Path) -> None:
    model = load_service(resolve(str(family)), Settings(precision="bf16"))
    assert isinstance(model, LocalModel)
    try:
        cos = cosines(await served(model, TEXTS), reference(family, TEXTS))
        assert cos.mean() >= 0.999
        assert cos.min() >= 0.995
    finally:
        model.close()  # type: ignore[attr-defined]


def test_an_export_that_differs_from_sentence_transformers_is_not_served(
    family: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masks made wrong on purpose (no causal rule, no sliding window): the build's check
    against sentence-transformers' modules refuses the graph; ONNX Runtime, asked for by name,
    cannot serve the model, and the default falls back to torch."""
    real = attention_masks._additive

    def wrong(segments: Any, causal: bool, window: int | None) -> Any:
        return real(segments, False, None)

    monkeypatch.setattr(attention_masks, "_additive", wrong)
    fresh = Settings(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ModelUnavailable, match="differs from sentence-transformers' modules"):
        load_service(resolve(str(family)), Settings(backend="onnx", cache_dir=fresh.cache_dir))
    model = load_service(resolve(str(family)), fresh)
    try:
        assert model.kind == "torch"
        got = model.embed_sync(TEXTS[:4]).vectors  # type: ignore[union-attr]
        assert cosines(got, reference(family, TEXTS[:4])).min() >= 0.9999
    finally:
        model.close()  # type: ignore[union-attr]


async def test_a_models_own_task_prompts_are_reachable_by_prompt_name(
    family: Path,
) -> None:
    """EmbeddingGemma lists task prompts beyond query and document: OpenAI's body takes
    `prompt_name` (extra_body), TEI's its own `prompt_name`; a prompt the model lacks is that
    format's 4xx naming the prompts it has."""
    if family.name != "tiny-gemma3":  # the others list only query and document prompts
        pytest.skip("its prompts are query and document only")
    source = resolve(str(family))
    model = load_service(source, Settings(backend="onnx"))
    texts = REAL_SENTENCES[:3]
    want = reference(family, texts, "Clustering")
    try:
        async with client_for(registry_with(source, model)) as client:  # type: ignore[arg-type]
            body = {"input": texts, "prompt_name": "Clustering"}
            openai = await client.post("/v1/embeddings", json=body)
            tei = await client.post("/embed", json={"inputs": texts, "prompt_name": "Clustering"})
            unknown = await client.post(
                "/v1/embeddings", json={"input": "x", "prompt_name": "Nope"}
            )
            tei_unknown = await client.post("/embed", json={"inputs": "x", "prompt_name": "Nope"})
            card = (await client.get("/v1/models")).json()["data"][0]
        got = np.array([d["embedding"] for d in openai.json()["data"]], dtype=np.float32)
        assert cosines(got, want).min() >= 0.9999
        assert cosines(np.array(tei.json(), dtype=np.float32), want).min() >= 0.9999
        assert unknown.status_code == 400
        assert "Clustering" in unknown.json()["error"]["message"]
        assert unknown.json()["error"]["param"] == "prompt_name"
        assert tei_unknown.status_code in (400, 422)
        assert "prompt_name 'Nope'" in tei_unknown.json()["error"]
        assert card["prompts"]["Clustering"] == prompt(family, "Clustering")
    finally:
        model.close()  # type: ignore[union-attr]

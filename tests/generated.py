"""Small sentence-transformers models the tests make, where a real one is not needed."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def tiny_cls_dense_model(target: Path, tokenizer_from: Path) -> Path:
    """A 2-layer BERT with CLS pooling, a Dense layer (32 -> 16, tanh), normalization and its
    own prompts, saved as a sentence-transformers folder: random weights, real structure."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    hf = target / "hf"
    BertModel(config).save_pretrained(hf)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_from / name, hf / name)
    modules = [
        models.Transformer(str(hf), max_seq_length=64),
        models.Pooling(32, pooling_mode="cls"),
        models.Dense(32, 16, activation_function=torch.nn.Tanh()),
        models.Normalize(),
    ]
    model = SentenceTransformer(
        modules=modules, prompts={"query": "query: ", "document": "passage: "}
    )
    folder = target / "tiny-cls-dense"
    model.save(str(folder))
    shutil.rmtree(hf)
    return folder

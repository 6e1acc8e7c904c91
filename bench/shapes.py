"""Full-size folders of the 2026 model families, in sentence-transformers' format, built with
their real transformers classes and configurations and random weights (no hub here): speed does
not depend on the values, so they are fair benches. Built once into a folder and reused.

    python bench/shapes.py qwen3-0.6b bge-m3 static-mrl --into ~/.cache/embedserve-bench

The tokenizer is the packaged MiniLM's (30,522 ids): the model's own vocabulary size stays in
its configuration (the embedding table is full size), only the ids a text gets are fewer."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
QWEN3_QUERY = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)


def _save(folder: Path, hf: Path, pooling: str, max_length: int, prompts: dict[str, str]) -> Path:
    import sentence_transformers.models as st_models
    from sentence_transformers import SentenceTransformer

    from embedserve.models.source import resolve

    minilm = resolve(None).files
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, hf / name)
    transformer = st_models.Transformer(str(hf), max_seq_length=max_length)
    dimension = transformer.get_word_embedding_dimension()
    modules = [
        transformer,
        st_models.Pooling(dimension, pooling_mode=pooling),
        st_models.Normalize(),
    ]
    SentenceTransformer(modules=modules, prompts=prompts).save(str(folder))
    shutil.rmtree(hf)
    legacy_format(folder)
    return folder


def legacy_format(folder: Path) -> None:
    """The folder as every sentence-transformers reads it: module names such as
    `sentence_transformers.models.Transformer`, a sentence_bert_config.json without 6.x's keys
    and the pooling's dimension under 3.x's name (Infinity's venv has 3.x, which reads none of
    6.x's)."""
    path = folder / "modules.json"
    modules = json.loads(path.read_text())
    for module in modules:
        module["type"] = "sentence_transformers.models." + module["type"].rsplit(".", 1)[-1]
    path.write_text(json.dumps(modules, indent=2))
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        kept = {k: v for k, v in json.loads(config.read_text()).items() if k in _ST3_KEYS}
        config.write_text(json.dumps(kept, indent=2))
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():  # 6.x names the dimension `embedding_dimension`
        settings = json.loads(pooling.read_text())
        if "embedding_dimension" in settings:
            settings["word_embedding_dimension"] = settings.pop("embedding_dimension")
        pooling.write_text(json.dumps(settings, indent=2))


_ST3_KEYS = ("max_seq_length", "do_lower_case")


def qwen3_0_6b(folder: Path) -> Path:
    """Qwen3-Embedding-0.6B's configuration: 28 layers, hidden 1024, 16 heads, 8 KV heads,
    head dim 128, FFN 3072, vocabulary 151,669 (596M parameters); last-token pooling."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=32768, tie_word_embeddings=True,
        pad_token_id=0,
    )  # fmt: skip
    hf = folder.parent / f"{folder.name}-hf"
    Qwen3Model(config).save_pretrained(hf)
    return _save(folder, hf, "lasttoken", 8192, {"query": QWEN3_QUERY, "document": ""})


def bge_m3(folder: Path) -> Path:
    """bge-m3's configuration (XLM-RoBERTa large): 24 layers, hidden 1024, 16 heads, FFN 4096,
    vocabulary 250,002 (568M parameters); CLS pooling, 8192 positions."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=250002, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, max_position_embeddings=8194, type_vocab_size=1,
        pad_token_id=0,
    )  # fmt: skip
    hf = folder.parent / f"{folder.name}-hf"
    XLMRobertaModel(config).save_pretrained(hf)
    return _save(folder, hf, "cls", 8192, {})


def bge_reranker_v2_m3(folder: Path) -> Path:
    """bge-reranker-v2-m3's configuration: bge-m3's XLM-RoBERTa large under a one-label
    classification head (568M parameters), saved as a sentence-transformers CrossEncoder."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from embedserve.models.source import resolve

    torch.manual_seed(0)
    # two token types (the real one has one) for the MiniLM tokenizer's pair ids
    config = XLMRobertaConfig(
        vocab_size=250002, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, max_position_embeddings=8194, type_vocab_size=2,
        pad_token_id=0,
    )  # fmt: skip
    config.num_labels = 1
    hf = folder.parent / f"{folder.name}-hf"
    XLMRobertaForSequenceClassification(config).save_pretrained(hf)
    minilm = resolve(None).files
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, hf / name)
    CrossEncoder(str(hf), num_labels=1, max_length=8192).save(str(folder))
    shutil.rmtree(hf)
    return folder


def static_mrl(folder: Path) -> Path:
    """static-retrieval-mrl-en-v1's shape: 1024 dimensions over a 30,522-token vocabulary."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    from embedserve.models.source import resolve

    tokenizer = Tokenizer.from_file(str(resolve(None).files / "tokenizer.json"))
    table = np.random.default_rng(0).standard_normal((tokenizer.get_vocab_size(), 1024))
    static = StaticEmbedding(tokenizer, embedding_weights=table.astype(np.float32))
    SentenceTransformer(modules=[static]).save(str(folder))
    legacy_format(folder)
    return folder


SHAPES: dict[str, Callable[[Path], Path]] = {
    "qwen3-0.6b": qwen3_0_6b,
    "bge-m3": bge_m3,
    "static-mrl": static_mrl,
    "bge-reranker-v2-m3": bge_reranker_v2_m3,
}


def shape(name: str, into: Path) -> Path:
    """The folder of `name`, built the first time."""
    folder = into / name
    if not (folder / "modules.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        into.mkdir(parents=True, exist_ok=True)
        SHAPES[name](folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", choices=sorted(SHAPES))
    parser.add_argument("--into", type=Path, default=Path.home() / ".cache" / "embedserve-bench")
    args = parser.parse_args()
    for name in args.names:
        print(shape(name, args.into))


if __name__ == "__main__":
    main()

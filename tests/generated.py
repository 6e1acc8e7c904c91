"""Small sentence-transformers models the tests make, where a real one is not needed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def tiny_cls_dense_model(
    target: Path,
    tokenizer_from: Path,
    pooling: str = "cls",
    architecture: str = "bert",
    dense: bool = True,
) -> Path:
    """A 2-layer BERT (or XLM-RoBERTa) with CLS (or another) pooling, a Dense layer (32 -> 16,
    tanh; or none), normalization and its own prompts, saved as a sentence-transformers folder:
    random weights, real structure."""
    import sentence_transformers.models as st_models
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    kinds = {"bert": (BertConfig, BertModel), "xlm-roberta": (XLMRobertaConfig, XLMRobertaModel)}
    config_class, model_class = kinds[architecture]
    config = config_class(
        pad_token_id=0,  # the borrowed tokenizer's; XLM-R derives positions from it
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    hf = target / "hf"
    model_class(config).save_pretrained(hf)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_from / name, hf / name)
    modules = [
        st_models.Transformer(str(hf), max_seq_length=64),
        st_models.Pooling(32, pooling_mode=pooling),
        *([st_models.Dense(32, 16, activation_function=torch.nn.Tanh())] if dense else []),
        st_models.Normalize(),
    ]
    model = SentenceTransformer(
        modules=modules, prompts={"query": "query: ", "document": "passage: "}
    )
    folder = target / f"tiny-{architecture}-{pooling}{'-dense' if dense else ''}"
    model.save(str(folder))
    shutil.rmtree(hf)
    return folder


def hub_style_onnx_folder(target: Path, source: Path) -> Path:
    """What an ONNX repository on the hub holds: onnx/model.onnx (the transformer alone,
    outputting token vectors), the tokenizer and the pooling configuration; no PyTorch weights."""
    import torch
    from transformers import AutoModel

    folder = target / "minilm-onnx"
    (folder / "onnx").mkdir(parents=True)

    class TokenVectors(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = AutoModel.from_pretrained(str(source), attn_implementation="eager")

        def forward(
            self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
        ) -> torch.Tensor:
            out = self.transformer(input_ids=ids, attention_mask=mask, token_type_ids=types)
            return out.last_hidden_state  # type: ignore[no-any-return]

    sample = torch.randint(1000, 2000, (2, 8))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.inference_mode():
        torch.onnx.export(
            TokenVectors().eval(),
            (sample, torch.ones_like(sample), torch.zeros_like(sample)),
            str(folder / "onnx" / "model.onnx"),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
            opset_version=17,
            dynamo=False,
        )
    for name in (*TOKENIZER_FILES, "config.json", "modules.json", "sentence_bert_config.json"):
        shutil.copy(source / name, folder / name)
    shutil.copytree(source / "1_Pooling", folder / "1_Pooling")
    return folder


def tiny_instructor_model(target: Path, corpus: list[str]) -> Path:
    """hkunlp/instructor-*'s layout in small: a T5 encoder with a sentencepiece-style (Unigram,
    Metaspace) tokenizer trained here on `corpus`, mean pooling, a Dense layer and
    normalization, written in the sentence-transformers 2.x format that InstructorEmbedding
    reads (current sentence-transformers reads it too). Random weights, real structure."""
    import json

    import torch
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import Unigram
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast  # type: ignore[attr-defined]

    torch.manual_seed(0)
    specials = ["<pad>", "</s>", "<unk>"]  # T5's ids 0, 1, 2
    tokenizer = Tokenizer(Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=specials, unk_token="<unk>")
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    folder = target / "tiny-instructor"
    T5TokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
    ).save_pretrained(folder)
    config = T5Config(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",
    )
    T5EncoderModel(config).save_pretrained(folder)
    kinds = ["Transformer", "Pooling", "Dense", "Normalize"]
    paths = ["", "1_Pooling", "2_Dense", "3_Normalize"]
    files: dict[str, object] = {
        "modules.json": [
            {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
            for i, (kind, path) in enumerate(zip(kinds, paths, strict=True))
        ],
        "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": False},
        "1_Pooling/config.json": {
            "word_embedding_dimension": 32,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
        "2_Dense/config.json": {
            "in_features": 32,
            "out_features": 24,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        },
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2))
    (folder / "3_Normalize").mkdir()
    dense = torch.nn.Linear(32, 24, bias=False)
    torch.save({"linear.weight": dense.weight.detach()}, folder / "2_Dense" / "pytorch_model.bin")
    return folder


def minilm_cross_encoder(target: Path, minilm: Path) -> Path:
    """A cross-encoder in sentence-transformers' format, one label: the packaged MiniLM's
    encoder under a seeded classification head, saved by CrossEncoder.save. Real structure and
    tokenization (pairs, token types); its scores rank nothing in particular."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    hf = target / "hf-cross-encoder"
    classifier = BertForSequenceClassification.from_pretrained(str(minilm), num_labels=1)
    torch.nn.init.normal_(classifier.classifier.weight, std=0.5)  # scores spread over (0, 1)
    classifier.save_pretrained(hf)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, hf / name)
    folder = target / "minilm-cross-encoder"
    CrossEncoder(str(hf), num_labels=1).save(str(folder))
    shutil.rmtree(hf)
    return folder


def tiny_static_model(
    target: Path, tokenizer_from: Path, layout: str = "sentence-transformers"
) -> Path:
    """A static embedding model (64 dimensions over the borrowed tokenizer's vocabulary, random
    weights) in sentence-transformers' layout (0_StaticEmbedding/, as static-retrieval-mrl-en-v1
    ships) or model2vec's (potion: the table at the root as `embeddings`, with a token `mapping`
    and per-token `weights`, then Normalize)."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    folder = target / f"static-{layout}"
    if layout == "sentence-transformers":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_from / "tokenizer.json"))
        table = rng.standard_normal((tokenizer.get_vocab_size(), 64)).astype(np.float32)
        static = StaticEmbedding(tokenizer, embedding_weights=table)
        model = SentenceTransformer(modules=[static], prompts={"query": "query: "})
        model.save(str(folder))
        return folder
    folder.mkdir(parents=True)
    vocabulary = json.loads((tokenizer_from / "tokenizer.json").read_text())["model"]["vocab"]
    rows = 5000  # model2vec's vocabulary quantization: many tokens share a row
    save_file(
        {
            "embeddings": rng.standard_normal((rows, 64)).astype(np.float16),
            "mapping": rng.integers(0, rows, len(vocabulary)).astype(np.int64),
            "weights": rng.uniform(0.1, 2.0, len(vocabulary)).astype(np.float32),
        },
        str(folder / "model.safetensors"),
    )
    shutil.copy(tokenizer_from / "tokenizer.json", folder / "tokenizer.json")
    (folder / "config.json").write_text(json.dumps({"model_type": "model2vec", "normalize": True}))
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": ".",
            "type": "sentence_transformers.models.StaticEmbedding",
        },
        {
            "idx": 1,
            "name": "1",
            "path": "1_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Normalize").mkdir()
    return folder


def sharded(folder: Path, target: Path, shard_size: str = "300KB") -> Path:
    """A copy of a sentence-transformers folder whose transformer weights are split into
    shards with an index (model-0000x-of-0000y.safetensors), as hub models over ~5 GB ship."""
    from transformers import AutoModel

    copy = target / f"{folder.name}-sharded"
    shutil.copytree(folder, copy)
    model = AutoModel.from_pretrained(str(copy))
    (copy / "model.safetensors").unlink()
    model.save_pretrained(str(copy), max_shard_size=shard_size)
    assert (copy / "model.safetensors.index.json").is_file()
    return copy


_REMOTE_CONFIG = """from transformers import BertConfig


class ShiftedBertConfig(BertConfig):
    model_type = "shifted-bert"
"""
_REMOTE_MODEL = '''from transformers import BertModel

from .configuration_shifted import ShiftedBertConfig


class ShiftedBertModel(BertModel):
    """BERT whose token vectors are moved by a constant: the folder's own code at work."""

    config_class = ShiftedBertConfig

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.last_hidden_state = out.last_hidden_state + 0.5
        return out
'''


def remote_code_model(target: Path, tokenizer_from: Path) -> Path:
    """A folder whose model class is its own code (config.json's auto_map naming
    modeling_shifted.py), as jina-embeddings-v2/v3 and gte-multilingual ship: a tiny BERT whose
    forward the folder's code changes."""
    import json

    base = tiny_cls_dense_model(target, tokenizer_from, pooling="mean", dense=False)
    folder = target / "remote-code"
    shutil.copytree(base, folder)
    (folder / "configuration_shifted.py").write_text(_REMOTE_CONFIG)
    (folder / "modeling_shifted.py").write_text(_REMOTE_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config |= {
        "model_type": "shifted-bert",
        "architectures": ["ShiftedBertModel"],
        "auto_map": {
            "AutoConfig": "configuration_shifted.ShiftedBertConfig",
            "AutoModel": "modeling_shifted.ShiftedBertModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


QWEN3_QUERY = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)
GEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
}


def tiny_decoder_model(target: Path, tokenizer_from: Path, family: str = "qwen3") -> Path:
    """A decoder embedder in small, with its family's real transformers classes and module
    stack (random weights): "qwen3" as Qwen3-Embedding (causal attention, last-token pooling,
    its query prompt), "qwen2" and "mistral" the same with causal windows of 8 tokens (on one
    layer type, or on every layer), or "gemma3" as EmbeddingGemma (bidirectional Gemma3 whose
    sliding layers see 8 tokens, mean pooling, two Dense layers, its task prompts). The borrowed
    tokenizer frames texts with [CLS] ... [SEP]."""
    import sentence_transformers.models as st_models
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    hf = target / f"hf-{family}"
    dense: list[Any] = []
    shape: dict[str, Any] = {
        "vocab_size": 30522, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "pad_token_id": 0,
    }  # fmt: skip
    if family == "qwen3":
        from transformers import Qwen3Config, Qwen3Model

        qwen = Qwen3Config(**shape, num_hidden_layers=2, max_position_embeddings=1024)
        Qwen3Model(qwen).save_pretrained(hf)
        pooling, prompts = "lasttoken", {"query": QWEN3_QUERY, "document": ""}
    elif family == "qwen2":  # gte-Qwen2's kind: a sliding layer of 8 tokens beside a full one
        from transformers import Qwen2Config, Qwen2Model

        qwen2 = Qwen2Config(
            **shape, num_hidden_layers=2, max_position_embeddings=1024,
            use_sliding_window=True, sliding_window=8, max_window_layers=1,
        )  # fmt: skip
        Qwen2Model(qwen2).save_pretrained(hf)
        pooling, prompts = "lasttoken", {"query": QWEN3_QUERY, "document": ""}
    elif family == "mistral":  # e5-mistral's kind: every layer sees the 8 tokens before
        from transformers import MistralConfig, MistralModel

        mistral = MistralConfig(
            **shape, num_hidden_layers=2, max_position_embeddings=1024, sliding_window=8
        )
        MistralModel(mistral).save_pretrained(hf)
        pooling, prompts = "lasttoken", {"query": QWEN3_QUERY, "document": ""}
    else:
        from transformers import Gemma3TextConfig, Gemma3TextModel

        gemma = Gemma3TextConfig(
            **shape,
            num_hidden_layers=3,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            sliding_window=8,
            use_bidirectional_attention=True,
            max_position_embeddings=1024,
            query_pre_attn_scalar=16,
        )
        Gemma3TextModel(gemma).save_pretrained(hf)
        pooling, prompts = "mean", dict(GEMMA_PROMPTS)
        identity = torch.nn.Identity()
        dense = [
            st_models.Dense(64, 128, bias=False, activation_function=identity),
            st_models.Dense(128, 64, bias=False, activation_function=identity),
        ]
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_from / name, hf / name)
    modules = [
        st_models.Transformer(str(hf), max_seq_length=1024),
        st_models.Pooling(64, pooling_mode=pooling),
        *dense,
        st_models.Normalize(),
    ]
    folder = target / f"tiny-{family}"
    SentenceTransformer(modules=modules, prompts=prompts).save(str(folder))
    shutil.rmtree(hf)
    return folder

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

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

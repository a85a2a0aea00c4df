"""Tiny random BERT models for fast tests: same code paths as MiniLM, a fraction of the cost.

The tokenizer is the shipped MiniLM's (builtin://all-minilm-l6-v2), so nothing is fetched.
"""

from __future__ import annotations

from pathlib import Path

from recops.api.contracts import MODEL_MANIFEST, ModelManifest
from recops.uris import builtin_path

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 256}


def tiny_base_model(path: Path, seed: int = 0) -> Path:
    """A random BERT encoder directory (no head), usable as baseModel.uri."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(builtin_path("all-minilm-l6-v2")))
    config = BertConfig(vocab_size=tokenizer.vocab_size, **TINY)
    BertModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def tiny_served_model(path: Path, task: str = "click-through", version: str = "tiny-00000000", seed: int = 0) -> Path:
    """A complete model directory as `recops train` writes it (weights, tokenizer, recops.json last)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(builtin_path("all-minilm-l6-v2")))
    config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=1, **TINY)
    if task in ("click-through", "relevance"):
        BertForSequenceClassification(config).save_pretrained(str(path))
        architecture, transform = "cross-encoder", ("sigmoid" if task == "click-through" else "grade")
    else:
        BertModel(config).save_pretrained(str(path))
        architecture, transform = "bi-encoder", "cosine"
    tokenizer.save_pretrained(str(path))
    manifest = ModelManifest(
        task=task, modelVersion=version, architecture=architecture, scoreTransform=transform,
        maxGrade=3.0 if task == "relevance" else 1.0, maxLength=64, metrics={"auc": 0.5},
    )
    (path / MODEL_MANIFEST).write_text(manifest.to_json())
    return path


def tiny_onnx_model(path: Path, version: str = "tiny-onnx-0000", seed: int = 0) -> Path:
    """A complete click-through cross-encoder with its optimised form (float32 ONNX, named in recops.json), as
    `recops train` writes it for spec.optimize: the server scores it with ONNX Runtime, without torch."""
    from recops.api.contracts import Optimization
    from recops.optimized import ONNX_FILE
    from recops.train.optimize import export

    tiny_served_model(path, "click-through", version, seed)
    export(path, path / ONNX_FILE, "none")
    manifest = ModelManifest.model_validate_json((path / MODEL_MANIFEST).read_text())
    manifest.optimization = Optimization(quantization="none", file=ONNX_FILE, reason="served: a test model")
    (path / MODEL_MANIFEST).write_text(manifest.to_json())  # recops.json last: the model is complete
    return path

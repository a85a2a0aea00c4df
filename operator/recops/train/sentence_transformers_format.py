"""An `embedding` model's sentence-transformers configuration, so that `SentenceTransformer(path)` loads it
as it was trained and is served: the transformer at the model's root, mean pooling over the attention mask,
L2 normalisation (recops.train.trainer's mean_pool and F.normalize, recops.serve.model's _embed_texts), inputs
truncated to maxLength tokens, cosine similarity. Plain JSON files in sentence-transformers' own layout; the
package itself is not needed to write them."""

from __future__ import annotations

import json
from pathlib import Path

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def embedding_dimension(model_dir: Path) -> int:
    """The width of the transformer's hidden states, from its config.json."""
    config = json.loads((model_dir / "config.json").read_text())
    for key in ("hidden_size", "dim", "d_model"):
        if isinstance(config.get(key), int):
            return int(config[key])
    raise ValueError(f"{model_dir / 'config.json'} names no hidden size (hidden_size, dim or d_model)")


def write_sentence_transformers_config(model_dir: Path, max_length: int, versions: dict[str, str]) -> list[str]:
    """Write the files beside the weights; returns their names (relative to model_dir)."""
    files = {
        "modules.json": MODULES,
        "sentence_bert_config.json": {"max_seq_length": max_length, "do_lower_case": False},
        "1_Pooling/config.json": {
            "word_embedding_dimension": embedding_dimension(model_dir),
            "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False, "include_prompt": True,
        },
        "config_sentence_transformers.json": {
            "__version__": {k: v for k, v in versions.items() if k in ("transformers", "torch")},
            "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine",
        },
    }
    # Normalize has no configuration: sentence-transformers needs no 2_Normalize directory (and object stores
    # keep no empty ones).
    for name, content in files.items():
        path = model_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
    return list(files)

"""A cross-encoder's optimised form: an ONNX graph that ONNX Runtime runs on the CPU, without torch.

`recops train` writes it when a FineTuneJob sets spec.optimize (recops.train.optimize) and names it in recops.json
(`optimization.file`) only when it ranks the test split as the full-precision model does. The trainer's evaluation
and `recops serve` then score with it alike, so the gated model is the served one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ONNX_FILE = "onnx/model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class PairTokenizer:
    """The model's fast tokenizer (tokenizer.json) through the `tokenizers` library alone, called as the
    transformers tokenizer is (pairs, longest-first truncation, padding per chunk): transformers imports torch."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        pad_token = config.get("pad_token")
        self.pad_id = (self.tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None) or 0

    def __call__(self, contexts: Sequence[str], texts: Sequence[str], *, truncation: bool = True,
                 max_length: int = 512) -> dict[str, list[list[int]]]:
        if truncation:
            self.tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        encodings = self.tokenizer.encode_batch(list(zip(contexts, texts, strict=True)))
        return {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                "token_type_ids": [e.type_ids for e in encodings]}

    def pad(self, features: dict[str, list[list[int]]], return_tensors: str = "np") -> dict[str, np.ndarray]:
        """Right-padded to the longest row, as numpy arrays (the only form ONNX Runtime takes)."""
        import numpy as np

        longest = max((len(row) for row in features["input_ids"]), default=0)
        return {name: np.array([row + [self.pad_id if name == "input_ids" else 0] * (longest - len(row))
                                for row in rows], dtype=np.int64)
                for name, rows in features.items()}


class OnnxCrossEncoder:
    """An ONNX Runtime session over a cross-encoder graph: padded token arrays in, one raw score per row out."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def raw(self, padded: dict[str, Any]) -> np.ndarray:
        """The raw output per row: the logit (one output) or the positive class's log-odds (two)."""
        import numpy as np

        ids = np.asarray(padded["input_ids"], dtype=np.int64)
        feed = {name: np.asarray(padded[name], dtype=np.int64) if name in padded else np.zeros_like(ids)
                for name in self.inputs}
        logits = self.session.run(None, feed)[0].astype(np.float64)
        out: np.ndarray = logits[:, 0] if logits.shape[-1] == 1 else logits[:, -1] - logits[:, 0]
        return out

"""A cross-encoder's optimised form: an ONNX graph that ONNX Runtime runs on the CPU, without torch.

`recops train` writes it when a FineTuneJob sets spec.optimize (recops.train.optimize) and names it in recops.json
(`optimization.file`) only when it ranks the test split as the full-precision model does. The trainer's evaluation
and `recops serve` then score with it alike, so the gated model is the served one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import platform
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ONNX_FILE = "onnx/model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Graph rewrites ONNX Runtime would apply that slow these graphs down on the CPU: its SkipLayerNormalization kernel
# took about 7 times as long as the Add and LayerNormalization it replaces (MiniLM, 100 pairs of 16 tokens, one
# thread: the int8 graph ran in about 0.8 of the time without it). The arithmetic is the same either way.
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
# MXCSR's flush-to-zero and denormals-are-zero bits (x86-64).
FTZ_DAZ = 0x8040


class _FloatModes(ctypes.Structure):
    """glibc's femode_t on x86-64: the x87 control word and SSE's MXCSR."""

    _fields_ = [("control_word", ctypes.c_ushort), ("reserved", ctypes.c_ushort), ("mxcsr", ctypes.c_uint)]


@functools.cache
def _libm() -> Any:
    """glibc's libm where fegetmode/fesetmode can set MXCSR (Linux x86-64), else None."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        libm.fegetmode, libm.fesetmode  # noqa: B018 (glibc 2.25+; musl has neither)
    except (OSError, AttributeError):
        return None
    return libm


@contextlib.contextmanager
def float_modes_kept(set_bits: int = 0) -> Iterator[None]:
    """This thread's floating-point modes with `set_bits` added to MXCSR while the block runs, restored after
    (whatever the block changed: ONNX Runtime's first session sets or clears flush-to-zero on the thread that
    creates it, for the whole process)."""
    libm = _libm()
    saved = _FloatModes()
    if libm is None or libm.fegetmode(ctypes.byref(saved)) != 0:
        yield
        return
    if set_bits:
        libm.fesetmode(ctypes.byref(_FloatModes(saved.control_word, saved.reserved, saved.mxcsr | set_bits)))
    try:
        yield
    finally:
        libm.fesetmode(ctypes.byref(saved))


def denormals_flushed() -> contextlib.AbstractContextManager[None]:
    """Float denormals read and written as zero on this thread while the block runs.

    Masked attention makes them: the softmax of a padded position (the float minimum added) comes out below
    FLT_MIN, and x86 takes a slow microcode path for every such value; MiniLM's softmax took 6 times as long for it.
    A value under 1.2e-38 changes no score. ONNX Runtime's own setting reaches its pool threads, not the caller."""
    return float_modes_kept(FTZ_DAZ)


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


def open_session(path: Path, threads: int | None = None, optimized_copy: Path | None = None) -> Any:
    """An ONNX Runtime CPU session over the graph at `path`: all graph optimisations but DISABLED_OPTIMIZERS,
    `threads` intra-op threads (the CPUs the process may use, as torch's); `optimized_copy`: where ONNX Runtime
    writes the graph it will run, to inspect it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # Its intra-op pool threads (the calling thread: denormals_flushed).
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if optimized_copy is not None:
        options.optimized_model_filepath = str(optimized_copy)
    with float_modes_kept():
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(DISABLED_OPTIMIZERS))


class OnnxCrossEncoder:
    """An ONNX Runtime session over a cross-encoder graph: padded token arrays in, one raw score per row out."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.session = open_session(path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def raw(self, padded: dict[str, Any]) -> np.ndarray:
        """The raw output per row: the logit (one output) or the positive class's log-odds (two)."""
        import numpy as np

        ids = np.asarray(padded["input_ids"], dtype=np.int64)
        feed = {name: np.asarray(padded[name], dtype=np.int64) if name in padded else np.zeros_like(ids)
                for name in self.inputs}
        with denormals_flushed():
            logits = self.session.run(None, feed)[0].astype(np.float64)
        out: np.ndarray = logits[:, 0] if logits.shape[-1] == 1 else logits[:, -1] - logits[:, 0]
        return out

"""spec.optimize: the trained cross-encoder exported to ONNX, graph-optimised and quantised, then checked against the
full-precision model on the test split before it may be served (recops.optimized runs it).

Export: torch.onnx (TorchScript exporter, dynamic batch and length) of the model loaded with eager attention, left
to ONNX Runtime's own graph optimisations when a session loads it (recops.optimized.open_session). Not its offline
transformer optimiser: the Attention and SkipLayerNormalization kernels it fuses to were slower on the CPU than the
plain graph for shop-length pairs (docs/finetunejob.md, "Optimisation"). int8: dynamic quantisation of the weights,
per channel. The check: the served scores (after the fusion) of both models on the test split, their
Spearman correlation and top-10 overlap per group, and the latency of 100 pairs on one CPU thread. The optimised
model is served only when both agreements meet spec.optimize's bounds; otherwise, or when the export fails, the
full-precision model is, and Optimization.reason says why.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from recops.api.contracts import ModelManifest, Optimization
from recops.api.finetunejob import OptimizeSpec
from recops.optimized import INPUT_NAMES, ONNX_FILE, OnnxCrossEncoder

log = logging.getLogger("recops.train")

OPSET = 17
LATENCY_PAIRS = 100
LATENCY_RUNS = 3
TOP_K = 10


def export(directory: Path, target: Path, quantization: str) -> None:
    """Write the cross-encoder of `directory` to `target` as an ONNX graph (int8 weights for "int8")."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    # Eager attention: plain MatMul/Softmax nodes that every runtime optimises (SDPA exports a less common pattern).
    model = AutoModelForSequenceClassification.from_pretrained(str(directory), attn_implementation="eager").eval()
    sample = tokenizer(["a query", "another query"], ["an item", "another item"], return_tensors="pt", padding=True)
    names = [name for name in INPUT_NAMES if name in sample]
    with tempfile.TemporaryDirectory(prefix="recops-onnx-") as scratch:
        raw = Path(scratch) / "model.onnx"
        with torch.inference_mode():
            torch.onnx.export(
                model, tuple(sample[name] for name in names), str(raw), input_names=names, output_names=["logits"],
                dynamic_axes={**{name: {0: "batch", 1: "length"} for name in names}, "logits": {0: "batch"}},
                opset_version=OPSET, dynamo=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        if quantization == "int8":
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Signed weights: ONNX Runtime's u8s8 kernels use VNNI/AMX, where u8u8 ran at half the speed.
            quantize_dynamic(str(raw), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        else:
            shutil.copyfile(raw, target)


def agreement(reference: np.ndarray, other: np.ndarray, groups: np.ndarray) -> tuple[float | None, float | None]:
    """(mean Spearman correlation, mean top-10 overlap) of two scorings over the groups of a split; a group of one
    row or of constant scores has no correlation and is left out of the first."""
    import pandas as pd

    correlations, overlaps = [], []
    for group in pd.unique(groups):
        rows = np.flatnonzero(groups == group)
        a, b = reference[rows], other[rows]
        k = min(TOP_K, len(rows))
        overlaps.append(len(set(np.argsort(-a, kind="stable")[:k]) & set(np.argsort(-b, kind="stable")[:k])) / k)
        if len(rows) > 1 and np.ptp(a) > 0 and np.ptp(b) > 0:
            ranks_a, ranks_b = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
            correlations.append(float(np.corrcoef(ranks_a, ranks_b)[0, 1]))
    # Rounded: a mean of tenths is not exact in floating point (nine of ten shared must read 0.9, not 0.8999...).
    return (round(float(np.mean(correlations)), 6) if correlations else None,
            round(float(np.mean(overlaps)), 6) if overlaps else None)


def latency_ms(score_pairs: Any, contexts: list[str], texts: list[str]) -> float:
    """Median milliseconds to score LATENCY_PAIRS pairs (the test split's first, repeated if it has fewer)."""
    n = len(contexts)
    pairs = [(contexts[i % n], texts[i % n]) for i in range(LATENCY_PAIRS)]
    times = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        score_pairs([c for c, _ in pairs], [t for _, t in pairs])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def optimize(spec: OptimizeSpec, stage: Path, manifest: ModelManifest, data: Any, names: list[str]) -> Optimization:
    """Export, check and decide (see the module's docstring); the ONNX file stays in `stage` only when served."""
    import torch

    from recops.train.evaluate import cross_encoder_logits, evaluate, load_model, score

    optimization = Optimization(format=spec.format, quantization=spec.quantization)
    if len(data.test) == 0:
        return optimization.model_copy(update={"reason": "not served: the test split is empty, so nothing can show "
                                                         "that the optimised model ranks as the full one does"})
    target = stage / ONNX_FILE
    started = time.monotonic()
    try:
        export(stage, target, spec.quantization)
    except Exception as err:  # the full-precision model is still a good model
        log.warning("optimize: the ONNX export failed, serving the full-precision model: %s", err)
        shutil.rmtree(target.parent, ignore_errors=True)
        return optimization.model_copy(update={"reason": f"the ONNX export failed: {err}"[:1000]})
    log.info("optimize: exported %s (%s) in %.0f s, %.1f MB", ONNX_FILE, spec.quantization,
             time.monotonic() - started, target.stat().st_size / 1e6)
    full = load_model(stage, manifest)
    optimized = load_model(stage, manifest.model_copy(update={"optimization": optimization.model_copy(
        update={"file": ONNX_FILE})}))
    test = data.test
    full_scores, optimized_scores = score(full, test), score(optimized, test)
    spearman, overlap = agreement(full_scores, optimized_scores, test["group"].astype(str).to_numpy())
    contexts, texts = test["context"].astype(str).tolist(), test["product_text"].astype(str).tolist()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread = dataclasses.replace(optimized, onnx=OnnxCrossEncoder(target, threads=1))  # ONNX Runtime's own
    try:
        latency = {"fullPrecision": latency_ms(lambda c, t: cross_encoder_logits(full, c, t), contexts, texts),
                   "optimized": latency_ms(lambda c, t: cross_encoder_logits(one_thread, c, t), contexts, texts)}
    finally:
        torch.set_num_threads(threads)
    ok = spearman is not None and spearman >= spec.min_spearman and overlap is not None and \
        overlap >= spec.min_top10_overlap
    shown = f"Spearman {_fmt(spearman)} (at least {spec.min_spearman}), top-10 overlap {_fmt(overlap)} " \
            f"(at least {spec.min_top10_overlap}) with the full-precision model on the test split"
    reason = f"served: {shown}" if ok else f"optimised form rejected: {shown}"
    log.info("optimize: %s; %.0f ms vs %.0f ms per %d pairs on one thread", reason, latency["optimized"],
             latency["fullPrecision"], LATENCY_PAIRS)
    if not ok:
        shutil.rmtree(target.parent, ignore_errors=True)
    return optimization.model_copy(update={
        "file": ONNX_FILE if ok else None, "reason": reason, "spearman": spearman, "top10_overlap": overlap,
        "latency_ms_per100": latency, "metrics": evaluate(optimized, test, names, scores=optimized_scores).metrics,
        "full_precision_metrics": evaluate(full, test, names, scores=full_scores).metrics,
    })


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"

"""recops.optimized.open_session: the ONNX Runtime session every optimised cross-encoder runs in (trainer and server
alike) leaves out the graph rewrites that slowed these graphs down, without changing what they compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from recops.optimized import DISABLED_OPTIMIZERS, OnnxCrossEncoder, open_session

HIDDEN = 8


def residual_graph(path: Path) -> Path:
    """input_ids -> embedding -> a transformer's residual (MatMul, Add, Add, LayerNormalization) -> one logit per
    row: the pattern ONNX Runtime rewrites into SkipLayerNormalization."""
    rng = np.random.default_rng(0)
    weights = {"embedding": rng.normal(size=(50, HIDDEN)), "dense": rng.normal(size=(HIDDEN, HIDDEN)),
               "bias": rng.normal(size=HIDDEN), "gamma": np.ones(HIDDEN), "beta": np.zeros(HIDDEN),
               "head": rng.normal(size=(HIDDEN, 1))}
    nodes = [
        helper.make_node("Gather", ["embedding", "input_ids"], ["embedded"]),
        helper.make_node("MatMul", ["embedded", "dense"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["biased"]),
        helper.make_node("Add", ["biased", "embedded"], ["residual"]),
        helper.make_node("LayerNormalization", ["residual", "gamma", "beta"], ["normed"], axis=-1, epsilon=1e-12),
        helper.make_node("ReduceMean", ["normed"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_the_session_runs_add_and_layernorm_rather_than_skiplayernormalization(tmp_path: Path) -> None:
    graph = residual_graph(tmp_path / "model.onnx")
    ids = np.random.default_rng(1).integers(0, 50, size=(6, 5)).astype(np.int64)

    default_copy = tmp_path / "default.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(default_copy)
    fused = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    assert "SkipLayerNormalization" in op_types(default_copy)  # what ONNX Runtime does unless told otherwise

    ours_copy = tmp_path / "ours.onnx"
    session = open_session(graph, threads=1, optimized_copy=ours_copy)
    assert "SkipLayerNormFusion" in DISABLED_OPTIMIZERS
    assert "SkipLayerNormalization" not in op_types(ours_copy) and "LayerNormalization" in op_types(ours_copy)
    # The same arithmetic either way.
    np.testing.assert_allclose(session.run(None, {"input_ids": ids})[0], fused.run(None, {"input_ids": ids})[0],
                               rtol=1e-5, atol=1e-5)
    scores = OnnxCrossEncoder(graph, threads=1).raw({"input_ids": ids})
    np.testing.assert_allclose(scores, fused.run(None, {"input_ids": ids})[0][:, 0], rtol=1e-5, atol=1e-5)


def test_scores_flush_denormals_on_the_calling_thread_only_while_the_graph_runs(tmp_path: Path) -> None:
    # 2e-38 is a normal float; a quarter of it (5e-39) is a denormal, which masked attention's softmax makes.
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["ids", "small"], ["normal"]),
             helper.make_node("Mul", ["normal", "quarter"], ["logits"])]
    graph = helper.make_graph(
        nodes, "denormal", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.array(2e-38, np.float32), "small"),
         numpy_helper.from_array(np.array(0.25, np.float32), "quarter")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "denormal.onnx"))
    ids = np.array([[1], [2]], dtype=np.int64)

    encoder = OnnxCrossEncoder(tmp_path / "denormal.onnx", threads=1)
    assert np.float32(1e-38) * np.float32(0.5) > 0  # creating the session left this thread's modes alone
    unflushed = encoder.session.run(None, {"input_ids": ids})[0][:, 0]
    assert np.all(unflushed > 0) and np.all(unflushed < np.finfo(np.float32).tiny)
    np.testing.assert_array_equal(encoder.raw({"input_ids": ids}), [0.0, 0.0])
    assert np.float32(1e-38) * np.float32(0.5) > 0  # and running it restored them

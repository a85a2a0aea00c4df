"""`recops train` as a real process on the CPU, one run per task (tiny random BERT, small shop)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recops.api.contracts import ModelManifest, TerminationMessage
from tests.support.models import tiny_served_model
from tests.workloads.train_support import job_manifest, leftovers, model_dir, run_train, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(900)]

EXPECTED = {
    # task -> (architecture, scoreTransform, metrics that must be there, metrics that must not)
    "click-through": ("cross-encoder", "sigmoid", {"auc", "logloss", "rmse", "ndcg@10", "mrr", "recall@10", "loss"}, set()),
    "relevance": ("cross-encoder", "grade", {"auc", "rmse", "ndcg@10", "mrr", "recall@10", "loss"}, {"logloss"}),
    "embedding": ("bi-encoder", "cosine", {"auc", "ndcg@10", "mrr", "recall@10", "loss"}, {"logloss", "rmse"}),
    "domain-pretrain": ("masked-lm", "cosine", {"auc", "ndcg@10", "mrr", "recall@10", "loss"}, {"logloss", "rmse"}),
}


def load_as_the_server_does(directory: Path, manifest: ModelManifest) -> object:
    from transformers import AutoModel, AutoModelForSequenceClassification

    if manifest.architecture == "cross-encoder":
        return AutoModelForSequenceClassification.from_pretrained(str(directory))
    return AutoModel.from_pretrained(str(directory))


@pytest.mark.parametrize("task", list(EXPECTED))
def test_each_task_writes_a_complete_model_and_its_termination_message(
    task: str, tmp_path: Path, tiny_base: Path, shop_events: Path
) -> None:
    output = tmp_path / "models"
    config = write_config(tmp_path, job_manifest(task, tiny_base, shop_events, output))
    run = run_train(config, tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]

    model = model_dir(output)
    architecture, transform, present, absent = EXPECTED[task]
    manifest = ModelManifest.model_validate_json((model / "recops.json").read_text())
    assert (manifest.task, manifest.architecture, manifest.score_transform) == (task, architecture, transform)
    assert manifest.model_version == "ftj-01234567"  # <name>-<first 8 of uid>
    assert manifest.max_length == 48
    assert manifest.max_grade == (3.0 if task == "relevance" else 1.0)  # the default event grades top out at 3
    assert present <= set(manifest.metrics), manifest.metrics
    assert not absent & set(manifest.metrics)
    # Each baseline only with the metrics that mean something for it: a constant has no ranking.
    assert set(manifest.baseline) == ({"constant", "popularity", "bm25"} if task in ("click-through", "relevance")
                                      else {"popularity", "bm25"})
    assert set(manifest.baseline.get("constant", {})) <= {"logloss", "rmse", "loss"}
    assert not {"logloss", "rmse", "loss"} & {*manifest.baseline["bm25"], *manifest.baseline["popularity"]}
    assert set(manifest.ties) >= {"model", "popularity", "bm25"}
    assert (manifest.fusion is not None) == (task in ("click-through", "relevance"))
    assert manifest.gate is None and manifest.gate_passed is None
    assert manifest.data_fingerprint and len(manifest.data_fingerprint) == 64
    assert {"recops", "torch", "transformers"} <= set(manifest.versions)
    assert manifest.created_at

    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "training_curves.png"):
        assert (model / name).is_file(), name
    assert (model / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (model / "README.md").read_text()
    for section in ("## Intended use", "## Data", "### Cleaning", "## Evaluation", "popularity", "bm25", "## Limits",
                    "Tied scores"):
        assert section in card, section
    # Hugging Face metadata: what the Hub and its tools read, with the evaluated metrics in model-index.
    from huggingface_hub import ModelCard

    hf = ModelCard.load(model / "README.md").data
    assert hf.pipeline_tag == {"click-through": "text-ranking", "relevance": "text-ranking",
                               "embedding": "sentence-similarity", "domain-pretrain": "fill-mask"}[task]
    assert hf.library_name == ("sentence-transformers" if task == "embedding" else "transformers")
    assert {"recops", task} <= set(hf.tags)
    assert hf.base_model is None  # a local directory is no Hub id (the text names it)
    assert {r.metric_type: r.metric_value for r in hf.eval_results} == {
        k: round(v, 6) for k, v in manifest.metrics.items()}
    assert {r.dataset_split for r in hf.eval_results} == {"test"}
    assert ("does not beat" in card) != ("beats every baseline" in card)
    # Only the model is left: no checkpoints, no staging directory.
    assert leftovers(output) == ["shop", "shop/ftj-01234567",
                                 *sorted(f"shop/ftj-01234567/{p.relative_to(model)}" for p in model.rglob("*"))]

    message = TerminationMessage.model_validate_json(json.dumps(run.termination))
    assert message.error is None
    assert message.model_uri == str(model) and message.model_version == "ftj-01234567"
    assert message.metrics == manifest.metrics and message.baseline == manifest.baseline
    assert message.gate_passed is None and message.current_model is None

    loaded = load_as_the_server_does(model, manifest)
    assert loaded is not None
    assert "step " in run.stderr and " left " in run.stderr  # progress lines a person can follow


def test_click_through_learns_and_the_gate_beats_the_current_model(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    """A random current model vs one fine-tuned on the data: the gate demands beating it on auc."""
    current = tiny_served_model(tmp_path / "current", "click-through", seed=3)
    output = tmp_path / "models"
    manifest = job_manifest(
        "click-through", tiny_base, shop_events, output,
        training={"epochs": 3, "learningRate": 2e-3},
        evaluation={"metrics": ["auc", "ndcg@10"], "gate": {"metric": "auc", "minimum": 0.55, "beatCurrent": True}},
    )
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log", "--current-model", str(current))
    assert run.returncode == 0, run.stderr[-3000:]
    written = ModelManifest.model_validate_json((model_dir(output) / "recops.json").read_text())
    assert written.current_model is not None and set(written.current_model) == {"auc", "ndcg@10"}
    assert written.metrics["auc"] > written.current_model["auc"]
    assert written.gate == {"metric": "auc", "minimum": 0.55, "beatCurrent": True, "beatBaselines": []}
    assert written.gate_passed is True
    assert run.termination is not None and run.termination["gatePassed"] is True
    assert run.termination["currentModel"] == written.current_model
    assert "current model" in (model_dir(output) / "README.md").read_text()


def test_a_gate_on_baselines_agrees_with_the_figures_it_reports(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    from recops.api.gate import better

    output = tmp_path / "models"
    gate = {"metric": "ndcg@10", "beatBaselines": ["bm25", "popularity"]}
    manifest = job_manifest("click-through", tiny_base, shop_events, output,
                            evaluation={"metrics": ["auc", "logloss", "ndcg@10"], "gate": gate})
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]
    written = ModelManifest.model_validate_json((model_dir(output) / "recops.json").read_text())
    value = written.metrics["ndcg@10"]
    beats = all(better("ndcg@10", value, written.baseline[name]["ndcg@10"]) for name in ("bm25", "popularity"))
    assert written.gate_passed is beats and run.termination is not None and run.termination["gatePassed"] is beats
    card = (model_dir(output) / "README.md").read_text()
    assert ("does not beat" in card) or beats
    for name in ("bm25", "popularity"):
        assert f"vs {name} {written.baseline[name]['ndcg@10']:.4f}" in card  # the gate's reasons, figure by figure
    # How sure: the margin over each baseline is the difference of the figures above, with an interval round it.
    assert {m.reference for m in written.margins} == {"bm25", "popularity"}
    for margin in written.margins:
        assert (margin.metric, margin.judged_on) == ("ndcg@10", "the test split") and margin.low <= margin.high
        assert margin.margin == pytest.approx(value - written.baseline[margin.reference]["ndcg@10"], abs=1e-9)


def test_a_failed_gate_still_writes_the_model_with_gate_passed_false(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    output = tmp_path / "models"
    manifest = job_manifest("relevance", tiny_base, shop_events, output,
                            evaluation={"metrics": ["ndcg@10"], "gate": {"metric": "rmse", "maximum": 0.0}})
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]
    written = ModelManifest.model_validate_json((model_dir(output) / "recops.json").read_text())
    assert "rmse" in written.metrics  # the gate's metric is computed even when not listed
    assert written.gate_passed is False
    assert run.termination is not None and run.termination["gatePassed"] is False and run.termination["error"] is None
    # rmse: lower is better, so the margin over the constant is the constant's rmse minus the model's.
    (margin,) = written.margins
    assert (margin.reference, margin.metric) == ("constant", "rmse")
    assert margin.margin == pytest.approx(written.baseline["constant"]["rmse"] - written.metrics["rmse"], abs=1e-9)


def test_lora_adapters_are_merged_into_a_plain_model(tmp_path: Path, tiny_base: Path, shop_events: Path) -> None:
    from safetensors import safe_open

    output = tmp_path / "models"
    manifest = job_manifest("click-through", tiny_base, shop_events, output,
                            training={"lora": {"r": 4, "alpha": 8, "targetModules": ["query", "value"]}})
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]
    model = model_dir(output)
    assert not (model / "adapter_config.json").exists()
    with safe_open(str(model / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert not [k for k in keys if "lora" in k]
    assert "bert.encoder.layer.0.attention.self.query.weight" in keys and "classifier.weight" in keys
    assert "LoRA" in run.stderr
    manifest_written = ModelManifest.model_validate_json((model / "recops.json").read_text())
    assert "peft" in manifest_written.versions


def test_an_embedding_model_loads_in_sentence_transformers_as_it_was_trained_and_is_served(
    tmp_path: Path, tiny_base: Path, shop_events: Path
) -> None:
    import numpy as np
    from huggingface_hub import ModelCard
    from sentence_transformers import SentenceTransformer

    from recops.serve.model import Scorer, locate

    # A base model whose own card names its license: the fine-tuned model's card carries it on.
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n# tiny base\n")
    output = tmp_path / "models"
    run = run_train(write_config(tmp_path, job_manifest("embedding", base, shop_events, output)),
                    tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]
    model = model_dir(output)
    assert ModelCard.load(model / "README.md").data.license == "apache-2.0"

    texts = ["red running shoes", "user: likes hiking boots and waterproof jackets",
             "a very long product description " * 40]  # past maxLength (48 tokens): truncated the same way
    loaded = SentenceTransformer(str(model), device="cpu", local_files_only=True)
    assert loaded.max_seq_length == 48
    ours = loaded.encode(texts, convert_to_numpy=True)
    served = np.array(Scorer(locate(str(model)), device="cpu").embed([texts])[0])
    assert ours.shape == served.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalised
    np.testing.assert_allclose(ours, served, atol=1e-5)  # mean pooling over the mask, as trained and served
    similarity = loaded.similarity(ours, ours)
    np.testing.assert_allclose(np.asarray(similarity), served @ served.T, atol=1e-5)  # cosine

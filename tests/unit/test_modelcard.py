"""The model card's Hugging Face metadata, built from the evaluation (no training, no network)."""

from __future__ import annotations

from typing import Any

import pytest
from huggingface_hub import ModelCard

from recops.train.modelcard import CardInputs, render


def inputs(**changes: Any) -> CardInputs:
    fields: dict[str, Any] = dict(
        task="click-through", model_version="shop-ctr-1a2b3c4d", model_uri="s3://models/shop/shop-ctr-1a2b3c4d",
        base_model="builtin://all-minilm-l6-v2", architecture="cross-encoder", score_transform="sigmoid",
        max_length=128, max_grade=1.0, dataset_uri="s3://events/shop", split_sizes={"train": 800, "test": 100},
        data_fingerprint="f" * 64, cleaning_markdown="", training={"epochs": 1}, precision="fp32", world_size=1,
        train_seconds=10.0, total_steps=5, resumed_from=None, metrics={"auc": 0.8123456789, "ndcg@10": 0.5},
        baseline={"bm25": {"auc": 0.7}}, current_model=None, current_model_uri=None, skipped={}, ties={},
        debiased=None, fusion=None, optimization=None, gate=None, gate_passed=None, gate_reasons=[],
        versions={"recops": "0.1.0"}, created_at="2026-12-01T00:00:00Z", license="apache-2.0",
    )
    fields.update(changes)
    return CardInputs(**fields)


@pytest.mark.parametrize("task, pipeline_tag, library", [
    ("click-through", "text-ranking", "transformers"), ("relevance", "text-ranking", "transformers"),
    ("embedding", "sentence-similarity", "sentence-transformers"), ("domain-pretrain", "fill-mask", "transformers"),
])
def test_card_carries_hugging_face_metadata(task: str, pipeline_tag: str, library: str) -> None:
    text = render(inputs(task=task))
    card = ModelCard(text)
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # the builtin's Hub id
    assert (data.pipeline_tag, data.library_name, data.license) == (pipeline_tag, library, "apache-2.0")
    assert {"recops", "ranking", task} <= set(data.tags)
    assert data.model_name == "shop-ctr-1a2b3c4d"
    assert [(r.metric_type, r.metric_value, r.task_type, r.dataset_split) for r in data.eval_results] == [
        ("auc", 0.812346, pipeline_tag, "test"), ("ndcg@10", 0.5, pipeline_tag, "test")]
    assert "s3://events/shop" in data.eval_results[0].dataset_name
    assert text.startswith("---\n") and "\n# shop-ctr-1a2b3c4d\n" in text  # front matter, then the card
    assert ("SentenceTransformer(" in text) == (task == "embedding")


def test_unknown_base_and_license_and_unmeasured_metrics_are_left_out() -> None:
    data = ModelCard(render(inputs(base_model="pvc://models/bases/my-bert", license=None,
                                   metrics={"auc": float("nan"), "mrr": 0.3}))).data
    assert data.base_model is None and data.license is None
    assert [r.metric_type for r in data.eval_results] == ["mrr"]
    assert data.to_dict().get("model-index") is not None


def test_the_card_says_how_sure_each_margin_is() -> None:
    from recops.api.contracts import Margin

    slice_ = {"metric": "ndcg@10", "groups": 85, "judged_on": "the exploration slice"}
    card = render(inputs(margins=[Margin(reference="bm25", margin=0.031, low=0.004, high=0.058, **slice_),
                                  Margin(reference="current model", margin=0.003, low=-0.02, high=0.025, **slice_)]))
    assert "### How sure" in card and "the exploration slice, with a 95% interval from resampling its 85 groups" in card
    assert "| bm25 | +0.0310 | +0.0040 to +0.0580 | better |" in card
    assert "| current model | +0.0030 | -0.0200 to +0.0250 | no evidence either way |" in card
    assert "### How sure" not in render(inputs())

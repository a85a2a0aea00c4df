"""Scoring in-process on tiny models: chunked passes, two-class heads, incomplete models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from recops.api.contracts import MODEL_MANIFEST
from recops.serve.model import ModelLoadError, Scorer, locate
from tests.support.models import tiny_served_model

PAIRS = [("red shoes", "red running shoes with a very long description " * (i % 4 + 1)) for i in range(7)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_served_model(tmp_path_factory.mktemp("m") / "ctr", "click-through")


def test_chunked_length_sorted_passes_give_the_scores_of_one_pass(model_dir: Path) -> None:
    one_pass = Scorer(locate(str(model_dir)), max_pairs_per_pass=256).score([PAIRS])[0]
    chunked = Scorer(locate(str(model_dir)), max_pairs_per_pass=2).score([PAIRS[:3], PAIRS[3:]])
    assert [*chunked[0], *chunked[1]] == pytest.approx(one_pass, abs=1e-6)
    alone = [Scorer(locate(str(model_dir))).score([[pair]])[0][0] for pair in PAIRS[:2]]
    assert alone == pytest.approx(one_pass[:2], abs=1e-6)


def test_a_two_class_head_scores_the_positive_class(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    directory = tiny_served_model(tmp_path / "two", "click-through")
    two = AutoModelForSequenceClassification.from_pretrained(str(directory), num_labels=2,
                                                             ignore_mismatched_sizes=True)
    two.save_pretrained(str(directory))
    scorer = Scorer(locate(str(directory)))
    encoded = scorer.tokenizer([PAIRS[0][0]], [PAIRS[0][1]], return_tensors="pt", truncation=True, max_length=64)
    with torch.inference_mode():
        expected = torch.softmax(two.eval()(**encoded).logits, dim=-1)[0, 1].item()
    assert scorer.score([[PAIRS[0]]])[0][0] == pytest.approx(expected, abs=1e-5)


def test_int8_scores_stay_close_to_float32(model_dir: Path) -> None:
    float32 = Scorer(locate(str(model_dir))).score([PAIRS])[0]
    int8 = Scorer(locate(str(model_dir)), quantization="int8").score([PAIRS])[0]
    assert int8 == pytest.approx(float32, abs=0.05)
    assert all(0.0 <= s <= 1.0 for s in int8)


def test_incomplete_or_invalid_models_are_refused(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="incomplete"):
        locate(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="no such model directory"):
        locate(str(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MODEL_MANIFEST).write_text(json.dumps({"task": "click-through"}))
    with pytest.raises(ModelLoadError, match="not a valid model manifest"):
        locate(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="unknown batch kind"):
        Scorer(locate(str(model_dir))).run_batch("classify", [])


def test_without_torch_an_onnx_model_loads_and_a_torch_only_model_says_which_image_serves_it(
        model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.models import tiny_onnx_model

    onnx_dir = tiny_onnx_model(tmp_path / "onnx")
    # As in the torch-free server image (recops[serve]): importing torch or transformers fails.
    for module in ("torch", "transformers"):
        monkeypatch.setitem(sys.modules, module, None)
    scorer = Scorer(locate(str(onnx_dir)))
    assert scorer.format == "onnx-none" and len(scorer.score([PAIRS[:3]])[0]) == 3
    with pytest.raises(ModelLoadError, match=r"no optimised \(ONNX\) form, and this server has no torch .*server-torch"):
        Scorer(locate(str(model_dir)))
    with pytest.raises(ModelLoadError, match=r"--runtime torch, and this server has no torch"):
        Scorer(locate(str(onnx_dir)), runtime="torch")

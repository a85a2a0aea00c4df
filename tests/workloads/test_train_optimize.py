"""spec.optimize: `recops train` exports the cross-encoder to ONNX, checks it against the full-precision model on
the test split, and names it in recops.json only when it ranks as that one does; the trainer's evaluation and
`recops serve` then score with ONNX Runtime alike, so the gated metrics are the served model's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recops.fusion import FEATURES
from tests.workloads.train_support import job_manifest, model_dir, run_train, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(900)]


def test_an_optimised_model_is_checked_served_and_gated_as_evaluated(tmp_path: Path, tiny_base: Path,
                                                                     shop_events: Path) -> None:
    from recops.api.contracts import ModelManifest
    from recops.api.finetunejob import DatasetSpec, OptimizeSpec
    from recops.optimized import ONNX_FILE
    from recops.serve.model import Scorer, locate
    from recops.train.data import prepare
    from recops.train.evaluate import load_model, score

    output = tmp_path / "models"
    manifest = job_manifest("click-through", tiny_base, shop_events, output,
                            evaluation={"metrics": ["auc", "ndcg@10"], "gate": {"metric": "auc", "minimum": 0.0}})
    manifest["spec"]["optimize"] = {"quantization": "none"}
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]

    directory = model_dir(output)
    written = ModelManifest.model_validate_json((directory / "recops.json").read_text())
    optimization = written.optimization
    assert optimization is not None and optimization.file == ONNX_FILE and (directory / ONNX_FILE).is_file()
    assert optimization.spearman is not None and optimization.spearman > 0.999  # float32 ONNX: the same model
    assert optimization.reason.startswith("served: Spearman")
    assert set(optimization.latency_ms_per100) == {"fullPrecision", "optimized"}
    # The gated figures are the served (ONNX) model's; the full-precision ones are beside them.
    assert written.metrics == optimization.metrics and optimization.full_precision_metrics
    assert run.termination is not None and run.termination["optimization"]["file"] == ONNX_FILE
    assert run.termination["metrics"] == written.metrics
    card = (directory / "README.md").read_text()
    assert "## Optimisation" in card and "onnx" in card

    test = prepare(DatasetSpec.model_validate({"uri": str(shop_events)}), "click-through").test
    candidates = list(zip(test["context"], test["product_text"], test["product_id"], strict=True))
    onnx_scorer = Scorer(locate(str(directory)), device="cpu")
    assert onnx_scorer.format == "onnx-none" and onnx_scorer.onnx is not None
    served = np.array(onnx_scorer.score([candidates])[0])
    np.testing.assert_allclose(served, score(load_model(directory), test), atol=1e-6)  # as evaluated
    full = np.array(Scorer(locate(str(directory)), device="cpu", runtime="torch").score([candidates])[0])
    # Float32 ONNX is the same model: the export keeps torch's attention and its masking (the transformer
    # optimiser's fused Attention masked with -10000 and moved rows of a padded batch by ~1e-3).
    # Compared as the models' raw outputs: the fusion multiplies them by its model coefficient, which for this
    # random tiny model (raw outputs ~1e-4 apart) is ~1e4, so fused probabilities would judge the fusion instead.
    fusion = onnx_scorer.fusion
    assert fusion is not None
    coefficient = abs(fusion.weights[FEATURES.index("model")] / fusion.scales[FEATURES.index("model")])
    raw_difference = np.abs(np.log(served / (1 - served)) - np.log(full / (1 - full))) / coefficient
    assert raw_difference.max() < 1e-6 and np.median(raw_difference) < 1e-7
    import onnx

    ops = {node.op_type for node in onnx.load(str(directory / ONNX_FILE), load_external_data=False).graph.node}
    assert "Softmax" in ops and not ops & {"Attention", "SkipLayerNormalization"}
    assert len(set(np.round(served, 6))) > 1
    # Serving the optimised form never imports torch (what lets a server image leave it out).
    probe = subprocess.run([sys.executable, "-c", (
        "import sys; from recops.serve.model import Scorer, locate; "
        f"s = Scorer(locate({str(directory)!r}), device='cpu'); s.score([[('red shoes', 'a red shoe', 'p1')]]); "
        "print(s.format, 'torch' in sys.modules)")], capture_output=True, text=True, timeout=300)
    assert probe.stdout.split()[-2:] == ["onnx-none", "False"], probe.stdout + probe.stderr

    # int8 of this tiny random-weight BERT moves its ranking far (measured: Spearman ~0.04): below the bounds, the
    # job keeps the full-precision model, serves and gates that one, and says why.
    manifest["spec"]["optimize"] = {"quantization": "int8"}
    manifest["metadata"]["uid"] = "89abcdef01234567-uid"
    run = run_train(write_config(tmp_path, manifest, "int8.yaml"), tmp_path / "termination-int8")
    assert run.returncode == 0, run.stderr[-3000:]
    directory = model_dir(output, version="ftj-89abcdef")
    written = ModelManifest.model_validate_json((directory / "recops.json").read_text())
    optimization = written.optimization
    assert optimization is not None and optimization.file is None and not (directory / "onnx").exists()
    assert optimization.spearman is not None and optimization.spearman < OptimizeSpec().min_spearman
    assert optimization.reason.startswith("optimised form rejected: Spearman")
    assert written.metrics == optimization.full_precision_metrics != optimization.metrics
    assert Scorer(locate(str(directory)), device="cpu").format == "torch"
    assert "Served: **the full-precision model**" in (directory / "README.md").read_text()

    # Bounds that let this int8 form through, and a gate the full-precision model just passes: the optimised
    # model fails it (Spearman ~0.04 moves its auc), so the job serves and gates the full-precision one.
    full_auc = written.metrics["auc"]
    manifest["spec"]["optimize"] = {"quantization": "int8", "minSpearman": 0.0, "minTop10Overlap": 0.0}
    manifest["spec"]["evaluation"] = {"metrics": ["auc", "ndcg@10"], "gate": {"metric": "auc", "minimum": full_auc - 1e-9}}
    manifest["metadata"]["uid"] = "fedcba9876543210-uid"
    run = run_train(write_config(tmp_path, manifest, "gated.yaml"), tmp_path / "termination-gated")
    assert run.returncode == 0, run.stderr[-3000:]
    written = ModelManifest.model_validate_json((model_dir(output, version="ftj-fedcba98") / "recops.json").read_text())
    optimization = written.optimization
    assert optimization is not None and optimization.metrics["auc"] < full_auc  # the int8 form fails the gate
    assert optimization.file is None and written.gate_passed is True and written.metrics["auc"] == full_auc
    assert optimization.reason.startswith("optimised form rejected: it fails the gate where")


def test_agreement_is_per_group_spearman_and_top10_overlap() -> None:
    from recops.train.optimize import agreement

    groups = np.array(["a"] * 12 + ["b"] * 3 + ["c"])
    reference = np.concatenate([np.arange(12.0), [1.0, 2.0, 3.0], [5.0]])
    same = reference * 2 + 1  # a monotone transform: the same ranking
    assert agreement(reference, same, groups) == (1.0, 1.0)
    swapped = same.copy()
    swapped[[0, 11]] = swapped[[11, 0]]  # group a: its best and worst change places
    spearman, overlap = agreement(reference, swapped, groups)
    # a: 1 - 6 * (11² + 11²) / (12 * 143) = 0.1538...; b: 1; c (one row) has no correlation.
    assert spearman == pytest.approx((1 - 6 * 242 / (12 * 143) + 1.0) / 2)
    assert overlap == pytest.approx((9 / 10 + 1 + 1) / 3)  # a's top 10 loses its 11 and gains its 0
    # A mean of tenths is exact where the bound compares it: overlaps 0.8, 1, 1, 0.8 average 0.9, where numpy's
    # mean reads 0.8999999999999999 (a demo run's int8 model was refused for that).
    four = np.repeat(np.arange(4), 12)
    reference = np.tile(np.arange(12.0), 4)
    moved = reference.copy()
    for group in (0, 3):  # the two worst of these groups become their best: their top 10 keeps 8
        moved[group * 12:group * 12 + 2] = 30.0
    assert np.mean([0.8, 1.0, 1.0, 0.8]) < 0.9 and agreement(reference, moved, four)[1] == 0.9

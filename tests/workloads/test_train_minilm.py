"""The shipped MiniLM, fine-tuned by `recops train` on a small synthetic shop, ranks the held-out
queries better than both baselines (popularity and BM25).

The task is `embedding` (MiniLM is a bi-encoder; in-batch and hard negatives), which fits in a
couple of CPU minutes; benchmarks/train_quality.py reports the cross-encoder tasks too. The
ranking metrics judge it: they order each held-out query's candidates, which is what a ranker
is for (auc pools scores across queries, and cosines are not calibrated across queries).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recops.api.contracts import ModelManifest
from tests.workloads.train_support import job_manifest, model_dir, run_train, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(900)]


def test_fine_tuned_minilm_beats_popularity_and_bm25_on_held_out_queries(tmp_path: Path) -> None:
    from recops.shop.synth import generate_shop, write_shop

    write_shop(generate_shop(users=80, products=200, sessions=300, queries=60, seed=1), str(tmp_path / "shop"), "jsonl")
    output = tmp_path / "models"
    manifest = job_manifest(
        "embedding", Path("unused"), tmp_path / "shop" / "events.jsonl", output,
        training={"epochs": 2, "batchSize": 16, "maxLength": 48, "learningRate": 1e-4},
        dataset={"split": {"by": "query", "validation": 0.1, "test": 0.3}},
        evaluation={"metrics": ["ndcg@10", "mrr", "recall@10", "auc"]},
    )
    manifest["spec"]["baseModel"] = {"uri": "builtin://all-minilm-l6-v2"}
    run = run_train(write_config(tmp_path, manifest), tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]

    written = ModelManifest.model_validate_json((model_dir(output) / "recops.json").read_text())
    assert written.base_model == "builtin://all-minilm-l6-v2"
    print({"model": written.metrics, **written.baseline})  # the figures, for whoever reads the log
    for metric in ("ndcg@10", "mrr"):
        for baseline in ("popularity", "bm25"):
            assert written.metrics[metric] > written.baseline[baseline][metric], (metric, baseline, written.metrics,
                                                                                written.baseline)

"""What `recops train` writes is what `recops serve` serves: the server's loader accepts the model,
and scores the test pairs exactly as the trainer's evaluation scored them (so the metrics in
recops.json describe the served model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recops.api.contracts import unit_score
from tests.workloads.train_support import job_manifest, model_dir, run_train, write_config

pytestmark = [pytest.mark.workload, pytest.mark.timeout(900)]


# "users": the same events without their queries, so each group is one user's rows (recommendation): the
# click-through fusion then fits the item neighbourhood too (recops.train.evaluate.groups_are_users).
@pytest.mark.parametrize(("task", "grouping"), [("click-through", "queries"), ("click-through", "users"),
                                                ("relevance", "queries"), ("domain-pretrain", "queries")])
def test_the_server_scores_the_trained_model_as_the_evaluation_did(task: str, grouping: str, tmp_path: Path,
                                                                    tiny_base: Path, shop_events: Path) -> None:
    from recops.api.finetunejob import DatasetSpec
    from recops.serve.model import Scorer, locate
    from recops.serve.validation import Limits, parse_rank
    from recops.train.data import prepare
    from recops.train.evaluate import load_model, score

    output = tmp_path / "models"
    dataset = {"fields": {"query": None}} if grouping == "users" else {}
    run = run_train(write_config(tmp_path, job_manifest(task, tiny_base, shop_events, output, dataset=dataset)),
                    tmp_path / "termination-log")
    assert run.returncode == 0, run.stderr[-3000:]

    location = locate(str(model_dir(output)))
    scorer = Scorer(location, device="cpu")
    test = prepare(DatasetSpec.model_validate({"uri": str(shop_events), **dataset}), task).test.head(40)
    assert any(test["ratings"].map(len) > 0)  # the users' earlier events reach the fusion's user offset
    # Each row as a request would carry it: the user's earlier events in `user.ratings`, read by the server's parser.
    requests = []
    for row in test.itertuples():
        body = {"user": {"ratings": [{"id": item, "grade": grade} for item, grade in row.ratings]},
                "candidates": [{"id": row.product_id, "text": row.product_text}]}
        ratings = parse_rank(body, Limits(max_candidates=1, max_text_length=10_000)).user_ratings
        requests.append([(row.context, row.product_text, row.product_id, ratings)])
    served = np.array([scores[0] for scores in scorer.score(requests)])
    evaluated = score(load_model(model_dir(output)), test)
    manifest = location.manifest
    if task in ("click-through", "relevance"):  # a cross-encoder is served fused (BM25, popularity, ...), as evaluated
        assert manifest.fusion is not None and scorer.fusion is not None
    if task == "relevance" or grouping == "users":  # with the item neighbourhood (neighbours.npz), as evaluated
        assert scorer.fusion is not None and scorer.fusion.neighbours is not None
        neighbour = scorer.fusion.neighbour_feature(test["product_id"].tolist(), test["ratings"].tolist(), len(test))
        assert any(value != 0.0 for value in neighbour)  # the comparison covers that feature too
    if task == "click-through":  # the lexical model (recops.lexical) is served where the trainer kept it
        assert scorer.fusion is not None
        assert (scorer.fusion.lexical is not None) == (model_dir(output) / "lexical.json").exists()
    # The evaluation's scores: a probability already (sigmoid), a grade / maxGrade, or a cosine.
    as_served = (evaluated if manifest.score_transform == "sigmoid" else
                 [unit_score(float(v) * (manifest.max_grade if manifest.score_transform == "grade" else 1.0),
                             manifest.score_transform, manifest.max_grade) for v in evaluated])
    np.testing.assert_allclose(served, as_served, atol=1e-5)
    assert len(set(np.round(served, 6))) > 1  # not a constant: the comparison means something

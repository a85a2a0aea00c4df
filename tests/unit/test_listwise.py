"""The listwise click-through recipe: groups regrouped into lists, flattened back into one batch, and the
ListNet loss against a direct computation."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from recops.train.trainer import MAX_LIST_ROWS, _ListCollator, listwise_loss, listwise_rows  # noqa: E402


def test_rows_are_regrouped_into_lists_of_one_group_each() -> None:
    groups = ["q1", "q2", "q1", "q3", "q2", "q1"]
    rows = {"input_ids": [[i] for i in range(6)], "labels": [1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            "length": [3, 4, 5, 6, 7, 8]}
    lists = listwise_rows(rows, groups, seed=0)
    members = sorted(sorted(ids[0] for ids in example) for example in lists["input_ids"])
    assert members == [[0, 2, 5], [1, 4], [3]]  # every row once, in the list of its group
    for ids, labels, length in zip(lists["input_ids"], lists["labels"], lists["length"], strict=True):
        assert labels == [rows["labels"][i[0]] for i in ids]  # labels travel with their rows
        assert length == max(rows["length"][i[0]] for i in ids) * len(ids)


def test_a_large_group_is_cut_into_lists_of_at_most_max_rows() -> None:
    size = MAX_LIST_ROWS * 2 + 5
    rows = {"input_ids": [[i] for i in range(size)], "labels": [0.0] * size, "length": [1] * size}
    lists = listwise_rows(rows, ["user"] * size, seed=3)
    assert sorted(len(x) for x in lists["input_ids"]) == [5, MAX_LIST_ROWS, MAX_LIST_ROWS]
    assert sorted(i[0] for x in lists["input_ids"] for i in x) == list(range(size))


def test_the_collator_flattens_lists_and_says_which_rows_belong_together() -> None:
    class Pad:  # the collator only calls tokenizer.pad: pad input_ids with 0 to the longest row
        def pad(self, rows, padding, pad_to_multiple_of, return_tensors):  # type: ignore[no-untyped-def]
            longest = max(len(r["input_ids"]) for r in rows)
            return {"input_ids": torch.tensor([r["input_ids"] + [0] * (longest - len(r["input_ids"])) for r in rows])}

    features = [{"input_ids": [[5, 6], [7]], "labels": [1.0, 0.0], "length": 4},
                {"input_ids": [[8, 9, 10]], "labels": [0.0], "length": 3}]
    batch = _ListCollator(Pad(), None)(features)  # type: ignore[arg-type]
    assert batch["input_ids"].tolist() == [[5, 6, 0], [7, 0, 0], [8, 9, 10]]
    assert batch["labels"].tolist() == [1.0, 0.0, 0.0]
    assert batch["list_index"].tolist() == [0, 0, 1]


def test_listnet_loss_matches_a_direct_computation() -> None:
    logits = torch.tensor([2.0, 0.5, -1.0, 0.3, 0.1, 1.2])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    list_index = torch.tensor([0, 0, 0, 1, 1, 2])  # list 1 has no positive, list 2 one row: neither counts

    def expected() -> float:
        z = [2.0, 0.5, -1.0]
        log_norm = math.log(sum(math.exp(v) for v in z))
        return -(0.5 * (2.0 - log_norm) + 0.5 * (-1.0 - log_norm))

    assert listwise_loss(logits, labels, list_index).item() == pytest.approx(expected(), rel=1e-6)
    nothing = listwise_loss(logits[3:5], labels[3:5], list_index[3:5])
    assert nothing.item() == 0.0 and nothing.requires_grad is False  # no list to learn from: no signal


def test_repeated_impressions_become_one_row_weighted_by_their_count() -> None:
    pd = pytest.importorskip("pandas")
    from recops.train.trainer import WEIGHTS, impression_pairs

    frame = pd.DataFrame({"group": ["q1", "q1", "q1", "q2", "q1"], "context": ["q1", "q1", "q1", "q2", "q1"],
                          "product_text": ["a", "b", "a", "a", "a"], "label": [1.0, 0.0, 0.0, 1.0, 1.0]})
    pairs = impression_pairs(frame).set_index(["group", "product_text"])
    assert pairs["label"].to_dict() == {("q1", "a"): pytest.approx(2 / 3), ("q1", "b"): 0.0, ("q2", "a"): 1.0}
    assert pairs["impressions"].to_dict() == {("q1", "a"): 3, ("q1", "b"): 1, ("q2", "a"): 1}
    assert pairs[WEIGHTS].mean() == pytest.approx(1.0)  # relative weights: the loss keeps its scale


def test_inverse_propensity_weighs_each_impression_by_one_over_its_logged_propensity() -> None:
    pd = pytest.importorskip("pandas")
    from recops.train.trainer import MAX_INVERSE_PROPENSITY, WEIGHTS, impression_pairs

    # q1/a: shown by the model (p 0.5, not clicked) and at random (p 0.1, clicked); q1/b: a display so unlikely
    # that its weight is clipped; q2/a: no propensity logged (weighs 1).
    frame = pd.DataFrame({"group": ["q1", "q1", "q1", "q2"], "context": ["q1", "q1", "q1", "q2"],
                          "product_text": ["a", "a", "b", "a"], "label": [0.0, 1.0, 1.0, 0.0],
                          "propensity": [0.5, 0.1, 0.001, float("nan")]})
    weighted = impression_pairs(frame, inverse_propensity=True).set_index(["group", "product_text"])
    assert weighted["label"].to_dict() == {("q1", "a"): pytest.approx(10 / 12), ("q1", "b"): 1.0, ("q2", "a"): 0.0}
    raw = {("q1", "a"): 12.0, ("q1", "b"): MAX_INVERSE_PROPENSITY, ("q2", "a"): 1.0}
    mean = sum(raw.values()) / 3
    assert weighted[WEIGHTS].to_dict() == {key: pytest.approx(value / mean) for key, value in raw.items()}
    # Off (the default), or data without the column: every impression weighs 1.
    plain = impression_pairs(frame).set_index(["group", "product_text"])
    assert plain["label"][("q1", "a")] == pytest.approx(0.5) and plain[WEIGHTS][("q1", "a")] == pytest.approx(2 / (4 / 3))
    without = impression_pairs(frame.drop(columns="propensity"), inverse_propensity=True)
    assert without[WEIGHTS].tolist() == pytest.approx(plain[WEIGHTS].tolist())


def test_weighted_losses_equal_the_losses_over_the_impressions() -> None:
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    counts = torch.tensor([3, 1, 4, 2, 1, 5])
    labels_by_impression = [torch.randint(0, 2, (int(n),), generator=generator).float() for n in counts]
    labels_by_impression[1] = torch.tensor([1.0])  # at least one positive
    logits = torch.randn(len(counts), generator=generator)
    # Every impression as its own row (all of one list) ...
    expanded_logits = torch.cat([logits[i].repeat(int(n)) for i, n in enumerate(counts)])
    expanded_labels = torch.cat(labels_by_impression)
    # ... and one row per pair: the mean label, weighted by the count over the mean count.
    mean_labels = torch.stack([labels.mean() for labels in labels_by_impression])
    weights = counts.float() / counts.float().mean()

    bce_impressions = F.binary_cross_entropy_with_logits(expanded_logits, expanded_labels)
    bce_pairs = F.binary_cross_entropy_with_logits(logits, mean_labels, weight=weights)
    assert bce_pairs.item() == pytest.approx(bce_impressions.item(), rel=1e-5)

    # The softmax's normaliser counts each impression: the same loss up to a constant (log of the mean
    # count, as the weights are relative), so the same gradient.
    pair_logits = logits.clone().requires_grad_(True)
    listwise_pairs = listwise_loss(pair_logits, mean_labels, torch.zeros(len(counts), dtype=torch.long), weights)
    listwise_pairs.backward()
    impression_logits = logits.clone().requires_grad_(True)
    expanded = torch.cat([impression_logits[i].repeat(int(n)) for i, n in enumerate(counts)])
    listwise_impressions = listwise_loss(expanded, expanded_labels, torch.zeros(len(expanded_labels), dtype=torch.long))
    listwise_impressions.backward()
    assert listwise_pairs.item() == pytest.approx(listwise_impressions.item() - math.log(counts.float().mean()), rel=1e-5)
    assert pair_logits.grad is not None and impression_logits.grad is not None
    assert torch.allclose(pair_logits.grad, impression_logits.grad, atol=1e-6)


def test_epochs_count_passes_over_the_impressions() -> None:
    from recops.train.trainer import training_passes

    # 2 epochs over 10,810 impressions merged into 2,762 pairs: as many optimiser steps as 2 passes over the impressions.
    assert training_passes(2.0, 10_810, 2_762) == pytest.approx(2.0 * 10_810 / 2_762)
    assert training_passes(2.0, 500, 500) == 2.0  # nothing repeated: unchanged


def test_the_best_epoch_is_judged_on_the_gate_metric_when_it_ranks() -> None:
    from recops.api.finetunejob import FineTuneJobSpec
    from recops.train.trainer import SELECTION_METRIC, selection_metric

    def spec(gate: dict[str, object] | None) -> FineTuneJobSpec:
        return FineTuneJobSpec.model_validate({
            "task": "click-through", "baseModel": {"uri": "builtin://all-minilm-l6-v2"}, "dataset": {"uri": "/d"},
            "output": {"uri": "/o"}, **({"evaluation": {"gate": gate}} if gate else {})})

    assert selection_metric(spec({"metric": "mrr", "beatBaselines": ["bm25"]})) == "mrr"
    assert selection_metric(spec({"metric": "logloss", "maximum": 0.5})) == SELECTION_METRIC  # not a ranking metric
    assert selection_metric(spec(None)) == SELECTION_METRIC


def test_best_epoch_keeps_the_best_weights_and_stops_after_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from recops.train import evaluate
    from recops.train.trainer import SELECTION_PATIENCE, BestEpoch

    model = torch.nn.Linear(1, 1)
    figures = iter([0.30, 0.35, 0.34, 0.33, 0.32, 0.99])
    monkeypatch.setattr(evaluate, "fused_validation_metric", lambda *args: next(figures))
    callback = BestEpoch(data=None, metric="ndcg@10", tokenizer=None, max_length=8)  # type: ignore[arg-type]
    control = SimpleNamespace(should_training_stop=False)
    for epoch in range(1, 2 + SELECTION_PATIENCE + 1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        callback.on_epoch_end(None, SimpleNamespace(epoch=float(epoch), global_step=epoch, max_steps=100), control, model=model)
        assert control.should_training_stop == (epoch == 2 + SELECTION_PATIENCE)  # 3 epochs without beating 0.35
    assert callback.best == (2.0, 0.35)
    callback.restore(model)
    assert model.weight.item() == 2.0  # the second epoch's weights

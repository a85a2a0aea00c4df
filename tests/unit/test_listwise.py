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

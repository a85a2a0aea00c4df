"""The fusion's own features on ml-100k ratings, without a fine-tuned model: what each adds to the RMSE.

The numpy-only check that chose the item neighbourhood (recops.fusion.ItemNeighbours) and its constants before a
`recops train` run: the same data and split as `train_quality.py --jobs ml-100k:relevance` (5,000 newest ratings,
split by user), the fusion fitted on the validation split with the model's output held at 0, and the test split's
RMSE of the constant (the statistics rows' mean grade), the fusion without the neighbourhood (BM25, popularity,
user offset) and with it. Tune on split seeds other than 42, which the held-out table reports.

    .venv/bin/python benchmarks/fusion_features.py --seeds 3,7,11
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rmse_of(fusion: Any, frame: Any) -> float:
    import numpy as np

    predicted = np.asarray(fusion.apply(np.zeros(len(frame)), frame["context"].astype(str).tolist(),
                                        frame["product_text"].astype(str).tolist(),
                                        frame["product_id"].astype(str).tolist(), frame["ratings"].tolist()))
    return float(np.sqrt(np.mean((predicted - frame["label"].to_numpy(dtype=float)) ** 2)))


def fitted(data: Any, neighbourhood: bool) -> Any:
    import numpy as np

    from recops import fusion as fusion_module

    frame, statistics = data.validation, data.statistics_rows()
    with mock.patch.object(fusion_module, "_fit_neighbours",
                           fusion_module._fit_neighbours if neighbourhood else (lambda *_: None)):
        return fusion_module.fit_fusion(
            "linear", np.zeros(len(frame)), frame["context"].astype(str).tolist(),
            frame["product_text"].astype(str).tolist(), frame["product_id"].astype(str).tolist(),
            frame["label"].to_numpy(dtype=float), frame["group"].astype(str).tolist(), corpus=data.product_texts(),
            train_items=statistics["product_id"].astype(str).tolist(),
            train_targets=statistics["label"].astype(float).tolist(), ratings=frame["ratings"].tolist(),
            train_users=statistics["user"].tolist())


def main() -> int:
    import numpy as np
    from train_quality import dataset_spec

    from recops.api.finetunejob import DatasetSpec
    from recops.train.data import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3,7,11", help="split seeds (which users are held out)")
    parser.add_argument("--ml-rows", type=int, default=5000)
    parser.add_argument("--user-history", type=int, default=5)
    args = parser.parse_args()
    print("| split seed | test rows | constant | fusion without the model | + neighbourhood | gain (points below the constant) | fused weights |")
    print("|---|---:|---:|---:|---:|---:|---|")
    work = Path(tempfile.mkdtemp(prefix="recops-fusion-features-"))
    for seed in (int(s) for s in args.seeds.split(",")):
        spec = dataset_spec("ml-100k", "relevance", work, argparse.Namespace(
            seed=seed, ml_rows=args.ml_rows, user_history=args.user_history))
        data = prepare(DatasetSpec.model_validate(spec), "relevance")
        constant = float(np.sqrt(np.mean((data.test["label"].to_numpy(dtype=float)
                                          - data.statistics_rows()["label"].mean()) ** 2)))
        without, with_ = fitted(data, False), fitted(data, True)
        before, after = rmse_of(without, data.test), rmse_of(with_, data.test)
        print(f"| {seed} | {len(data.test)} | {constant:.4f} | {before:.4f} ({(1 - before / constant) * 100:.1f}% below) "
              f"| {after:.4f} ({(1 - after / constant) * 100:.1f}% below) | {(before - after) / constant * 100:+.1f} "
              f"| {with_.describe()} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

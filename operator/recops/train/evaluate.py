"""Score a complete model on the test split the way the server will, and compute metrics.

A model is loaded from its directory exactly as `recops serve` loads it (recops.json says how):
cross-encoder -> AutoModelForSequenceClassification; bi-encoder and masked-lm -> AutoModel with
mean pooling and cosine similarity. The freshly trained model and the current model are scored
by the same code, so their figures are comparable.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from recops.api.contracts import MODEL_MANIFEST, ModelManifest
from recops.fusion import Fusion, fit_fusion
from recops.lexical import LexicalModel, fit_lexical
from recops.optimized import OnnxCrossEncoder
from recops.train.job import metric_applies
from recops.train.trainer import EMBEDDING_SCALE, mean_pool, positive_pairs, product_texts

log = logging.getLogger("recops.train")

# Metrics recops computes itself; the rest come from recops.train.metrics.compute_metrics.
OWN_METRICS = ("loss",)
EVAL_BATCH = 64
_EPS = 1e-7


@dataclass
class LoadedModel:
    directory: Path
    manifest: ModelManifest
    tokenizer: Any
    model: Any
    device: torch.device
    fusion: Fusion | None = None
    onnx: OnnxCrossEncoder | None = None  # the optimised form, when the manifest serves it (recops.optimized)

    @property
    def task(self) -> str:
        return self.manifest.task


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def read_manifest(directory: Path) -> ModelManifest:
    return ModelManifest.model_validate_json((directory / MODEL_MANIFEST).read_text())


def load_model(directory: Path, manifest: ModelManifest | None = None) -> LoadedModel:
    manifest = manifest or read_manifest(directory)
    device = _device()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    fusion = Fusion.load(directory) if manifest.fusion else None
    optimized = manifest.optimization.file if manifest.optimization else None
    if optimized and manifest.architecture == "cross-encoder":  # as `recops serve` runs it
        return LoadedModel(directory, manifest, tokenizer, None, torch.device("cpu"), fusion,
                           OnnxCrossEncoder(directory / optimized))
    if manifest.architecture == "cross-encoder":
        model = AutoModelForSequenceClassification.from_pretrained(str(directory))
    else:
        model = AutoModel.from_pretrained(str(directory))
    model.to(device).eval()
    return LoadedModel(directory, manifest, tokenizer, model, device, fusion)


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _batches_by_length(lengths: list[int], size: int) -> list[list[int]]:
    # Sorting by length keeps padding (and time) small; results are put back in order.
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + size] for i in range(0, len(order), size)]


def cross_encoder_logits(loaded: LoadedModel, contexts: list[str], products: list[str]) -> np.ndarray:
    return raw_logits(loaded.model, loaded.tokenizer, loaded.manifest.max_length, loaded.device, contexts, products,
                      loaded.onnx)


@torch.inference_mode()
def raw_logits(model: Any, tokenizer: Any, max_length: int, device: torch.device, contexts: list[str],
               products: list[str], onnx: OnnxCrossEncoder | None = None) -> np.ndarray:
    """A cross-encoder's raw output for each (context, product) pair (`onnx`: its optimised form instead)."""
    encoded = tokenizer(contexts, products, truncation=True, max_length=max_length)
    out = np.zeros(len(contexts), dtype=np.float64)
    for batch in _batches_by_length([len(ids) for ids in encoded["input_ids"]], EVAL_BATCH):
        features = [{k: encoded[k][i] for k in encoded} for i in batch]
        if onnx is not None:
            out[batch] = onnx.raw(tokenizer.pad(features, padding=True, return_tensors="np"))
            continue
        inputs = tokenizer.pad(features, padding=True, return_tensors="pt").to(device)
        with _autocast(device):
            logits = model(**inputs).logits[:, 0]
        out[batch] = logits.float().cpu().numpy()
    return out


@torch.inference_mode()
def embed(loaded: LoadedModel, texts: list[str]) -> torch.Tensor:
    encoded = loaded.tokenizer(texts, truncation=True, max_length=loaded.manifest.max_length)
    dim = loaded.model.config.hidden_size
    out = torch.zeros(len(texts), dim)
    for batch in _batches_by_length([len(ids) for ids in encoded["input_ids"]], EVAL_BATCH):
        features = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i]} for i in batch]
        inputs = loaded.tokenizer.pad(features, padding=True, return_tensors="pt").to(loaded.device)
        with _autocast(loaded.device):
            hidden = loaded.model(**inputs).last_hidden_state
        out[batch] = F.normalize(mean_pool(hidden.float(), inputs["attention_mask"]), dim=-1).cpu()
    return out


def score(loaded: LoadedModel, frame: Any) -> np.ndarray:
    """One score per row, in row order: a probability (sigmoid), the predicted grade / maxGrade (grade; not
    clamped, so rmse sees the raw prediction) or the cosine similarity."""
    contexts = frame["context"].astype(str).tolist()
    products = frame["product_text"].astype(str).tolist()
    if loaded.manifest.architecture == "cross-encoder":
        raw = cross_encoder_logits(loaded, contexts, products)
        if loaded.fusion is not None:
            raw = np.asarray(loaded.fusion.apply(raw, contexts, products, frame["product_id"].astype(str).tolist(),
                                                 row_ratings(frame)))
        if loaded.manifest.score_transform == "sigmoid":
            probabilities: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(raw, -60, 60)))
            return probabilities
        if loaded.manifest.score_transform == "grade":
            return raw / max(loaded.manifest.max_grade, 1e-9)
        return raw
    unique_contexts, context_index = np.unique(np.array(contexts, dtype=object), return_inverse=True)
    unique_products, product_index = np.unique(np.array(products, dtype=object), return_inverse=True)
    context_vectors = embed(loaded, [str(t) for t in unique_contexts])
    product_vectors = embed(loaded, [str(t) for t in unique_products])
    cosine = (context_vectors[context_index] * product_vectors[product_index]).sum(dim=-1)
    result: np.ndarray = cosine.numpy().astype(np.float64)
    return result


def row_ratings(frame: Any) -> list[Any] | None:
    """Each row's user's earlier events (the prepared `ratings` column), as a request's `user.ratings` gives them."""
    return frame["ratings"].tolist() if "ratings" in frame.columns else None


MIN_FUSION_ROWS = 50


def fit_validation_fusion(directory: Path, manifest: ModelManifest, data: Any) -> Fusion | None:
    """The fusion of the trained cross-encoder with BM25 and popularity (recops.fusion), fitted on the
    validation split; None where there is nothing to fit it on."""
    frame = data.validation
    kind = {"click-through": "logistic", "relevance": "linear"}.get(manifest.task)
    if kind is None or len(frame) < MIN_FUSION_ROWS or frame["label"].nunique() < 2:
        return None
    loaded = load_model(directory, manifest.model_copy(update={"fusion": None}))
    contexts = frame["context"].astype(str).tolist()
    texts = frame["product_text"].astype(str).tolist()
    raw = cross_encoder_logits(loaded, contexts, texts)
    statistics = data.statistics_rows()
    by_user = groups_are_users(frame)
    lexical = train_lexical(data) if kind == "logistic" and lexical_helps(data) else None
    return fit_fusion(kind, raw, contexts, texts, frame["product_id"].astype(str).tolist(),
                      frame["label"].to_numpy(dtype=float), frame["group"].astype(str).tolist(),
                      corpus=data.product_texts(), train_items=statistics["product_id"].astype(str).tolist(),
                      train_targets=statistics["label"].astype(float).tolist(), ratings=row_ratings(frame),
                      train_users=statistics["user"].tolist(), lexical=lexical, neighbourhood=kind == "linear" or by_user)


def groups_are_users(frame: Any) -> bool:
    """Recommendation without a query: each group is one user's rows (recops.train.data). There the item
    neighbourhood orders a user's items, so the click-through fusion fits it (docs/finetunejob.md, measured with
    benchmarks/fusion_features.py --task click-through)."""
    return bool(frame["query"].isna().all() and frame["user"].notna().any())


LEXICAL_FOLDS = 5
LEXICAL_REPEATS = 3  # fold assignments: one split of a few dozen queries into 5 folds decides by chance
# The mean gain must stand this many standard errors (over the fold gains) above 0. Where the lexical model has
# little to learn from it adds as much noise as signal, and a bare "> 0" keeps it half the time (docs/finetunejob.md).
LEXICAL_MIN_Z = 2.0


def lexical_helps(data: Any) -> bool:
    """Whether the lexical feature ranks better out of sample beside BM25 and popularity (lexical_gains): its mean
    ndcg@10 gain at least LEXICAL_MIN_Z standard errors above 0."""
    gains = lexical_gains(data)
    if len(gains) < 2:
        return False
    return bool(gains.mean() > LEXICAL_MIN_Z * gains.std(ddof=1) / math.sqrt(len(gains)))


def lexical_gains(data: Any) -> np.ndarray:
    """Each fold's ndcg@10 with the lexical feature less without it, on the train split's groups: the features
    cross-fitted (cross_fitted_features), then the pairwise weights of BM25, popularity and the lexical score
    fitted on 4/5 of the groups and judged on the fifth, for LEXICAL_REPEATS assignments of groups to folds. On
    the train split, not the validation split: tens of queries, where the validation split of a small job has a
    handful, and the trained model's output there would be in-sample, so it is left out."""
    from recops.fusion import _pairwise
    from recops.train.metrics import compute_metrics

    train = data.train
    x, y, groups = cross_fitted_features(data)
    if len(np.unique(groups)) < LEXICAL_FOLDS:
        return np.zeros(0)
    z = (x - x.mean(axis=0)) / np.where(x.std(axis=0) < 1e-9, 1.0, x.std(axis=0))
    gains = []
    for repeat in range(LEXICAL_REPEATS):
        fold = _folds(groups, 100 + repeat)
        for k in range(LEXICAL_FOLDS):
            rest, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            part = train.iloc[held]
            if part["label"].nunique() < 2 or len(np.unique(y[rest])) < 2:
                continue
            with_it, without = (
                float(compute_metrics(["ndcg@10"], part, z[held][:, columns]
                                      @ _pairwise(z[rest][:, columns], y[rest], groups[rest], 0))["ndcg@10"])
                for columns in ([0, 1, 2], [0, 1]))
            gains.append(with_it - without)
    return np.array(gains)


def cross_fitted_features(data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, groups) of the train split: x's columns BM25, popularity (as a log-odds) and the lexical score, the
    last two for each of LEXICAL_FOLDS folds of the groups fitted without it (popularity also on the older rows
    that maxRows left out, as the fusion's popularity reads them); y the label, groups each row's group."""
    from recops.fusion import BM25

    train = data.train
    groups = train["group"].astype(str).to_numpy()
    contexts, texts = train["context"].astype(str).tolist(), train["product_text"].astype(str).tolist()
    items, y = train["product_id"].astype(str).tolist(), train["label"].to_numpy(dtype=float)
    older = data.earlier if data.earlier is not None else train.iloc[:0]
    older_items, older_targets = older["product_id"].astype(str).tolist(), older["label"].astype(float).tolist()
    lexical, popularity = np.zeros(len(train)), np.zeros(len(train))
    fold = _folds(groups, 0)
    for k in range(LEXICAL_FOLDS):
        rest, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = fit_lexical([contexts[i] for i in rest], [texts[i] for i in rest], y[rest])
        if model is not None:
            lexical[held] = model.scores([contexts[i] for i in held], [texts[i] for i in held])
        popularity[held] = popularity_log_odds(older_items + [items[i] for i in rest], older_targets + y[rest].tolist(),
                                               [items[i] for i in held])
    x = np.column_stack([BM25.fit(data.product_texts()).scores(contexts, texts), popularity, lexical])
    return x, y, groups


def popularity_log_odds(items: list[str], targets: list[float], scored: list[str]) -> np.ndarray:
    """Each of `scored`'s click rate over (`items`, `targets`), shrunk as the fusion's popularity is, as a log-odds."""
    from recops.fusion import prior_weight, smoothed_means

    means, overall = smoothed_means(items, targets, prior_weight(items, targets))
    rate = np.clip([means.get(item, overall) for item in scored], 1e-4, 1 - 1e-4)
    result: np.ndarray = np.log(rate / (1 - rate))
    return result


def _folds(groups: np.ndarray, seed: int) -> np.ndarray:
    """Each row's fold (0 to LEXICAL_FOLDS - 1), whole groups to a fold, the groups' order drawn with `seed`."""
    names = np.unique(groups)
    fold_of = dict(zip(np.random.default_rng(seed).permutation(names), np.arange(len(names)) % LEXICAL_FOLDS,
                       strict=True))
    return np.array([fold_of[g] for g in groups])


def train_lexical(data: Any) -> LexicalModel | None:
    """The fusion's lexical model (recops.lexical), fitted on the train split's clicks."""
    train = data.train
    return fit_lexical(train["context"].astype(str).tolist(), train["product_text"].astype(str).tolist(),
                       train["label"].to_numpy(dtype=float))


def fused_validation_metric(model: Any, tokenizer: Any, max_length: int, data: Any, metric: str) -> float:
    """`metric` of the model as it would be served (fused, the fusion fitted on the validation split as after
    training) on the validation split, each distinct (context, product) scored once."""
    from recops.train.metrics import compute_metrics

    frame = data.validation
    pairs = frame[["context", "product_text"]].drop_duplicates()
    device = next(model.parameters()).device
    logits = raw_logits(model, tokenizer, max_length, device, pairs["context"].astype(str).tolist(),
                        pairs["product_text"].astype(str).tolist())
    by_pair = dict(zip(zip(pairs["context"], pairs["product_text"], strict=True), logits, strict=True))
    raw = np.array([by_pair[key] for key in zip(frame["context"], frame["product_text"], strict=True)])
    contexts, texts = frame["context"].astype(str).tolist(), frame["product_text"].astype(str).tolist()
    items = frame["product_id"].astype(str).tolist()
    fusion = fit_fusion("logistic", raw, contexts, texts, items, frame["label"].to_numpy(dtype=float),
                        frame["group"].astype(str).tolist(), corpus=data.product_texts(),
                        train_items=data.train["product_id"].astype(str).tolist(),
                        train_targets=data.train["label"].astype(float).tolist())
    fused = np.asarray(fusion.apply(raw, contexts, texts, items))
    scores = 1.0 / (1.0 + np.exp(-np.clip(fused, -60, 60)))
    return float(compute_metrics([metric], frame, scores)[metric])


def in_batch_loss(loaded: LoadedModel, frame: Any, batch_size: int) -> float | None:
    """The embedding objective on the split's positive pairs, in fixed batches."""
    pairs = positive_pairs(frame)
    if len(pairs) < 2:
        return None
    contexts = embed(loaded, pairs["context"].astype(str).tolist())
    products = embed(loaded, pairs["product_text"].astype(str).tolist())
    losses, weights = [], []
    for start in range(0, len(pairs), batch_size):
        q, p = contexts[start:start + batch_size], products[start:start + batch_size]
        if len(q) < 2:
            continue
        logits = q @ p.T * EMBEDDING_SCALE
        chunk = pairs.iloc[start:start + batch_size]
        same_context = chunk["context"].to_numpy()[:, None] == chunk["context"].to_numpy()[None, :]
        same_product = chunk["product_text"].to_numpy()[:, None] == chunk["product_text"].to_numpy()[None, :]
        not_negative = torch.from_numpy((same_context | same_product) & ~np.eye(len(chunk), dtype=bool))
        logits = logits.masked_fill(not_negative, float("-inf"))
        losses.append(float(F.cross_entropy(logits, torch.arange(len(q)))))
        weights.append(len(q))
    return float(np.average(losses, weights=weights)) if losses else None


@torch.inference_mode()
def masked_lm_loss(directory: Path, frame: Any, max_length: int, seed: int = 0) -> float | None:
    """Mean masked-token loss on the split's product texts, with a fixed masking seed."""
    from transformers import DataCollatorForLanguageModeling

    texts = product_texts(frame)
    if not texts:
        return None
    device = _device()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForMaskedLM.from_pretrained(str(directory)).to(device).eval()
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    total, tokens = 0.0, 0
    for batch in _batches_by_length([len(ids) for ids in encoded["input_ids"]], EVAL_BATCH):
        features = [{k: encoded[k][i] for k in encoded} for i in batch]
        inputs = collator(features).to(device)
        with _autocast(device):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        masked = inputs["labels"] != -100
        if masked.any():
            total += float(F.cross_entropy(logits[masked].float(), inputs["labels"][masked], reduction="sum"))
            tokens += int(masked.sum())
    return total / tokens if tokens else None


def own_metric(name: str, loaded: LoadedModel, frame: Any, scores: np.ndarray, batch_size: int) -> float | None:
    """loss: the task's own training objective on the split."""
    labels = frame["label"].astype(float).to_numpy()
    if loaded.task == "click-through":
        p = np.clip(scores, _EPS, 1 - _EPS)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    if loaded.task == "relevance":
        predicted = scores * loaded.manifest.max_grade
        return float(np.mean((predicted - frame["grade"].astype(float).to_numpy()) ** 2))
    if loaded.task == "embedding":
        return in_batch_loss(loaded, frame, batch_size)
    return masked_lm_loss(loaded.directory, frame, loaded.manifest.max_length)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    skipped: dict[str, str]  # metric -> why it was not computed
    ties: float | None = None  # the share of rows whose score ties another row of their group


def evaluate(loaded: LoadedModel, frame: Any, names: list[str], batch_size: int = 32,
             scores: np.ndarray | None = None) -> Evaluation:
    """The metrics of `loaded` on `frame` (`scores`: its scores of `frame`, when already computed)."""
    from recops.train.metrics import compute_metrics, tie_share

    skipped: dict[str, str] = {}
    applicable = []
    for name in names:
        reason = metric_applies(name, loaded.task)
        if reason:
            skipped[name] = reason
        else:
            applicable.append(name)
    if len(frame) == 0:
        return Evaluation({}, {name: "the test split is empty" for name in names})
    scores = score(loaded, frame) if scores is None else scores
    metrics: dict[str, float] = {}
    shared = [n for n in applicable if n not in OWN_METRICS]
    if shared:
        metrics.update({k: float(v) for k, v in compute_metrics(shared, frame, scores, max_grade=loaded.manifest.max_grade).items()})
    for name in applicable:
        if name in OWN_METRICS:
            value = own_metric(name, loaded, frame, scores, batch_size)
            if value is not None:
                metrics[name] = value
    for name in applicable:
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            metrics.pop(name, None)
            skipped[name] = "undefined on this test split (e.g. a single class or no positives)"
    return Evaluation({k: metrics[k] for k in names if k in metrics}, skipped, tie_share(frame, scores))

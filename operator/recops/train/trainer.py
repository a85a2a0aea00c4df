"""Fine-tuning with the transformers Trainer: one recipe per task.

- click-through: cross-encoder (context, product text) -> logit, BCE on the 0/1 label; with
  `training.loss: listwise` also a softmax over each group's impressions (ListNet-style, several
  positives allowed), batches made of whole groups. Impressions of the same (group, context, product)
  are one example weighted by their count (`impression_pairs`): the same loss, one forward pass.
- relevance: cross-encoder -> predicted grade, MSE on the grade.
- embedding: bi-encoder, mean pooling, in-batch negatives over positive pairs.
- domain-pretrain: masked-language model on product text.

Batches are padded dynamically and grouped by length; checkpoints go to a directory a
restarted pod resumes from. Imported only by `recops train` (torch, transformers).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import transformers
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from recops.api.finetunejob import FineTuneJobSpec, LoraSpec
from recops.api.gate import is_ranking
from recops.train.data import PROPENSITY
from recops.train.job import Distributed, JobError
from recops.train.progress import Progress, ProgressReporter, progress_line

log = logging.getLogger("recops.train")
# Our own log lines say what happens; keep library chatter and progress bars out of the pod log.
transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]

EMBEDDING_SCALE = 20.0  # 1 / temperature of the in-batch softmax (as sentence-transformers' MNRL)
CHECKPOINTS_PER_RUN = 10  # under torchrun (ranks must agree on when to save, so by steps)
DEFAULT_CHECKPOINT_SECONDS = 600.0  # one process: a restarted pod loses at most this much training
ENV_CHECKPOINT_SECONDS = "RECOPS_CHECKPOINT_SECONDS"
EVALUATIONS_PER_RUN = 4
MAX_LIST_ROWS = 32  # listwise: the most rows (distinct products) of one group in one list
WEIGHTS = "weights"  # click-through: how many impressions a row stands for, over the mean (impression_pairs)
NOT_MODEL_INPUTS = ("labels", "length", WEIGHTS)
# training.inversePropensity: the largest weight of one impression (the demo's explored impressions have 1/p ~33).
MAX_INVERSE_PROPENSITY = 20.0
LOG_LINES_PER_RUN = 40
RUN_MARKER = "recops-run.json"  # which job and data the checkpoints belong to
CHECKPOINT_STATE = "trainer_state.json"  # written last into a checkpoint: its presence marks it usable
ENV_CHECKPOINT_STEPS = "RECOPS_CHECKPOINT_STEPS"  # override how often to checkpoint


@dataclass
class TrainResult:
    log_history: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"
    total_steps: int = 0
    resumed_from: str | None = None
    train_examples: int = 0
    seconds: float = 0.0
    samples_per_second: float | None = None
    epochs: list[tuple[float, float]] = field(default_factory=list)  # (epoch, validation figure) when BestEpoch ran
    best_epoch: float | None = None  # the epoch whose weights were kept


def resolve_precision(precision: str) -> str:
    """auto: bf16 where the GPU supports it, fp32 on the CPU (and on GPUs without bf16)."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise JobError("precision fp16 needs a CUDA GPU; use auto, bf16 or fp32")
    return precision


# --- data -----------------------------------------------------------------------------------
class _PaddingCollator:
    """Dynamic padding to the longest sequence of the batch; drops the `length` column."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None) -> None:
        self.tokenizer, self.pad_to_multiple_of = tokenizer, pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = torch.tensor([f["labels"] for f in features], dtype=torch.float32)
        encoded = [{k: v for k, v in f.items() if k not in NOT_MODEL_INPUTS} for f in features]
        batch = self.tokenizer.pad(encoded, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                   return_tensors="pt")
        batch["labels"] = labels
        if WEIGHTS in features[0]:
            batch[WEIGHTS] = torch.tensor([f[WEIGHTS] for f in features], dtype=torch.float32)
        return dict(batch)


class _ListCollator:
    """Listwise batches: each feature is one group's impressions (lists of token ids and labels); they are
    flattened into one padded batch, with `list_index` telling which rows belong to which group."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None) -> None:
        self.tokenizer, self.pad_to_multiple_of = tokenizer, pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        names = [k for k in features[0] if k not in NOT_MODEL_INPUTS]
        rows = [{name: f[name][i] for name in names} for f in features for i in range(len(f["labels"]))]
        batch = self.tokenizer.pad(rows, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        batch["labels"] = torch.tensor([label for f in features for label in f["labels"]], dtype=torch.float32)
        batch["list_index"] = torch.tensor([g for g, f in enumerate(features) for _ in f["labels"]])
        if WEIGHTS in features[0]:
            batch[WEIGHTS] = torch.tensor([w for f in features for w in f[WEIGHTS]], dtype=torch.float32)
        return dict(batch)


def listwise_rows(rows: dict[str, list[Any]], groups: list[str], seed: int) -> dict[str, list[Any]]:
    """Cross-encoder rows regrouped into one example per group (chunks of at most MAX_LIST_ROWS rows, drawn
    at random within a large group, so one user's hundred ratings are several lists)."""
    by_group: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    rng = np.random.default_rng(seed)
    lists: dict[str, list[Any]] = {name: [] for name in rows}
    for indices in by_group.values():
        shuffled = [indices[i] for i in rng.permutation(len(indices))]
        for start in range(0, len(shuffled), MAX_LIST_ROWS):
            chunk = shuffled[start:start + MAX_LIST_ROWS]
            for name, values in rows.items():
                lists[name].append([values[i] for i in chunk])
    lists["length"] = [max(lengths) * len(lengths) for lengths in lists["length"]]  # tokens once padded
    return lists


def listwise_loss(logits: torch.Tensor, labels: torch.Tensor, list_index: torch.Tensor,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the lists with a positive of the cross-entropy between the softmax of the list's logits
    and its labels normalised to sum to one (ListNet with several positives). With `weights` (a row
    stands for that many impressions, in proportion; its label their mean) the loss is the one over
    the impressions: each row counts weight times in the target and in the softmax's normaliser."""
    losses = []
    for group in torch.unique(list_index):
        rows = list_index == group
        count = weights[rows] if weights is not None else torch.ones_like(labels[rows])
        target = labels[rows] * count
        if target.sum() <= 0 or float(count.sum()) < 2:
            continue
        log_norm = torch.logsumexp(logits[rows] + torch.log(count), dim=0)
        losses.append(-(target / target.sum() * (logits[rows] - log_norm)).sum())
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


class _PairCollator:
    """Bi-encoder batches: B contexts, their B clicked products, then B hard negatives (a product shown
    for the same context and never clicked), padded together for one forward pass (what DDP expects).
    labels = the index of each context's product among the 2B candidates."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None) -> None:
        self.tokenizer, self.pad_to_multiple_of = tokenizer, pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        size = len(features)
        missing = torch.tensor([not f["negative_ids"] for f in features])
        texts = ([{"input_ids": f["context_ids"]} for f in features]
                 + [{"input_ids": f["product_ids"]} for f in features]
                 + [{"input_ids": f["negative_ids"] or f["product_ids"]} for f in features])
        batch = self.tokenizer.pad(texts, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        contexts = torch.tensor([hash(tuple(f["context_ids"])) for f in features])
        products = torch.tensor([hash(tuple(f["product_ids"])) for f in features])
        negatives = torch.tensor([hash(tuple(f["negative_ids"])) for f in features])
        # Another row with the same context or the same product is no negative: leave it out; so are
        # missing hard negatives and a hard negative that is this row's clicked product.
        same = (contexts[:, None] == contexts[None, :]) | (products[:, None] == products[None, :])
        in_batch = same & ~torch.eye(size, dtype=torch.bool)
        hard = missing[None, :].expand(size, size) | (negatives[None, :] == products[:, None])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "labels": torch.arange(size), "not_negative": torch.cat([in_batch, hard], dim=1)}


class _MaskingCollator:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None, seed: int) -> None:
        self.inner = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15,
                                                     pad_to_multiple_of=pad_to_multiple_of, seed=seed)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(self.inner([{k: v for k, v in f.items() if k != "length"} for f in features]))


def _lengths(encoded: dict[str, list[list[int]]]) -> list[int]:
    return [len(ids) for ids in encoded["input_ids"]]


def cross_encoder_rows(tokenizer: PreTrainedTokenizerBase, frame: Any, max_length: int, target: str) -> dict[str, list[Any]]:
    encoded = tokenizer(frame["context"].astype(str).tolist(), frame["product_text"].astype(str).tolist(),
                        truncation=True, max_length=max_length)
    rows: dict[str, list[Any]] = {k: list(v) for k, v in encoded.items()}
    rows["labels"] = frame[target].astype(float).tolist()
    rows["length"] = _lengths(encoded)
    if WEIGHTS in frame:
        rows[WEIGHTS] = frame[WEIGHTS].astype(float).tolist()
    return rows


def impression_weights(frame: Any, inverse_propensity: bool) -> Any:
    """Each impression's weight in the loss: 1, or with `inverse_propensity` 1/propensity clipped at
    MAX_INVERSE_PROPENSITY (clipping bounds the variance a few unlikely displays would add); 1 without a propensity."""
    ones = pd.Series(1.0, index=frame.index)
    if not inverse_propensity or PROPENSITY not in frame:
        return ones
    propensity = pd.to_numeric(frame[PROPENSITY], errors="coerce")
    return (1.0 / propensity.clip(lower=1.0 / MAX_INVERSE_PROPENSITY)).where(propensity > 0, ones)


def impression_pairs(frame: Any, inverse_propensity: bool = False) -> Any:
    """Click-through rows of one (group, context, product) as one row: `label` the (weighted) share of them
    that were positive, `weights` their summed weight (impression_weights) over the mean. The cross-entropy is
    linear in the label, so the weighted loss is the loss over the impressions, computed with one forward pass
    per pair (a search log repeats its head queries' products: the benchmark's shop has ~4 impressions a pair)."""
    weight = impression_weights(frame, inverse_propensity)
    pairs = frame.assign(_weight=weight, _positive=weight * frame["label"].astype(float)).groupby(
        ["group", "context", "product_text"], sort=False, dropna=False).agg(
        weight=("_weight", "sum"), positive=("_positive", "sum"), impressions=("label", "size")).reset_index()
    return pairs.assign(label=pairs["positive"] / pairs["weight"], **{WEIGHTS: pairs["weight"] / pairs["weight"].mean()})


def positive_pairs(frame: Any) -> Any:
    """(context, product_text) pairs with a positive event, once each."""
    positives = frame[frame["label"].astype(float) > 0]
    return positives.drop_duplicates(subset=["context", "product_text"])


def pair_rows(tokenizer: PreTrainedTokenizerBase, frame: Any, max_length: int, seed: int = 0) -> dict[str, list[Any]]:
    pairs = positive_pairs(frame)
    # Hard negatives: products shown for the same context and never clicked there. They are what the
    # ranking metrics judge (ordering one query's candidates); other rows' products are easy negatives.
    shown = frame.assign(positive=frame["label"].astype(float) > 0).groupby("context")
    clicked = shown.apply(lambda g: set(g.loc[g["positive"], "product_text"]), include_groups=False)
    candidates = {context: sorted(set(g["product_text"]) - clicked.get(context, set())) for context, g in shown}
    rng = np.random.default_rng(seed)
    negatives = []
    for context in pairs["context"]:
        options = candidates.get(context) or []
        negatives.append(options[rng.integers(len(options))] if options else "")

    def encode(texts: list[str]) -> list[list[int]]:
        return list(tokenizer(texts, truncation=True, max_length=max_length)["input_ids"])

    contexts = encode(pairs["context"].astype(str).tolist())
    products = encode(pairs["product_text"].astype(str).tolist())
    hard = [ids if text else [] for ids, text in zip(encode([t or "-" for t in negatives]), negatives, strict=True)]
    return {"context_ids": contexts, "product_ids": products, "negative_ids": hard,
            "length": [max(len(c), len(p), len(n)) for c, p, n in zip(contexts, products, hard, strict=True)]}


def product_texts(frame: Any) -> list[str]:
    return sorted(set(frame["product_text"].astype(str).tolist()))


def text_rows(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict[str, list[Any]]:
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    rows: dict[str, list[Any]] = {k: list(v) for k, v in encoded.items()}
    rows["length"] = _lengths(encoded)
    return rows


def build_rows(task: str, tokenizer: PreTrainedTokenizerBase, frame: Any, max_length: int,
               seed: int = 0, listwise: bool = False, inverse_propensity: bool = False) -> dict[str, list[Any]]:
    if task == "click-through":
        pairs = impression_pairs(frame, inverse_propensity)
        rows = cross_encoder_rows(tokenizer, pairs, max_length, "label")
        return listwise_rows(rows, pairs["group"].astype(str).tolist(), seed) if listwise else rows
    if task == "relevance":
        return cross_encoder_rows(tokenizer, frame, max_length, "grade")
    if task == "embedding":
        return pair_rows(tokenizer, frame, max_length, seed)
    return text_rows(tokenizer, product_texts(frame), max_length)


def build_collator(task: str, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None, seed: int,
                   listwise: bool = False) -> Any:
    if listwise:
        return _ListCollator(tokenizer, pad_to_multiple_of)
    if task in ("click-through", "relevance"):
        return _PaddingCollator(tokenizer, pad_to_multiple_of)
    if task == "embedding":
        return _PairCollator(tokenizer, pad_to_multiple_of)
    return _MaskingCollator(tokenizer, pad_to_multiple_of, seed)


# --- model ----------------------------------------------------------------------------------
def load_base_model(task: str, base_dir: Path) -> Any:
    directory = str(base_dir)
    if task in ("click-through", "relevance"):
        model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=1)
        model.config.problem_type = "regression"  # one logit; recops.json says how to read it
        return model
    if task == "embedding":
        model = AutoModel.from_pretrained(directory)
        for name, parameter in model.named_parameters():
            if name.startswith("pooler."):
                # Mean pooling never uses the pooler; frozen, so DDP does not wait for its gradients.
                parameter.requires_grad_(False)
        return model
    return AutoModelForMaskedLM.from_pretrained(directory)


def apply_lora(task: str, model: Any, lora: LoraSpec) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    task_type = {"click-through": TaskType.SEQ_CLS, "relevance": TaskType.SEQ_CLS,
                 "embedding": TaskType.FEATURE_EXTRACTION}.get(task)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type=task_type)
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise JobError(f"training.lora: {str(err).splitlines()[0]}") from None
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("LoRA r=%d alpha=%d on %s: %d of %d parameters trainable", lora.r, lora.alpha,
             ",".join(lora.target_modules), trainable, total)
    return peft_model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class RecopsTrainer(Trainer):
    """The Trainer with the loss of each task (cross-encoder BCE/MSE, in-batch negatives)."""

    def __init__(self, *args: Any, recops_task: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recops_task = recops_task
        if recops_task != "domain-pretrain":
            # Our losses are per-batch means: the Trainer must divide them by the accumulation steps.
            self.loss_is_scaled_for_ga = False
            self.model_accepts_loss_kwargs = False  # the same, for transformers before loss_is_scaled_for_ga

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if self.recops_task == "domain-pretrain":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        if self.recops_task == "embedding":
            not_negative = inputs.pop("not_negative")
            outputs = model(**inputs)
            embeddings = F.normalize(mean_pool(outputs.last_hidden_state, inputs["attention_mask"]).float(), dim=-1)
            size = labels.shape[0]  # contexts, then clicked products, then hard negatives
            logits = embeddings[:size] @ embeddings[size:].T * EMBEDDING_SCALE
            logits = logits.masked_fill(not_negative, float("-inf"))
            loss = F.cross_entropy(logits, labels)
        else:
            list_index = inputs.pop("list_index", None)
            weights = inputs.pop(WEIGHTS, None)
            logits = model(**inputs).logits.squeeze(-1).float()
            if self.recops_task == "click-through":
                loss = F.binary_cross_entropy_with_logits(logits, labels.float(), weight=weights)
                if list_index is not None:
                    loss = loss + listwise_loss(logits, labels.float(), list_index, weights)
            else:
                loss = F.mse_loss(logits, labels.float())
        return (loss, {"logits": logits}) if return_outputs else loss


# --- progress -------------------------------------------------------------------------------
class ProgressCallback(TrainerCallback):
    """Readable log lines on the main process, and the progress lines the operator reads through the reporter."""

    def __init__(self, reporter: ProgressReporter | None, epochs_per_pass: float = 1.0) -> None:
        self.reporter = reporter
        self.epochs_per_pass = epochs_per_pass  # progress counts training.epochs, not passes over merged rows
        self.started = time.monotonic()
        self.first_step: int | None = None

    def _progress(self, state: Any, final: bool = False) -> Progress:
        # A run that stopped early (BestEpoch) is complete at the step it reached.
        total = state.global_step if final else state.max_steps
        return Progress(step=state.global_step, total_steps=total,
                        epoch=round(float(state.epoch or 0.0) * self.epochs_per_pass, 4))

    def _eta(self, state: Any) -> float | None:
        done = state.global_step - (self.first_step or 0)
        if done <= 0:
            return None
        return float((time.monotonic() - self.started) / done * (state.max_steps - state.global_step))

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started, self.first_step = time.monotonic(), state.global_step
        if state.is_world_process_zero:
            log.info("training: %d optimiser steps, %s epochs (%s passes over the rows), from step %d", state.max_steps,
                     f"{args.num_train_epochs * self.epochs_per_pass:g}", f"{args.num_train_epochs:.3g}",
                     state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.reporter is not None and state.is_world_process_zero:
            self.reporter.report(self._progress(state))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if "eval_loss" in logs:
            log.info("validation loss %.4f at step %d (epoch %.2f)", logs["eval_loss"], state.global_step,
                     float(state.epoch or 0.0))
        elif "loss" in logs:
            log.info("%s", progress_line(self._progress(state), logs["loss"], time.monotonic() - self.started,
                                         self._eta(state)))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            log.info("checkpoint saved at step %d", state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.reporter is not None and state.is_world_process_zero:
            self.reporter.report(self._progress(state, final=True))
            self.reporter.close()  # the last step now, not after the evaluation


# --- the best epoch -------------------------------------------------------------------------
SELECTION_METRIC = "ndcg@10"  # without a gate on a ranking metric
SELECTION_PATIENCE = 3  # epochs in a row without a better validation figure before training stops


def selection_metric(spec: FineTuneJobSpec) -> str:
    """The metric that picks the best epoch: the gate's when it ranks, else ndcg@10."""
    gate = spec.evaluation.gate
    return gate.metric if gate is not None and is_ranking(gate.metric) else SELECTION_METRIC


class BestEpoch(TrainerCallback):
    """Click-through: after each epoch, `metric` on the validation split of the model as it would be served
    (fused with BM25 and popularity, as after training); the best epoch's weights are the ones kept, and
    training stops after SELECTION_PATIENCE epochs without a better figure. Later epochs can overfit a
    small log, and which epoch is best differs from one data set to the next."""

    def __init__(self, data: Any, metric: str, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.data, self.metric, self.tokenizer, self.max_length = data, metric, tokenizer, max_length
        self.history: list[tuple[float, float]] = []  # (epoch, validation figure)
        self.best: tuple[float, float] | None = None
        self.weights: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        from recops.api.gate import better
        from recops.train.evaluate import fused_validation_metric

        training = model.training
        model.eval()
        value = fused_validation_metric(model, self.tokenizer, self.max_length, self.data, self.metric)
        model.train(training)
        epoch = round(float(state.epoch or 0.0), 2)
        self.history.append((epoch, value))
        if math.isfinite(value) and (self.best is None or better(self.metric, value, self.best[1])):
            self.best, self.stale = (epoch, value), 0
            self.weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
        else:
            self.stale += 1
            control.should_training_stop = self.stale >= SELECTION_PATIENCE
        log.info("validation %s %.4f after pass %g (best %s)", self.metric, value, epoch,
                 f"{self.best[1]:.4f} after pass {self.best[0]:g}" if self.best else "none yet")
        if control.should_training_stop and state.global_step < state.max_steps:
            log.info("training stopped early: %d passes without a better validation figure", self.stale)

    def restore(self, model: Any) -> None:
        """Put the best epoch's weights back into `model` (a no-op when the last epoch was the best)."""
        if self.best is None or self.weights is None or self.best[0] == self.history[-1][0]:
            return
        model.load_state_dict(self.weights)
        log.info("kept the weights of pass %g (validation %s %.4f; the last pass's %.4f)", self.best[0],
                 self.metric, self.best[1], self.history[-1][1])


def picks_best_epoch(task: str, data: Any, world_size: int) -> bool:
    """One process, click-through, and a validation split the fusion can be fitted on."""
    from recops.train.evaluate import MIN_FUSION_ROWS

    return (task == "click-through" and world_size == 1 and len(data.validation) >= MIN_FUSION_ROWS
            and data.validation["label"].nunique() >= 2)


# --- checkpoints ----------------------------------------------------------------------------
class _CheckpointHook(TrainerCallback):
    def __init__(self, checkpoints: Path, hook: Callable[[Path], None]) -> None:
        self.checkpoints, self.hook = checkpoints, hook

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            try:
                self.hook(self.checkpoints / f"checkpoint-{state.global_step}")
            except Exception as err:  # a failed upload costs resumability, never the training
                log.warning("could not mirror checkpoint-%d: %s", state.global_step, err)


class TimedCheckpoints(TrainerCallback):
    """Ask the Trainer for a checkpoint once `interval_s` has passed since the last one."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if time.monotonic() - self.last >= self.interval_s and state.global_step < state.max_steps:
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.monotonic()


def usable_checkpoint(checkpoints: Path, run_key: dict[str, Any], dist: Distributed) -> Path | None:
    """The newest complete checkpoint of this same job and data, or None (starting over)."""
    marker = checkpoints / RUN_MARKER
    if checkpoints.exists() and marker.exists():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != run_key:
            if dist.is_main:
                log.warning("checkpoints in %s belong to another job or other data; starting over", checkpoints)
            return None
    elif not checkpoints.exists() or not any(checkpoints.glob("checkpoint-*")):
        return None
    found = []
    for path in checkpoints.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if path.is_dir() and suffix.isdigit() and (path / CHECKPOINT_STATE).exists():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def prepare_checkpoints(checkpoints: Path, run_key: dict[str, Any], dist: Distributed) -> None:
    """Main process only: keep the checkpoints of this same run, drop anything else."""
    resume = usable_checkpoint(checkpoints, run_key, dist)
    if resume is None and checkpoints.exists():
        shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / RUN_MARKER).write_text(json.dumps(run_key, sort_keys=True))
    # A checkpoint interrupted while being written has no trainer_state.json: drop it.
    for partial in checkpoints.glob("checkpoint-*"):
        if partial.is_dir() and not (partial / CHECKPOINT_STATE).exists():
            shutil.rmtree(partial, ignore_errors=True)


# --- the run --------------------------------------------------------------------------------
def _sampling_arguments(grouped: bool) -> dict[str, Any]:
    """Length-grouped batches, spelled as this transformers version spells it."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in names:
        return {"train_sampling_strategy": "group_by_length" if grouped else "random"}
    return {"group_by_length": grouped}


def training_passes(epochs: float, impressions: int, rows: int) -> float:
    """Passes over the rows the model runs for `epochs` passes over the training split: click-through
    trains on (context, product) pairs that each stand for several impressions (impression_pairs), and
    `training.epochs` keeps counting passes over the impressions in optimiser steps, as before they were
    merged, so the same setting buys the same training time whether a log repeats its impressions or not."""
    return epochs * max(impressions, 1) / max(rows, 1)


def planned_steps(examples: int, batch_size: int, accumulation: int, world_size: int, epochs: float) -> int:
    batches = math.ceil(examples / (batch_size * world_size))
    return max(1, math.ceil(max(1, batches // accumulation) * epochs))


def train(
    spec: FineTuneJobSpec,
    data: Any,
    base_dir: Path,
    checkpoints: Path,
    save_to: Path | None,
    run_key: dict[str, Any],
    reporter: ProgressReporter | None = None,
    *,
    naive: bool = False,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Fine-tune and (on the main process) save the plain model and tokenizer into `save_to`.

    `naive` (benchmarks only): pad every batch to maxLength and do not group by length.
    `on_checkpoint`: called on the main process with each checkpoint directory once it is saved.
    """
    dist = Distributed.from_environment()
    training = spec.training
    task = spec.task
    precision = resolve_precision(training.precision)
    set_seed(training.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    listwise = task == "click-through" and training.loss == "listwise"
    if task == "click-through" and training.inverse_propensity and dist.is_main:
        weights = impression_weights(data.train, True)
        logged = int(data.train[PROPENSITY].notna().sum()) if PROPENSITY in data.train else 0
        log.info("impressions weighted by 1/propensity (at most %g): %d of %d logged one; weights %.3g to %.3g",
                 MAX_INVERSE_PROPENSITY, logged, len(data.train), weights.min(), weights.max())
    train_rows = build_rows(task, tokenizer, data.train, training.max_length, training.seed, listwise,
                            training.inverse_propensity)
    examples = len(train_rows["length"])
    # The rows the model runs: (context, product) pairs for click-through (impression_pairs); listwise examples are
    # lists of them, as many lists per batch as make about batchSize rows.
    model_rows = sum(len(labels) for labels in train_rows["labels"]) if listwise else examples
    batch_size = max(1, round(training.batch_size * examples / model_rows)) if listwise else training.batch_size
    passes = training_passes(training.epochs, len(data.train), model_rows) if task == "click-through" else training.epochs
    if examples < (2 if task == "embedding" else 1):
        what = "positive (context, product) pairs" if task == "embedding" else "examples"
        raise JobError(f"the training split has {examples} {what}; too few to train {task}")
    validation_rows = (build_rows(task, tokenizer, data.validation, training.max_length, training.seed, listwise,
                                  training.inverse_propensity)
                       if len(data.validation) else None)
    if validation_rows is not None and len(validation_rows["length"]) < (2 if task == "embedding" else 1):
        validation_rows = None

    import datasets

    train_set = datasets.Dataset.from_dict(train_rows)
    validation_set = datasets.Dataset.from_dict(validation_rows) if validation_rows is not None else None
    on_gpu = torch.cuda.is_available()
    pad_multiple = 8 if on_gpu and not naive else None
    collator = build_collator(task, tokenizer, pad_multiple, training.seed, listwise)
    if naive:
        collator = _NaivePadding(collator, tokenizer, training.max_length)

    model = load_base_model(task, base_dir)
    if training.lora is not None:
        model = apply_lora(task, model, training.lora)

    total = planned_steps(examples, batch_size, training.gradient_accumulation_steps, dist.world_size,
                          passes)
    # Checkpoints cost time (weights and optimiser state): save by the clock in one process; by
    # steps under torchrun, where every rank must decide alike without talking.
    fixed_steps = os.environ.get(ENV_CHECKPOINT_STEPS)
    timed = not fixed_steps and dist.world_size == 1 and not naive
    save_steps = int(fixed_steps or max(1, math.ceil(total / CHECKPOINTS_PER_RUN)))
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=passes,
        learning_rate=training.learning_rate,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size if listwise else max(batch_size, 32),
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        warmup_steps=math.ceil(total * training.warmup_ratio),
        weight_decay=training.weight_decay,
        seed=training.seed,
        data_seed=training.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        length_column_name="length",
        **_sampling_arguments(grouped=not naive),
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        eval_strategy="steps" if validation_set is not None else "no",
        eval_steps=max(1, math.ceil(total / EVALUATIONS_PER_RUN)),
        save_strategy="no" if naive or timed else "steps",
        save_steps=save_steps,
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=max(1, total // LOG_LINES_PER_RUN),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_backend=None if on_gpu else ("gloo" if dist.world_size > 1 else None),
        ddp_find_unused_parameters=False,
        use_cpu=not on_gpu,
    )
    _ = args.device  # sets up the process group under torchrun
    if dist.is_main:
        prepare_checkpoints(checkpoints, run_key, dist)
    if dist.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every rank sees the main rank's view of the checkpoints
    resume = usable_checkpoint(checkpoints, run_key, dist)
    callback = ProgressCallback(reporter, training.epochs / passes)
    callbacks: list[TrainerCallback] = [callback]
    if on_checkpoint is not None:
        callbacks.append(_CheckpointHook(checkpoints, on_checkpoint))
    best_epoch = (BestEpoch(data, selection_metric(spec), tokenizer, training.max_length)
                  if picks_best_epoch(task, data, dist.world_size) and not naive else None)
    if best_epoch is not None:
        callbacks.append(best_epoch)
    if timed:
        callbacks.append(TimedCheckpoints(float(os.environ.get(ENV_CHECKPOINT_SECONDS) or DEFAULT_CHECKPOINT_SECONDS)))
    trainer = RecopsTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        recops_task=task,
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts; ProgressCallback writes readable lines
    if resume is not None and dist.is_main:
        state = json.loads((resume / CHECKPOINT_STATE).read_text())
        log.info("resuming from checkpoint %s (step %s of %s)", resume, state.get("global_step"), state.get("max_steps"))
    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    seconds = time.monotonic() - started
    # Figures in rows the model ran, also when the Trainer counted listwise examples (lists of rows).
    rows_per_example = model_rows / examples
    samples_per_second = (output.metrics or {}).get("train_samples_per_second")
    result = TrainResult(
        log_history=list(trainer.state.log_history),
        precision=precision,
        total_steps=trainer.state.max_steps,
        resumed_from=str(resume) if resume is not None else None,
        train_examples=model_rows,
        seconds=seconds,
        samples_per_second=samples_per_second * rows_per_example if samples_per_second else None,
    )
    if dist.is_main:
        log.info("trained %d examples (of %d rows) x %s passes in %.1fs: %.1f samples/s (precision %s, %d process%s)",
                 result.train_examples, len(data.train),
                 f"{passes:.3g}", seconds, result.samples_per_second or 0.0, precision, dist.world_size,
                 "es" if dist.world_size > 1 else "")
    if best_epoch is not None:
        best_epoch.restore(trainer.model)
        result.epochs = best_epoch.history
        result.best_epoch = best_epoch.best[0] if best_epoch.best else None
    if dist.is_main and save_to is not None:
        final: Any = trainer.model
        if training.lora is not None:
            final = final.merge_and_unload()  # the server loads a plain model
        final.save_pretrained(str(save_to))
        tokenizer.save_pretrained(str(save_to))
    if dist.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


class _NaivePadding:
    """Benchmark baseline: every batch padded to max length."""

    def __init__(self, inner: Any, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.inner, self.tokenizer, self.max_length = inner, tokenizer, max_length
        inner.pad_to_multiple_of = max_length
        if isinstance(inner, _MaskingCollator):
            inner.inner.pad_to_multiple_of = max_length

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return dict(self.inner(features))


def seed_everything(seed: int) -> None:
    set_seed(seed)
    np.random.seed(seed)

"""Load test of `recops serve`: dynamic batching and int8 against a naive baseline.

Starts real `recops serve` processes on one model and drives each with concurrent clients,
every request ranking `--candidates` items (100 by default). Four servers:

  naive       --max-batch-size 1 --max-batch-wait 0s   (one forward pass per request, no batching)
  batched     --max-batch-size N --max-batch-wait W    (dynamic batching across requests)
  naive+int8, batched+int8   the same with --quantization int8

and prints throughput (requests/s and pairs/s), p50 and p99 latency, the ratios against the
naive baseline, and how far int8 scores are from float32 ones on the same requests.

    .venv/bin/python benchmarks/serve_load.py                      # MiniLM-L6 cross-encoder
    .venv/bin/python benchmarks/serve_load.py --model-size tiny    # the tiny test model (fast)
    .venv/bin/python benchmarks/serve_load.py --clients 16 --requests 200 --torch-threads 8

The model is MiniLM-L6 (builtin://all-minilm-l6-v2) with a random one-logit head: the
architecture and cost of a fine-tuned ranker, without training one first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ["red", "blue", "green", "black", "white", "running", "trail", "leather", "canvas", "wool", "cotton", "linen", "summer", "winter", "garden", "kitchen", "steel", "ceramic", "oak", "walnut", "chair", "table", "lamp", "kettle", "shoes", "boots", "socks", "shirt", "dress", "jacket", "bag", "backpack", "wallet", "watch", "phone", "case", "charger", "cable", "desk", "shelf", "rug", "pillow", "blanket", "mug", "bottle"]


def make_model(size: str, directory: Path) -> Path:
    from tests.support.models import tiny_served_model

    from recops.api.contracts import MODEL_MANIFEST, ModelManifest

    if size == "tiny":
        return tiny_served_model(directory, "click-through", version="bench-tiny")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from recops.uris import builtin_path

    torch.manual_seed(0)
    base = str(builtin_path("all-minilm-l6-v2"))
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).save_pretrained(str(directory))
    AutoTokenizer.from_pretrained(base).save_pretrained(str(directory))
    manifest = ModelManifest(task="click-through", modelVersion="bench-minilm", architecture="cross-encoder",
                             scoreTransform="sigmoid", maxLength=64, baseModel="builtin://all-minilm-l6-v2")
    (directory / MODEL_MANIFEST).write_text(manifest.to_json())
    return directory


def request_bodies(count: int, candidates: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)

    def phrase(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [{"query": phrase(1, 4), "user": {"id": f"user-{rng.randint(1, 1000)}"},
             "candidates": [{"id": f"sku-{rng.randint(1, 10**6)}-{j}", "text": phrase(3, 14)}
                            for j in range(candidates)]}
            for _ in range(count)]


async def drive(base: str, bodies: list[dict[str, Any]], clients: int) -> tuple[float, list[float], list[Any], int]:
    """(wall seconds, per-request latencies, ranked answers in body order, non-200 count)."""
    import aiohttp

    answers: list[Any] = [None] * len(bodies)
    latencies: list[float] = []
    failures = 0
    next_index = 0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600),
                                     connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def client() -> None:
            nonlocal next_index, failures
            while next_index < len(bodies):
                index = next_index
                next_index += 1
                started = time.perf_counter()
                async with session.post(base + "/v1/rank", json=bodies[index]) as response:
                    payload = await response.json()
                    latencies.append(time.perf_counter() - started)
                    if response.status == 200:
                        answers[index] = payload
                    else:
                        failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - started
    return wall, latencies, answers, failures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        for r, i in enumerate(order):
            out[i] = float(r)
        return out
    ra, rb = ranks(a), ranks(b)
    return statistics.correlation(ra, rb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-size", choices=("minilm", "tiny"), default="minilm")
    parser.add_argument("--model", help="serve this complete model instead of building one")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", type=int, default=48, help="requests per server (default 48)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request (default 100)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="batched servers' --max-batch-size")
    parser.add_argument("--max-batch-wait", default="10ms", help="batched servers' --max-batch-wait")
    parser.add_argument("--max-pairs-per-pass", type=int, default=256)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: the CPUs available")
    parser.add_argument("--configs", default="naive,batched,naive+int8,batched+int8")
    parser.add_argument("--rounds", type=int, default=3, help="turns each server is driven (default 3)")
    args = parser.parse_args()

    from tests.support.serving import ServeProcess

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(tempfile.mkdtemp(prefix="recops-bench-"))
    model = Path(args.model) if args.model else make_model(args.model_size, workdir / "model")
    bodies = request_bodies(args.requests, args.candidates)
    warmup = request_bodies(max(2, args.clients), args.candidates, seed=1)
    threads = str(args.torch_threads or "")
    print(f"model {model} ({args.model_size if not args.model else 'given'}); {args.requests} requests x "
          f"{args.candidates} candidates, {args.clients} concurrent clients; CPUs available "
          f"{len(os.sched_getaffinity(0))}, torch threads {threads or 'auto'}; "
          f"batched = --max-batch-size {args.max_batch_size} --max-batch-wait {args.max_batch_wait}")
    # All servers run at once and are driven in turns, round after round, so that load from
    # elsewhere on a shared machine falls on every configuration alike.
    servers: dict[str, ServeProcess] = {}
    configs = args.configs.split(",")
    runs: dict[str, list[tuple[float, list[float], list[Any], int]]] = {config: [] for config in configs}
    try:
        for config in configs:
            batched = config.startswith("batched")
            flags = (["--max-batch-size", str(args.max_batch_size), "--max-batch-wait", args.max_batch_wait]
                     if batched else ["--max-batch-size", "1", "--max-batch-wait", "0s"])
            flags += ["--quantization", "int8" if config.endswith("int8") else "none",
                      "--max-pairs-per-pass", str(args.max_pairs_per_pass), "--max-queue", "10000"]
            servers[config] = ServeProcess(model, *flags, env={"RECOPS_TORCH_THREADS": threads or "0"})
        for server in servers.values():
            server.wait_ready(600)
            asyncio.run(drive(server.base, warmup, args.clients))
        for round_number in range(1, args.rounds + 1):
            for config in configs:
                run = asyncio.run(drive(servers[config].base, bodies, args.clients))
                runs[config].append(run)
                wall, latencies, _, failures = run
                print(f"  round {round_number} {config:13s} {len(bodies) / wall:7.2f} req/s "
                      f"{len(bodies) * args.candidates / wall:8.0f} pairs/s  p50 {percentile(latencies, 0.5) * 1000:8.1f} ms"
                      f"  p99 {percentile(latencies, 0.99) * 1000:8.1f} ms  non-200 {failures}", flush=True)
        results: dict[str, dict[str, Any]] = {}
        for config in configs:
            batches = servers[config].metrics()
            count = sum(v for _, v in batches.get("recops_batch_size_count", []))
            total = sum(v for _, v in batches.get("recops_batch_size_sum", []))
            latencies = [x for run in runs[config] for x in run[1]]
            results[config] = {
                "rps": statistics.median(len(bodies) / run[0] for run in runs[config]),
                "p50": percentile(latencies, 0.5) * 1000, "p99": percentile(latencies, 0.99) * 1000,
                "mean_batch": total / count if count else 0.0, "answers": runs[config][-1][2],
            }
    finally:
        for server in servers.values():
            server.stop()
    for config, r in results.items():
        print(f"  {config:13s} median {r['rps']:7.2f} req/s {r['rps'] * args.candidates:8.0f} pairs/s  "
              f"p50 {r['p50']:8.1f} ms  p99 {r['p99']:8.1f} ms (all rounds)  mean batch {r['mean_batch']:.2f} requests")

    print()
    print(f"{'config':13s} {'req/s':>8s} {'p50 ms':>9s} {'p99 ms':>9s} {'x naive req/s':>14s} "
          f"{'x naive p50':>12s} {'x naive p99':>12s}")
    for config, r in results.items():
        baseline = results.get("naive+int8" if config.endswith("int8") and "naive+int8" in results else "naive")
        if baseline is None:
            baseline = r
        print(f"{config:13s} {r['rps']:8.2f} {r['p50']:9.1f} {r['p99']:9.1f} {r['rps'] / baseline['rps']:14.2f} "
              f"{r['p50'] / baseline['p50']:12.2f} {r['p99'] / baseline['p99']:12.2f}")
    if "naive" in results and "batched+int8" in results:
        r = results["batched+int8"]
        print(f"batched+int8 vs naive (float32): throughput x{r['rps'] / results['naive']['rps']:.2f}, "
              f"p50 x{r['p50'] / results['naive']['p50']:.2f}")
    for fp32, int8 in (("naive", "naive+int8"), ("batched", "batched+int8")):
        if fp32 in results and int8 in results:
            diffs, correlations = [], []
            for a, b in zip(results[fp32]["answers"], results[int8]["answers"], strict=True):
                if a is None or b is None:
                    continue
                sa = {e["id"]: e["score"] for e in a["items"]}
                sb = {e["id"]: e["score"] for e in b["items"]}
                ids = sorted(sa)
                diffs.extend(abs(sa[i] - sb[i]) for i in ids)
                correlations.append(spearman([sa[i] for i in ids], [sb[i] for i in ids]))
            print(f"int8 vs float32 scores ({fp32}): mean |diff| {statistics.mean(diffs):.4f}, "
                  f"max |diff| {max(diffs):.4f}, mean Spearman rank correlation per request "
                  f"{statistics.mean(correlations):.4f}")
    if "naive" in results and "batched" in results:
        diffs = [abs(ea["score"] - {e["id"]: e["score"] for e in b["items"]}[ea["id"]])
                 for a, b in zip(results["naive"]["answers"], results["batched"]["answers"], strict=True)
                 if a and b for ea in a["items"]]
        print(f"batched vs unbatched float32 scores: max |diff| {max(diffs):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

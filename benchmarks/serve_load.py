"""Load test of `recops serve`: batching, the optimised (ONNX Runtime) forms and the score cache against torch float32.

Starts real `recops serve` processes on one model and drives each with concurrent clients, every request ranking
`--candidates` items (100 by default). Configurations (`--configs`):

  torch              float32 torch, one request per forward pass (the reference of every speedup)
  torch+batched      float32 torch with dynamic batching (--max-batch-size N --max-batch-wait W)
  torch-int8         torch's dynamic int8 (--quantization int8)
  onnx               the float32 ONNX form (recops.train.optimize.export, quantization none), ONNX Runtime
  onnx-int8          the int8 ONNX form (what spec.optimize serves by default)
  onnx-int8+batched  the same with dynamic batching

Every server runs without the score cache, except with `--zipf S`: then the requests repeat their queries with
Zipf-distributed frequencies (exponent S) and `onnx-int8+cache` (the default cache) runs beside `onnx-int8`, which
prints the cache's hit rate and what it buys. For each configuration: req/s, p50/p99 latency, the server process's
CPU milliseconds per request (user + system, from /proc: the figure load from other work on a shared machine changes
least), the time from process start to ready, and the rank agreement of its scores with torch float32 (mean Spearman per
request and top-10 overlap) on every distinct request once (the whole test split with --data), untimed. The last line is one JSON object {"configs": [{"name",
"req_s", "p99_ms", "speedup", "cpu_ms_per_request", "cpu_speedup", "spearman", "top10_overlap"}, ...]}.

    .venv/bin/python benchmarks/serve_load.py                      # MiniLM-L6 with a random head, random texts
    .venv/bin/python benchmarks/serve_load.py --model DIR --data events.jsonl --split '{"by": "query", "test": 0.3}'
    .venv/bin/python benchmarks/serve_load.py --model DIR --data ... --zipf 1.1 --configs onnx-int8

With `--data` (the data the model was trained on, and its split) the requests are the test split's queries, each
with its impressions' products and other products of the catalogue up to `--candidates`. Without `--model`, the
model is MiniLM-L6 (builtin://all-minilm-l6-v2) with a random one-logit head: the cost of a fine-tuned ranker, not
its ranking (a random head's int8 agreement says little: measure a trained model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
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
                        if not failures:
                            print(f"  a request failed: {response.status} {payload}", flush=True)
                        failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - started
    return wall, latencies, answers, failures


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/PID/stat, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


CONFIGS = "torch,torch+batched,torch-int8,onnx,onnx-int8,onnx-int8+batched"


def onnx_model(model: Path, quantization: str, directory: Path) -> Path:
    """A copy of `model` (its files linked) with its optimised ONNX form named in recops.json, as spec.optimize makes
    it when the form passes its bounds."""
    from recops.api.contracts import MODEL_MANIFEST, ModelManifest, Optimization
    from recops.optimized import ONNX_FILE
    from recops.train.optimize import export

    directory.mkdir(parents=True)
    for item in model.iterdir():
        if item.name not in (MODEL_MANIFEST, "onnx"):
            (directory / item.name).symlink_to(item.resolve())
    started = time.perf_counter()
    export(model, directory / ONNX_FILE, quantization)
    manifest = ModelManifest.model_validate_json((model / MODEL_MANIFEST).read_text())
    optimization = Optimization(quantization=quantization, file=ONNX_FILE, reason="benchmarks/serve_load.py")
    (directory / MODEL_MANIFEST).write_text(manifest.model_copy(update={"optimization": optimization}).to_json())
    print(f"  exported {quantization} ONNX in {time.perf_counter() - started:.1f} s: "
          f"{(directory / ONNX_FILE).stat().st_size / 1e6:.1f} MB", flush=True)
    return directory


def test_queries(data_path: str, split: dict[str, Any], candidates: int, seed: int = 0) -> list[dict[str, Any]]:
    """One request per query of the test split of the model's data: the query with its impressions' products,
    then other products of the catalogue up to `candidates`."""
    from recops.api.finetunejob import DatasetSpec
    from recops.train.data import prepare

    data = prepare(DatasetSpec.model_validate({"uri": data_path, "split": split}), "click-through")
    import pandas as pd

    products = pd.concat([data.test, data.train]).drop_duplicates("product_id")
    catalogue = products[["product_id", "product_text"]].values.tolist()
    rng = random.Random(seed)
    queries = []
    for _, rows in data.test.groupby("group", sort=True):
        own = rows.drop_duplicates("product_id")[["product_id", "product_text"]].values.tolist()[:candidates]
        seen = {str(i) for i, _ in own}
        others = [c for c in rng.sample(catalogue, min(len(catalogue), 3 * candidates)) if str(c[0]) not in seen]
        chosen = (own + others)[:candidates]
        queries.append({"query": str(rows["context"].iloc[0]),
                        "candidates": [{"id": str(i), "text": str(t)} for i, t in chosen]})
    return queries


def pick(queries: list[dict[str, Any]], count: int, zipf: float | None, rng: random.Random) -> list[dict[str, Any]]:
    """`count` requests: each query once in turn, or drawn with Zipf weights 1/rank^s (head queries repeat)."""
    if zipf is None:
        return [queries[i % len(queries)] for i in range(count)]
    weights = [1.0 / (rank ** zipf) for rank in range(1, len(queries) + 1)]
    return rng.choices(queries, weights=weights, k=count)


def agreement(reference: list[Any], other: list[Any]) -> tuple[float | None, float | None]:
    """Mean Spearman correlation and top-10 overlap of two servers' scores, per request."""
    correlations, overlaps = [], []
    for a, b in zip(reference, other, strict=True):
        if a is None or b is None:
            continue
        sa = {e["id"]: e["score"] for e in a["items"]}
        sb = {e["id"]: e["score"] for e in b["items"]}
        ids = sorted(sa)
        if len(set(sa.values())) > 1 and len(set(sb.values())) > 1:
            correlations.append(spearman([sa[i] for i in ids], [sb[i] for i in ids]))
        top_a = set(sorted(ids, key=lambda i: -sa[i])[:10])
        top_b = set(sorted(ids, key=lambda i: -sb[i])[:10])
        overlaps.append(len(top_a & top_b) / max(1, min(10, len(ids))))
    return (statistics.mean(correlations) if correlations else None, statistics.mean(overlaps) if overlaps else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-size", choices=("minilm", "tiny"), default="minilm")
    parser.add_argument("--model", help="serve this complete model (e.g. a trained one) instead of building one")
    parser.add_argument("--data", help="the model's data: requests from its test split (with --split)")
    parser.add_argument("--split", default='{"by": "query", "validation": 0.15, "test": 0.3}',
                        help="dataset.split of the model's FineTuneJob, as JSON")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", type=int, default=48, help="requests per server and round (default 48)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request (default 100)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="batched servers' --max-batch-size")
    parser.add_argument("--max-batch-wait", default="10ms", help="batched servers' --max-batch-wait")
    parser.add_argument("--max-pairs-per-pass", type=int, default=256)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="threads per server (torch or ONNX Runtime; default 1, 0: the CPUs available)")
    parser.add_argument("--configs", default=CONFIGS)
    parser.add_argument("--zipf", type=float, help="repeat queries with Zipf(S) frequencies; adds onnx-int8+cache")
    parser.add_argument("--rounds", type=int, default=3, help="turns each server is driven (default 3)")
    args = parser.parse_args()

    from tests.support.serving import ServeProcess

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(tempfile.mkdtemp(prefix="recops-bench-"))
    model = Path(args.model) if args.model else make_model(args.model_size, workdir / "model")
    configs = args.configs.split(",")
    if args.zipf is not None and "onnx-int8+cache" not in configs:
        configs.append("onnx-int8+cache")
    if "torch" not in configs:
        configs.insert(0, "torch")  # the reference of every speedup and agreement
    # `distinct`: every query once (the test split's, with --data), what rank agreement is judged on; `bodies`: the
    # timed stream drawn from them (in turn, or Zipf-weighted so head queries repeat).
    if args.data:
        distinct = test_queries(args.data, json.loads(args.split), args.candidates)
        warmup = pick(test_queries(args.data, json.loads(args.split), args.candidates, seed=1), max(2, args.clients),
                      None, random.Random(1))
    else:
        distinct = request_bodies(args.requests, args.candidates)
        warmup = request_bodies(max(2, args.clients), args.candidates, seed=1)
    bodies = pick(distinct, args.requests, args.zipf, random.Random(0))
    threads = str(args.torch_threads)
    print(f"model {model}; {args.requests} requests x {args.candidates} candidates "
          f"({'the test split of ' + args.data if args.data else 'random texts'}"
          f"{f', queries Zipf({args.zipf})' if args.zipf is not None else ''}), {args.clients} concurrent clients; "
          f"CPUs available {len(os.sched_getaffinity(0))}, threads per server {threads or 'all'}; batched = "
          f"--max-batch-size {args.max_batch_size} --max-batch-wait {args.max_batch_wait}", flush=True)
    forms = {q: onnx_model(model, q, workdir / f"onnx-{q}") for q in ("none", "int8")
             if any(c.split("+")[0] == ("onnx" if q == "none" else "onnx-int8") for c in configs)}
    # All servers run at once and are driven in turns, round after round, so that load from elsewhere on a shared
    # machine falls on every configuration alike.
    servers: dict[str, ServeProcess] = {}
    ready_s: dict[str, float] = {}
    runs: dict[str, list[tuple[float, list[float], list[Any], int]]] = {config: [] for config in configs}
    cpu_ms: dict[str, list[float]] = {config: [] for config in configs}  # server CPU per request, per round
    try:
        for config in configs:
            form, _, extra = config.partition("+")
            flags = (["--max-batch-size", str(args.max_batch_size), "--max-batch-wait", args.max_batch_wait]
                     if extra == "batched" else ["--max-batch-size", "1", "--max-batch-wait", "0s"])
            flags += ["--max-pairs-per-pass", str(args.max_pairs_per_pass), "--max-queue", "10000",
                      "--score-cache-entries", "100000" if extra == "cache" else "0"]
            if form.startswith("onnx"):
                served, flags = forms["int8" if form == "onnx-int8" else "none"], [*flags, "--runtime", "onnx"]
            else:
                served = model
                flags += ["--runtime", "torch", "--quantization", "int8" if form == "torch-int8" else "none"]
            started = time.perf_counter()
            servers[config] = ServeProcess(served, *flags, env={"RECOPS_TORCH_THREADS": threads})
            servers[config].wait_ready(600)  # one at a time: the time to ready is the process's own
            ready_s[config] = time.perf_counter() - started
            asyncio.run(drive(servers[config].base, warmup, args.clients))
        for round_number in range(1, args.rounds + 1):
            for config in configs:
                if config.endswith("+cache") and round_number > 1:
                    continue  # its first round filled the cache: later rounds would be all hits
                cpu_before = cpu_seconds(servers[config].process.pid)
                run = asyncio.run(drive(servers[config].base, bodies, args.clients))
                cpu_ms[config].append((cpu_seconds(servers[config].process.pid) - cpu_before) * 1000 / len(bodies))
                runs[config].append(run)
                wall, latencies, _, failures = run
                print(f"  round {round_number} {config:18s} {len(bodies) / wall:7.2f} req/s  "
                      f"p50 {percentile(latencies, 0.5) * 1000:8.1f} ms  p99 {percentile(latencies, 0.99) * 1000:8.1f} ms"
                      f"  cpu {cpu_ms[config][-1]:6.1f} ms/req  non-200 {failures}  load {os.getloadavg()[0]:.1f}",
                      flush=True)
        # Rank agreement with torch float32: every distinct query once (untimed), so that repeated head queries
        # weigh no more than the others.
        answers = {config: asyncio.run(drive(servers[config].base, distinct, args.clients))[2] for config in configs}
        results: dict[str, dict[str, Any]] = {}
        for config in configs:
            samples = servers[config].metrics()
            hits = sum(v for _, v in samples.get("recops_score_cache_hits_total", []))
            misses = sum(v for _, v in samples.get("recops_score_cache_misses_total", []))
            latencies = [x for run in runs[config] for x in run[1]]
            results[config] = {
                "rps": statistics.median(len(bodies) / run[0] for run in runs[config]),
                "p50": percentile(latencies, 0.5) * 1000, "p99": percentile(latencies, 0.99) * 1000,
                "cpu_ms": statistics.median(cpu_ms[config]),
                "answers": answers[config], "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
            }
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    reference = results["torch"]
    rows = []
    print()
    print(f"{'config':18s} {'req/s':>8s} {'p50 ms':>9s} {'p99 ms':>9s} {'speedup':>8s} {'cpu ms':>8s} {'x cpu':>6s} "
          f"{'Spearman':>9s} {'top-10':>7s} {'ready s':>8s}")
    for config, r in results.items():
        rho, overlap = agreement(reference["answers"], r["answers"])
        row = {"name": config, "req_s": round(r["rps"], 3), "p99_ms": round(r["p99"], 1),
               "speedup": round(r["rps"] / reference["rps"], 3), "cpu_ms_per_request": round(r["cpu_ms"], 1),
               "cpu_speedup": round(reference["cpu_ms"] / r["cpu_ms"], 3) if r["cpu_ms"] else None,
               "spearman": None if rho is None else round(rho, 4),
               "top10_overlap": None if overlap is None else round(overlap, 4)}
        rows.append(row)
        print(f"{config:18s} {r['rps']:8.2f} {r['p50']:9.1f} {r['p99']:9.1f} {row['speedup']:8.2f} "
              f"{r['cpu_ms']:8.1f} {row['cpu_speedup'] or float('nan'):6.2f} "
              f"{rho if rho is not None else float('nan'):9.4f} {overlap if overlap is not None else float('nan'):7.3f} "
              f"{ready_s[config]:8.1f}")
    if "onnx-int8+cache" in results and "onnx-int8" in results:
        cached, plain = results["onnx-int8+cache"], results["onnx-int8"]
        print(f"score cache on Zipf({args.zipf}) queries: hit rate {cached['hit_rate']:.3f} "
              f"(first pass over the stream), {cached['rps']:.2f} req/s vs {plain['rps']:.2f} without "
              f"(x{cached['rps'] / plain['rps']:.2f})")
    print(f"(reproduce: .venv/bin/python benchmarks/serve_load.py {' '.join(sys.argv[1:])})")
    print(json.dumps({"configs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

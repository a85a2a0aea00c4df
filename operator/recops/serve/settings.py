"""Settings of `recops serve`: flags, each with an environment-variable fallback.

Pure (no torch): the CLI imports this module to build its parser.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from recops.api.common import parse_duration
from recops.api.contracts import (
    ENV_DEPLOYMENT,
    ENV_FEEDBACK_KEY,
    ENV_MODEL_VERSION,
    ENV_NAMESPACE,
    ENV_POD_NAME,
    ENV_PSEUDONYM_SALT,
    ENV_SERVE_HOST,
    ENV_TRACK,
)
from recops.serve.tokens import MAX_ITEMS

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MIN_FEEDBACK_KEY_BYTES = 16
TRACKS = ("stable", "canary")


class SettingsError(ValueError):
    """A setting `recops serve` cannot run with."""


@dataclass(frozen=True)
class ServeSettings:
    model_uri: str
    host: str
    port: int
    track: str
    event_log_uri: str | None
    model_name: str
    max_batch_size: int  # requests per batch
    max_batch_wait_s: float
    max_candidates: int
    max_queue: int  # requests admitted and not yet answered
    max_text_length: int  # characters
    quantization: str  # none | int8
    runtime: str  # auto (the model's optimised form when it has one) | torch | onnx
    exploration: float  # share of logged responses showing random candidates in a random order
    score_cache_entries: int  # 0: no score cache (recops.serve.cache)
    score_cache_ttl_s: float
    feedback_token_ttl_s: float
    max_pairs_per_pass: int  # a batch's pairs run through the model in chunks of at most this many
    torch_threads: int
    device: str  # auto | cpu | cuda
    drain_timeout_s: float
    idle_timeout_s: float  # a connection sending nothing (no request, stalled headers, idle) is closed after this
    read_timeout_s: float  # a request body must arrive within this
    max_connections: int  # 0: from the descriptor limit (recops.serve.connections)
    namespace: str
    deployment: str
    model_version: str | None  # from the environment; None: recops.json's modelVersion
    pod_name: str
    feedback_key: bytes
    feedback_key_is_random: bool
    pseudonym_salt: str | None


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `recops serve`; every default may come from the environment (RECOPS_*)."""
    add = parser.add_argument
    add("--model", default=_env("RECOPS_MODEL_URI"), metavar="URI",
        help="complete model to serve: a directory, file://, pvc://CLAIM/path or s3://bucket/key (env RECOPS_MODEL_URI)")
    add("--port", type=int, default=int(_env("RECOPS_SERVE_PORT", "8080") or 8080),
        help="HTTP port (default 8080; 0 picks a free one); the host is $RECOPS_SERVE_HOST or 0.0.0.0")
    add("--track", choices=TRACKS, default=None,
        help=f"track named in metrics and feedback tokens (default ${ENV_TRACK} or stable)")
    add("--event-log", default=_env("RECOPS_EVENT_LOG"), metavar="URI",
        help="append impressions and feedback as jsonl under URI/dt=YYYY-MM-DD/hour=HH/<pod>.jsonl")
    add("--model-name", default=_env("RECOPS_MODEL_NAME"),
        help=f"model name of the Open Inference Protocol routes (default ${ENV_DEPLOYMENT} or 'model')")
    add("--max-batch-size", type=int, default=int(_env("RECOPS_MAX_BATCH_SIZE", "32") or 32),
        help="most requests scored together in one batch (default 32)")
    add("--max-batch-wait", default=_env("RECOPS_MAX_BATCH_WAIT", "5ms"),
        help="longest a request waits for its batch to fill, a Go duration (default 5ms)")
    add("--max-candidates", type=int, default=int(_env("RECOPS_MAX_CANDIDATES", "200") or 200),
        help="most candidates (or texts) one request may carry (default 200)")
    add("--max-queue", type=int, default=int(_env("RECOPS_MAX_QUEUE", "256") or 256),
        help="requests admitted and not yet answered beyond which the server answers 503 (default 256)")
    add("--max-text-length", type=int, default=int(_env("RECOPS_MAX_TEXT_LENGTH", "2000") or 2000),
        help="longest accepted text in characters (default 2000)")
    add("--quantization", choices=("none", "int8"), default=_env("RECOPS_QUANTIZATION", "none"),
        help="int8: dynamic int8 quantisation of the Linear layers (CPU only; default none)")
    add("--runtime", choices=("auto", "torch", "onnx"), default=_env("RECOPS_RUNTIME", "auto"),
        help="auto: ONNX Runtime when the model has an optimised form (FineTuneJob spec.optimize), else torch; "
             "torch: always the full-precision model; onnx: the optimised form or refuse to start (default auto)")
    add("--score-cache-entries", type=int, default=int(_env("RECOPS_SCORE_CACHE_ENTRIES", "100000") or 0),
        help="(context, candidate) scores kept for repeated queries, least recently used out first; 0: none "
             "(default 100000, some 20 MB)")
    add("--score-cache-ttl", default=_env("RECOPS_SCORE_CACHE_TTL", "10m"),
        help="how long a kept score stays, a Go duration (default 10m)")
    add("--exploration", type=float, default=float(_env("RECOPS_EXPLORATION", "0") or 0),
        help="with --event-log, the share of ranked responses that show k random candidates in a random order, "
             "so that the log can judge models without the serving model's bias (default 0)")
    add("--feedback-token-ttl", default=_env("RECOPS_FEEDBACK_TOKEN_TTL", "1h"),
        help="how long feedback for a ranked response is accepted, a Go duration (default 1h)")
    add("--max-pairs-per-pass", type=int, default=int(_env("RECOPS_MAX_PAIRS_PER_PASS", "256") or 256),
        help="most (context, item) pairs in one forward pass; bigger batches run in chunks (default 256)")
    add("--torch-threads", type=int, default=int(_env("RECOPS_TORCH_THREADS", "0") or 0),
        help="intra-op threads of the inference thread (default 0: the CPUs this process may use)")
    add("--device", choices=("auto", "cpu", "cuda"), default=_env("RECOPS_DEVICE", "auto"),
        help="where the model runs (default auto: cuda when available)")
    add("--drain-timeout", default=_env("RECOPS_DRAIN_TIMEOUT", "30s"),
        help="on SIGTERM, longest wait for in-flight requests, a Go duration (default 30s)")
    add("--idle-timeout", default=_env("RECOPS_IDLE_TIMEOUT", "15s"),
        help="close a connection that sends no request, stalls in its headers or idles this long (default 15s)")
    add("--read-timeout", default=_env("RECOPS_READ_TIMEOUT", "30s"),
        help="answer 408 to a request whose body has not arrived within this (default 30s)")
    add("--max-connections", type=int, default=int(_env("RECOPS_MAX_CONNECTIONS", "0") or 0),
        help="most open connections; beyond, the oldest idle ones are closed (default 0: the descriptor limit "
             "less a reserve)")
    add("--insecure-random-feedback-key", action="store_true",
        help=f"without ${ENV_FEEDBACK_KEY}, sign feedback tokens with a random key: feedback then only "
             "verifies on this process. For local development only.")


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _namespace() -> str:
    explicit = _env(ENV_NAMESPACE)
    if explicit:
        return explicit
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, not {value}")
    return value


def _at_most(name: str, value: int, limit: int) -> int:
    if value > limit:
        raise SettingsError(f"{name} must be at most {limit}, not {value}")
    return value


def _share(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name} must be a share in [0, 1], not {value:g}")
    return value


def _seconds(name: str, text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise SettingsError(f"{name}: {err}") from None


def resolve(args: argparse.Namespace) -> ServeSettings:
    """Settings from parsed flags and the environment; raises SettingsError naming what is wrong."""
    if not args.model:
        raise SettingsError("--model is required: the URI of a complete model (a directory with recops.json)")
    track = args.track or _env(ENV_TRACK, "stable") or "stable"
    if track not in TRACKS:
        raise SettingsError(f"track must be stable or canary, not {track!r} (from ${ENV_TRACK})")
    if not 0 <= args.port <= 65535:
        raise SettingsError(f"--port must be in 0..65535, not {args.port}")
    key_text = _env(ENV_FEEDBACK_KEY)
    key_is_random = False
    if key_text:
        key = key_text.encode()
        if len(key) < MIN_FEEDBACK_KEY_BYTES:
            raise SettingsError(f"${ENV_FEEDBACK_KEY} is too short: use at least {MIN_FEEDBACK_KEY_BYTES} bytes")
    elif args.insecure_random_feedback_key:
        key, key_is_random = os.urandom(32), True
    else:
        raise SettingsError(
            f"${ENV_FEEDBACK_KEY} is not set: feedback tokens must be signed with a key shared by all replicas "
            "(a Secret). For local development pass --insecure-random-feedback-key."
        )
    deployment = _env(ENV_DEPLOYMENT, "local") or "local"
    torch_threads = args.torch_threads if args.torch_threads > 0 else available_cpus()
    return ServeSettings(
        model_uri=args.model,
        host=_env(ENV_SERVE_HOST, "0.0.0.0") or "0.0.0.0",
        port=args.port,
        track=track,
        event_log_uri=args.event_log or None,
        model_name=args.model_name or _env(ENV_DEPLOYMENT) or "model",
        max_batch_size=_positive("--max-batch-size", args.max_batch_size),
        max_batch_wait_s=_seconds("--max-batch-wait", args.max_batch_wait),
        max_candidates=_at_most("--max-candidates", _positive("--max-candidates", args.max_candidates), MAX_ITEMS),
        max_queue=_positive("--max-queue", args.max_queue),
        max_text_length=_positive("--max-text-length", args.max_text_length),
        quantization=args.quantization,
        runtime=args.runtime,
        exploration=_share("--exploration", args.exploration),
        score_cache_entries=max(0, args.score_cache_entries),
        score_cache_ttl_s=_seconds("--score-cache-ttl", args.score_cache_ttl),
        feedback_token_ttl_s=_seconds("--feedback-token-ttl", args.feedback_token_ttl),
        max_pairs_per_pass=_positive("--max-pairs-per-pass", args.max_pairs_per_pass),
        torch_threads=torch_threads,
        device=args.device,
        drain_timeout_s=_seconds("--drain-timeout", args.drain_timeout),
        idle_timeout_s=_seconds("--idle-timeout", args.idle_timeout),
        read_timeout_s=_seconds("--read-timeout", args.read_timeout),
        max_connections=max(0, args.max_connections),
        namespace=_namespace(),
        deployment=deployment,
        model_version=_env(ENV_MODEL_VERSION),
        pod_name=_env(ENV_POD_NAME) or socket.gethostname(),
        feedback_key=key,
        feedback_key_is_random=key_is_random,
        pseudonym_salt=_env(ENV_PSEUDONYM_SALT),
    )

"""`recops operator`: run the Kopf operator (FineTuneJob controller; more kinds to come).

Every flag has an environment variable (what the Helm chart sets); a flag wins over its variable.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recops.controllers.main import OperatorConfig

# flag -> (environment variable, default, help)
_SETTINGS: dict[str, tuple[str, str | None, str]] = {
    "--trainer-image": ("RECOPS_TRAINER_IMAGE", "ghcr.io/recops/trainer:latest",
                        "image of trainer Jobs whose FineTuneJob names none"),
    "--trainer-gpu-image": ("RECOPS_TRAINER_GPU_IMAGE", "ghcr.io/recops/trainer-cuda:latest",
                            "image of trainer Jobs whose FineTuneJob names none and asks for GPUs (gpusPerWorker > 0)"),
    "--server-image": ("RECOPS_SERVER_IMAGE", "ghcr.io/recops/server-torch:latest",
                       "image of model servers (with torch: serves any model)"),
    "--server-onnx-image": ("RECOPS_SERVER_ONNX_IMAGE", "ghcr.io/recops/server:latest",
                            "image of model servers whose model's optimised ONNX form is served (no torch)"),
    "--image-pull-policy": ("RECOPS_IMAGE_PULL_POLICY", "IfNotPresent", "imagePullPolicy of the workloads"),
    "--namespaces": ("RECOPS_NAMESPACES", "",
                     "comma-separated namespaces to watch; empty: the whole cluster"),
    "--prometheus-url": ("RECOPS_PROMETHEUS_URL", None, "default Prometheus for MonitorPolicies that name none"),
    "--prometheus-bearer-token-file": ("RECOPS_PROMETHEUS_BEARER_TOKEN_FILE", None,
                                       "file holding the bearer token for that Prometheus (a mounted Secret key or "
                                       "projected ServiceAccount token), read on each query"),
    "--prometheus-username": ("RECOPS_PROMETHEUS_USERNAME", None, "basic-auth user for that Prometheus"),
    "--prometheus-password-file": ("RECOPS_PROMETHEUS_PASSWORD_FILE", None,
                                   "file holding the basic-auth password (a mounted Secret key)"),
    "--prometheus-ca-file": ("RECOPS_PROMETHEUS_CA_FILE", None, "PEM CA bundle that signs that Prometheus's certificate"),
    "--prometheus-headers": ("RECOPS_PROMETHEUS_HEADERS", None,
                             "extra headers of its queries, comma-separated Name=Value (e.g. X-Scope-OrgID=shop); "
                             "not for secrets"),
    "--job-ttl-seconds": ("RECOPS_JOB_TTL_SECONDS", None,
                          "ttlSecondsAfterFinished of trainer Jobs whose FineTuneJob sets none (unset: keep them)"),
    "--resync-seconds": ("RECOPS_RESYNC_SECONDS", "60", "period of the level-based resync of unfinished objects"),
    "--progress-seconds": ("RECOPS_PROGRESS_SECONDS", "15",
                           "how often a running trainer's log is read for its newest progress line "
                           "(status.progress); 0: only on resync and pod changes"),
    "--start-timeout-seconds": ("RECOPS_START_TIMEOUT_SECONDS", "900",
                                "how long a FineTuneJob whose trainer cannot start (image, Secret key, admission) "
                                "waits before it fails; 0: for ever"),
    "--metrics-port": ("RECOPS_METRICS_PORT", "8080", "port of /metrics (0: off)"),
    "--metrics-address": ("RECOPS_METRICS_ADDRESS", "0.0.0.0", "address /metrics binds"),
    "--liveness": ("RECOPS_LIVENESS_ENDPOINT", "http://0.0.0.0:8081/healthz",
                   "Kopf's liveness/readiness endpoint URL (empty: off)"),
    "--kubeconfig": ("RECOPS_KUBECONFIG", None, "kubeconfig file (default: in-cluster, else $KUBECONFIG)"),
    "--leader-elect": ("RECOPS_LEADER_ELECT", "false",
                       "true: several replicas elect one leader on a coordination.k8s.io Lease; only it acts"),
    "--leader-election-namespace": ("RECOPS_LEADER_ELECTION_NAMESPACE", None,
                                    "namespace of the Lease (default: the operator pod's, else recops-system)"),
    "--leader-election-lease": ("RECOPS_LEADER_ELECTION_LEASE", "recops-operator", "name of the Lease"),
    "--leader-election-lease-seconds": ("RECOPS_LEADER_ELECTION_LEASE_SECONDS", "15",
                                        "how long a Lease that is not renewed stays taken"),
    "--feedback-key-secret": ("RECOPS_FEEDBACK_KEY_SECRET", None,
                              "a shared feedback-key Secret the operator creates, with a random key, where it is "
                              "missing (never changed); empty: none"),
    "--feedback-key-secret-key": ("RECOPS_FEEDBACK_KEY_SECRET_KEY", "feedbackKey", "the key inside that Secret"),
    "--feedback-key-namespaces": ("RECOPS_FEEDBACK_KEY_NAMESPACES", "",
                                  "comma-separated namespaces it is created in at start; empty: the watched "
                                  "namespaces, else the operator's"),
    "--log-level": ("RECOPS_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Run the recops operator (Kopf). Settings come from flags or their environment variables:\n"
        + "\n".join(f"  {flag:<20} ${env}" for flag, (env, _, _) in _SETTINGS.items())
    )
    for flag, (env, default, help_text) in _SETTINGS.items():
        shown = f" (default: {default})" if default else ""
        parser.add_argument(flag, default=os.environ.get(env, default), help=f"{help_text}; env {env}{shown}")


def _optional_int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


def parse_headers(text: str | None) -> dict[str, str]:
    """`A=1,B=2` -> {"A": "1", "B": "2"}."""
    headers = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--prometheus-headers: {item.strip()!r} is not Name=Value")
        headers[name.strip()] = value.strip()
    return headers


def config_from(args: argparse.Namespace) -> OperatorConfig:
    from recops.builders.common import BuilderSettings
    from recops.controllers.feedback_key import SharedFeedbackKey
    from recops.controllers.main import OperatorConfig
    from recops.monitor.prometheus import PrometheusAuth

    if args.prometheus_bearer_token_file and args.prometheus_username:
        raise SystemExit("--prometheus-bearer-token-file and --prometheus-username exclude each other "
                         "(one Authorization header)")
    auth = PrometheusAuth(
        bearer_token_file=args.prometheus_bearer_token_file or None,
        username=args.prometheus_username or None,
        password_file=args.prometheus_password_file or None,
        ca_file=args.prometheus_ca_file or None,
        headers=parse_headers(args.prometheus_headers),
    )

    return OperatorConfig(
        builder=BuilderSettings(
            trainer_image=args.trainer_image,
            trainer_gpu_image=args.trainer_gpu_image,
            server_image=args.server_image,
            server_onnx_image=args.server_onnx_image,
            image_pull_policy=args.image_pull_policy,
            job_ttl_seconds=_optional_int(args.job_ttl_seconds),
        ),
        namespaces=_names(args.namespaces),
        prometheus_url=args.prometheus_url or None,
        prometheus_auth=auth if auth.configured else None,
        resync_seconds=float(args.resync_seconds),
        progress_seconds=float(args.progress_seconds or 0),
        start_timeout_seconds=float(args.start_timeout_seconds or 0),
        metrics_port=int(args.metrics_port or 0),
        metrics_address=args.metrics_address,
        liveness_endpoint=args.liveness or None,
        kubeconfig=args.kubeconfig or None,
        leader_election=str(args.leader_elect).strip().lower() in ("1", "true", "yes", "on"),
        leader_election_namespace=args.leader_election_namespace or None,
        leader_election_lease=args.leader_election_lease,
        leader_election_lease_seconds=float(args.leader_election_lease_seconds),
        feedback_key=SharedFeedbackKey(args.feedback_key_secret, args.feedback_key_secret_key or "feedbackKey",
                                       _names(args.feedback_key_namespaces)) if args.feedback_key_secret else None,
    )


def main(args: argparse.Namespace) -> int:
    from recops.controllers.main import run

    logging.basicConfig(level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(config_from(args))
    return 0

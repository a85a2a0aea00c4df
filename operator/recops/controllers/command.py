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
    "--server-image": ("RECOPS_SERVER_IMAGE", "ghcr.io/recops/server:latest", "image of model servers"),
    "--image-pull-policy": ("RECOPS_IMAGE_PULL_POLICY", "IfNotPresent", "imagePullPolicy of the workloads"),
    "--namespaces": ("RECOPS_NAMESPACES", "",
                     "comma-separated namespaces to watch; empty: the whole cluster"),
    "--prometheus-url": ("RECOPS_PROMETHEUS_URL", None, "default Prometheus for MonitorPolicies that name none"),
    "--job-ttl-seconds": ("RECOPS_JOB_TTL_SECONDS", None,
                          "ttlSecondsAfterFinished of trainer Jobs whose FineTuneJob sets none (unset: keep them)"),
    "--resync-seconds": ("RECOPS_RESYNC_SECONDS", "60", "period of the level-based resync of unfinished objects"),
    "--start-timeout-seconds": ("RECOPS_START_TIMEOUT_SECONDS", "900",
                                "how long a FineTuneJob whose trainer cannot start (image, Secret key, admission) "
                                "waits before it fails; 0: for ever"),
    "--metrics-port": ("RECOPS_METRICS_PORT", "8080", "port of /metrics (0: off)"),
    "--metrics-address": ("RECOPS_METRICS_ADDRESS", "0.0.0.0", "address /metrics binds"),
    "--liveness": ("RECOPS_LIVENESS_ENDPOINT", "http://0.0.0.0:8081/healthz",
                   "Kopf's liveness/readiness endpoint URL (empty: off)"),
    "--kubeconfig": ("RECOPS_KUBECONFIG", None, "kubeconfig file (default: in-cluster, else $KUBECONFIG)"),
    "--peering": ("RECOPS_PEERING", None, "KopfPeering name for several replicas (default: standalone)"),
    "--leader-elect": ("RECOPS_LEADER_ELECT", "false",
                       "true: several replicas elect one leader on a coordination.k8s.io Lease; only it acts"),
    "--leader-election-namespace": ("RECOPS_LEADER_ELECTION_NAMESPACE", None,
                                    "namespace of the Lease (default: the operator pod's, else recops-system)"),
    "--leader-election-lease": ("RECOPS_LEADER_ELECTION_LEASE", "recops-operator", "name of the Lease"),
    "--leader-election-lease-seconds": ("RECOPS_LEADER_ELECTION_LEASE_SECONDS", "15",
                                        "how long a Lease that is not renewed stays taken"),
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


def config_from(args: argparse.Namespace) -> OperatorConfig:
    from recops.builders.common import BuilderSettings
    from recops.controllers.main import OperatorConfig

    return OperatorConfig(
        builder=BuilderSettings(
            trainer_image=args.trainer_image,
            trainer_gpu_image=args.trainer_gpu_image,
            server_image=args.server_image,
            image_pull_policy=args.image_pull_policy,
            job_ttl_seconds=_optional_int(args.job_ttl_seconds),
        ),
        namespaces=tuple(n.strip() for n in (args.namespaces or "").split(",") if n.strip()),
        prometheus_url=args.prometheus_url or None,
        resync_seconds=float(args.resync_seconds),
        start_timeout_seconds=float(args.start_timeout_seconds or 0),
        metrics_port=int(args.metrics_port or 0),
        metrics_address=args.metrics_address,
        liveness_endpoint=args.liveness or None,
        kubeconfig=args.kubeconfig or None,
        peering=args.peering or None,
        leader_election=str(args.leader_elect).strip().lower() in ("1", "true", "yes", "on"),
        leader_election_namespace=args.leader_election_namespace or None,
        leader_election_lease=args.leader_election_lease,
        leader_election_lease_seconds=float(args.leader_election_lease_seconds),
    )


def main(args: argparse.Namespace) -> int:
    from recops.controllers.main import run

    logging.basicConfig(level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(config_from(args))
    return 0

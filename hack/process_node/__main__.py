"""`python hack/process_node ...`: the node, or (`exec SPEC.json`) the launcher inside a container's namespace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python hack/process_node`: import the package from hack/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from process_node.launch import launch
from process_node.node import Node


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "exec":
        launch(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description="recops local process node")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--node-name", default="recops-local")
    ap.add_argument("--apiserver-port", type=int, default=0)
    ap.add_argument("--sd-file", default="", help="Prometheus file_sd output (default STATE/prometheus-sd.json)")
    ap.add_argument("--port", type=int, default=0, help="HTTPS port of the logs endpoint (0: none)")
    ap.add_argument("--tls-cert", default="")
    ap.add_argument("--tls-key", default="")
    ap.add_argument("--taint", action="store_true", help="taint the node recops.dev/process-node=true:NoSchedule")
    ap.add_argument("--no-images", action="store_true",
                    help="run every container as a local process, even when its image is in podman storage")
    Node(ap.parse_args()).run()


if __name__ == "__main__":
    main()

"""The local process node (issue 9): a tiny kubelet that runs pods as local processes.

It registers the Node `recops-local` and runs every pod bound to it: each container's
command as a local process (no image is pulled; a command that does not exist here fails
the pod with reason ExecutableNotFound). Each container runs in its own private mount
namespace (`unshare -m`), where the pod's volumes (emptyDir, configMap, secret, PVC,
projected service-account token, downwardAPI, hostPath) are bind-mounted at the paths
the pod asks for, together with the termination-message file (TMPDIR is per pod too); the
volume directories are per pod (per claim for PVCs), so two pods reading the same path
see their own data. Each pod gets its own loopback pod IP (127.0.0.x), passed to its
processes as RECOPS_SERVE_HOST. Probes (httpGet, tcpSocket, exec), restart policies,
termination messages and graceful deletion (SIGTERM, then SIGKILL after the grace
period) follow the kubelet. Logs are kept per container in files under the state dir.
Pods with prometheus.io/scrape annotations are listed in a Prometheus file_sd file.

A container whose image is in local podman storage (`make images`) runs from that image
instead, with podman (`podman.py`): the image's filesystem and entrypoint, the
pod's volumes (the service-account token, CA and namespace among them), env and
securityContext, the host network; `--no-images` turns that off.

Started by `hack/cluster up --process-node`. Stdlib only. Must run as root (mounts).

    python hack/process_node --kubeconfig K --state-dir D [--node-name N] [--taint]
    python hack/process_node exec SPEC.json    (internal: runs inside a container's namespace)

The parts: `node.py` (the Node: registration, heartbeats, the pod watch, pod IPs, the logs endpoint),
`pod.py` (one pod's life: its containers, restarts, deletion), `probes.py`, `volumes.py`, `status.py`
(what a pod's status says), `launch.py` (inside a container's mount namespace), `downward.py` (env
expansion and the downward API), `api.py` (a stdlib API client), `podman.py` (containers from images).
"""

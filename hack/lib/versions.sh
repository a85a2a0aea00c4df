# Sourced by hack scripts: component versions (read from hack/go.mod, the single
# source of truth) and the cache directories the binaries live in.
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_modver() { awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$HACK_DIR/go.mod"; }
K8S_VERSION="$(_modver k8s.io/kubernetes)"
ETCD_VERSION="$(_modver go.etcd.io/etcd/server/v3)"
KWOK_VERSION="$(_modver sigs.k8s.io/kwok)"
HELM_VERSION="$(_modver helm.sh/helm/v3)"
RECOPS_BIN_CACHE="${RECOPS_BIN_CACHE:-$HOME/.cache/recops/bin}"
K8S_BIN="$RECOPS_BIN_CACHE/k8s-$K8S_VERSION"
ETCD_BIN="$RECOPS_BIN_CACHE/etcd-$ETCD_VERSION"
KWOK_BIN="$RECOPS_BIN_CACHE/kwok-$KWOK_VERSION"
# helm is stamped with the Kubernetes version it assumes offline (build-binaries), so that is in its key.
HELM_BIN="$RECOPS_BIN_CACHE/helm-$HELM_VERSION-kube$K8S_VERSION"

"""The pod spec's expansions: $(VAR) in commands and env, the downward API, quantities."""

from __future__ import annotations

import os
import re


def quantity_to_float(q: str) -> float:
    """Kubernetes quantity -> float (cpu cores or bytes)."""
    units = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    m = re.fullmatch(r"([0-9.eE+-]+?)([a-zA-Z]*)", str(q))
    if not m:
        raise ValueError(q)
    return float(m.group(1)) * units.get(m.group(2), 1)


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: $(VAR) -> value if defined, $$ -> $."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, s)


def field_path(pod: dict, path: str) -> str:
    """Downward API fieldRef.fieldPath."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", "127.0.0.1"), "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs", [])),
        "status.hostIPs": status.get("hostIP", "127.0.0.1"),
    }
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path}")
    return simple[path]


def resource_field(pod: dict, container_name: str, ref: dict) -> str:
    """Downward API resourceFieldRef (limits fall back to the node's capacity, as in k8s)."""
    name = ref.get("containerName") or container_name
    c = next(c for c in pod["spec"]["containers"] if c["name"] == name)
    kind, res = ref["resource"].split(".", 1)
    value = (c.get("resources", {}).get(kind) or {}).get(res)
    if value is None:
        value = str(os.cpu_count()) if res == "cpu" else str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    divisor = quantity_to_float(ref.get("divisor", "1"))
    v = quantity_to_float(value) / divisor
    return str(int(-(-v // 1)))  # ceil, as the kubelet does


"""A pod's volumes: directories (emptyDir, PVC, hostPath) and files (configMap, secret, downwardAPI, projected)."""

from __future__ import annotations

import base64
import os

from .common import NotReadyYet
from .downward import field_path, resource_field


class Volumes:
    """PodRunner's volumes."""

    def volume_dir(self, name: str) -> str:
        vol = next((v for v in self.pod["spec"].get("volumes", []) if v["name"] == name), None)
        if vol is None:
            raise ValueError(f"volumeMount refers to unknown volume {name}")
        if "hostPath" in vol:
            path = vol["hostPath"]["path"]
            if vol["hostPath"].get("type") in ("DirectoryOrCreate", None, "") and not os.path.exists(path):
                os.makedirs(path, exist_ok=True)
            return path
        if "persistentVolumeClaim" in vol:
            d = self.node.pvc_dir / self.ns / vol["persistentVolumeClaim"]["claimName"]
            d.mkdir(parents=True, exist_ok=True)
            return str(d)
        return str(self.dir / "volumes" / name)

    def prepare_volumes(self) -> None:
        for vol in self.pod["spec"].get("volumes", []):
            d = self.dir / "volumes" / vol["name"]
            if "emptyDir" in vol:
                d.mkdir(exist_ok=True)
                d.chmod(0o777)
            elif "configMap" in vol or "secret" in vol or "downwardAPI" in vol or "projected" in vol:
                files = self.volume_files(vol)
                if files is None:
                    continue
                d.mkdir(exist_ok=True)
                for rel, (content, mode) in files.items():
                    p = d / rel
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(content)
                    p.chmod(mode)

    def volume_files(self, vol: dict) -> dict[str, tuple[bytes, int]] | None:
        if "projected" in vol:
            out: dict[str, tuple[bytes, int]] = {}
            mode = vol["projected"].get("defaultMode", 0o644)
            for src in vol["projected"].get("sources", []):
                if "serviceAccountToken" in src:
                    out[src["serviceAccountToken"]["path"]] = (self.sa_token(src["serviceAccountToken"]), mode)
                else:
                    out.update(self.volume_files({**src, "_mode": mode}) or {})
            return out
        default_mode = vol.get("_mode", 0o644)
        if "configMap" in vol or "secret" in vol:
            src = vol.get("configMap") or vol["secret"]
            kind, name = ("configmaps", src["name"]) if "configMap" in vol else ("secrets", src["secretName"])
            obj = self.read_object(kind, name, src.get("optional"))
            if obj is None:
                return {}
            data = {k: v.encode() for k, v in obj.get("data", {}).items()} if kind == "configmaps" else \
                {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
            if kind == "configmaps":
                data.update({k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()})
            mode = src.get("defaultMode", default_mode)
            if "items" in src:
                out = {}
                for it in src["items"]:
                    if it["key"] not in data:
                        if src.get("optional"):
                            continue
                        raise NotReadyYet(f"key {it['key']} not in {kind[:-1]} {name}")
                    out[it["path"]] = (data[it["key"]], it.get("mode", mode))
                return out
            return {k: (v, mode) for k, v in data.items()}
        if "downwardAPI" in vol:
            pod = self.pod_with_ip()
            out = {}
            for it in vol["downwardAPI"].get("items", []):
                if "fieldRef" in it:
                    value = field_path(pod, it["fieldRef"]["fieldPath"])
                else:
                    value = resource_field(pod, it["resourceFieldRef"].get("containerName", ""),
                                           it["resourceFieldRef"])
                out[it["path"]] = (value.encode(), it.get("mode", vol["downwardAPI"].get("defaultMode",
                                                                                        default_mode)))
            return out
        return None

    def sa_token(self, src: dict) -> bytes:
        """A bound token for the pod's ServiceAccount (TokenRequest), as the kubelet makes."""
        sa = self.pod["spec"].get("serviceAccountName", "default")
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [src["audience"]] if src.get("audience") else [],
                         "expirationSeconds": src.get("expirationSeconds", 3607),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}}
        res = self.node.api.request("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        return res["status"]["token"].encode()


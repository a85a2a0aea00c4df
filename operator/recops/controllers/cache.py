"""What the watch streams last said about FineTuneJobs, their Jobs and their pods, so a pass reads memory.

The operator already streams these objects (Kopf's watches; Jobs and pods filtered to its own children by
label). Every event, and every object the operator's own writes return, goes in here; a FineTuneJob pass then
reads its object, its Job and its pods from memory instead of three or four requests (under a burst those
reads were most of the operator's requests, and the API server's queue). A miss falls back to the API server:
a Job not streamed may still exist (someone else's, which must not be taken over), and a Job's pods may not have
been streamed yet (just created, or the watch still listing after a start).

An older state never replaces a newer one: the API server's resourceVersions are compared as numbers (etcd's
revisions; they are opaque by contract, so two that are not numbers are taken in arrival order). That keeps a
status this operator just wrote from being overwritten by a watch event from before the write.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

Key = tuple[str, str, str]  # (kind, namespace, name)


def _version(obj: dict[str, Any]) -> int | None:
    value = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else None


def _kept(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without metadata.managedFields: no pass reads them, and they are much of an object's size."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return copy.deepcopy({**obj, "metadata": meta})


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or "")


class WatchCache:
    """The newest known state of each streamed object, and the pods by (namespace, owner label value)."""

    def __init__(self, pod_owner_label: str) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._pod_owner_label = pod_owner_label
        self._pods: dict[tuple[str, str], set[str]] = {}  # (namespace, owner label value) -> pod names

    def observe(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """An object as a watch event or a write returned it (a copy is kept); `deleted`: it is gone."""
        key = _key(obj)
        if not key[0] or not key[2]:
            return
        with self._lock:
            known = self._objects.get(key)
            if known is not None and not deleted and self._older(obj, known):
                return
            if deleted:
                if known is not None and (known.get("metadata") or {}).get("uid") not in (
                        None, (obj.get("metadata") or {}).get("uid")):
                    return  # the event of an earlier object of the same name
                self._objects.pop(key, None)
            else:
                self._objects[key] = _kept(obj)
            if key[0] == "Pod":
                self._index_pod(key, obj, deleted)

    @staticmethod
    def _older(obj: dict[str, Any], known: dict[str, Any]) -> bool:
        new, old = _version(obj), _version(known)
        same_object = (obj.get("metadata") or {}).get("uid") == (known.get("metadata") or {}).get("uid")
        return same_object and new is not None and old is not None and new < old

    def _index_pod(self, key: Key, obj: dict[str, Any], deleted: bool) -> None:
        owner = ((obj.get("metadata") or {}).get("labels") or {}).get(self._pod_owner_label)
        if owner is None:
            return
        names = self._pods.setdefault((key[1], str(owner)), set())
        if deleted:
            names.discard(key[2])
        else:
            names.add(key[2])

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the newest known state, or None when none is known (not: when it does not exist)."""
        with self._lock:
            found = self._objects.get((kind, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def pods(self, namespace: str, owner: str) -> list[dict[str, Any]]:
        """Copies of the known pods whose owner label is `owner`."""
        with self._lock:
            names = sorted(self._pods.get((namespace, owner), ()))
            return [copy.deepcopy(self._objects[("Pod", namespace, n)]) for n in names
                    if ("Pod", namespace, n) in self._objects]

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

"""An in-memory Kubernetes API behind `recops.controllers.kube.Kube`, for controller tests without a cluster.

`FakeKube` subclasses `Kube` and replaces only `Kube.request` (the HTTP round trip), so the controllers'
own client code (get's 404 -> None, list, apply's query, delete's options) runs as in production. Behind
it is a dict store keyed by (apiVersion/kind, namespace, name) that keeps, as the API server does:

- uid, creationTimestamp (from the test's clock), a global resourceVersion, and generation, bumped when
  anything but metadata and status changes;
- the status subresource: writes to the object leave its status alone, writes to `/status` leave the rest;
- server-side apply with field managers: an apply merges the applied fields (maps key by key, lists whole)
  and removes the fields this manager applied last time and no longer does (unless another manager owns
  them); a merge patch makes its fields the patcher's;
- POST of an existing name is 409 AlreadyExists; a missing object is 404 NotFound; a delete whose uid
  precondition does not match is 409 Conflict; a name or label that is not valid, or a change to a Job's
  (immutable) pod template, is 422 Invalid; every error is the `kubernetes.client.ApiException` the real
  client raises, with a `Status` body;
- delete: finalizers hold an object (deletionTimestamp set) until they are cleared; the garbage collector
  deletes dependents whose owners are all gone (at once, for Background and Foreground alike);
- label selectors (=, ==, !=, in, notin, exists, !exists) and equality field selectors on list;
- `watch_events`: every change as (ADDED | MODIFIED | DELETED, object), and `writes`: every write request.

What it does not do (those tests stay in tests/cluster): schema validation, defaulting and CEL rules of
the CRDs, admission, RBAC, the Job/Deployment controllers and the kubelet (tests play those through
`set_status`, `add_pod` and friends), list-map merging inside lists, watch streams and timing.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import unquote

from kubernetes.client import ApiException

from recops.api.contracts import FIELD_MANAGER
from recops.controllers.kube import PLURALS, Kube

KINDS = {plural: kind for kind, plural in PLURALS.items()} | {"events": "Event"}
# Kinds without a status subresource: a write to the object may set everything.
NO_STATUS = {"ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "Event"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035: Services
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MANAGED_BY_SERVER = ("apiVersion", "kind", "metadata.name", "metadata.namespace")

Key = tuple[str, str, str]  # (apiVersion/kind, namespace, name)
Path = tuple[str, ...]


class ManualClock:
    """A clock that moves only when told: `clock()` is now, `advance(seconds)` moves it."""

    def __init__(self, start: datetime = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def text(self) -> str:
        return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(status: int, reason: str, message: str) -> ApiException:
    """What the real client raises for a non-2xx answer: status, reason and the JSON Status body."""
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": status}
    return ApiException(status=status, reason=reason, body=json.dumps(body))


def leaf_paths(obj: Any, prefix: Path = ()) -> set[Path]:
    """The fields a manifest sets: maps are walked key by key, a list or scalar is one field."""
    if isinstance(obj, dict) and obj:
        return {p for k, v in obj.items() for p in leaf_paths(v, (*prefix, k))}
    return {prefix}


def _remove(obj: dict[str, Any], path: Path) -> None:
    parents = [obj]
    for key in path[:-1]:
        nxt = parents[-1].get(key)
        if not isinstance(nxt, dict):
            return
        parents.append(nxt)
    parents[-1].pop(path[-1], None)
    for parent, key in zip(reversed(parents[:-1]), reversed(path[:-1]), strict=True):  # prune empty maps
        if parent.get(key) == {}:
            del parent[key]


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch: maps merge key by key, null deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """What generation counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def parse_path(path: str) -> tuple[str, str, str | None, str | None, str | None]:
    """(apiVersion, kind, namespace, name, subresource) of a REST path."""
    parts = [unquote(p) for p in path.split("?", 1)[0].strip("/").split("/")]
    if parts[0] == "api":
        api_version, rest = parts[1], parts[2:]
    else:
        api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    namespace = None
    if rest and rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    if plural not in KINDS:
        raise api_error(404, "NotFound", f"the server could not find the requested resource ({plural})")
    return api_version, KINDS[plural], namespace, name, sub


def matches_labels(labels: dict[str, str], selector: str | None) -> bool:
    """A Kubernetes label selector string: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`."""
    if not selector:
        return True
    for term in re.findall(r"[^,()]+(?:\([^)]*\))?", selector):
        term = term.strip()
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (op == "in") != (labels.get(key) in values):
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def matches_fields(obj: dict[str, Any], selector: str | None) -> bool:
    """Equality field selectors on dotted paths (`involvedObject.name=x`, `metadata.name!=y`)."""
    for term in (selector or "").split(","):
        if not term.strip():
            continue
        negate = "!=" in term
        path, value = term.split("!=" if negate else "=", 1)
        found: Any = obj
        for key in path.strip().lstrip("=").split("."):
            found = found.get(key) if isinstance(found, dict) else None
        if (str(found) if found is not None else "") == value.strip().lstrip("=") and negate:
            return False
        if (str(found) if found is not None else "") != value.strip().lstrip("=") and not negate:
            return False
    return True


class FakeKube(Kube):
    """An in-memory API server in place of `Kube.request`. Thread-safe (the controllers apply in threads)."""

    def __init__(self, clock: Callable[[], datetime] | None = None, field_manager: str = FIELD_MANAGER) -> None:
        super().__init__(cast(Any, None), field_manager=field_manager)
        self.clock = clock or ManualClock()
        self.objects: dict[Key, dict[str, Any]] = {}
        self.managers: dict[Key, dict[str, set[Path]]] = {}  # key -> field manager -> the fields it owns
        self.watch_events: list[tuple[str, dict[str, Any]]] = []
        self.writes: list[tuple[str, str, str | None, str | None, str | None]] = []  # verb, kind, ns, name, sub
        self.failures: list[tuple[str, str, str | None, ApiException]] = []  # verb, kind, name, error
        self.logs: dict[tuple[str, str], str] = {}  # (namespace, pod) -> its container's log (set_log)
        self._resource_version = 1000
        self._lock = threading.RLock()

    # --- the REST surface -----------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                content_type: str | None = None, *, text: bool = False, timeout_s: float | None = None) -> Any:
        query = query or {}
        api_version, kind, namespace, name, sub = parse_path(path)
        with self._lock:
            self._injected_failure(method, kind, name)
            if method == "GET" and kind == "Pod" and sub == "log":
                assert text and name is not None, "a log is read as text"
                self._existing(api_version, kind, namespace, name)  # 404 for a pod that is not there
                lines = self.logs.get((namespace or "", name), "").splitlines(keepends=True)
                return "".join(lines[-int(query.get("tailLines") or len(lines) or 1):])
            if method == "GET":
                if name is None:
                    items = self.select(kind, namespace, query.get("labelSelector"), query.get("fieldSelector"))
                    return {"apiVersion": api_version, "kind": f"{kind}List", "metadata": {
                        "resourceVersion": str(self._resource_version)}, "items": items}
                return copy.deepcopy(self._existing(api_version, kind, namespace, name))
            manager = str(query.get("fieldManager") or self.field_manager)
            self.writes.append((method, kind, namespace, name or (body or {}).get("metadata", {}).get("name"), sub))
            if method == "POST":
                return self._create(api_version, kind, namespace, body, manager)
            assert name is not None, f"{method} needs an object path: {path}"
            if method == "DELETE":
                self._delete(api_version, kind, namespace, name, body or {})
                return {"kind": "Status", "apiVersion": "v1", "status": "Success"}
            if method == "PUT":
                return self._replace(api_version, kind, namespace, name, body, sub, manager)
            if method == "PATCH" and content_type == "application/apply-patch+yaml":
                return self._apply(api_version, kind, namespace, name, body, sub, manager)
            if method == "PATCH" and content_type in ("application/merge-patch+json",
                                                      "application/strategic-merge-patch+json"):
                # Strategic merge differs only inside lists with merge keys, which no controller patches.
                return self._merge_patch(api_version, kind, namespace, name, body, sub, manager)
            raise NotImplementedError(f"FakeKube does not serve {method} {content_type} {path}")

    # --- for tests: failures, reads, and playing the other controllers -------------------------
    def fail_next(self, verb: str, kind: str, status: int, message: str, name: str | None = None) -> None:
        """Answer the next `verb` (GET, POST, PATCH, PUT, DELETE) on `kind` (and `name`) with this error."""
        reason = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 422: "Invalid",
                  500: "InternalError"}.get(status, "Error")
        self.failures.append((verb, kind, name, api_error(status, reason, message)))

    def obj(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the stored object of `kind` (any apiVersion), or None."""
        with self._lock:
            found = [o for (k, ns, n), o in self.objects.items() if k.endswith(f"/{kind}") and (ns, n) == (namespace, name)]
            return copy.deepcopy(found[0]) if found else None

    def all(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items())
                    if k.endswith(f"/{kind}") and namespace in (None, ns)]

    def put(self, manifest: dict[str, Any], manager: str = "kubectl") -> dict[str, Any]:
        """Create an object as a user (or another controller) would, status included."""
        meta = manifest["metadata"]
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        with self._lock:
            created = self._create(api_version, kind, meta.get("namespace"), manifest, manager)
            if manifest.get("status") and kind not in NO_STATUS:
                created = self._merge_patch(api_version, kind, meta.get("namespace"), created["metadata"]["name"],
                                            {"status": manifest["status"]}, "status", manager)
            return created

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any],
                   manager: str = "kube-controller-manager") -> dict[str, Any]:
        """Merge-patch `status` into the object's status, as its own controller or the kubelet would."""
        current = self.obj(kind, namespace, name)
        assert current is not None, f"no {kind} {namespace}/{name}"
        with self._lock:
            return self._merge_patch(current["apiVersion"], kind, namespace, name, {"status": status}, "status",
                                     manager)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any],
              manager: str = "kubectl") -> dict[str, Any]:
        """A user's merge patch of the object (spec, labels, annotations)."""
        current = self.obj(kind, namespace, name)
        assert current is not None, f"no {kind} {namespace}/{name}"
        with self._lock:
            return self._merge_patch(current["apiVersion"], kind, namespace, name, patch, None, manager)

    def remove(self, kind: str, namespace: str, name: str, propagation: str = "Background") -> None:
        """Delete as a user (or a TTL controller) would."""
        current = self.obj(kind, namespace, name)
        assert current is not None, f"no {kind} {namespace}/{name}"
        with self._lock:
            self._delete(current["apiVersion"], kind, namespace, name, {"propagationPolicy": propagation})

    def writes_of(self, kind: str, verb: str | None = None, sub: str | bool | None = False) -> list[tuple[Any, ...]]:
        """The write requests on `kind` (of one verb; `sub`: "status", None for the object, False for both)."""
        return [w for w in self.writes if w[1] == kind and verb in (None, w[0]) and (sub is False or w[4] == sub)]

    def set_log(self, namespace: str, pod: str, text: str) -> None:
        """The log a pod's container has written so far (as the kubelet would serve it)."""
        self.logs[(namespace, pod)] = text

    def events_of(self, name: str) -> list[tuple[str, str]]:
        """(type, reason) of the core/v1 Events posted about the object named `name`."""
        return [(e.get("type", ""), e.get("reason", "")) for e in self.all("Event")
                if (e.get("involvedObject") or {}).get("name") == name]

    # --- the store ------------------------------------------------------------------------
    def select(self, kind: str, namespace: str | None, label_selector: str | None = None,
               field_selector: str | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items())
                if k.split("/")[-1] == kind and namespace in (None, ns)
                and matches_labels(o["metadata"].get("labels") or {}, label_selector)
                and matches_fields(o, field_selector)]

    def _injected_failure(self, method: str, kind: str, name: str | None) -> None:
        for i, (verb, k, n, error) in enumerate(self.failures):
            if verb == method and k == kind and n in (None, name):
                del self.failures[i]
                raise error

    def _key(self, api_version: str, kind: str, namespace: str | None, name: str) -> Key:
        return (f"{api_version}/{kind}", namespace or "", name)

    def _existing(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        found = self.objects.get(self._key(api_version, kind, namespace, name))
        if found is None:
            raise api_error(404, "NotFound", f'{PLURALS.get(kind, kind.lower())} "{name}" not found')
        return found

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _now(self) -> str:
        return self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _validate(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name, kind = str(meta.get("name") or ""), obj["kind"]
        pattern, limit = (DNS_LABEL, 63) if kind == "Service" else (DNS_SUBDOMAIN, 253)
        problems = [] if pattern.match(name) and len(name) <= limit else [f"metadata.name: Invalid value: {name!r}"]
        for key, value in (meta.get("labels") or {}).items():
            if not (isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.match(value)):
                problems.append(f"metadata.labels: Invalid value: {value!r}")
            if len(key.rsplit("/", 1)[-1]) > 63:
                problems.append(f"metadata.labels: Invalid value: {key!r}: name part must be no more than 63 characters")
        if problems:
            raise api_error(422, "Invalid", f'{kind} "{name}" is invalid: ' + ", ".join(problems))

    def _store(self, key: Key, obj: dict[str, Any], event: str) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = self._next_version()
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._drop(key)
            return copy.deepcopy(obj)
        self.objects[key] = obj
        self.watch_events.append((event, copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    def _create(self, api_version: str, kind: str, namespace: str | None, body: dict[str, Any],
                manager: str) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj.update(apiVersion=api_version, kind=kind)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if namespace:
            meta["namespace"] = namespace
        self._validate(obj)
        key = self._key(api_version, kind, namespace, meta["name"])
        if key in self.objects:
            raise api_error(409, "AlreadyExists", f'{PLURALS.get(kind, kind)} "{meta["name"]}" already exists')
        for server_field in ("resourceVersion", "deletionTimestamp"):
            meta.pop(server_field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=self._now())
        if kind not in NO_STATUS:
            obj.pop("status", None)  # the status subresource is written on its own
            meta["generation"] = 1
        self.managers[key] = {manager: leaf_paths(_content(obj)) | self._meta_paths(obj)}
        return self._store(key, obj, "ADDED")

    def _meta_paths(self, obj: dict[str, Any]) -> set[Path]:
        meta = obj.get("metadata") or {}
        return {("metadata", *p) for k in ("labels", "annotations", "ownerReferences", "finalizers") if k in meta
                for p in leaf_paths(meta[k], (k,))}

    def _write(self, key: Key, old: dict[str, Any], new: dict[str, Any], sub: str | None) -> dict[str, Any]:
        """Store `new` in place of `old`, keeping what the other half (object or status) may not change."""
        if sub == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                del new["status"]
        else:
            if old["kind"] not in NO_STATUS:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
            meta = new["metadata"]
            for server_field in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "name", "namespace"):
                if server_field in old["metadata"]:
                    meta[server_field] = old["metadata"][server_field]
            if old["kind"] == "Job" and (old.get("spec") or {}).get("template") != (new.get("spec") or {}).get("template"):
                raise api_error(422, "Invalid", f'Job.batch "{meta["name"]}" is invalid: spec.template: Invalid value: '
                                                "field is immutable")
            self._validate(new)
            if "generation" in meta and _content(new) != _content(old):
                meta["generation"] = int(meta["generation"]) + 1
        if new == old:
            return copy.deepcopy(old)  # a no-op write does not bump resourceVersion
        return self._store(key, new, "MODIFIED")

    def _apply(self, api_version: str, kind: str, namespace: str | None, name: str, body: dict[str, Any],
               sub: str | None, manager: str) -> dict[str, Any]:
        key = self._key(api_version, kind, namespace, name)
        if key not in self.objects:
            if sub == "status":
                raise api_error(404, "NotFound", f'{PLURALS.get(kind, kind)} "{name}" not found')
            created = self._create(api_version, kind, namespace, body, manager)
            return created
        old = self.objects[key]
        applied = copy.deepcopy(body)
        fields = {p for p in leaf_paths(applied) if ".".join(p) not in MANAGED_BY_SERVER}
        if sub == "status":
            fields = {p for p in fields if p[0] == "status"}
            applied = {"status": applied.get("status") or {}}
        elif kind not in NO_STATUS:
            fields = {p for p in fields if p[0] != "status"}
            applied.pop("status", None)
        owners = self.managers.setdefault(key, {})
        new = copy.deepcopy(old)
        others = set().union(*(f for m, f in owners.items() if m != manager))
        for dropped in owners.get(manager, set()) - fields - others:
            if (sub == "status") == (dropped[0] == "status"):
                _remove(new, dropped)
        merge(new, applied)
        for other, owned in owners.items():
            if other != manager:
                owned -= fields  # force: the applier takes the fields over
        kept = {p for p in owners.get(manager, set()) if (sub == "status") != (p[0] == "status")}
        owners[manager] = kept | fields
        return self._write(key, old, new, sub)

    def _merge_patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict[str, Any],
                     sub: str | None, manager: str) -> dict[str, Any]:
        key = self._key(api_version, kind, namespace, name)
        old = self._existing(api_version, kind, namespace, name)
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise api_error(409, "Conflict", f'Operation cannot be fulfilled on {PLURALS.get(kind, kind)} "{name}": '
                                             "the object has been modified")
        new = merge(copy.deepcopy(old), patch)
        owners = self.managers.setdefault(key, {})
        owners.setdefault(manager, set()).update(leaf_paths({k: v for k, v in patch.items() if v is not None}))
        return self._write(key, old, new, sub)

    def _replace(self, api_version: str, kind: str, namespace: str | None, name: str, body: dict[str, Any],
                 sub: str | None, manager: str) -> dict[str, Any]:
        key = self._key(api_version, kind, namespace, name)
        old = self._existing(api_version, kind, namespace, name)
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise api_error(409, "Conflict", f'Operation cannot be fulfilled on {PLURALS.get(kind, kind)} "{name}": '
                                             "the object has been modified")
        return self._write(key, old, copy.deepcopy(body), sub)

    def _delete(self, api_version: str, kind: str, namespace: str | None, name: str, options: dict[str, Any]) -> None:
        key = self._key(api_version, kind, namespace, name)
        old = self._existing(api_version, kind, namespace, name)
        uid = (options.get("preconditions") or {}).get("uid")
        if uid and uid != old["metadata"]["uid"]:
            raise api_error(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                                             f"UID in object meta: {old['metadata']['uid']}")
        if options.get("propagationPolicy") == "Orphan":
            for dependent_key in self._dependents(old["metadata"]["uid"]):
                dependent = self.objects[dependent_key]
                refs = [r for r in dependent["metadata"]["ownerReferences"] if r.get("uid") != old["metadata"]["uid"]]
                self._store(dependent_key, {**dependent, "metadata": {**dependent["metadata"], "ownerReferences": refs}},
                            "MODIFIED")
        if old["metadata"].get("finalizers"):
            if not old["metadata"].get("deletionTimestamp"):
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = self._now()
                self._store(key, new, "MODIFIED")
            return
        self._drop(key)

    def _drop(self, key: Key) -> None:
        gone = self.objects.pop(key, None)
        self.managers.pop(key, None)
        if gone is None:
            return
        self.watch_events.append(("DELETED", copy.deepcopy(gone)))
        self._collect(gone["metadata"]["uid"])

    def _dependents(self, uid: str) -> Iterator[Key]:
        return iter([k for k, o in self.objects.items()
                     if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])])

    def _collect(self, uid: str) -> None:
        """The garbage collector: a dependent goes once none of its owners exists."""
        alive = {o["metadata"]["uid"] for o in self.objects.values()}
        for key in list(self._dependents(uid)):
            dependent = self.objects.get(key)
            if dependent is None:
                continue
            if not any(r.get("uid") in alive for r in dependent["metadata"]["ownerReferences"]):
                self._delete(*key[0].rsplit("/", 1), key[1] or None, key[2], {})


def owner_reference(owner: dict[str, Any], controller: bool = True) -> dict[str, Any]:
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": controller, "blockOwnerDeletion": True}

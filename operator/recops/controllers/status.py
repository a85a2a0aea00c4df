"""What every controller does the same way: read its object's spec, keep the status it owns, write it
once per pass (only what changed), and post Events through one signature.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from recops.api.validation import format_errors
from recops.controllers.kube import Kube

# (involved object, Normal|Warning, reason, message): how a controller posts an Event.
EventPoster = Callable[[dict[str, Any], str, str, str], None]

Model = TypeVar("Model", bound=BaseModel)


def ignore_event(_: dict[str, Any], __: str, ___: str, ____: str) -> None:
    return None


def parse(body: Mapping[str, Any], model: type[Model],
          problems: Callable[[Model], Sequence[str]] | None = None) -> tuple[Model | None, str | None]:
    """The typed object of a stored body, or why its spec cannot be acted on (schema errors, then `problems`:
    what the schema cannot say)."""
    manifest = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    try:
        parsed = model.model_validate(manifest)
    except ValidationError as error:
        return None, "; ".join(format_errors(error))
    found = problems(parsed) if problems else ()
    return (None, "; ".join(found)) if found else (parsed, None)


def owned_status(status: Mapping[str, Any] | None, fields: Iterable[str]) -> dict[str, Any]:
    """The fields of `status` the operator owns, without empty values (so equal states compare equal); a copy,
    so a pass may change it in place."""
    status = status or {}
    return {k: copy.deepcopy(status[k]) for k in fields if status.get(k) not in (None, [], {})}


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch of `status` from `old` to `new`: changed keys, and null for those `new` drops."""
    return {k: new.get(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def write_status(kube: Kube, path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """Merge-patch the status subresource at `path` with what changed: the object as written, or None (no request)
    when nothing did."""
    if dict(old) == dict(new):
        return None
    return kube.merge_patch(path, {"status": status_patch(old, new)})

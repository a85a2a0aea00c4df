"""Conditions as the Kubernetes API conventions define them, on plain status dicts.

A condition's lastTransitionTime changes only when its status changes; reason, message and
observedGeneration follow the latest observation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from recops.api.common import format_time
from recops.api.conditions import INVALID_SPEC


def now_rfc3339() -> str:
    return format_time(datetime.now(UTC))


def age_s(obj: dict[str, Any], now: str | None = None) -> float:
    """Seconds from the object's creationTimestamp to `now` (RFC 3339; default: this moment); 0 without one."""
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return 0.0
    reference = datetime.fromisoformat(now.replace("Z", "+00:00")) if now else datetime.now(UTC)
    return (reference - datetime.fromisoformat(str(created).replace("Z", "+00:00"))).total_seconds()


def find(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Iterable[dict[str, Any]] | None, type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def status_text(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str = "",
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with `type_` set; the transition time is kept when the status did not change."""
    wanted = status_text(status)
    previous = find(conditions, type_)
    transition = previous["lastTransitionTime"] if previous and previous.get("status") == wanted else now
    condition: dict[str, Any] = {
        "type": type_,
        "status": wanted,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    out = [c for c in conditions if c.get("type") != type_]
    out.append(condition)
    return out


def remove_condition(conditions: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [c for c in conditions if c.get("type") != type_]


def ordered(conditions: list[dict[str, Any]], order: Iterable[str]) -> list[dict[str, Any]]:
    """Conditions in a fixed type order (stable output, so equal states compare equal)."""
    rank = {t: i for i, t in enumerate(order)}
    return sorted(conditions, key=lambda c: (rank.get(c.get("type", ""), len(rank)), c.get("type", "")))


@dataclass(frozen=True)
class ConditionState:
    """A condition's status, reason and message, as a decision set it."""

    status: bool | None
    reason: str
    message: str = ""


@dataclass
class Conditions:
    """A pass's conditions, set one by one at one generation and time (instead of threading the list)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    generation: int | None = None
    now: str = ""

    def set(self, type_: str, status: bool | None, reason: str, message: str = "") -> None:
        self.items = set_condition(self.items, type_, status, reason, message, generation=self.generation,
                                   now=self.now)

    def put(self, type_: str, state: ConditionState) -> None:
        self.set(type_, state.status, state.reason, state.message)

    def get(self, type_: str) -> dict[str, Any] | None:
        return find(self.items, type_)

    def ordered(self, order: Iterable[str]) -> list[dict[str, Any]]:
        return ordered(self.items, order)


def stored_invalid(body: dict[str, Any], condition_type: str, prefix: str = "") -> str | None:
    """The InvalidSpec message that `condition_type` records for the object's current generation, if any: a spec
    the API server refused is asked about again only for a new generation (or after an operator start)."""
    condition = find((body.get("status") or {}).get("conditions"), condition_type)
    if condition is None or condition.get("reason") != INVALID_SPEC:
        return None
    if condition.get("observedGeneration") != body["metadata"].get("generation"):
        return None
    return str(condition.get("message") or "").removeprefix(prefix) or "rejected"

"""Request bodies of the serving API: parsed and checked, or an ApiError saying what is wrong.

Pure functions (no aiohttp, no torch), unit-tested in tests/unit/test_serve_validation.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from recops.api.contracts import FEEDBACK_EVENTS, MAX_USER_RATINGS


class ApiError(Exception):
    """Answered as {"error": message} with this HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_candidates: int
    max_text_length: int


@dataclass(frozen=True)
class Candidate:
    id: str
    text: str


@dataclass(frozen=True)
class RankRequest:
    query: str | None
    user_id: str | None
    user_context: str | None
    candidates: tuple[Candidate, ...]
    top_k: int
    # The user's earlier events, oldest first, at most MAX_USER_RATINGS (the newest kept): (item id, grade).
    user_ratings: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class FeedbackRequest:
    token: str
    item_id: str
    event: str


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"malformed JSON: {err}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(value).__name__}")
    return value


def _text(value: Any, where: str, limits: Limits, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{where} must be a string" + (" or null" if optional else ""))
    if len(value) > limits.max_text_length:
        raise ApiError(413, f"{where} is {len(value)} characters long; the limit is {limits.max_text_length}")
    return _unicode(value, where)


def _unicode(text: str, where: str) -> str:
    """Text a tokenizer, the event log and a token can take: no lone surrogate (JSON's "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ApiError(400, f"{where} is not valid Unicode text: {err.reason} at character {err.start}") from None
    return text


def _identifier(value: Any, where: str, limits: Limits) -> str:
    # Ids may be strings or integers on the wire; they are strings everywhere after this.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError(400, f"{where} must be a string or an integer")
    text = str(value)
    if not text:
        raise ApiError(400, f"{where} must not be empty")
    if len(text) > limits.max_text_length:
        raise ApiError(413, f"{where} is {len(text)} characters long; the limit is {limits.max_text_length}")
    return _unicode(text, where)


def _text_list(value: Any, where: str, limits: Limits) -> list[str]:
    if value is None:
        raise ApiError(400, f"{where} is required: a list of strings")
    if not isinstance(value, list):
        raise ApiError(400, f"{where} must be a list of strings")
    if not value:
        raise ApiError(400, f"{where} is empty")
    if len(value) > limits.max_candidates:
        raise ApiError(413, f"{where} has {len(value)} entries; the limit is {limits.max_candidates}")
    return [str(_text(text, f"{where}[{i}]", limits)) for i, text in enumerate(value)]


def parse_rank(body: dict[str, Any], limits: Limits) -> RankRequest:
    query = _text(body.get("query"), "query", limits, optional=True)
    user = body.get("user")
    user_id = user_context = None
    user_ratings: tuple[tuple[str, float], ...] = ()
    if user is not None:
        if not isinstance(user, dict):
            raise ApiError(400, "user must be an object {id?, context?, ratings?}")
        if user.get("id") is not None:
            user_id = _identifier(user["id"], "user.id", limits)
        user_context = _text(user.get("context"), "user.context", limits, optional=True)
        user_ratings = _ratings(user.get("ratings"), limits)
    raw = body.get("candidates")
    if raw is None:
        raise ApiError(400, "candidates is required: a list of {id, text}")
    if not isinstance(raw, list):
        raise ApiError(400, "candidates must be a list of {id, text}")
    if not raw:
        raise ApiError(400, "candidates is empty: nothing to rank")
    if len(raw) > limits.max_candidates:
        raise ApiError(413, f"too many candidates: {len(raw)}; the limit is {limits.max_candidates}")
    candidates = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ApiError(400, f"candidates[{i}] must be an object {{id, text}}")
        if "id" not in entry:
            raise ApiError(400, f"candidates[{i}].id is required")
        if "text" not in entry:
            raise ApiError(400, f"candidates[{i}].text is required")
        item_id = _identifier(entry["id"], f"candidates[{i}].id", limits)
        if item_id in seen:
            raise ApiError(400, f"candidates[{i}].id {item_id!r} repeats an earlier candidate's id")
        seen.add(item_id)
        candidates.append(Candidate(item_id, str(_text(entry["text"], f"candidates[{i}].text", limits))))
    top_k = body.get("topK", len(candidates))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ApiError(400, f"topK must be a positive integer, not {top_k!r}")
    return RankRequest(query, user_id, user_context, tuple(candidates), min(top_k, len(candidates)), user_ratings)


def _ratings(value: Any, limits: Limits) -> tuple[tuple[str, float], ...]:
    """`user.ratings`: [{id, grade}], oldest first; only the newest MAX_USER_RATINGS are read (recops.fusion)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ApiError(400, "user.ratings must be a list of {id, grade}")
    out = []
    for i, entry in enumerate(value[-MAX_USER_RATINGS:], start=max(0, len(value) - MAX_USER_RATINGS)):
        if not isinstance(entry, dict) or "id" not in entry or "grade" not in entry:
            raise ApiError(400, f"user.ratings[{i}] must be an object {{id, grade}}")
        grade = entry["grade"]
        if isinstance(grade, bool) or not isinstance(grade, (int, float)) or not math.isfinite(grade) or grade < 0:
            raise ApiError(400, f"user.ratings[{i}].grade must be a finite number >= 0, not {grade!r}")
        out.append((_identifier(entry["id"], f"user.ratings[{i}].id", limits), float(grade)))
    return tuple(out)


def parse_embed(body: dict[str, Any], limits: Limits) -> list[str]:
    return _text_list(body.get("texts"), "texts", limits)


def parse_feedback(body: dict[str, Any]) -> FeedbackRequest:
    """Field checks only; the token is verified by the TokenSigner."""
    token, item_id, event = body.get("requestId"), body.get("itemId"), body.get("event")
    if not isinstance(token, str) or not token:
        raise ApiError(400, "requestId is required: the requestId of the ranked response")
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or item_id == "":
        raise ApiError(400, "itemId is required: the id of an item that response returned")
    if event not in FEEDBACK_EVENTS:
        raise ApiError(400, f"event must be one of {', '.join(FEEDBACK_EVENTS)}, not {event!r}")
    return FeedbackRequest(token, str(item_id), str(event))


# --- Open Inference Protocol v2 ----------------------------------------------------------
@dataclass(frozen=True)
class InferRequest:
    id: str | None
    query: str | None
    user_context: str | None
    candidates: list[str] | None  # -> FP32 "scores"
    texts: list[str] | None  # -> FP32 "embeddings" (embedding models)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for entry in data:
        out.extend(_flatten(entry))
    return out


INFER_INPUTS = ("query", "user_context", "candidates", "texts")


def parse_infer(body: dict[str, Any], limits: Limits) -> InferRequest:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, "inputs is required: a list of tensors {name, shape, datatype, data}")
    tensors: dict[str, list[str]] = {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise ApiError(400, f"inputs[{i}] must be an object {{name, shape, datatype, data}}")
        name = tensor.get("name")
        if name not in INFER_INPUTS:
            raise ApiError(400, f"inputs[{i}].name must be one of {', '.join(INFER_INPUTS)}, not {name!r}")
        if tensor.get("datatype") != "BYTES":
            raise ApiError(400, f"input {name!r} must have datatype BYTES, not {tensor.get('datatype')!r}")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in shape):
            raise ApiError(400, f"input {name!r} needs a shape: a list of non-negative integers")
        data = _flatten(tensor.get("data"))
        expected = 1
        for dim in shape:
            expected *= dim
        if len(data) != expected:
            raise ApiError(400, f"input {name!r} has {len(data)} elements but its shape {shape} holds {expected}")
        if name in tensors:
            raise ApiError(400, f"input {name!r} is given twice")
        tensors[name] = [str(_text(v, f"input {name!r} element {j}", limits)) for j, v in enumerate(data)]
    for single in ("query", "user_context"):
        if single in tensors and len(tensors[single]) != 1:
            raise ApiError(400, f"input {single!r} must hold exactly one element")
    if ("candidates" in tensors) == ("texts" in tensors):
        raise ApiError(400, "give exactly one of the inputs 'candidates' (-> scores) or 'texts' (-> embeddings)")
    for many in ("candidates", "texts"):
        if many in tensors:
            if not tensors[many]:
                raise ApiError(400, f"input {many!r} is empty")
            if len(tensors[many]) > limits.max_candidates:
                raise ApiError(413, f"input {many!r} has {len(tensors[many])} elements; "
                                    f"the limit is {limits.max_candidates}")
    request_id = body.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        query=tensors["query"][0] if "query" in tensors else None,
        user_context=tensors["user_context"][0] if "user_context" in tensors else None,
        candidates=tensors.get("candidates"),
        texts=tensors.get("texts"),
    )

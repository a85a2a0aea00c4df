"""Request bodies of the serving API and settings: accepted shapes and precise errors."""

from __future__ import annotations

import argparse

import pytest

from recops.api.contracts import MAX_USER_RATINGS
from recops.serve import settings
from recops.serve.validation import ApiError, Limits, parse_feedback, parse_infer, parse_json, parse_rank

LIMITS = Limits(max_candidates=3, max_text_length=10)


def error(fn: object, *args: object) -> tuple[int, str]:
    with pytest.raises(ApiError) as err:
        fn(*args)  # type: ignore[operator]
    return err.value.status, err.value.message


def test_rank_request_defaults_and_id_normalisation() -> None:
    parsed = parse_rank({"query": "q", "user": {"id": 7, "context": "c"},
                         "candidates": [{"id": 1, "text": "a"}, {"id": "2", "text": "b"}]}, LIMITS)
    assert parsed.top_k == 2 and [c.id for c in parsed.candidates] == ["1", "2"]
    assert parsed.user_id == "7" and parsed.user_context == "c"
    assert parse_rank({"candidates": [{"id": "a", "text": "x"}], "topK": 50}, LIMITS).top_k == 1
    assert parsed.user_ratings == ()


def test_user_ratings_are_read_oldest_first_and_only_the_newest_hundred() -> None:
    ratings = [{"id": i, "grade": i % 5} for i in range(MAX_USER_RATINGS + 20)]
    parsed = parse_rank({"user": {"ratings": ratings}, "candidates": [{"id": "a", "text": "x"}]}, LIMITS)
    assert len(parsed.user_ratings) == MAX_USER_RATINGS
    assert parsed.user_ratings[0] == ("20", 0.0) and parsed.user_ratings[-1] == (str(MAX_USER_RATINGS + 19), 4.0)


@pytest.mark.parametrize(("body", "status", "message"), [
    ({}, 400, "candidates is required"),
    ({"candidates": {}}, 400, "must be a list"),
    ({"candidates": []}, 400, "empty"),
    ({"candidates": ["a"]}, 400, "candidates[0] must be an object"),
    ({"candidates": [{"id": True, "text": "a"}]}, 400, "candidates[0].id must be a string or an integer"),
    ({"candidates": [{"id": "", "text": "a"}]}, 400, "must not be empty"),
    ({"candidates": [{"id": "a", "text": None}]}, 400, "candidates[0].text must be a string"),
    ({"candidates": [{"id": str(i), "text": "a"} for i in range(4)]}, 413, "too many candidates: 4; the limit is 3"),
    ({"candidates": [{"id": "a", "text": "x" * 11}]}, 413, "candidates[0].text is 11 characters long"),
    ({"query": 5, "candidates": [{"id": "a", "text": "x"}]}, 400, "query must be a string or null"),
    ({"user": {"context": 1}, "candidates": [{"id": "a", "text": "x"}]}, 400, "user.context"),
    ({"user": {"ratings": {}}, "candidates": [{"id": "a", "text": "x"}]}, 400, "user.ratings must be a list"),
    ({"user": {"ratings": [{"id": "a"}]}, "candidates": [{"id": "a", "text": "x"}]}, 400, "user.ratings[0] must be"),
    ({"user": {"ratings": [{"id": "a", "grade": "5"}]}, "candidates": [{"id": "a", "text": "x"}]}, 400,
     "user.ratings[0].grade must be a finite number"),
    ({"user": {"ratings": [{"id": "a", "grade": -1}]}, "candidates": [{"id": "a", "text": "x"}]}, 400, "grade"),
    ({"candidates": [{"id": "a", "text": "x"}], "topK": "3"}, 400, "topK must be a positive integer"),
    ({"candidates": [{"id": "a", "text": "x"}], "topK": True}, 400, "topK"),
    ({"candidates": [{"id": "a", "text": "x\ud800"}]}, 400, "candidates[0].text is not valid Unicode text"),
    ({"candidates": [{"id": "\udfff", "text": "x"}]}, 400, "candidates[0].id is not valid Unicode text"),
    ({"query": "\ud800", "candidates": [{"id": "a", "text": "x"}]}, 400, "query is not valid Unicode"),
])
def test_bad_rank_requests_say_what_is_wrong(body: dict[str, object], status: int, message: str) -> None:
    got_status, got = error(parse_rank, body, LIMITS)
    assert got_status == status and message in got


def test_json_bodies_must_be_objects() -> None:
    assert error(parse_json, b"{")[1].startswith("malformed JSON")
    assert error(parse_json, b"\xff")[1].startswith("malformed JSON")
    assert "not list" in error(parse_json, b"[]")[1]
    assert parse_json(b'{"a": 1}') == {"a": 1}
    assert error(parse_json, b"[" * 100_000 + b"]" * 100_000)[0:2] == (400, "malformed JSON: nested too deeply")


def test_feedback_fields() -> None:
    assert parse_feedback({"requestId": "t", "itemId": 3, "event": "purchase"}).item_id == "3"
    assert "event must be one of click, add_to_cart, purchase" in error(
        parse_feedback, {"requestId": "t", "itemId": "a", "event": "view"})[1]
    assert "itemId is required" in error(parse_feedback, {"requestId": "t", "event": "click"})[1]


def tensor(name: str, data: list[object], shape: list[int] | None = None, datatype: str = "BYTES") -> dict[str, object]:
    return {"name": name, "shape": shape if shape is not None else [len(data)], "datatype": datatype, "data": data}


def test_infer_inputs() -> None:
    parsed = parse_infer({"id": 9, "inputs": [tensor("query", ["q"]), tensor("candidates", [["a"], ["b"]], [2, 1])]},
                         LIMITS)
    assert parsed.id == "9" and parsed.query == "q" and parsed.candidates == ["a", "b"] and parsed.texts is None
    assert "exactly one of the inputs" in error(parse_infer, {"inputs": [tensor("query", ["q"])]}, LIMITS)[1]
    assert "exactly one element" in error(
        parse_infer, {"inputs": [tensor("query", ["q", "r"]), tensor("texts", ["a"])]}, LIMITS)[1]
    assert error(parse_infer, {"inputs": [tensor("texts", ["a"] * 4)]}, LIMITS)[0] == 413
    assert "given twice" in error(parse_infer, {"inputs": [tensor("texts", ["a"]), tensor("texts", ["b"])]}, LIMITS)[1]


def namespace(**overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    args = parser.parse_args(["--model", "/m"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_settings_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RECOPS_TRACK", "RECOPS_SERVE_HOST", "RECOPS_DEPLOYMENT", "RECOPS_MODEL_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECOPS_FEEDBACK_KEY", "k" * 20)
    resolved = settings.resolve(namespace())
    assert (resolved.host, resolved.port, resolved.track, resolved.max_batch_wait_s) == ("0.0.0.0", 8080, "stable", 0.005)
    assert resolved.feedback_token_ttl_s == 3600 and resolved.model_name == "model" and resolved.torch_threads >= 1
    monkeypatch.setenv("RECOPS_SERVE_HOST", "127.0.0.1")
    monkeypatch.setenv("RECOPS_TRACK", "canary")
    monkeypatch.setenv("RECOPS_DEPLOYMENT", "ranker")
    resolved = settings.resolve(namespace())
    assert (resolved.host, resolved.track, resolved.model_name) == ("127.0.0.1", "canary", "ranker")
    assert settings.resolve(namespace(track="stable")).track == "stable"  # the flag wins
    with pytest.raises(settings.SettingsError, match="--max-batch-wait"):
        settings.resolve(namespace(max_batch_wait="5"))
    with pytest.raises(settings.SettingsError, match="at least 1"):
        settings.resolve(namespace(max_queue=0))
    monkeypatch.delenv("RECOPS_FEEDBACK_KEY")
    with pytest.raises(settings.SettingsError, match="--insecure-random-feedback-key"):
        settings.resolve(namespace())
    assert settings.resolve(namespace(insecure_random_feedback_key=True)).feedback_key_is_random

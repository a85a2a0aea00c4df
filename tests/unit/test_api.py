"""The typed API: defaults, validation rules and their messages."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from recops.api import InvalidResource, Threshold, parse_duration, validate_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def rejected(manifest: dict[str, Any]) -> str:
    with pytest.raises(InvalidResource) as err:
        validate_manifest(manifest)
    return str(err.value)


def test_minimal_finetunejob_gets_documented_defaults() -> None:
    ftj = validate_manifest(
        {
            "apiVersion": "recops.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "a"},
            "spec": {"task": "relevance", "dataset": {"uri": "/data"}, "output": {"uri": "/models"}},
        }
    )
    spec = ftj.spec  # type: ignore[attr-defined]
    assert spec.base_model.uri == "builtin://all-minilm-l6-v2"
    assert spec.dataset.event_grades == {"impression": 0, "click": 1, "add_to_cart": 2, "purchase": 3}
    assert spec.resources.workers == 1 and spec.resources.gpus_per_worker == 0
    assert spec.training.precision == "auto"
    assert spec.suspend is False


def test_unknown_field_is_refused_with_its_path() -> None:
    manifest = example("finetunejob.yaml")
    manifest["spec"]["training"]["epochz"] = 3
    assert "spec.training.epochz: unknown field" in rejected(manifest)


def test_rmd_needs_exactly_one_model_source() -> None:
    manifest = example("recmodeldeployment.yaml")
    manifest["spec"]["model"]["uri"] = "s3://b/m"
    assert "spec.model: exactly one of fineTuneJobRef, uri, lineage must be set" in rejected(manifest)
    manifest["spec"]["model"] = {}
    assert "exactly one of fineTuneJobRef, uri, lineage" in rejected(manifest)


@pytest.mark.parametrize("weights", [[10, 10], [50, 20], [10, 101]])
def test_canary_weights_rise_strictly_to_at_most_100(weights: list[int]) -> None:
    manifest = example("recmodeldeployment.yaml")
    manifest["spec"]["rollout"]["canary"]["steps"] = [{"weight": w} for w in weights]
    assert "spec.rollout.canary.steps" in rejected(manifest)


@pytest.mark.parametrize("threshold", [{}, {"below": 1, "above": 2}, {"relativeDecrease": 0.1, "relativeIncrease": 0.1}])
def test_threshold_has_exactly_one_bound(threshold: dict[str, float]) -> None:
    manifest = example("monitorpolicy.yaml")
    manifest["spec"]["rules"][0]["threshold"] = threshold
    message = rejected(manifest)
    assert "spec.rules.0.threshold" in message
    assert "exactly one of below, above, relativeDecrease, relativeIncrease" in message


@pytest.mark.parametrize("gate, message", [
    ({"metric": "auc"}, "a gate needs minimum, maximum, beatBaselines or beatCurrent"),
    ({"metric": "auc", "minimum": 0.5, "maximum": 0.9}, "at most one of minimum, maximum may be set"),
    ({"metric": "logloss", "beatBaselines": ["bm25"]}, "beatBaselines: bm25 has no meaningful logloss"),
])
def test_a_gate_judges_something_it_can(gate: dict[str, Any], message: str) -> None:
    manifest = example("finetunejob.yaml")
    manifest["spec"]["evaluation"]["gate"] = gate
    assert f"spec.evaluation.gate: {message}" in rejected(manifest)


def test_gate_metric_must_be_a_contract_metric() -> None:
    manifest = example("finetunejob.yaml")
    manifest["spec"]["evaluation"]["gate"] = {"metric": "accuracy@x", "minimum": 0.5}
    assert "spec.evaluation.gate.metric" in rejected(manifest)


@pytest.mark.parametrize(("field", "value"), [("workers", 0), ("gpusPerWorker", -1), ("gpusPerWorker", 1.5)])
def test_workers_and_gpus(field: str, value: float) -> None:
    manifest = example("finetunejob.yaml")
    manifest["spec"]["resources"][field] = value
    assert f"spec.resources.{field}" in rejected(manifest)


@pytest.mark.parametrize("value", ["5 minutes", "10", "1d", ""])
def test_durations_are_go_style(value: str) -> None:
    manifest = example("monitorpolicy.yaml")
    manifest["spec"]["interval"] = value
    assert "spec.interval" in rejected(manifest)


def test_quantities_accept_numbers_and_strings_but_not_nonsense() -> None:
    manifest = example("finetunejob.yaml")
    manifest["spec"]["resources"]["cpu"] = 2
    validate_manifest(manifest)
    manifest["spec"]["resources"]["memory"] = "lots"
    assert "spec.resources.memory" in rejected(manifest)


def test_finetunejob_requires_dataset_uri_but_a_policy_template_does_not() -> None:
    manifest = example("finetunejob.yaml")
    del manifest["spec"]["dataset"]["uri"]
    assert "dataset.uri is required" in rejected(manifest)
    policy = example("monitorpolicy.yaml")
    assert "uri" not in policy["spec"]["retrain"]["template"]["spec"]["dataset"]
    validate_manifest(policy)


@pytest.mark.parametrize("uri", ["pvc://models/../../x", "file:///../../etc/passwd", "s3://b/a/..", "../data"])
def test_a_uri_with_a_dot_dot_segment_is_refused(uri: str) -> None:
    manifest = example("finetunejob.yaml")
    manifest["spec"]["output"]["uri"] = uri
    assert "has a '..' segment" in rejected(manifest)
    manifest["spec"]["output"]["uri"] = "s3://b/a..b/c"  # only whole segments climb
    validate_manifest(manifest)


def test_only_volume_types_of_the_restricted_profile_are_accepted() -> None:
    manifest = example("finetunejob.yaml")
    manifest["spec"]["podTemplate"] = {"volumes": [{"name": "cache", "emptyDir": {}},
                                                   {"name": "root", "hostPath": {"path": "/"}}]}
    assert "volumes[1] is a hostPath volume" in rejected(manifest)
    manifest["spec"]["podTemplate"]["volumes"].pop()
    validate_manifest(manifest)


def test_query_rule_needs_its_query() -> None:
    manifest = example("monitorpolicy.yaml")
    broken = copy.deepcopy(manifest)
    broken["spec"]["rules"][4].pop("query")
    assert "query must be set exactly when metric is query" in rejected(broken)
    manifest["spec"]["rules"].append(copy.deepcopy(manifest["spec"]["rules"][0]))
    assert "rule names must be unique" in rejected(manifest)


def test_replicas_and_autoscaling_exclude_each_other() -> None:
    manifest = example("recmodeldeployment.yaml")
    manifest["spec"]["replicas"] = 3
    assert "set replicas or autoscaling, not both" in rejected(manifest)


def test_wrong_kind_is_named() -> None:
    assert "not a recops.dev/v1alpha1 resource" in rejected({"apiVersion": "v1", "kind": "Pod"})


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("10m", 600), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_threshold_semantics() -> None:
    assert Threshold(below=0.1).breached(0.05) is True
    assert Threshold(above=200).breached(150) is False
    drop = Threshold(relative_decrease=0.2)
    assert drop.breached(0.07, baseline=0.1) is True
    assert drop.breached(0.09, baseline=0.1) is False
    assert drop.breached(0.01) is None  # no baseline: not judged
    assert Threshold(relative_increase=0.5).breached(160, baseline=100) is True

"""The generated CRDs on the real apiserver: they apply, the examples are accepted, and
each CEL rule and schema constraint rejects a bad object with the apiserver's message."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import REPO, Cluster

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
DELETE = object()


def example(kind: str) -> dict:
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind:
                doc["metadata"].pop("namespace", None)  # tests use their own namespace
                return doc
    raise AssertionError(f"no {kind} in examples/")


def mutated(kind: str, changes: dict[str, Any]) -> dict:
    """The example of `kind` with dotted paths (list indexes as numbers) set or deleted."""
    obj = copy.deepcopy(example(kind))
    for path, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = obj
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return obj


def create(cluster: Cluster, namespace: str, obj: dict) -> Any:
    return cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)


def test_crds_are_established(cluster: Cluster, crds: list[str]) -> None:
    for name in crds:
        cluster.wait_condition("crd", "", name, "Established", timeout=30)
    names = cluster.kubectl("api-resources", "--api-group=recops.dev", "-o", "name").stdout.split()
    assert sorted(names) == ["finetunejobs.recops.dev", "monitorpolicies.recops.dev", "recmodeldeployments.recops.dev"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted(cluster: Cluster, crds: list[str], namespace: str, path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        doc["metadata"].pop("namespace", None)
        res = create(cluster, namespace, doc)
        assert res.returncode == 0, res.stderr
    assert cluster.kubectl("get", "recops", "-n", namespace, "-o", "name").stdout.strip()


FTJ, RMD, MP = "FineTuneJob", "RecModelDeployment", "MonitorPolicy"
RULES = "spec.rollout.canary.analysis.rules"
TEMPLATE = "spec.retrain.template.spec"

# (kind, changes to its example, what the apiserver must say)
INVALID = {
    # CEL rules
    "gate-both-bounds": (FTJ, {"spec.evaluation.gate.minimum": 0.1, "spec.evaluation.gate.maximum": 0.9},
                         "at most one of minimum, maximum may be set"),
    "gate-judges-nothing": (FTJ, {"spec.evaluation.gate.beatBaselines": DELETE, "spec.evaluation.gate.beatCurrent": DELETE},
                            "a gate needs minimum, maximum, beatBaselines or beatCurrent"),
    "gate-bm25-logloss": (FTJ, {"spec.evaluation.gate.metric": "logloss"},
                          "beatBaselines: popularity and bm25 have only auc, mrr, ndcg@K and recall@K"),
    "workers-zero": (FTJ, {"spec.resources.workers": 0}, "spec.resources: Invalid value: workers must be at least 1"),
    "gpus-negative": (FTJ, {"spec.resources.gpusPerWorker": -1}, "gpusPerWorker must be a non-negative integer"),
    "dataset-uri-missing": (FTJ, {"spec.dataset.uri": DELETE}, "dataset.uri is required"),
    "template-gate-both-bounds": (MP, {f"{TEMPLATE}.evaluation.gate.minimum": 0.1, f"{TEMPLATE}.evaluation.gate.maximum": 0.9},
                                  "at most one of minimum, maximum may be set"),
    "template-workers-zero": (MP, {f"{TEMPLATE}.resources.workers": 0}, "workers must be at least 1"),
    "model-two-sources": (RMD, {"spec.model.uri": "s3://models/x"},
                          "exactly one of fineTuneJobRef, uri, lineage must be set"),
    "model-no-source": (RMD, {"spec.model.lineage": DELETE}, "exactly one of fineTuneJobRef, uri, lineage must be set"),
    "replicas-and-autoscaling": (RMD, {"spec.replicas": 3}, "set replicas or autoscaling, not both"),
    "min-above-max-replicas": (RMD, {"spec.autoscaling.minReplicas": 20}, "minReplicas must not exceed maxReplicas"),
    "weights-not-rising": (RMD, {"spec.rollout.canary.steps": [{"weight": 50}, {"weight": 25}]},
                           "steps weights must rise strictly"),
    "weights-repeat": (RMD, {"spec.rollout.canary.steps": [{"weight": 25}, {"weight": 25}]},
                       "steps weights must rise strictly"),
    "canary-missing": (RMD, {"spec.rollout.canary": DELETE}, "strategy Canary needs canary"),
    "analysis-two-thresholds": (RMD, {f"{RULES}.0.threshold": {"above": 0.1, "relativeDecrease": 0.1}},
                                "exactly one of below, above, relativeDecrease, relativeIncrease must be set"),
    "rule-no-threshold": (MP, {"spec.rules.0.threshold": {}},
                          "exactly one of below, above, relativeDecrease, relativeIncrease must be set"),
    "query-missing": (MP, {"spec.rules.4.query": DELETE}, "query must be set exactly when metric is query"),
    "query-on-builtin": (MP, {"spec.rules.0.query": "up"}, "query must be set exactly when metric is query"),
    "rule-names-repeat": (MP, {"spec.rules.1.name": "ctr-drop"}, "rule names must be unique"),
    # schema constraints: enums, ranges, patterns (durations, names, URIs, metrics)
    "task-enum": (FTJ, {"spec.task": "regression"}, 'Unsupported value: "regression"'),
    "precision-enum": (FTJ, {"spec.training.precision": "fp8"}, 'Unsupported value: "fp8"'),
    "learning-rate-range": (FTJ, {"spec.training.learningRate": 0}, "spec.training.learningRate in body should be greater than 0"),
    "epochs-range": (FTJ, {"spec.training.epochs": 1000}, "spec.training.epochs in body should be less than or equal to 100"),
    "metric-pattern": (FTJ, {"spec.evaluation.gate.metric": "accuracy@k"}, "spec.evaluation.gate.metric in body should match"),
    "uri-pattern": (FTJ, {"spec.output.uri": "ftp://models"}, "spec.output.uri in body should match"),
    "uri-dot-dot-pvc": (FTJ, {"spec.output.uri": "pvc://models/../../x"},
                        "spec.output.uri: Invalid value: \"pvc://models/../../x\": a URI must not have a '..' segment"),
    "uri-dot-dot-file": (FTJ, {"spec.dataset.uri": "file:///../../etc/passwd"}, "a URI must not have a '..' segment"),
    "uri-dot-dot-event-log": (RMD, {"spec.serving.eventLog.uri": "s3://events/a/.."}, "a URI must not have a '..' segment"),
    "hostpath-volume-trainer": (FTJ, {"spec.podTemplate": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}},
                                "a volume may only be of a type Pod Security's restricted profile allows"),
    "nfs-volume-server": (RMD, {"spec.podTemplate": {"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}},
                          "a volume may only be of a type Pod Security's restricted profile allows"),
    "exploration-range": (RMD, {"spec.serving.eventLog.exploration": 0.9},
                          "spec.serving.eventLog.exploration in body should be less than or equal to 0.5"),
    "secret-name-pattern": (FTJ, {"spec.output.credentialsSecretRef.name": "Shop_S3"},
                            "spec.output.credentialsSecretRef.name in body should match"),
    "weight-above-100": (RMD, {"spec.rollout.canary.steps.2.weight": 120}, "steps weights must rise strictly and the last must be at most 100"),
    "duration-pattern": (RMD, {"spec.serving.maxBatchWait": "4 ms"}, "spec.serving.maxBatchWait in body should match"),
    "quantization-enum": (RMD, {"spec.serving.quantization": "int4"}, 'Unsupported value: "int4"'),
    "interval-pattern": (MP, {"spec.interval": "every minute"}, "spec.interval in body should match"),
    "metric-enum": (MP, {"spec.rules.0.metric": "bounceRate"}, 'Unsupported value: "bounceRate"'),
    "relative-decrease-range": (MP, {"spec.rules.0.threshold.relativeDecrease": 1.5}, "relativeDecrease in body should be less than or equal to 1"),
    "prometheus-url-pattern": (MP, {"spec.prometheus.url": "prometheus:9090"}, "spec.prometheus.url in body should match"),
}


@pytest.mark.parametrize("case", INVALID, ids=str)
def test_invalid_resource_is_rejected(cluster: Cluster, crds: list[str], namespace: str, case: str) -> None:
    kind, changes, message = INVALID[case]
    res = create(cluster, namespace, mutated(kind, changes))
    assert res.returncode != 0, f"{case}: accepted"
    assert "is invalid" in res.stderr and message in res.stderr, res.stderr


def test_finetunejob_spec_is_immutable_except_suspend_and_deadline(cluster: Cluster, crds: list[str],
                                                                  namespace: str) -> None:
    ftj = example(FTJ)
    assert create(cluster, namespace, ftj).returncode == 0
    name = ftj["metadata"]["name"]

    def patch(spec: dict) -> Any:
        return cluster.kubectl("patch", "finetunejob", name, "-n", namespace, "--type=merge",
                               "-p", json.dumps({"spec": spec}), check=False)

    for field, value in [("task", "relevance"), ("training", {"epochs": 5}), ("output", {"uri": "/models"}),
                         ("resources", {"workers": 2}), ("baseModel", {"uri": "builtin://other"})]:
        res = patch({field: value})
        assert res.returncode != 0, f"spec.{field} changed"
        assert f"spec.{field} is immutable; only suspend and activeDeadlineSeconds may change" in res.stderr

    assert patch({"suspend": True, "activeDeadlineSeconds": 600}).returncode == 0
    spec = json.loads(cluster.kubectl("get", "ftj", name, "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["suspend"] is True and spec["activeDeadlineSeconds"] == 600

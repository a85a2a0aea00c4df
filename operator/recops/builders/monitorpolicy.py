"""The FineTuneJob a MonitorPolicy's breach creates: pure, from the policy and its target.

The job is the policy's child (owner reference, standard labels), carries the target's lineage
when `retrain.deploy` is set (so the RecModelDeployment that follows the lineage canaries its
model), and trains on the target's serving event log of the last `retrain.dataWindow`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from recops.api.common import API_VERSION, GROUP, format_time
from recops.api.contracts import LINEAGE_LABEL, MANAGED_BY, owner_label
from recops.api.finetunejob import KIND as FTJ_KIND
from recops.api.monitorpolicy import KIND, MonitorPolicySpec
from recops.builders.common import (
    MANAGED_BY_LABEL,
    child_name,
    label_value,
    merge_user_labels,
    object_meta,
    standard_labels,
    without_forbidden,
)

COMPONENT = "retrain"
SEQUENCE_ANNOTATION = f"{GROUP}/retrain-sequence"
REASON_ANNOTATION = f"{GROUP}/retrain-reason"


def retrain_job_name(policy_name: str, policy_uid: str, sequence: int) -> str:
    """`<policy>-<8 hex>`: the same for the same policy and retrain number, so a restarted
    operator can never create the same retrain twice (the API server refuses the name)."""
    digest = hashlib.sha256(f"{policy_uid}:{sequence}".encode()).hexdigest()[:8]
    return child_name(policy_name, digest)


def retrain_selector(policy_name: str) -> dict[str, str]:
    """Labels that find every FineTuneJob a policy created."""
    return {MANAGED_BY_LABEL: MANAGED_BY, owner_label(KIND): label_value(policy_name)}


def retrain_job(
    policy: Mapping[str, Any],
    spec: MonitorPolicySpec,
    *,
    lineage: str | None,
    event_log_uri: str,
    since: datetime,
    sequence: int,
    reason: str,
) -> dict[str, Any]:
    """The FineTuneJob manifest for retrain number `sequence` of `policy`."""
    if spec.retrain is None:
        raise ValueError("the policy has no retrain section")
    template = spec.retrain.template
    meta = policy["metadata"]
    labels = merge_user_labels(standard_labels(KIND, meta["name"], COMPONENT), template.labels)
    if spec.retrain.deploy and lineage:
        labels[LINEAGE_LABEL] = lineage
    else:
        labels.pop(LINEAGE_LABEL, None)  # deploy: false keeps the job's model out of every rollout
    annotations = {
        **without_forbidden(template.annotations),
        SEQUENCE_ANNOTATION: str(sequence),
        REASON_ANNOTATION: reason[:1024],
    }
    body = template.spec.to_api()
    dataset = dict(body.get("dataset") or {})
    dataset["uri"] = event_log_uri
    dataset["since"] = format_time(since)
    body["dataset"] = dataset
    return {
        "apiVersion": API_VERSION,
        "kind": FTJ_KIND,
        "metadata": object_meta(retrain_job_name(meta["name"], meta["uid"], sequence), policy, labels, annotations),
        "spec": body,
    }

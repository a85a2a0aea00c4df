"""The typed API of recops (group recops.dev, version v1alpha1): the single source of truth."""

from recops.api import conditions
from recops.api.common import API_VERSION, GROUP, VERSION, Condition, Threshold, parse_duration
from recops.api.finetunejob import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus
from recops.api.monitorpolicy import MonitorPolicy, MonitorPolicySpec, MonitorPolicyStatus
from recops.api.recmodeldeployment import RecModelDeployment, RecModelDeploymentSpec, RecModelDeploymentStatus
from recops.api.validation import InvalidResource, validate_manifest, validate_spec

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "InvalidResource",
    "MonitorPolicy",
    "MonitorPolicySpec",
    "MonitorPolicyStatus",
    "RecModelDeployment",
    "RecModelDeploymentSpec",
    "RecModelDeploymentStatus",
    "Threshold",
    "conditions",
    "parse_duration",
    "validate_manifest",
    "validate_spec",
]

"""Types shared by the three resources: the base model, durations, quantities, conditions."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "recops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Go-style durations ("5s", "10m", "1h30m", "250ms") as the Contracts require.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# The Kubernetes resource.Quantity grammar.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# RFC 1123 DNS label / subdomain, as Kubernetes names require.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Metric names of the Contracts: auc, logloss, rmse, mrr, loss, ndcg@K, recall@K.
METRIC_PATTERN = r"^(auc|logloss|rmse|mrr|loss|accuracy|(ndcg|recall)@[1-9][0-9]{0,2})$"
URI_PATTERN = r"^(s3://[^/]+(/.*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|builtin://[a-z0-9][-a-z0-9.]*|file://.+|/.*|[^:]+)$"


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as ``1h30m`` or ``250ms``."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use Go-style durations such as 30s, 10m or 1h30m")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)))


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as status times are written."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """A status or metadata time; None when absent or not a time."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def cel_rules(*rules: JsonDict) -> ConfigDict:
    """A model's CEL rules (x-kubernetes-validations in its CRD schema), which the API server enforces."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


class KubeModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
        validate_default=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The wire form: camelCase, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _duration_check(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    BeforeValidator(lambda v: _duration_check(v) if isinstance(v, str) else v),
]


def _quantity_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# A Kubernetes quantity; YAML users write both `cpu: 2` and `memory: 4Gi`.
Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    StringConstraints(pattern=QUANTITY_PATTERN, max_length=64),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            # Structural schemas allow no other keyword inside this anyOf; the pattern applies to strings only.
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
        }
    ),
]

DOT_DOT_SEGMENT = "(^|/)[.][.](/|$)"  # no backslash: the same text is a CEL string literal


def _no_dot_dot(uri: str) -> str:
    if re.search(DOT_DOT_SEGMENT, uri):
        raise ValueError(f"{uri!r} has a '..' segment: a URI names its place directly")
    return uri


# A '..' segment would climb out of a claim's mount or the output prefix (pvc://models/../../x).
Uri = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024, pattern=URI_PATTERN),
    AfterValidator(_no_dot_dot),
    WithJsonSchema({
        "type": "string", "minLength": 1, "maxLength": 1024, "pattern": URI_PATTERN,
        "x-kubernetes-validations": [{"rule": f"!self.matches('{DOT_DOT_SEGMENT}')",
                                      "message": "a URI must not have a '..' segment"}],
    }),
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
MetricName = Annotated[str, StringConstraints(max_length=32, pattern=METRIC_PATTERN)]
Timestamp = Annotated[str, StringConstraints(max_length=64), WithJsonSchema({"type": "string", "format": "date-time"})]

# Kubernetes objects recops passes through unchanged (affinity, tolerations, volumes, env).
KubeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


# The volume types Pod Security's "restricted" profile admits (no hostPath, nfs, iscsi, ...).
RESTRICTED_VOLUME_TYPES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret")
# The core/v1 volume types it refuses (kept as fields here only so that CEL may test for them: CEL cannot list
# the keys of an object with unknown fields). A type added to Kubernetes later is refused by the operator's own
# validation (InvalidSpec) instead of the CRD's.
DENIED_VOLUME_TYPES = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "fc", "flexVolume", "flocker",
    "gcePersistentDisk", "gitRepo", "glusterfs", "hostPath", "image", "iscsi", "nfs", "photonPersistentDisk",
    "portworxVolume", "quobyte", "rbd", "scaleIO", "storageos", "vsphereVolume",
)
# A core/v1 Volume, passed through.
VolumeObject = Annotated[dict[str, Any], WithJsonSchema({
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {kind: {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                   for kind in DENIED_VOLUME_TYPES},
    "x-kubernetes-validations": [{
        "rule": " && ".join(f"!has(self.{kind})" for kind in DENIED_VOLUME_TYPES),
        "message": "a volume may only be of a type Pod Security's restricted profile allows: "
                   + ", ".join(RESTRICTED_VOLUME_TYPES),
    }],
})]


class LocalObjectReference(KubeModel):
    name: Name = Field(description="Name of the object in the same namespace.")


class SecretKeySelector(KubeModel):
    name: Name = Field(description="Name of the Secret in the same namespace.")
    key: str = Field(max_length=253, description="Key within the Secret.")


class Threshold(KubeModel):
    """When a value is bad. Exactly one bound; relative bounds compare with a baseline."""

    model_config = cel_rules(
        {
            "rule": "[has(self.below), has(self.above), has(self.relativeDecrease), "
            "has(self.relativeIncrease)].filter(x, x).size() == 1",
            "message": "exactly one of below, above, relativeDecrease, relativeIncrease must be set",
        }
    )

    below: float | None = Field(default=None, description="Bad when the value falls below this.")
    above: float | None = Field(default=None, description="Bad when the value rises above this.")
    relative_decrease: float | None = Field(
        default=None, ge=0, le=1,
        description="Bad when the value falls more than this fraction below the baseline (0.1 = 10%).",
    )
    relative_increase: float | None = Field(
        default=None, ge=0,
        description="Bad when the value rises more than this fraction above the baseline (0.5 = 50%).",
    )

    @model_validator(mode="after")
    def _exactly_one_bound(self) -> Threshold:
        bounds = [self.below, self.above, self.relative_decrease, self.relative_increase]
        if sum(b is not None for b in bounds) != 1:
            raise ValueError("exactly one of below, above, relativeDecrease, relativeIncrease must be set")
        return self

    @property
    def is_relative(self) -> bool:
        return self.relative_decrease is not None or self.relative_increase is not None

    def bound(self, baseline: float | None = None) -> float | None:
        """The value the threshold compares with; None when a relative bound has no baseline."""
        if self.below is not None:
            return self.below
        if self.above is not None:
            return self.above
        if baseline is None:
            return None
        if self.relative_decrease is not None:
            return baseline * (1 - self.relative_decrease)
        assert self.relative_increase is not None
        return baseline * (1 + self.relative_increase)

    def breached(self, value: float, baseline: float | None = None) -> bool | None:
        """True when ``value`` is bad; None when a relative bound has no baseline to compare with."""
        bound = self.bound(baseline)
        if bound is None:
            return None
        return value < bound if self.below is not None or self.relative_decrease is not None else value > bound

    def describe(self) -> str:
        if self.below is not None:
            return f"below {self.below:g}"
        if self.above is not None:
            return f"above {self.above:g}"
        if self.relative_decrease is not None:
            return f"{self.relative_decrease:.0%} below baseline"
        return f"{self.relative_increase:.0%} above baseline"


class Condition(KubeModel):
    """A condition as the Kubernetes API conventions define it."""

    type: str = Field(max_length=316, description="Type of the condition, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason for the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: Timestamp = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set for."
    )


def conditions_field() -> Any:
    return Field(
        default_factory=list,
        max_length=16,
        description="Latest observations of the resource's state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )




class PodTemplate(KubeModel):
    """Additions to the pods recops creates. What Pod Security's restricted profile governs stays restricted:
    security contexts are the builders' own, host namespaces cannot be asked for, volumes are of allowed types."""

    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=16, description="Secrets for pulling the image."
    )
    affinity: KubeObject | None = Field(default=None, description="A core/v1 Affinity for the pods.")
    service_account_name: Name | None = Field(
        default=None,
        description="ServiceAccount (same namespace) the pods run as, e.g. one annotated for workload identity "
                    "(IRSA, EKS Pod Identity, GKE Workload Identity). FineTuneJob: the operator binds the job's "
                    "progress Role (patch of this job's status only) to it instead of creating a per-job "
                    "ServiceAccount. RecModelDeployment: the servers run as it, still without a mounted API token.",
    )
    env: list[KubeObject] = Field(
        default_factory=list, max_length=64,
        description="Extra core/v1 EnvVar entries; use valueFrom.secretKeyRef for credentials.",
    )
    volumes: list[VolumeObject] = Field(
        default_factory=list, max_length=32,
        description="Extra core/v1 Volumes, of the types Pod Security's restricted profile allows: "
                    + ", ".join(RESTRICTED_VOLUME_TYPES) + ".",
    )
    volume_mounts: list[KubeObject] = Field(
        default_factory=list, max_length=32, description="Extra core/v1 VolumeMounts for the main container."
    )

    @model_validator(mode="after")
    def _restricted_volumes(self) -> PodTemplate:
        for index, volume in enumerate(self.volumes):
            kinds = sorted(set(volume) - {"name", *RESTRICTED_VOLUME_TYPES})
            if kinds:
                raise ValueError(f"volumes[{index}] is a {kinds[0]} volume: a volume may only be of a type Pod "
                                 f"Security's restricted profile allows: {', '.join(RESTRICTED_VOLUME_TYPES)}")
        return self

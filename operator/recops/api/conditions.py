"""Condition types and reasons of the three resources, each with when it applies.

Types and reasons are CamelCase, as the Kubernetes API conventions ask; reasons are
documented in the README's troubleshooting section.
"""

# --- condition types -------------------------------------------------------------------

# FineTuneJob
COMPLETE = "Complete"  # True once the trainer wrote a complete model (status is then final).
FAILED = "Failed"  # True once the job failed for good (retries or deadline exhausted, invalid spec).
GATE_PASSED = "GatePassed"  # True/False once the evaluation gate was decided; absent without a gate.
OPTIMIZED = "Optimized"  # True/False once spec.optimize decided whether the optimised model is served.
SUSPENDED = "Suspended"  # True while spec.suspend is set and no pod runs.
READY = "Ready"  # All kinds: the resource did its job (FTJ: complete and the gate passed or none).

# RecModelDeployment
AVAILABLE = "Available"  # The stable model serves with at least one ready replica.
PROGRESSING = "Progressing"  # A rollout (rolling update or canary) is under way.
DEGRADED = "Degraded"  # A canary was rolled back; cleared by a newer candidate or retry-model.

# MonitorPolicy
HEALTHY = "Healthy"  # False while a rule is breached.
RETRAINING = "Retraining"  # True while a FineTuneJob the policy created is unfinished.
METRICS_UNAVAILABLE = "MetricsUnavailable"  # True while Prometheus cannot be queried.

# Each kind's condition types in the order status.conditions lists them (a fixed order, so equal states
# compare equal).
FINETUNEJOB_CONDITIONS = (COMPLETE, FAILED, GATE_PASSED, OPTIMIZED, SUSPENDED, READY)
RECMODELDEPLOYMENT_CONDITIONS = (AVAILABLE, PROGRESSING, DEGRADED, READY)
MONITORPOLICY_CONDITIONS = (READY, HEALTHY, RETRAINING, METRICS_UNAVAILABLE)

# --- reasons ---------------------------------------------------------------------------

# Shared
INVALID_SPEC = "InvalidSpec"  # The spec passed the schema but cannot be acted on; fix the spec.
RECONCILED = "Reconciled"  # Everything the spec asks for exists.

# FineTuneJob
PENDING = "Pending"  # The Job exists but no trainer pod runs yet.
RUNNING = "Running"  # A trainer pod is running.
SUCCEEDED = "Succeeded"  # The trainer wrote a complete model.
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"  # Every attempt failed.
DEADLINE_EXCEEDED = "DeadlineExceeded"  # activeDeadlineSeconds passed.
TRAINER_FAILED = "TrainerFailed"  # The trainer exited non-zero (see the message for its error).
SPEC_SUSPENDED = "SpecSuspended"  # spec.suspend is true.
RESUMED = "Resumed"  # spec.suspend went back to false.
GATE_MET = "GateMet"  # The gate's metric met its bound (and beat the current model if asked).
GATE_NOT_MET = "GateNotMet"  # The gate's metric missed its bound or did not beat the current model.
NO_GATE = "NoGate"  # No gate is configured; a complete model is ready.
OPTIMIZED_SERVED = "OptimizedServed"  # The optimised (ONNX) model ranks as the full one does and is the one served.
FULL_PRECISION_KEPT = "FullPrecisionKept"  # The optimised model broke spec.optimize's bounds (or its export failed).
MISSING_DEPENDENCY = "MissingDependency"  # A referenced Secret or PVC does not exist.
UNSCHEDULABLE = "Unschedulable"  # No node can take the trainer pod (e.g. too many GPUs asked).
# The trainer pod's container cannot start: the kubelet's own reason is the condition's reason.
CONTAINER_START_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                            "CreateContainerConfigError", "CreateContainerError", "RunContainerError")
CHILD_CONFLICT = "ChildConflict"  # An object of a child's name exists and belongs to something else.
POD_CREATE_FAILED = "PodCreateFailed"  # The Job controller cannot create the pod (quota, admission, a webhook).
RETRYING = "Retrying"  # A trainer attempt failed and backoffLimit allows another; attempts counts them.
DEADLINE_RAISED = "DeadlineRaised"  # The spec changed after DeadlineExceeded: a new Job resumes the training.

# RecModelDeployment
MODEL_NOT_FOUND = "ModelNotFound"  # The referenced model does not exist or is incomplete yet.
WAITING_FOR_MODEL = "WaitingForModel"  # No FineTuneJob of the lineage succeeded and passed yet.
ROLLING_UPDATE = "RollingUpdate"  # The stable Deployment is switching to a new model.
CANARY_STEP = "CanaryStep"  # The canary serves a step's weight and is being analysed.
INCONCLUSIVE = "Inconclusive"  # Too little traffic to judge the canary step; it waits.
PROMOTED = "Promoted"  # The candidate became the stable model.
ROLLED_BACK = "RolledBack"  # The canary failed analysis failureLimit times and was removed.
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"  # The canary had no verdict for progressDeadlineSeconds.
ABORTED = "Aborted"  # A person aborted the rollout with recops.dev/abort.
MINIMUM_REPLICAS = "MinimumReplicasAvailable"  # Enough stable replicas are ready.
REPLICAS_UNAVAILABLE = "ReplicasUnavailable"  # No stable replica is ready.

# MonitorPolicy
RULES_OK = "RulesOk"  # Every rule is within its threshold (or has too little data).
RULE_BREACHED = "RuleBreached"  # A rule held its breach for `for`.
RETRAIN_STARTED = "RetrainStarted"  # The policy created a FineTuneJob.
RETRAIN_FINISHED = "RetrainFinished"  # The FineTuneJob the policy created finished.
NO_RETRAIN = "NoRetrain"  # The policy has created no FineTuneJob (yet); the message says why not when breached.
QUERY_FAILED = "QueryFailed"  # Prometheus answered with an error or could not be reached.
TARGET_NOT_FOUND = "TargetNotFound"  # The target RecModelDeployment does not exist; the policy waits.
METRICS_OK = "MetricsOk"  # Prometheus answered every query.

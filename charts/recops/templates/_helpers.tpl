{{/* The chart name (nameOverride wins). */}}
{{- define "recops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name: fullnameOverride, the release name if it contains the chart name, else RELEASE-NAME. */}}
{{- define "recops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects are FULLNAME-operator (recops-operator for release "recops", as config/rbac). */}}
{{- define "recops.operatorName" -}}
{{- printf "%s-operator" (include "recops.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "recops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "recops.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Standard labels of every object. */}}
{{- define "recops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "recops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: recops
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the operator's pods (immutable in a Deployment: never add to them). */}}
{{- define "recops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* REPOSITORY:TAG or REPOSITORY@DIGEST; the tag defaults to appVersion. Call with (list image root). */}}
{{- define "recops.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* HA mode: more than one replica. */}}
{{- define "recops.ha" -}}
{{- if gt (int .Values.operator.replicas) 1 -}}true{{- end -}}
{{- end -}}

{{/*
The operator's permissions: the rules of config/rbac/ (cluster_role.yaml = role.yaml), the same
in both modes. tests/unit/test_chart.py fails when these and config/rbac/ differ; change both.
*/}}
{{- define "recops.rules" -}}
# FineTuneJobs are only read (Kopf keeps no annotations on them) and created and deleted by MonitorPolicies.
- apiGroups: ["recops.dev"]
  resources: ["finetunejobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["recops.dev"]
  resources: ["recmodeldeployments", "monitorpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["recops.dev"]
  resources: ["finetunejobs/status", "recmodeldeployments/status", "monitorpolicies/status"]
  verbs: ["get", "patch"]
- apiGroups: ["recops.dev"]
  resources: ["finetunejobs/finalizers", "recmodeldeployments/finalizers", "monitorpolicies/finalizers"]
  verbs: ["update"]
# The default feedback-key Secret of a RecModelDeployment: created once, never read back or changed.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# A FineTuneJob's Secrets and claims must exist before its Job is created (MissingDependency):
# get by name only, never list or watch.
- apiGroups: [""]
  resources: ["secrets", "persistentvolumeclaims"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The tail of a running trainer's log: its newest progress line (status.progress).
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Events: posted; listed only to read a trainer Job's FailedCreate (why it has no pod).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
# RecModelDeployment children; the headless Service of a multi-worker FineTuneJob.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end -}}

{{/* Leader election (HA mode): the Lease in the release namespace (config/rbac/leader_election.yaml). */}}
{{- define "recops.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end -}}

{{/* Labels of every model-server pod the operator creates, of any RecModelDeployment (builders/common.py
standard_labels with component "server"; tests/unit/test_chart.py checks them against the builder). */}}
{{- define "recops.serverPodSelector" -}}
app.kubernetes.io/name: recops
app.kubernetes.io/component: server
app.kubernetes.io/managed-by: recops
{{- end -}}

{{/* The namespaces of the shared feedback-key Secret, comma-separated: feedbackKey.namespaces, else the watched
ones, else the release's. */}}
{{- define "recops.feedbackKeyNamespaces" -}}
{{- .Values.feedbackKey.namespaces | default .Values.rbac.watchNamespaces | default (list .Release.Namespace) | join "," -}}
{{- end -}}

{{/* Non-empty when the operator needs the prometheus-auth volume (a credential or CA file). */}}
{{- define "recops.prometheusAuthFiles" -}}
{{- with .Values.prometheus.auth -}}
{{- if or .bearerTokenSecretRef.name .serviceAccountTokenAudience (and .username .passwordSecretRef.name) .caConfigMapRef.name -}}
true
{{- end -}}
{{- end -}}
{{- end }}

{{/* prometheus.auth.headers as RECOPS_PROMETHEUS_HEADERS: Name=Value,... (sorted, so renders are stable). */}}
{{- define "recops.prometheusHeaders" -}}
{{- $pairs := list -}}
{{- range $name, $value := .headers -}}
{{- if or (contains "," $value) (contains "," $name) (contains "=" $name) -}}
{{- fail (printf "prometheus.auth.headers: %s: names may hold neither ',' nor '=', values no ','" $name) -}}
{{- end -}}
{{- $pairs = append $pairs (printf "%s=%s" $name $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

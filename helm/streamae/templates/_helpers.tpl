{{/* Names */}}
{{- define "streamae.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamae.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "streamae.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamae.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamae.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "streamae.labels" -}}
helm.sh/chart: {{ include "streamae.chart" . }}
{{ include "streamae.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamae
{{- end }}

{{- define "streamae.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamae.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamae.image" -}}
{{- $repo := .repository -}}
{{- if .digest -}}
{{- printf "%s@%s" $repo .digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (toString (default $.appVersion .tag)) -}}
{{- end -}}
{{- end }}

{{/*
The roles to render: one `all` Deployment, or `trainer` + `scorer` when scaled out.
Returns YAML: a list of {role, suffix}.
*/}}
{{- define "streamae.roles" -}}
{{- if .Values.roles.enabled }}
- role: trainer
  suffix: -trainer
- role: scorer
  suffix: -scorer
{{- else }}
- role: {{ .Values.config.role }}
  suffix: ""
{{- end }}
{{- end }}

{{/* The Deployment that autoscalers target. */}}
{{- define "streamae.scaledDeployment" -}}
{{- if .Values.roles.enabled -}}
{{ include "streamae.fullname" . }}-scorer
{{- else -}}
{{ include "streamae.fullname" . }}
{{- end -}}
{{- end }}

{{/*
One scalar of `config` as an environment value. YAML numbers arrive as float64, so whole
numbers are printed without an exponent (268435456, not 2.68435456e+08); lists are joined
with commas, which the settings model splits again.
*/}}
{{- define "streamae.envValue" -}}
{{- if kindIs "slice" . -}}
{{- $items := list -}}
{{- range . }}{{ $items = append $items (include "streamae.envValue" .) }}{{ end -}}
{{- join "," $items -}}
{{- else if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end }}

{{/*
`config` flattened into STREAMAE_<SECTION>__<FIELD>: "value" lines. Nulls are skipped (the
daemon's default applies); `role` is set per Deployment instead.
Input: dict with prefix and values.
*/}}
{{- define "streamae.flattenConfig" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .values -}}
{{- $name := printf "%s%s" $prefix (upper $key) -}}
{{- if kindIs "map" $value }}
{{- include "streamae.flattenConfig" (dict "prefix" (printf "%s__" $name) "values" $value) }}
{{- else if and (not (kindIs "invalid" $value)) (ne $name "STREAMAE_ROLE") }}
{{ $name }}: {{ include "streamae.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Selector for PromQL: this release's scrape job in its namespace. */}}
{{- define "streamae.promSelector" -}}
namespace="{{ .Release.Namespace }}", job="{{ include "streamae.fullname" . }}"
{{- end }}

{{/* Checks that fail the render with a message instead of deploying something wrong. */}}
{{- define "streamae.validate" -}}
{{- $auto := or .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled -}}
{{- if and .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled -}}
{{- fail "autoscaling: enable keda or hpa, not both" -}}
{{- end -}}
{{- if and (not .Values.roles.enabled) (or $auto (gt (int .Values.replicaCount) 1)) -}}
{{- fail "role `all` retrains in every pod: set roles.enabled=true (one trainer, N scorers) to run more than one replica or autoscale" -}}
{{- end -}}
{{- if and .Values.roles.enabled (ne .Values.config.role "all") -}}
{{- fail "roles.enabled sets each Deployment's role: leave config.role at `all`" -}}
{{- end -}}
{{- if not (hasPrefix "/" (toString .Values.config.checkpoints.directory)) -}}
{{- fail "config.checkpoints.directory must be an absolute path (the root filesystem is read-only)" -}}
{{- end -}}
{{- if eq (int .Values.config.metrics_port) 0 -}}
{{- fail "config.metrics_port 0 disables /metrics, /healthz and /readyz, which the probes need" -}}
{{- end -}}
{{- end }}

{{/* Names, labels and the pieces every Precision Codex pod shares. */}}

{{- define "codex.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "codex.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "codex.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "codex.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Qdrant chart names its Service like this (charts/qdrant _helpers.tpl "qdrant.fullname"). */}}
{{- define "codex.qdrantUrl" -}}
{{- if .Values.vectorStore.url -}}
{{- .Values.vectorStore.url -}}
{{- else if contains "qdrant" .Release.Name -}}
{{- printf "http://%s:6333" (.Release.Name | trunc 63 | trimSuffix "-") -}}
{{- else -}}
{{- printf "http://%s-qdrant:6333" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "codex.mlflowUrl" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s-mlflow:%v" (include "codex.fullname" .) .Values.mlflow.port -}}
{{- else -}}
{{- .Values.mlflow.trackingUri -}}
{{- end -}}
{{- end -}}

{{/* The Dagster chart's instance ConfigMap ("dagster.fullname"-instance). */}}
{{- define "codex.dagsterInstanceConfigMap" -}}
{{- if .Values.codeLocation.instanceConfigMap -}}
{{- .Values.codeLocation.instanceConfigMap -}}
{{- else if contains "dagster" .Release.Name -}}
{{- printf "%s-instance" .Release.Name -}}
{{- else -}}
{{- printf "%s-dagster-instance" .Release.Name -}}
{{- end -}}
{{- end -}}

{{- define "codex.secretEnv" -}}
{{- /* One variable from an existing Secret: (list NAME ref optional) */ -}}
{{- $name := index . 0 -}}{{- $ref := index . 1 -}}{{- $optional := index . 2 -}}
{{- if $ref.name }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
      {{- if $optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end -}}

{{/*
Every environment variable the product reads (codex_core/settings.py), for serving, the code
location and the runs it launches. Secret values only ever come from existing Secrets.
*/}}
{{- define "codex.env" -}}
- name: CODEX_HOME
  value: {{ .Values.codexHome.mountPath | quote }}
- name: QDRANT_URL
  value: {{ include "codex.qdrantUrl" . | quote }}
{{- include "codex.secretEnv" (list "QDRANT_API_KEY" .Values.secrets.qdrantApiKey false) }}
{{- with (include "codex.mlflowUrl" .) }}
- name: MLFLOW_TRACKING_URI
  value: {{ . | quote }}
{{- end }}
{{- include "codex.secretEnv" (list "CODEX_DAGSTER_PG_URL" .Values.secrets.dagsterPgUrl false) }}
{{- include "codex.secretEnv" (list "CODEX_SNAPSHOT_KEY" .Values.secrets.snapshotKey false) }}
{{- include "codex.secretEnv" (list "CODEX_SNAPSHOT_PREVIOUS_KEYS" .Values.secrets.snapshotPreviousKeys true) }}
- name: CODEX_MODELS_CONFIG
  value: /etc/codex/models.toml
- name: CODEX_QUOTAS_CONFIG
  value: /etc/codex/tenants.quotas.yaml
- name: CODEX_AUTH
  value: {{ .Values.settings.auth | quote }}
- name: CODEX_EMBEDDING_DEVICE
  value: {{ .Values.settings.embeddingDevice | quote }}
{{- with .Values.settings.ollamaHost }}
- name: OLLAMA_HOST
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.settings.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "codex.envFrom" -}}
{{- range .Values.secrets.extraEnvFrom }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{- define "codex.volumeMounts" -}}
- name: codex-home
  mountPath: {{ .Values.codexHome.mountPath }}
- name: codex-config
  mountPath: /etc/codex
  readOnly: true
- name: sandbox-policy
  mountPath: /app/configs/sandbox.policy.yaml
  subPath: sandbox.policy.yaml
  readOnly: true
{{- end -}}

{{- define "codex.volumes" -}}
- name: codex-home
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-home" (include "codex.fullname" .)) .Values.codexHome.persistence.existingClaim }}
- name: codex-config
  configMap:
    name: {{ include "codex.fullname" . }}-config
- name: sandbox-policy
  configMap:
    name: {{ include "codex.fullname" . }}-config
    items:
      - key: sandbox.policy.yaml
        path: sandbox.policy.yaml
{{- end -}}

{{/* Container security: bubblewrap's needs when the sandbox is on (values.yaml "sandbox"). */}}
{{- define "codex.containerSecurityContext" -}}
{{- if .Values.sandbox.enabled -}}
{{- toYaml (merge (deepCopy .Values.sandbox.containerSecurityContext) .Values.containerSecurityContext) -}}
{{- else -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}
{{- end -}}

{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "cxstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, or the release name if it already contains the chart name. */}}
{{- define "cxstream.fullname" -}}
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

{{- define "cxstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cxstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cxstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cxstream.labels" -}}
helm.sh/chart: {{ include "cxstream.chart" . }}
{{ include "cxstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Name of the Secret holding the ClickHouse URL, and its key. */}}
{{- define "cxstream.clickhouseSecretName" -}}
{{- default (include "cxstream.fullname" .) .Values.clickhouse.existingSecret }}
{{- end }}

{{- define "cxstream.clickhouseSecretKey" -}}
{{- if .Values.clickhouse.existingSecret }}
{{- required "clickhouse.existingSecretKey is required with clickhouse.existingSecret" .Values.clickhouse.existingSecretKey }}
{{- else -}}
clickhouse-url
{{- end }}
{{- end }}

{{/* topology.yaml content: .Values.topology, else the bundled files/topology.yaml. */}}
{{- define "cxstream.topology" -}}
{{- $t := default (.Files.Get "files/topology.yaml") .Values.topology }}
{{- required "topology is empty: set topology (--set-file topology=topology.yaml) or ship files/topology.yaml" $t }}
{{- end }}

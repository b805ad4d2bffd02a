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

{{/* The Secret holding the ClickHouse password, and its key. */}}
{{- define "cxstream.clickhouseSecretName" -}}
{{- default (include "cxstream.fullname" .) .Values.clickhouse.existingSecret }}
{{- end }}

{{- define "cxstream.clickhouseSecretKey" -}}
{{- if .Values.clickhouse.existingSecret }}
{{- required "clickhouse.existingSecretPasswordKey is required with clickhouse.existingSecret" .Values.clickhouse.existingSecretPasswordKey }}
{{- else -}}
clickhouse-password
{{- end }}
{{- end }}

{{/*
CXSTREAM_CLICKHOUSE_URL: clickhouse.url with $(CLICKHOUSE_USER):$(CLICKHOUSE_PASSWORD)
as its user info. Kubernetes expands the two references from the variables defined
before it in the container's env, so the password never appears in the pod spec.
*/}}
{{- define "cxstream.clickhouseUrl" -}}
{{- $raw := required "clickhouse.url is required, e.g. http://clickhouse.db:8123/" .Values.clickhouse.url }}
{{- $u := urlParse $raw }}
{{- if and $raw (not (has $u.scheme (list "http" "https"))) }}
{{- fail (printf "clickhouse.url %q: the scheme must be http or https (ClickHouse's HTTP interface)" $raw) }}
{{- end }}
{{- if $u.userinfo }}
{{- fail "clickhouse.url must not carry credentials: set clickhouse.username and clickhouse.password (or clickhouse.existingSecret)" }}
{{- end }}
{{- printf "%s://$(CLICKHOUSE_USER):$(CLICKHOUSE_PASSWORD)@%s%s" $u.scheme $u.host (default "/" $u.path) }}
{{- with $u.query }}?{{ . }}{{ end }}
{{- end }}

{{/* URL-encode a user-info component so clickhouse-connect decodes it back (a space is %20, not +). */}}
{{- define "cxstream.urlEncode" -}}
{{- . | urlquery | replace "+" "%20" }}
{{- end }}

{{/* topology.yaml content: .Values.topology, else the bundled files/topology.yaml. */}}
{{- define "cxstream.topology" -}}
{{- $t := default (.Files.Get "files/topology.yaml") .Values.topology }}
{{- required "topology is empty: set topology (--set-file topology=topology.yaml) or ship files/topology.yaml" $t }}
{{- end }}

{{/* Name of the chart, overridable with nameOverride. */}}
{{- define "starling.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified release name; pod names and the node ids derive from it. */}}
{{- define "starling.fullname" -}}
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

{{/* Name of the headless service used for peer discovery. */}}
{{- define "starling.peersServiceName" -}}
{{- printf "%s-peers" (include "starling.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified DNS name of the headless service: the cluster's seed name. */}}
{{- define "starling.seedDnsName" -}}
{{- printf "%s.%s.svc.%s" (include "starling.peersServiceName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "starling.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "starling.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the broker pods. */}}
{{- define "starling.selectorLabels" -}}
app.kubernetes.io/name: {{ include "starling.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Named templates shared by the chart's objects. Every name starts with "kubeclip.".
*/}}

{{/* Chart name, or nameOverride; cut to 63 characters because it ends up in label values. */}}
{{- define "kubeclip.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of the names of the operator's objects: fullnameOverride, else the release name
when it already contains the chart name, else RELEASE-CHART.
*/}}
{{- define "kubeclip.fullname" -}}
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

{{/* Name of the operator's Deployment, ServiceAccount, ClusterRole and their binding. */}}
{{- define "kubeclip.operatorName" -}}
{{- printf "%s-operator" (include "kubeclip.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the ServiceAccount, Role and RoleBinding of mode remoteTarget; fixed, so the kubeconfig steps in NOTES.txt never change. */}}
{{- define "kubeclip.remoteServiceAccountName" -}}
kubeclip-operator-remote
{{- end }}

{{/* Value of the helm.sh/chart label. */}}
{{- define "kubeclip.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every object of the chart. */}}
{{- define "kubeclip.labels" -}}
helm.sh/chart: {{ include "kubeclip.chart" . }}
{{ include "kubeclip.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeclip
{{- end }}

{{/* Labels that never change after install, so selectors may use them. */}}
{{- define "kubeclip.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeclip.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of the operator's pod. */}}
{{- define "kubeclip.operatorSelectorLabels" -}}
{{ include "kubeclip.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Image of the operator, which also runs the trainers: REPOSITORY:TAG, the tag defaulting to the chart's appVersion. */}}
{{- define "kubeclip.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* ClipCluster that Managed jobs without spec.infrastructure.clusterRef run on. */}}
{{- define "kubeclip.defaultCluster" -}}
{{- default .Values.managedCluster.name .Values.operator.defaultCluster }}
{{- end }}

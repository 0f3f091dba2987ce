{{/* Names: 63 characters at most, as Kubernetes names allow. */}}
{{- define "prober.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "prober.fullname" -}}
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

{{- define "prober.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prober.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "prober.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "prober.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: prober
{{- with .Values.location }}
prober/location: {{ . | quote }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "prober.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "prober.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "prober.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "prober.configMapName" -}}
{{- default (include "prober.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{- define "prober.configKey" -}}
{{- if .Values.existingConfigMap }}{{ .Values.existingConfigMapKey }}{{ else }}probes.yaml{{ end }}
{{- end }}

{{/* The probe config as the prober reads it. */}}
{{- define "prober.probesYaml" -}}
{{ toYaml .Values.probes }}
{{- end }}

{{/* Hashed into the pod template so a change of the config rolls the pods. */}}
{{- define "prober.configChecksum" -}}
{{ list (include "prober.probesYaml" .) .Values.configFiles | toJson | sha256sum }}
{{- end }}

{{/*
Ports the prober dials on probed endpoints: the configured list, or 80 and
443 plus every tls.port / http.port named in the probe config.
*/}}
{{- define "prober.egressPorts" -}}
{{- $ports := list }}
{{- if .Values.networkPolicy.egress.ports }}
{{- $ports = .Values.networkPolicy.egress.ports }}
{{- else }}
{{- $ports = list 80 443 }}
{{- range $ep := .Values.probes.endpoints | default list }}
{{- range $layer := list "tls" "http" }}
{{- with (get $ep $layer) }}
{{- with .port }}{{ $ports = append $ports . }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $p := $ports }}
{{ int64 $p }}
{{- end }}
{{- end }}

{{/*
DNS ports: 53, plus the port of every resolver or authoritative server
written as IPV4:PORT or [IPV6]:PORT (string or mapping address).
*/}}
{{- define "prober.dnsPorts" -}}
{{- $addresses := list }}
{{- range $layer := prepend (.Values.probes.endpoints | default list) (.Values.probes.defaults | default dict) }}
{{- range $r := $layer.resolvers | default list }}
{{- if kindIs "map" $r }}{{ $addresses = append $addresses $r.address }}{{ else }}{{ $addresses = append $addresses $r }}{{ end }}
{{- end }}
{{- if kindIs "string" $layer.authoritative }}{{ $addresses = append $addresses $layer.authoritative }}{{ end }}
{{- end }}
53
{{- range $a := $addresses }}
{{- $m := regexFind "^([0-9.]+|\\[[0-9A-Fa-f:.]+\\]):[0-9]+$" (toString $a | trim) }}
{{- if $m }}
{{ regexReplaceAll "^.*:" $m "" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The alert names in files/alerts.yaml, as a JSON list: values that name an alert are checked against it. */}}
{{- define "prober.alertNames" -}}
{{- $names := list }}
{{- range $group := (fromYaml (.Files.Get "files/alerts.yaml")).groups }}
{{- range $rule := $group.rules }}
{{- with $rule.alert }}{{ $names = append $names . }}{{ end }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

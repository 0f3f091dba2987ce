{{/*
What values.schema.json cannot say about `probes`, refused at render time
with the rule `prober validate` applies (prober/config.py), so that a config
the prober would refuse never reaches a pod:
  - two endpoints with the same hostname (compared as the prober does:
    trimmed, lower case, no trailing dot);
  - a timeout above the interval, judged where either is set, with the
    endpoint's keys over the defaults' over the prober's own (10s, 60s);
  - expiry_days not strictly decreasing;
  - two resolvers of one list with the same name;
  - an HTTP header given twice in different case;
  - a relative ca_file that no configFiles entry (or extra mount under
    /etc/prober) provides, or a configFiles entry it names with no PEM
    certificate in it.
What neither can see (a regular expression in Python's syntax, a ca_file
from another volume) the validate initContainer refuses before the prober
starts.  Included by configmap.yaml, so it runs only when the chart renders
the config.
*/}}
{{- define "prober.validateProbes" -}}
{{- $defaults := .Values.probes.defaults | default dict }}
{{- $model := dict "timeout" 10 "interval" 60 }}
{{- include "prober.checkLayer" (dict "where" "probes.defaults" "layer" $defaults "base" $model "root" .) }}
{{- $base := merge (pick $defaults "timeout" "interval") $model }}
{{- $seen := dict }}
{{- range $index, $ep := .Values.probes.endpoints | default list }}
{{- $host := $ep.hostname | toString | trim | trimSuffix "." | lower }}
{{- $where := printf "probes.endpoints[%d] (%s)" $index $host }}
{{- if hasKey $seen $host }}
{{- fail (printf "%s: hostname is a duplicate of probes.endpoints[%v]: each hostname is probed once, by one endpoint" $where (get $seen $host)) }}
{{- end }}
{{- $_ := set $seen $host $index }}
{{- include "prober.checkLayer" (dict "where" $where "layer" $ep "base" $base "root" $) }}
{{- end }}
{{- end }}

{{/* One defaults or endpoint mapping: "where" names it, "base" holds the timeout and interval it inherits. */}}
{{- define "prober.checkLayer" -}}
{{- $layer := .layer }}
{{- $where := .where }}
{{- if or (hasKey $layer "timeout") (hasKey $layer "interval") }}
{{- $timeout := ternary $layer.timeout .base.timeout (hasKey $layer "timeout") }}
{{- $interval := ternary $layer.interval .base.interval (hasKey $layer "interval") }}
{{- if gt (float64 (include "prober.seconds" $timeout)) (float64 (include "prober.seconds" $interval)) }}
{{- fail (printf "%s: timeout %v must not exceed interval %v: probes would overlap" $where $timeout $interval) }}
{{- end }}
{{- end }}
{{- with $layer.expiry_days }}
{{- $last := -1 }}
{{- range $i, $days := . }}
{{- if and (gt $i 0) (ge (int64 $days) (int64 $last)) }}
{{- fail (printf "%s: expiry_days must be strictly decreasing, like [30, 14, 7, 3, 0] (got %v)" $where (toJson $layer.expiry_days)) }}
{{- end }}
{{- $last = $days }}
{{- end }}
{{- end }}
{{- $names := dict }}
{{- range $layer.resolvers | default list }}
{{- $name := toString . | trim }}
{{- if kindIs "map" . }}{{ $name = toString (.name | default .address) | trim }}{{ end }}
{{- if hasKey $names $name }}
{{- fail (printf "%s: two resolvers are named %q; give one a distinct name" $where $name) }}
{{- end }}
{{- $_ := set $names $name true }}
{{- end }}
{{- $headers := dict }}
{{- range $header, $_ := (dig "http" "headers" dict ($layer | default dict)) | default dict }}
{{- if hasKey $headers (lower $header) }}
{{- fail (printf "%s: http.headers: header %q is given twice (also as %q)" $where $header (get $headers (lower $header))) }}
{{- end }}
{{- $_ := set $headers (lower $header) $header }}
{{- end }}
{{- with $layer.ca_file }}
{{- include "prober.checkCaFile" (dict "where" $where "path" (toString . | trim) "root" $.root) }}
{{- end }}
{{- end }}

{{- define "prober.checkCaFile" -}}
{{- $values := .root.Values }}
{{- if not (or (hasPrefix "/" .path) (hasPrefix "~" .path)) }}
{{- $file := clean .path }}
{{- $mounted := false }}
{{- range $values.extraVolumeMounts | default list }}
{{- if hasPrefix "/etc/prober/" (printf "%s/" (.mountPath | default "" | trimSuffix "/")) }}{{ $mounted = true }}{{ end }}
{{- end }}
{{- if hasKey ($values.configFiles | default dict) $file }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (get $values.configFiles $file | toString)) }}
{{- fail (printf "%s: ca_file %q: configFiles.%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)" .where .path $file) }}
{{- end }}
{{- else if not $mounted }}
{{- fail (printf "%s: ca_file %q is not a file the pod will have: add it to configFiles (relative paths start at /etc/prober), or mount it with extraVolumes and give its absolute path" .where .path) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Seconds from a duration as probes.yaml writes it: 10, 1.5, "10s", "500ms", "1m30s". */}}
{{- define "prober.seconds" -}}
{{- $text := toString . | trim }}
{{- if regexMatch "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)$" $text }}
{{- $text }}
{{- else }}
{{- $unit := dict "d" 86400.0 "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 }}
{{- $total := 0.0 }}
{{- range regexFindAll "([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ms|s|m|h|d)" $text -1 }}
{{- $u := regexFind "(ms|s|m|h|d)$" . }}
{{- $total = addf $total (mulf (float64 (trimSuffix $u .)) (get $unit $u)) }}
{{- end }}
{{- $total }}
{{- end }}
{{- end }}

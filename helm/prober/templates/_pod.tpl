{{/* The pod template shared by the Deployment (one shard) and the StatefulSet (several). */}}
{{- define "prober.podTemplate" -}}
metadata:
  labels:
    {{- include "prober.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- if not .Values.existingConfigMap }}
    # A change of the probe config rolls the pods.
    checksum/config: {{ include "prober.configChecksum" . }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "prober.serviceAccountName" . }}
  # The prober never talks to the Kubernetes API.
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- if .Values.validateConfig }}
  # `prober validate` on the mounted config before the prober starts: what the
  # chart could not check at render time (an existingConfigMap, a ca_file from
  # another volume, a regular expression) stops here, and its one-line reason
  # shows in `kubectl describe pod` as the init container's termination message.
  initContainers:
    - name: validate
      image: {{ include "prober.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - validate
        - /etc/prober/{{ include "prober.configKey" . }}
      terminationMessagePolicy: FallbackToLogsOnError
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "prober.configMounts" . | nindent 8 }}
  {{- end }}
  containers:
    - name: prober
      image: {{ include "prober.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - serve
        - --config
        - /etc/prober/{{ include "prober.configKey" . }}
        - --listen
        - {{ printf "%s:%d" .Values.listenHost (int .Values.service.port) | quote }}
        {{- if gt (int .Values.shards) 1 }}
        # Each StatefulSet pod takes the shard of its ordinal (prober-2 -> 2).
        - --shard
        - {{ printf "ordinal/%d" (int .Values.shards) | quote }}
        {{- end }}
        {{- if ne (toString .Values.workers) "1" }}
        - --workers
        - {{ .Values.workers | quote }}
        {{- end }}
        {{- with .Values.location }}
        - --location
        - {{ . | quote }}
        {{- end }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- with .Values.extraEnv }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http-metrics
          containerPort: {{ .Values.service.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /-/healthy
          port: http-metrics
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /-/ready
          port: http-metrics
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "prober.configMounts" . | nindent 8 }}
  volumes:
    - name: config
      configMap:
        name: {{ include "prober.configMapName" . }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The mounts both containers need: the config directory, /tmp, and the extra ones (a CA bundle). */}}
{{- define "prober.configMounts" -}}
# A directory mount (not subPath) so ConfigMap updates reach the pod.
- name: config
  mountPath: /etc/prober
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

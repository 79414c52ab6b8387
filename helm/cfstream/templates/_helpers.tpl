{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "cfstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "cfstream.fullname" -}}
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

{{- define "cfstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cfstream.labels" -}}
helm.sh/chart: {{ include "cfstream.chart" . }}
{{ include "cfstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cfstream
{{- end }}

{{- define "cfstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cfstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: pass (dict "root" $ "component" "processor"). */}}
{{- define "cfstream.componentLabels" -}}
{{ include "cfstream.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "cfstream.componentSelectorLabels" -}}
{{ include "cfstream.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "cfstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cfstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cfstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* Seconds Kubernetes waits after SIGTERM: the app's own shutdown budget plus a margin. */}}
{{- define "cfstream.terminationGracePeriodSeconds" -}}
{{- add (ceil (float64 .Values.shutdownTimeout) | int) (int .Values.terminationGracePeriodMargin) }}
{{- end }}

{{/* ---- Kafka credentials ---- */}}

{{- define "cfstream.sasl" -}}
{{- if has (upper .Values.kafka.securityProtocol) (list "SASL_PLAINTEXT" "SASL_SSL") }}true{{ end }}
{{- end }}

{{- define "cfstream.secretName" -}}
{{- default (printf "%s-kafka" (include "cfstream.fullname" .)) .Values.kafka.existingSecret.name }}
{{- end }}

{{/* Key of the SASL password in the secret, or nothing when no password is to be read. */}}
{{- define "cfstream.saslPasswordKey" -}}
{{- if include "cfstream.sasl" . }}
{{- if .Values.kafka.existingSecret.name }}
{{- .Values.kafka.existingSecret.saslPasswordKey }}
{{- else if .Values.kafka.sasl.password }}
{{- "sasl-password" }}
{{- end }}
{{- end }}
{{- end }}

{{/* TLS files as "secretKey=fileName" lines, for the ones that are configured. */}}
{{- define "cfstream.tlsItems" -}}
{{- $e := .Values.kafka.existingSecret }}
{{- $t := .Values.kafka.tls }}
{{- if $e.name }}
{{- if $e.caKey }}{{ printf "%s=ca.crt\n" $e.caKey }}{{ end }}
{{- if $e.certKey }}{{ printf "%s=tls.crt\n" $e.certKey }}{{ end }}
{{- if $e.keyKey }}{{ printf "%s=tls.key\n" $e.keyKey }}{{ end }}
{{- else }}
{{- if $t.ca }}{{ "ca.crt=ca.crt\n" }}{{ end }}
{{- if $t.cert }}{{ "tls.crt=tls.crt\n" }}{{ end }}
{{- if $t.key }}{{ "tls.key=tls.key\n" }}{{ end }}
{{- end }}
{{- end }}

{{/* Whether the chart renders its own Secret. */}}
{{- define "cfstream.ownSecret" -}}
{{- if and (not .Values.kafka.existingSecret.name) (or (include "cfstream.saslPasswordKey" .) (include "cfstream.tlsItems" .)) }}true{{ end }}
{{- end }}

{{/* Refuse settings that could only fail at run time. */}}
{{- define "cfstream.validate" -}}
{{- $protocol := upper .Values.kafka.securityProtocol }}
{{- if not (has $protocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) }}
{{- fail (printf "kafka.securityProtocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not %q" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and (include "cfstream.sasl" .) (not (include "cfstream.saslPasswordKey" .)) }}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.password or kafka.existingSecret.name (with saslPasswordKey)" $protocol) }}
{{- end }}
{{- if and (include "cfstream.sasl" .) (not .Values.kafka.sasl.username) }}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.username" $protocol) }}
{{- end }}
{{- if and .Values.worker.enabled (not .Values.worker.modules) }}
{{- fail "worker.modules must name at least one Python module with tasks (or set worker.enabled=false)" }}
{{- end }}
{{- if not (gt (float64 .Values.shutdownTimeout) 0.0) }}
{{- fail "shutdownTimeout must be a positive number of seconds" }}
{{- end }}
{{- end }}

{{/* ---- Pod parts shared by both components ---- */}}

{{/* Environment both components read besides the ConfigMap: the secret password, the shutdown
     budget next to the grace period it must fit in, and extraEnv. */}}
{{- define "cfstream.commonEnv" -}}
- name: CFSTREAM_SHUTDOWN_TIMEOUT
  value: {{ .Values.shutdownTimeout | toString | quote }}
{{- with (include "cfstream.saslPasswordKey" .) }}
- name: CFSTREAM_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "cfstream.secretName" $ }}
      key: {{ . }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "cfstream.tlsVolume" -}}
{{- with (include "cfstream.tlsItems" .) }}
- name: kafka-tls
  secret:
    secretName: {{ include "cfstream.secretName" $ }}
    defaultMode: 0440
    items:
    {{- range (splitList "\n" (trim .)) }}
    {{- $kv := splitList "=" . }}
      - key: {{ index $kv 0 }}
        path: {{ index $kv 1 }}
    {{- end }}
{{- end }}
{{- end }}

{{- define "cfstream.tlsVolumeMount" -}}
{{- if include "cfstream.tlsItems" . }}
- name: kafka-tls
  mountPath: {{ .Values.kafka.tls.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Annotations that roll the pods when their configuration changes. */}}
{{- define "cfstream.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if include "cfstream.ownSecret" . }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/* A soft or hard anti-affinity that spreads one component's pods over nodes. */}}
{{- define "cfstream.antiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "cfstream.componentSelectorLabels" . | fromYaml)) }}
{{- if eq .mode "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{ toYaml $term | nindent 6 | trim }}
{{- else if eq .mode "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end }}

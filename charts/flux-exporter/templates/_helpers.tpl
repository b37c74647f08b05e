{{- define "flux-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flux-exporter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "flux-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flux-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* No app.kubernetes.io/part-of: flux, which selects Flux's own controllers. */}}
{{- define "flux-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flux-exporter.selectorLabels" . }}
app.kubernetes.io/component: exporter
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "flux-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "flux-exporter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "flux-exporter.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "flux-exporter.eventsSecretName" -}}
{{- default (printf "%s-events" (include "flux-exporter.fullname" .)) .Values.events.hmac.existingSecret -}}
{{- end -}}

{{- define "flux-exporter.webConfigSecretName" -}}
{{- default (printf "%s-web-config" (include "flux-exporter.fullname" .)) .Values.webConfig.existingSecret -}}
{{- end -}}

{{- define "flux-exporter.tls" -}}
{{- if and .Values.webConfig.enabled (not .Values.webConfig.existingSecret) .Values.webConfig.tls.enabled -}}true{{- end -}}
{{- end -}}

{{- define "flux-exporter.basicAuth" -}}
{{- if and .Values.webConfig.enabled (not .Values.webConfig.existingSecret) .Values.webConfig.basicAuthUsers -}}true{{- end -}}
{{- end -}}

{{/* A kingpin boolean flag, set either way so the rendered args show it. */}}
{{- define "flux-exporter.boolFlag" -}}
--{{ if not (index . 1) }}no-{{ end }}{{ index . 0 }}
{{- end -}}

{{/* The container's args as a YAML list; every flag of flux_exporter has a
value here (sandbox/e2e/install_test.go checks against --help). */}}
{{- define "flux-exporter.args" -}}
{{- $v := .Values -}}
{{- $a := list (printf "--web.listen-address=:%d" (int64 $v.web.port)) -}}
{{- $a = append $a (printf "--web.telemetry-path=%s" $v.web.telemetryPath) -}}
{{- $a = append $a (include "flux-exporter.boolFlag" (list "web.disable-exporter-metrics" $v.web.disableExporterMetrics)) -}}
{{- $a = append $a (printf "--web.max-requests=%d" (int64 $v.web.maxRequests)) -}}
{{- $a = append $a (printf "--web.timeout-offset=%s" $v.web.timeoutOffset) -}}
{{- if $v.webConfig.enabled -}}
{{- $a = append $a "--web.config.file=/etc/flux-exporter/web/web-config.yml" -}}
{{- end -}}
{{- $a = append $a (printf "--kube.startup-timeout=%s" $v.kube.startupTimeout) -}}
{{- $a = append $a (printf "--kube.qps=%v" $v.kube.qps) -}}
{{- $a = append $a (printf "--kube.burst=%d" (int64 $v.kube.burst)) -}}
{{- with $v.kube.config -}}
{{- $a = append $a (printf "--kube.config=%s" .) -}}
{{- end -}}
{{- with $v.kube.context -}}
{{- $a = append $a (printf "--kube.context=%s" .) -}}
{{- end -}}
{{- $a = append $a (printf "--namespaces=%s" (join "," $v.namespaces)) -}}
{{- $a = append $a (printf "--namespaces-exclude=%s" (join "," $v.namespacesExclude)) -}}
{{- $a = append $a (printf "--flux.namespace=%s" $v.flux.namespace) -}}
{{- $a = append $a (printf "--flux.controllers-selector=%s" $v.flux.controllersSelector) -}}
{{- $a = append $a (printf "--flux.api-groups=%s" (join "," $v.flux.apiGroups)) -}}
{{- $a = append $a (printf "--controllers.timeout=%s" $v.controllers.timeout) -}}
{{- if $v.autosharding.enabled -}}
{{- /* Kubernetes expands $(VAR) from the container's env. */ -}}
{{- $a = append $a "--pod=$(POD_NAME)" -}}
{{- $a = append $a "--pod-namespace=$(POD_NAMESPACE)" -}}
{{- end -}}
{{- if and $v.metricAllowlist $v.metricDenylist -}}
{{- fail "metricAllowlist and metricDenylist exclude each other (as --metric-allowlist and --metric-denylist do); set one of them" -}}
{{- end -}}
{{- with $v.metricAllowlist -}}
{{- $a = append $a (printf "--metric-allowlist=%s" (join "," .)) -}}
{{- end -}}
{{- with $v.metricDenylist -}}
{{- $a = append $a (printf "--metric-denylist=%s" (join "," .)) -}}
{{- end -}}
{{- with $v.metricOptInList -}}
{{- $a = append $a (printf "--metric-opt-in-list=%s" (join "," .)) -}}
{{- end -}}
{{- with $v.metricLabelsAllowlist -}}
{{- $a = append $a (printf "--metric-labels-allowlist=%s" (join "," .)) -}}
{{- end -}}
{{- with $v.metricAnnotationsAllowlist -}}
{{- $a = append $a (printf "--metric-annotations-allowlist=%s" (join "," .)) -}}
{{- end -}}
{{- $a = append $a (include "flux-exporter.boolFlag" (list "compat.gotk-resource-info" $v.compat.gotkResourceInfo)) -}}
{{- $a = append $a (include "flux-exporter.boolFlag" (list "notifications.dispatch-failures" $v.notifications.dispatchFailures)) -}}
{{- range $name, $on := $v.collectors -}}
{{- $a = append $a (include "flux-exporter.boolFlag" (list (printf "collector.%s" $name) $on)) -}}
{{- end -}}
{{- $a = append $a (printf "--log.level=%s" $v.log.level) -}}
{{- $a = append $a (printf "--log.format=%s" $v.log.format) -}}
{{- $a = append $a (include "flux-exporter.boolFlag" (list "events.enabled" $v.events.enabled)) -}}
{{- if $v.events.enabled -}}
{{- if $v.events.port -}}
{{- $a = append $a (printf "--events.listen-address=:%d" (int64 $v.events.port)) -}}
{{- if $v.events.tls -}}
{{- $a = append $a "--events.web.config.file=/etc/flux-exporter/web/events-web-config.yml" -}}
{{- end -}}
{{- end -}}
{{- $a = append $a (include "flux-exporter.boolFlag" (list "events.allow-unsigned" $v.events.allowUnsigned)) -}}
{{- if not $v.events.allowUnsigned -}}
{{- $a = append $a "--events.hmac-key-file=/etc/flux-exporter/events/token" -}}
{{- end -}}
{{- $a = append $a (printf "--events.max-body-bytes=%s" $v.events.maxBodyBytes) -}}
{{- $a = append $a (printf "--events.series-ttl=%s" $v.events.seriesTTL) -}}
{{- $a = append $a (printf "--events.max-series=%d" (int64 $v.events.maxSeries)) -}}
{{- end -}}
{{- toYaml (concat $a $v.extraArgs) -}}
{{- end -}}

{{/*
Names, labels, the hardened securityContext and the derived settings every template shares.
*/}}

{{/* The chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "dcr-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's resources: `<release>-<chart>` unless the release name has the chart's. */}}
{{- define "dcr-gateway.fullname" -}}
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

{{/* `chart-version` for the helm.sh/chart label. */}}
{{- define "dcr-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of the release (Deployment selectors are immutable). */}}
{{- define "dcr-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dcr-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "dcr-gateway.labels" -}}
helm.sh/chart: {{ include "dcr-gateway.chart" . }}
{{ include "dcr-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dcr-gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "dcr-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dcr-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: registry/repository, then @digest or :tag (appVersion by default). */}}
{{- define "dcr-gateway.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The hardened pod securityContext (Pod Security Standards "restricted"), values merged over it.
10001 is the numeric user of the image (Dockerfile USER); numeric so runAsNonRoot can be verified.
*/}}
{{- define "dcr-gateway.podSecurityContext" -}}
{{- $hardened := dict
  "runAsNonRoot" true
  "runAsUser" 10001
  "runAsGroup" 10001
  "fsGroup" 10001
  "fsGroupChangePolicy" "OnRootMismatch"
  "seccompProfile" (dict "type" "RuntimeDefault")
}}
{{- toYaml (mustMergeOverwrite $hardened (deepCopy .Values.podSecurityContext)) }}
{{- end }}

{{/* The hardened container securityContext, values merged over it. */}}
{{- define "dcr-gateway.containerSecurityContext" -}}
{{- $hardened := dict
  "runAsNonRoot" true
  "runAsUser" 10001
  "runAsGroup" 10001
  "allowPrivilegeEscalation" false
  "privileged" false
  "readOnlyRootFilesystem" true
  "capabilities" (dict "drop" (list "ALL"))
  "seccompProfile" (dict "type" "RuntimeDefault")
}}
{{- toYaml (mustMergeOverwrite $hardened (deepCopy .Values.containerSecurityContext)) }}
{{- end }}

{{/* Where the chart mounts things in the pod. */}}
{{- define "dcr-gateway.configDir" -}}/etc/dcr-gateway/config{{- end }}
{{- define "dcr-gateway.policyDir" -}}/etc/dcr-gateway/policies{{- end }}
{{- define "dcr-gateway.sandboxStateDir" -}}/var/lib/dcr-gateway/sandbox{{- end }}
{{- define "dcr-gateway.sandboxUrl" -}}http://127.0.0.1:8081{{- end }}

{{/*
The gateway's config.yaml: `.Values.config` with the keys the chart owns set by the chart: the
policy directory, `server.workers` (from `.Values.workers`), `state.backend` (from `.Values.redis.enabled`;
the URL reaches the pod as DCRGW_STATE__REDIS__URL from the Secret), `sandbox.enabled` (from
`.Values.sandbox.enabled`), and with the sandbox its listener, its state directory (an emptyDir), the
upstream and the `bank` issuer (the sandbox's).
*/}}
{{- define "dcr-gateway.config" -}}
{{- include "dcr-gateway.checkScaling" . }}
{{- $cfg := deepCopy .Values.config }}
{{- $policies := get $cfg "policies" | default dict }}
{{- $_ := set $policies "dir" (include "dcr-gateway.policyDir" .) }}
{{- $_ := set $cfg "policies" $policies }}
{{- $server := get $cfg "server" | default dict }}
{{- $_ := set $server "workers" (int .Values.workers) }}
{{- $_ := set $cfg "server" $server }}
{{- $state := get $cfg "state" | default dict }}
{{- $_ := set $state "backend" (ternary "redis" "memory" (.Values.redis.enabled | default false)) }}
{{- $_ := set $cfg "state" $state }}
{{- $sandbox := get $cfg "sandbox" | default dict }}
{{- if .Values.sandbox.enabled }}
{{- $sandboxUrl := include "dcr-gateway.sandboxUrl" . }}
{{- $_ := set $sandbox "enabled" true }}
{{- $_ := set $sandbox "listen" (dict "host" "127.0.0.1" "port" 8081) }}
{{- $_ := set $sandbox "state_dir" (include "dcr-gateway.sandboxStateDir" .) }}
{{- $_ := set $cfg "sandbox" $sandbox }}
{{- $upstream := get $cfg "upstream" | default dict }}
{{- $_ := set $upstream "url" $sandboxUrl }}
{{- $_ := set $cfg "upstream" $upstream }}
{{- $trust := get $cfg "trust" | default dict }}
{{- $issuers := get $trust "token_issuers" | default dict }}
{{- $issuer := get $sandbox "issuer" | default (dig "server" "public_url" "" $cfg) }}
{{- $_ := set $issuers "bank" (dict "issuer" (required "config.server.public_url is required with the sandbox (it is the sandbox's token issuer)" $issuer) "jwks_uri" (printf "%s/jwks" $sandboxUrl) "token_types" (list "at+jwt")) }}
{{- $_ := set $trust "token_issuers" $issuers }}
{{- /* The sandbox's test directory signs the SSAs and hosts TPP key sets on loopback (http). */}}
{{- $_ := set $trust "directories" (dict "openbanking" (dict "issuer" "OpenBanking Ltd" "jwks_uri" (printf "%s/directory/jwks" $sandboxUrl))) }}
{{- $_ := set $trust "software_jwks" (dict "allow_http" true "allow_loopback" true) }}
{{- /* Its test CA's CRL and OCSP responder (certificates from `sandbox mint-cert`) are on loopback too. */}}
{{- $revocation := get $trust "revocation" | default dict }}
{{- $_ := set $revocation "allow_loopback" true }}
{{- $_ := set $trust "revocation" $revocation }}
{{- $_ := set $trust "registration_audiences" (list $issuer) }}
{{- $cert := get $trust "client_certificate" | default dict }}
{{- $_ := set $cert "trusted_proxies" (list "127.0.0.1/32" "::1/128") }}
{{- $_ := set $trust "client_certificate" $cert }}
{{- $_ := set $cfg "trust" $trust }}
{{- /* No mTLS ingress in a demo namespace: certificate checks report, they do not refuse (bank profile;
the ob_standard profile authenticates POST by the certificate, so the gateway always enforces it there). */}}
{{- if ne (get $policies "profile" | default "bank") "ob_standard" }}
{{- $modes := get $policies "check_modes" | default dict }}
{{- $_ := set $modes "client_certificate" "audit" }}
{{- $_ := set $policies "check_modes" $modes }}
{{- end }}
{{- else }}
{{- $_ := set $sandbox "enabled" false }}
{{- $_ := set $cfg "sandbox" $sandbox }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Refuse what cannot serve safely: the gateway would refuse it at start (a crash-looping pod), or a secret
would end up in values. Called by "dcr-gateway.config", so every template that renders the config checks.
*/}}
{{- define "dcr-gateway.checkScaling" -}}
{{- $workers := int .Values.workers }}
{{- $cfg := .Values.config | default dict }}
{{- if hasKey ($cfg.server | default dict) "workers" }}
{{- fail "config.server.workers: set by the chart; use the top-level `workers` value" }}
{{- end }}
{{- $state := $cfg.state | default dict }}
{{- if hasKey $state "backend" }}
{{- fail "config.state.backend: set by the chart; use redis.enabled (with redis.existingSecret) for the Redis store" }}
{{- end }}
{{- $redisCfg := $state.redis | default dict }}
{{- if or (hasKey $redisCfg "url") (hasKey $redisCfg "url_env") }}
{{- fail "config.state.redis.url / url_env: the Redis URL may hold a password and never goes in values; put it in a Secret and set redis.existingSecret and redis.urlKey" }}
{{- end }}
{{- range concat .Values.secretEnv .Values.extraEnv }}
{{- if has (upper (toString .name)) (list "DCRGW_SERVER__WORKERS" "DCRGW_STATE__BACKEND" "DCRGW_STATE__REDIS__URL" "DCRGW_STATE__REDIS__URL_ENV") }}
{{- fail (printf "%s: set by the chart; use `workers`, redis.enabled and redis.existingSecret / redis.urlKey" .name) }}
{{- end }}
{{- end }}
{{- if gt $workers 1 }}
{{- if .Values.sandbox.enabled }}
{{- fail (printf "workers: %d worker processes cannot run with sandbox.enabled: the in-pod sandbox runs in one process only; set workers: 1 (demo installs need no more)" $workers) }}
{{- end }}
{{- if not .Values.redis.enabled }}
{{- fail (printf "workers: %d worker processes per pod need redis.enabled (with redis.existingSecret): with the in-memory store each worker would keep its own replay cache, revocations and rate limits, so a replayed registration or a revoked token would be accepted by another worker; set redis.enabled or workers: 1" $workers) }}
{{- end }}
{{- end }}
{{- if and .Values.redis.enabled (not .Values.redis.existingSecret) }}
{{- fail "redis.enabled needs redis.existingSecret: the Secret (in the release namespace, managed outside the chart) whose key redis.urlKey holds the Redis URL; the URL may hold a password, so it never goes in values" }}
{{- end }}
{{- end }}

{{/* Replicas: one with the sandbox (its store is per pod). */}}
{{- define "dcr-gateway.replicas" -}}
{{- if .Values.sandbox.enabled }}1{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Seconds the preStop hook sleeps: the value, else the gateway's readiness delay (rounded up). */}}
{{- define "dcr-gateway.preStopSleepSeconds" -}}
{{- $sleep := .Values.preStopSleepSeconds }}
{{- if kindIs "invalid" $sleep }}
{{- $sleep = dig "shutdown" "readiness_delay_seconds" 5 .Values.config }}
{{- end }}
{{- ceil $sleep | int }}
{{- end }}

{{/*
Seconds from the pod's deletion to the end of a complete drain: preStop sleep, then (after SIGTERM)
the gateway's readiness delay and drain timeout. The kubelet kills the container after
terminationGracePeriodSeconds counted from deletion, preStop included, so the grace period must exceed this.
*/}}
{{- define "dcr-gateway.shutdownSeconds" -}}
{{- $delay := dig "shutdown" "readiness_delay_seconds" 5 .Values.config }}
{{- $drain := dig "shutdown" "drain_timeout_seconds" 20 .Values.config }}
{{- ceil (addf (include "dcr-gateway.preStopSleepSeconds" . | float64) $delay $drain) | int }}
{{- end }}

{{- define "dcr-gateway.terminationGracePeriodSeconds" -}}
{{- $needed := include "dcr-gateway.shutdownSeconds" . | int }}
{{- $grace := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $grace }}
{{- add $needed .Values.terminationGraceMarginSeconds }}
{{- else if le (int $grace) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStop sleep + shutdown.readiness_delay_seconds + shutdown.drain_timeout_seconds (%d), or in-flight requests are killed" (int $grace) $needed) }}
{{- else }}
{{- $grace }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap holding the policy directory. */}}
{{- define "dcr-gateway.policiesConfigMap" -}}
{{- .Values.policies.existingConfigMap | default (printf "%s-policies" (include "dcr-gateway.fullname" .)) }}
{{- end }}

{{/* NetworkPolicy egress peers from `cidrs` and `peers` of a target. */}}
{{- define "dcr-gateway.egressPeers" -}}
{{- range .cidrs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- with .peers }}
{{ toYaml . }}
{{- end }}
{{- end }}

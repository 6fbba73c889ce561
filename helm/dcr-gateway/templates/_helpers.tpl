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
{{- define "dcr-gateway.signedFactsDir" -}}/etc/dcr-gateway/signed-facts{{- end }}
{{- define "dcr-gateway.signedFactsKeyFile" -}}{{ include "dcr-gateway.signedFactsDir" . }}/key.pem{{- end }}

{{/*
The gateway's config.yaml: `.Values.config` with the keys the chart owns set by the chart: the
policy directory, `server.workers` (from `.Values.workers`), `state.backend` (from `.Values.redis.enabled`;
the URL reaches the pod as DCRGW_STATE__REDIS__URL from the Secret), `sandbox.enabled` (from
`.Values.sandbox.enabled`), and with the sandbox its listener, its state directory (an emptyDir), the
upstream and the `bank` issuer (the sandbox's); `upstream.signed_facts.key_file` and `published_key_files`
(the mounted `.Values.signedFacts.existingSecret`), and `upstream.signed_facts.enabled` when the in-pod sandbox
needs them.
*/}}
{{- define "dcr-gateway.config" -}}
{{- include "dcr-gateway.checkScaling" . }}
{{- include "dcr-gateway.checkSignedFacts" . }}
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
{{- $upstream := get $cfg "upstream" | default dict }}
{{- $facts := get $upstream "signed_facts" | default dict }}
{{- if include "dcr-gateway.sandboxNeedsSignedFacts" . }}
{{- $_ := set $facts "enabled" true }}
{{- end }}
{{- if .Values.signedFacts.existingSecret }}
{{- $_ := set $facts "key_file" (include "dcr-gateway.signedFactsKeyFile" .) }}
{{- with .Values.signedFacts.publishedKeys }}
{{- $dir := include "dcr-gateway.signedFactsDir" $ }}
{{- $files := list }}
{{- range . }}{{ $files = append $files (printf "%s/published/%s" $dir .) }}{{ end }}
{{- $_ := set $facts "published_key_files" $files }}
{{- end }}
{{- end }}
{{- if $facts }}
{{- $_ := set $upstream "signed_facts" $facts }}
{{- $_ := set $cfg "upstream" $upstream }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
"true" when the in-pod sandbox authenticates registrations by the transport certificate alone
(`config.sandbox.registration_auth: certificate`, or not set and the ob_standard profile): it believes the
gateway's certificate check only through the signed facts, so the chart turns them on (as it sets the
sandbox's upstream.url). The sandbox runs one process in one pod (workers > 1 is refused), so the key generated
at start is enough.
*/}}
{{- define "dcr-gateway.sandboxNeedsSignedFacts" -}}
{{- if .Values.sandbox.enabled }}
{{- $cfg := .Values.config | default dict }}
{{- $auth := dig "sandbox" "registration_auth" "" $cfg | default (ternary "certificate" "bearer" (eq (dig "policies" "profile" "bank" $cfg) "ob_standard")) }}
{{- if eq $auth "certificate" }}true{{ end }}
{{- end }}
{{- end }}

{{/* "true" when the rendered config signs facts (values, or the sandbox's need). */}}
{{- define "dcr-gateway.signedFactsEnabled" -}}
{{- if or (dig "upstream" "signed_facts" "enabled" false (.Values.config | default dict)) (include "dcr-gateway.sandboxNeedsSignedFacts" .) }}true{{ end }}
{{- end }}

{{/*
Refuse signed facts the backend could not verify: without signedFacts.existingSecret every process makes its
own key at start, and a backend fetching /facts/jwks.json through a Service gets one of them at random.
Called by "dcr-gateway.config" (after checkScaling, which already refuses workers > 1 with the sandbox).
*/}}
{{- define "dcr-gateway.checkSignedFacts" -}}
{{- $facts := dig "upstream" "signed_facts" dict (.Values.config | default dict) | default dict }}
{{- if hasKey $facts "key_file" }}
{{- fail "config.upstream.signed_facts.key_file: set by the chart; put the PEM private key in a Secret you create and set signedFacts.existingSecret (and signedFacts.secretKey): the chart mounts it read-only and points key_file at it" }}
{{- end }}
{{- if hasKey $facts "published_key_files" }}
{{- fail "config.upstream.signed_facts.published_key_files: set by the chart; put the PEM keys in the signedFacts.existingSecret Secret and list their keys in signedFacts.publishedKeys" }}
{{- end }}
{{- if and .Values.signedFacts.publishedKeys (not .Values.signedFacts.existingSecret) }}
{{- fail "signedFacts.publishedKeys: the keys are read from the signedFacts.existingSecret Secret; set it" }}
{{- end }}
{{- if and (include "dcr-gateway.signedFactsEnabled" .) (not .Values.signedFacts.existingSecret) }}
{{- $cause := "" }}
{{- if gt (int .Values.workers) 1 }}
{{- $cause = printf "workers: %d" (int .Values.workers) }}
{{- else if .Values.sandbox.enabled }}
{{- /* one pod, whatever replicaCount and autoscaling say */}}
{{- else if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.maxReplicas) 1 }}{{ $cause = printf "autoscaling.maxReplicas: %d" (int .Values.autoscaling.maxReplicas) }}{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}
{{- $cause = printf "replicaCount: %d" (int .Values.replicaCount) }}
{{- end }}
{{- if $cause }}
{{- fail (printf "config.upstream.signed_facts.enabled with %s needs signedFacts.existingSecret: without it each gateway process signs with a key of its own, generated at start, and a backend fetching /facts/jwks.json through a Service gets one of them at random and cannot verify the others' facts; create a Secret holding the PEM private key (docs/deployment.md, \"Signed facts\") and set signedFacts.existingSecret, or run replicaCount: 1 with workers: 1 and no autoscaling" $cause) }}
{{- end }}
{{- end }}
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
{{- if has (upper (toString .name)) (list "DCRGW_SERVER__WORKERS" "DCRGW_STATE__BACKEND" "DCRGW_STATE__REDIS__URL" "DCRGW_STATE__REDIS__URL_ENV" "DCRGW_UPSTREAM__SIGNED_FACTS__KEY_FILE" "DCRGW_UPSTREAM__SIGNED_FACTS__PUBLISHED_KEY_FILES") }}
{{- fail (printf "%s: set by the chart; use `workers`, redis.enabled and redis.existingSecret / redis.urlKey, signedFacts.existingSecret / signedFacts.secretKey" .name) }}
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
{{- $accepted := .Values.acceptPerPodSecurityState | default "" | toString }}
{{- $acceptance := include "dcr-gateway.perPodStateAcceptance" . }}
{{- if and $accepted (ne $accepted $acceptance) }}
{{- fail (printf "acceptPerPodSecurityState: %q is not the acceptance; it is either empty or exactly %q" $accepted $acceptance) }}
{{- end }}
{{- if and (include "dcr-gateway.perPodState" .) (not $accepted) }}
{{- fail (printf "%s without redis.enabled: the replay cache, token and client revocations and rate limits would be PER POD, so a registration replayed to another pod is accepted and a token revoked on one pod keeps working on the others. Set redis.enabled with redis.existingSecret (docs/deployment.md, \"Scaling out\"), or run one pod (replicaCount: 1, no autoscaling), or accept the risk by name: acceptPerPodSecurityState: %q" (include "dcr-gateway.podsDescription" .) $acceptance) }}
{{- end }}
{{- end }}

{{/* The exact value of acceptPerPodSecurityState that accepts per-pod security state. */}}
{{- define "dcr-gateway.perPodStateAcceptance" -}}I understand replays and revocations are per pod{{- end }}

{{/* The most pods the release can run: one with the sandbox, autoscaling.maxReplicas with the HPA, else replicaCount. */}}
{{- define "dcr-gateway.maxPods" -}}
{{- if .Values.sandbox.enabled }}1
{{- else if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.maxReplicas }}
{{- else }}{{ int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* `replicaCount: 3` or `autoscaling.maxReplicas: 6`: where the pod count comes from, for messages. */}}
{{- define "dcr-gateway.podsDescription" -}}
{{- if .Values.autoscaling.enabled }}autoscaling.maxReplicas: {{ int .Values.autoscaling.maxReplicas }}
{{- else }}replicaCount: {{ int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* "true" when several pods would each keep their own security state (more than one pod, no Redis). */}}
{{- define "dcr-gateway.perPodState" -}}
{{- if and (gt (include "dcr-gateway.maxPods" . | int) 1) (not .Values.redis.enabled) }}true{{ end }}
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

{{/*
A value still to be replaced: a host on a name reserved for examples (RFC 2606: `.example`, `.invalid`,
example.com/net/org), an address of a documentation range (RFC 5737, RFC 3849), or a value marked CHANGEME.
*/}}
{{- define "dcr-gateway.placeholderPattern" -}}
(?i)((\.invalid|\.example|(^|[./@])example\.(com|net|org))([:/\]]|$))|^(192\.0\.2|198\.51\.100|203\.0\.113)\.|^2001:db8:|CHANGEME
{{- end }}

{{/* `path: value` lines (a trailing newline each) of every placeholder string under `.value`, from `.path`. */}}
{{- define "dcr-gateway.placeholderWalk" -}}
{{- $path := .path }}
{{- if kindIs "map" .value }}
{{- range $key, $child := .value }}
{{- include "dcr-gateway.placeholderWalk" (dict "path" (ternary $key (printf "%s.%s" $path $key) (eq $path "")) "value" $child) }}
{{- end }}
{{- else if kindIs "slice" .value }}
{{- range $i, $child := .value }}
{{- include "dcr-gateway.placeholderWalk" (dict "path" (printf "%s[%d]" $path $i) "value" $child) }}
{{- end }}
{{- else if and (kindIs "string" .value) (regexMatch (include "dcr-gateway.placeholderPattern" .) .value) }}
{{- printf "%s: %s\n" $path .value }}
{{- end }}
{{- end }}

{{/*
Every placeholder the release still carries, as `path: value` lines: in the config as the pod gets it (what the
chart sets, e.g. the sandbox's URLs, is not reported) and in the other values, leaving out the Ingress and the
NetworkPolicy when they are off.
*/}}
{{- define "dcr-gateway.placeholders" -}}
{{- $values := omit .Values "config" }}
{{- if not .Values.ingress.enabled }}{{ $values = omit $values "ingress" }}{{ end }}
{{- if not .Values.networkPolicy.enabled }}{{ $values = omit $values "networkPolicy" }}{{ end }}
{{- include "dcr-gateway.placeholderWalk" (dict "path" "config" "value" (include "dcr-gateway.config" . | fromYaml)) }}
{{- include "dcr-gateway.placeholderWalk" (dict "path" "" "value" $values) }}
{{- end }}

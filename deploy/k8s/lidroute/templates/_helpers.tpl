{{/*
Names, labels, images, settings-to-environment and the pod pieces every component shares.
*/}}

{{- define "lidroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lidroute.fullname" -}}
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

{{- define "lidroute.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "lidroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lidroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lidroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "router" ["pool" "en-es"]) */}}
{{- define "lidroute.componentSelector" -}}
{{ include "lidroute.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .pool }}
lidroute.io/pool: {{ . }}
{{- end }}
{{- end }}

{{/* Pods that talk to Redis carry this label; the Redis NetworkPolicy admits only them. */}}
{{- define "lidroute.redisClientLabel" -}}
lidroute.io/redis-client: "true"
{{- end }}

{{- define "lidroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lidroute.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: (dict "root" $ "image" <component image> ["pool" <pool image>]).
An image has repository, and optionally tag and tagSuffix ("-cuda"); the pool's keys win. */}}
{{- define "lidroute.image" -}}
{{- $img := deepCopy .image }}
{{- /* Not `merge`: it would let the component's "-cuda" win over a pool's explicit "". */}}
{{- range $key, $value := (default dict .pool) }}
{{- $_ := set $img $key $value }}
{{- end }}
{{- $tag := printf "%s%s" (default (default .root.Chart.AppVersion .root.Values.image.tag) $img.tag) (default "" $img.tagSuffix) }}
{{- if .root.Values.image.registry }}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) $img.repository $tag }}
{{- else }}
{{- printf "%s:%s" $img.repository $tag }}
{{- end }}
{{- end }}

{{/* One setting value as the service parses it. Helm reads every number in values as a float, and
would print 16777216 as "1.6777216e+07": whole numbers are printed as integers. */}}
{{- define "lidroute.settingValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- printf "%d" (int64 .) }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Settings (snake_case) as LIDROUTE_* env entries; lists become comma lists, as CommaList reads them. */}}
{{- define "lidroute.settingsEnv" -}}
{{- range $name, $value := . }}
{{- $text := "" }}
{{- if kindIs "slice" $value }}
{{- $parts := list }}
{{- range $value }}
{{- $parts = append $parts (include "lidroute.settingValue" .) }}
{{- end }}
{{- $text = join "," $parts }}
{{- else }}
{{- $text = include "lidroute.settingValue" $value }}
{{- end }}
- name: {{ printf "LIDROUTE_%s" (upper $name) }}
  value: {{ $text | quote }}
{{- end }}
{{- end }}

{{/* LIDROUTE_TORCH_THREADS from a model container's CPU request, rounded up (500m: 1), unless its
settings name torch_threads: with no CPU limit the process sees the node's cores, and as many
threads as the node has cores, on the one or two the pod asked for, spend their time waiting for
each other. Takes (dict "settings" SETTINGS "resources" RESOURCES). */}}
{{- define "lidroute.threadsEnv" -}}
{{- $cpu := "" }}
{{- with .resources }}{{- with .requests }}{{- $cpu = toString (default "" .cpu) }}{{- end }}{{- end }}
{{- if and $cpu (not (hasKey .settings "torch_threads")) }}
{{- $cores := 0.0 }}
{{- if hasSuffix "m" $cpu }}
{{- $cores = divf (float64 (trimSuffix "m" $cpu)) 1000 }}
{{- else }}
{{- $cores = float64 $cpu }}
{{- end }}
- name: LIDROUTE_TORCH_THREADS
  value: {{ max 1 (int64 (ceil $cores)) | quote }}
{{- end }}
{{- end }}

{{/* Environment every lidroute container gets: shared settings and the Redis URL from the Secret. */}}
{{- define "lidroute.commonEnv" -}}
{{ include "lidroute.settingsEnv" .Values.settings }}
- name: LIDROUTE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "lidroute.redisSecretName" . }}
      key: {{ .Values.redis.secretKeys.url }}
{{- end }}

{{- define "lidroute.redisSecretName" -}}
{{- default (printf "%s-redis" (include "lidroute.fullname" .)) .Values.redis.existingSecret }}
{{- end }}

{{- define "lidroute.redisHost" -}}
{{- if .Values.redis.internal.enabled }}
{{- /* Namespaced: KEDA's operator dials it from its own namespace. */}}
{{- printf "%s-redis.%s.svc" (include "lidroute.fullname" .) .Release.Namespace }}
{{- else }}
{{- required "redis.external.host is required when redis.internal.enabled is false" .Values.redis.external.host }}
{{- end }}
{{- end }}

{{- define "lidroute.redisPort" -}}
{{- if .Values.redis.internal.enabled }}6379{{ else }}{{ .Values.redis.external.port }}{{ end }}
{{- end }}

{{/* KEDA's redis-streams scaler takes host:port, not a redis:// URL. */}}
{{- define "lidroute.redisAddress" -}}
{{- printf "%s:%s" (include "lidroute.redisHost" .) (include "lidroute.redisPort" .) }}
{{- end }}

{{- define "lidroute.redisTLS" -}}
{{- if .Values.redis.internal.enabled }}{{ not (empty .Values.redis.internal.tls.secretName) }}
{{- else }}{{ .Values.redis.external.tls }}{{ end }}
{{- end }}

{{/* The in-cluster Redis's TLS Secret, "" when it speaks plaintext (or Redis is external). */}}
{{- define "lidroute.redisTLSSecret" -}}
{{- if .Values.redis.internal.enabled }}{{ .Values.redis.internal.tls.secretName }}{{ end }}
{{- end }}

{{/* Where Redis's clients find the CA that signed the in-cluster Redis's certificate. */}}
{{- define "lidroute.redisCADir" -}}/etc/lidroute/redis-ca{{- end }}

{{/* Whether Redis has a password that KEDA must send. */}}
{{- define "lidroute.redisHasPassword" -}}
{{- if .Values.redis.existingSecret }}
{{- not (empty .Values.redis.secretKeys.password) }}
{{- else }}
{{- or .Values.redis.internal.enabled (not (empty .Values.redis.password)) }}
{{- end }}
{{- end }}

{{/* Non-empty when KEDA's scalers need a TriggerAuthentication: a password, or the in-cluster Redis's CA. */}}
{{- define "lidroute.kedaAuth" -}}
{{- if or (eq (include "lidroute.redisHasPassword" .) "true") (include "lidroute.redisTLSSecret" .) }}true{{ end }}
{{- end }}

{{/* The pod-level pieces of every lidroute pod. */}}
{{- define "lidroute.podCommon" -}}
serviceAccountName: {{ include "lidroute.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Writable caches on emptyDirs (the root filesystem is read-only), the models, and for the pods that
dial Redis (.redis) the CA of an in-cluster Redis on TLS. (dict "root" $ "models" <bool> ["redis" <bool>]) */}}
{{- define "lidroute.volumes" -}}
- name: cache
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if and .redis (include "lidroute.redisTLSSecret" .root) }}
{{- /* Only the CA certificate: Redis's private key stays in Redis's pod. */}}
- name: redis-ca
  secret:
    secretName: {{ include "lidroute.redisTLSSecret" .root }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if .models }}
- name: models
{{- if .root.Values.models.volume }}
  {{- toYaml .root.Values.models.volume | nindent 2 }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .root.Values.models.sizeLimit }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lidroute.volumeMounts" -}}
- name: cache
  mountPath: /var/cache/lidroute
- name: tmp
  mountPath: /tmp
{{- if and .redis (include "lidroute.redisTLSSecret" .root) }}
- name: redis-ca
  mountPath: {{ include "lidroute.redisCADir" .root }}
  readOnly: true
{{- end }}
{{- if .models }}
- name: models
  mountPath: {{ .root.Values.models.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/* With models from an image: an init container copies them into the models emptyDir. */}}
{{- define "lidroute.modelsInit" -}}
{{- if and (not .Values.models.volume) .Values.models.image.repository }}
initContainers:
  - name: models
    image: {{ include "lidroute.image" (dict "root" . "image" .Values.models.image) | quote }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: ["cp", "-R", "/models/.", "/target/"]
    securityContext:
      {{- toYaml .Values.containerSecurityContext | nindent 6 }}
    resources:
      requests: {cpu: 50m, memory: 32Mi}
      limits: {memory: 128Mi}
    volumeMounts:
      - name: models
        mountPath: /target
{{- end }}
{{- end }}

{{/* Checks that cannot be said in values.schema.json, with messages that say what to change. */}}
{{- define "lidroute.validate" -}}
{{- if and (not .Values.models.volume) (not .Values.models.image.repository) }}
{{- fail "models: set models.volume (e.g. a PVC) or models.image.repository (an image built with --target models)" }}
{{- end }}
{{- if and .Values.redis.internal.enabled .Values.redis.existingSecret (not .Values.redis.secretKeys.password) }}
{{- fail "redis: the in-cluster Redis reads its password from redis.existingSecret; set redis.secretKeys.password" }}
{{- end }}
{{- $names := dict }}
{{- $langs := dict }}
{{- range .Values.workers.pools }}
{{- if hasKey $names .name }}
{{- fail (printf "workers.pools: the pool name %q is used twice" .name) }}
{{- end }}
{{- $_ := set $names .name true }}
{{- $pool := . }}
{{- range .languages }}
{{- if hasKey $langs . }}
{{- fail (printf "workers.pools: language %q is in pools %q and %q; a language belongs to one pool, or KEDA would scale both on one queue" . (get $langs .) $pool.name) }}
{{- end }}
{{- $_ := set $langs . $pool.name }}
{{- end }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail (printf "workers.pools[%s]: minReplicas (%d) is above maxReplicas (%d)" .name (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- if and (eq (int .minReplicas) 0) (not $.Values.keda.enabled) }}
{{- fail (printf "workers.pools[%s]: minReplicas 0 without KEDA would leave the pool at zero forever" .name) }}
{{- end }}
{{- if and (eq (int .minReplicas) 0) (hasKey $.Values.router.settings "scale_from_zero") (not $.Values.router.settings.scale_from_zero) }}
{{- fail (printf "workers.pools[%s]: minReplicas 0 needs the router's scale_from_zero, but router.settings.scale_from_zero is false: the router would refuse its languages while the pool is at zero, so no job would ever wake it (docs/deploy.md, \"Scale to zero\")" .name) }}
{{- end }}
{{- end }}
{{- if and .Values.router.autoscaling.enabled (gt (int .Values.router.autoscaling.minReplicas) (int .Values.router.autoscaling.maxReplicas)) }}
{{- fail "router.autoscaling: minReplicas is above maxReplicas" }}
{{- end }}
{{- if and .Values.router.tls.clientCA (not .Values.router.tls.secretName) }}
{{- fail "router.tls.clientCA needs router.tls.secretName: client certificates are checked against that Secret's ca.crt" }}
{{- end }}
{{- if and .Values.router.tls.clientCA .Values.restGateway.enabled }}
{{- fail "router.tls.clientCA: the router would require a client certificate, and the REST gateway, which dials it, has none; set restGateway.enabled=false, or leave clientCA off and keep callers out with auth.tokensSecret (docs/deploy.md, \"Tokens and TLS\")" }}
{{- end }}
{{- end }}

{{/* Native gRPC probes (grpc.health.v1, overall service ""). The startup probe gives model loading
time; readiness follows the server's NOT_SERVING while it loads and while it drains.
(dict "port" <port> "startupSeconds" <seconds> ["tls" true] ["mutual" true]): Kubernetes' gRPC probe
cannot speak TLS, so a TLS port is asked by the image's healthcheck.py, which speaks TLS as the server
does; under mutual TLS, where it has no client certificate to show, by opening a TCP connection. */}}
{{- define "lidroute.grpcProbes" -}}
{{- $check := dict "grpc" (dict "port" .port) }}
{{- if and .tls .mutual }}
{{- $check = dict "tcpSocket" (dict "port" .port) }}
{{- else if .tls }}
{{- $check = dict "exec" (dict "command" (list "python" "/opt/lidroute/healthcheck.py" "LIDROUTE_LISTEN_ADDRESS" (printf "[::]:%v" .port))) }}
{{- end -}}
startupProbe:
  {{- toYaml $check | nindent 2 }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: {{ div (add (int .startupSeconds) 4) 5 }}
readinessProbe:
  {{- toYaml $check | nindent 2 }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
livenessProbe:
  {{- toYaml $check | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{/* Tokens and TLS of a front door (the router, the REST gateway): the Secrets it is given, mounted
read-only as whole directories (Kubernetes rewrites their files when a Secret changes; a subPath mount
never sees the change), and the LIDROUTE_* variables naming the files in them.
(dict "root" $ "tls" <its TLS Secret, or ""> ["clientCA" <require client certificates>]
["routerCA" <Secret whose ca.crt signed the router's certificate: dial the router with TLS>]) */}}
{{- define "lidroute.tokensDir" -}}/etc/lidroute/auth{{- end }}
{{- define "lidroute.tlsDir" -}}/etc/lidroute/tls{{- end }}
{{- define "lidroute.routerCADir" -}}/etc/lidroute/router-ca{{- end }}

{{- define "lidroute.accessEnv" -}}
{{- if .root.Values.auth.tokensSecret }}
- name: LIDROUTE_AUTH_TOKENS_FILE
  value: "{{ include "lidroute.tokensDir" . }}/tokens"
{{- end }}
{{- if .tls }}
- name: LIDROUTE_TLS_CERT_FILE
  value: "{{ include "lidroute.tlsDir" . }}/tls.crt"
- name: LIDROUTE_TLS_KEY_FILE
  value: "{{ include "lidroute.tlsDir" . }}/tls.key"
{{- if .clientCA }}
- name: LIDROUTE_TLS_CLIENT_CA_FILE
  value: "{{ include "lidroute.tlsDir" . }}/ca.crt"
{{- end }}
{{- end }}
{{- if .routerCA }}
- name: LIDROUTE_ROUTER_TLS
  value: "true"
- name: LIDROUTE_ROUTER_CA_FILE
  value: "{{ include "lidroute.routerCADir" . }}/ca.crt"
{{- end }}
{{- end }}

{{- define "lidroute.accessMounts" -}}
{{- if .root.Values.auth.tokensSecret }}
- name: auth-tokens
  mountPath: {{ include "lidroute.tokensDir" . }}
  readOnly: true
{{- end }}
{{- if .tls }}
- name: tls
  mountPath: {{ include "lidroute.tlsDir" . }}
  readOnly: true
{{- end }}
{{- if .routerCA }}
- name: router-ca
  mountPath: {{ include "lidroute.routerCADir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "lidroute.accessVolumes" -}}
{{- if .root.Values.auth.tokensSecret }}
- name: auth-tokens
  secret:
    secretName: {{ .root.Values.auth.tokensSecret }}
    items:
      - key: {{ .root.Values.auth.tokensKey | quote }}
        path: tokens
{{- end }}
{{- if .tls }}
- name: tls
  secret:
    secretName: {{ .tls }}
{{- end }}
{{- if .routerCA }}
{{- /* Only the CA certificate: the router's private key stays out of the gateway's pods. */}}
- name: router-ca
  secret:
    secretName: {{ .routerCA }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{/* The pod's annotations block: its own, plus Prometheus scrape hints when metrics are on.
(dict "root" $ "extra" <podAnnotations>) */}}
{{- define "lidroute.podAnnotations" -}}
{{- $ann := deepCopy (default dict .extra) }}
{{- if gt (int .root.Values.settings.metrics_port) 0 }}
{{- $_ := set $ann "prometheus.io/scrape" "true" }}
{{- $_ := set $ann "prometheus.io/port" (toString .root.Values.settings.metrics_port) }}
{{- end }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "lidroute.metricsPort" -}}
{{- if gt (int .Values.settings.metrics_port) 0 }}
- name: metrics
  containerPort: {{ .Values.settings.metrics_port }}
  protocol: TCP
{{- end }}
{{- end }}

{{/* The model URI of one pool language: the pool's own, or <mountPath>/asr/<lang>. */}}
{{- define "lidroute.modelURI" -}}
{{- $models := default dict .pool.models }}
{{- default (printf "%s/asr/%s" (trimSuffix "/" .root.Values.models.mountPath) .lang) (get $models .lang) }}
{{- end }}

{{/* Worker settings of a pool: workers.settings, then the pool's own (which win even when 0, "" or
false, unlike `merge`), then device=cuda for a GPU pool that names no device. */}}
{{- define "lidroute.poolSettings" -}}
{{- $settings := deepCopy .root.Values.workers.settings }}
{{- range $key, $value := (default dict .pool.settings) }}
{{- $_ := set $settings $key $value }}
{{- end }}
{{- if and (gt (int (default 0 .pool.gpu)) 0) (not (hasKey $settings "device")) }}
{{- $_ := set $settings "device" "cuda" }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

{{/* "true" when a worker pool may sit at zero replicas, waiting for KEDA to start it. */}}
{{- define "lidroute.anyPoolAtZero" -}}
{{- $zero := false }}
{{- range .Values.workers.pools }}
{{- if eq (int .minReplicas) 0 }}
{{- $zero = true }}
{{- end }}
{{- end }}
{{- $zero }}
{{- end }}

{{/* Router settings: router.settings, plus, when a pool may be at zero, scale_from_zero (queue jobs for
registered languages with no live worker, which is what wakes the pool) and a queue timeout that covers
a cold start. What router.settings names wins. */}}
{{- define "lidroute.routerSettings" -}}
{{- $settings := deepCopy (default dict .Values.router.settings) }}
{{- if eq (include "lidroute.anyPoolAtZero" .) "true" }}
{{- if not (hasKey $settings "scale_from_zero") }}
{{- $_ := set $settings "scale_from_zero" true }}
{{- end }}
{{- if not (hasKey $settings "queue_timeout_seconds") }}
{{- $_ := set $settings "queue_timeout_seconds" .Values.router.coldStartQueueTimeoutSeconds }}
{{- end }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

{{/* Chart name. */}}
{{- define "fluxadmit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name when it contains the chart name, else <release>-<chart>. */}}
{{- define "fluxadmit.fullname" -}}
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

{{- define "fluxadmit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fluxadmit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fluxadmit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fluxadmit.labels" -}}
helm.sh/chart: {{ include "fluxadmit.chart" . }}
{{ include "fluxadmit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fluxadmit
{{- end -}}

{{- define "fluxadmit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fluxadmit.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fluxadmit.tlsSecretName" -}}
{{- printf "%s-tls" (include "fluxadmit.fullname" .) -}}
{{- end -}}

{{- define "fluxadmit.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The in-cluster DNS names of the webhook Service (the serving certificate's SANs). */}}
{{- define "fluxadmit.dnsNames" -}}
{{- $svc := include "fluxadmit.fullname" . -}}
{{- list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson -}}
{{- end -}}

{{/* A duration (`500ms`, `8s`, `2m`, or a number of seconds) in milliseconds. */}}
{{- define "fluxadmit.durationMs" -}}
{{- $s := toString .value | trim -}}
{{- if not (regexMatch "^[0-9]+(ms|s|m)?$" $s) -}}
{{- fail (printf "%s: %q is not a duration: use e.g. 500ms, 8s or 2m" .field $s) -}}
{{- end -}}
{{- if hasSuffix "ms" $s -}}{{ trimSuffix "ms" $s | atoi }}
{{- else if hasSuffix "s" $s -}}{{ mul (trimSuffix "s" $s | atoi) 1000 }}
{{- else if hasSuffix "m" $s -}}{{ mul (trimSuffix "m" $s | atoi) 60000 }}
{{- else -}}{{ mul (atoi $s) 1000 }}
{{- end -}}
{{- end -}}

{{/* The smallest timeoutSeconds of the enabled webhooks (30, the API maximum, when none is). */}}
{{- define "fluxadmit.minWebhookTimeout" -}}
{{- $min := 30 -}}
{{- range $key := list "fluxValidation" "workloadValidation" "workloadMutation" -}}
{{- $w := index $.Values.webhooks $key -}}
{{- if and $w.enabled (lt (int $w.timeoutSeconds) $min) -}}
{{- $min = int $w.timeoutSeconds -}}
{{- end -}}
{{- end -}}
{{- $min -}}
{{- end -}}

{{/* The server's --timeout in milliseconds: below every enabled webhook's timeoutSeconds. */}}
{{- define "fluxadmit.timeoutMs" -}}
{{- $minMs := mul (include "fluxadmit.minWebhookTimeout" . | int) 1000 -}}
{{- if .Values.server.timeout -}}
{{- $ms := include "fluxadmit.durationMs" (dict "value" .Values.server.timeout "field" "server.timeout") | int -}}
{{- if ge $ms $minMs -}}
{{- fail (printf "server.timeout (%dms) must be below the smallest enabled webhook timeoutSeconds (%dms): the API server would give up before fluxadmit answers" $ms $minMs) -}}
{{- end -}}
{{- if lt $ms 1 -}}
{{- fail "server.timeout must be positive" -}}
{{- end -}}
{{- $ms -}}
{{- else -}}
{{- max (sub $minMs 1000) 500 -}}
{{- end -}}
{{- end -}}

{{- define "fluxadmit.drainMs" -}}
{{- include "fluxadmit.durationMs" (dict "value" .Values.server.drain "field" "server.drain") -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: above drain + timeout + the server's 2s close margin. */}}
{{- define "fluxadmit.terminationGracePeriodSeconds" -}}
{{- $busyMs := add (include "fluxadmit.drainMs" . | int) (include "fluxadmit.timeoutMs" . | int) 2000 -}}
{{- $busy := div (add $busyMs 999) 1000 -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $busy 5 -}}
{{- else -}}
{{- $t := int .Values.terminationGracePeriodSeconds -}}
{{- if le $t $busy -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be above server.drain + server.timeout + 2s (%ds), or in-flight reviews are killed" $t $busy) -}}
{{- end -}}
{{- $t -}}
{{- end -}}
{{- end -}}

{{/* The namespaceSelector every webhook uses: never kube-system nor the release namespace. */}}
{{- define "fluxadmit.namespaceSelector" -}}
{{- $excluded := concat (list "kube-system" .Release.Namespace) .Values.webhooks.excludedNamespaces | uniq -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range $excluded }}
        - {{ . | quote }}
        {{- end }}
{{- end -}}

{{/* The policies ConfigMap data: defaults, opt-in examples, extraPolicies. */}}
{{- define "fluxadmit.policies" -}}
{{- $data := dict -}}
{{- if .Values.defaultPolicies.enabled -}}
{{- range $path, $_ := .Files.Glob "policies/*.yaml" -}}
{{- $file := base $path -}}
{{- if not (has (trimSuffix ".yaml" $file) $.Values.defaultPolicies.exclude) -}}
{{- $_ := set $data $file ($.Files.Get $path) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $name := .Values.examplePolicies -}}
{{- $text := $.Files.Get (printf "policies/examples/%s.yaml" $name) -}}
{{- if not $text -}}
{{- $available := list -}}
{{- range $path, $_ := $.Files.Glob "policies/examples/*.yaml" -}}
{{- $available = append $available (base $path | trimSuffix ".yaml") -}}
{{- end -}}
{{- fail (printf "examplePolicies: no example policy %q (available: %s)" $name (join ", " $available)) -}}
{{- end -}}
{{- $file := printf "%s.yaml" $name -}}
{{- if hasKey $data $file -}}
{{- fail (printf "examplePolicies: %s is listed twice or clashes with a default policy" $file) -}}
{{- end -}}
{{- $_ := set $data $file $text -}}
{{- end -}}
{{- range $file, $text := .Values.extraPolicies -}}
{{- if not (regexMatch "^[A-Za-z0-9][-._A-Za-z0-9]*\\.(yaml|yml|json)$" $file) -}}
{{- fail (printf "extraPolicies: %q must be a file name ending in .yaml, .yml or .json (fluxadmit loads only those)" $file) -}}
{{- end -}}
{{- if hasKey $data $file -}}
{{- fail (printf "extraPolicies: %s clashes with a default or example policy file; rename it" $file) -}}
{{- end -}}
{{- if not (kindIs "string" $text) -}}
{{- fail (printf "extraPolicies: %s must be the policy file's YAML text (use a block scalar: |)" $file) -}}
{{- end -}}
{{- $_ := set $data $file $text -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* Webhook configuration annotations: cert-manager's cainjector fills the caBundle. */}}
{{- define "fluxadmit.webhookAnnotations" -}}
{{- if eq .mode "certManager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s-tls" .root.Release.Namespace (include "fluxadmit.fullname" .root) }}
{{- end -}}
{{- end -}}

{{/* Fields shared by every webhook: (dict root caBundle mode path hook). */}}
{{- define "fluxadmit.webhookCommon" -}}
admissionReviewVersions: ["v1"]
sideEffects: None
matchPolicy: Equivalent
failurePolicy: {{ .hook.failurePolicy }}
timeoutSeconds: {{ .hook.timeoutSeconds }}
clientConfig:
  service:
    name: {{ include "fluxadmit.fullname" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- if eq .mode "helm" }}
  caBundle: {{ .caBundle }}
  {{- end }}
{{ include "fluxadmit.namespaceSelector" .root }}
{{- end -}}

{{/* The workloads fluxadmit validates and mutates. */}}
{{- define "fluxadmit.workloadRules" -}}
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["pods"]
    scope: Namespaced
  - apiGroups: ["apps"]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["deployments", "statefulsets", "daemonsets", "replicasets"]
    scope: Namespaced
  - apiGroups: ["batch"]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["jobs", "cronjobs"]
    scope: Namespaced
{{- end -}}

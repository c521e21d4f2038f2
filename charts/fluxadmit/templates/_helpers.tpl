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

{{/* The smallest timeoutSeconds of the rendered webhooks (30, the API maximum, when none is). */}}
{{- define "fluxadmit.minWebhookTimeout" -}}
{{- $min := 30 -}}
{{- $rendered := include "fluxadmit.renderedWebhooks" . | fromJson -}}
{{- range $key := list "fluxValidation" "workloadValidation" "workloadMutation" -}}
{{- $w := index $.Values.webhooks $key -}}
{{- if and (index $rendered $key) (lt (int $w.timeoutSeconds) $min) -}}
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

{{/*
The namespaceSelector and objectSelector of a webhook: (dict "root" $ "narrow" <selector>).
Never kube-system, the release namespace, webhooks.excludedNamespaces, nor a namespace or an
object labelled fluxadmit.io/ignore=true (NotIn also matches when the label is absent); never
the objects applied by the Flux Kustomizations and HelmReleases of webhooks.exemptFluxOwners.
"narrow" (a policy namespaceSelector from fluxadmit.workloadScope) is ANDed in: matchLabels as
In expressions, then its matchExpressions.
*/}}
{{- define "fluxadmit.selectors" -}}
{{- $root := .root -}}
{{- $excluded := concat (list "kube-system" $root.Release.Namespace) $root.Values.webhooks.excludedNamespaces | uniq -}}
{{- $owners := $root.Values.webhooks.exemptFluxOwners | default dict -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range $excluded }}
        - {{ . | quote }}
        {{- end }}
    - key: fluxadmit.io/ignore
      operator: NotIn
      values: ["true"]
    {{- with .narrow }}
    {{- range $key, $value := .matchLabels }}
    - key: {{ $key | quote }}
      operator: In
      values: [{{ $value | toString | quote }}]
    {{- end }}
    {{- range .matchExpressions }}
    - {{ toJson . }}
    {{- end }}
    {{- end }}
objectSelector:
  matchExpressions:
    - key: fluxadmit.io/ignore
      operator: NotIn
      values: ["true"]
    {{- with $owners.kustomizations }}
    - key: kustomize.toolkit.fluxcd.io/name
      operator: NotIn
      values:
        {{- range . }}
        - {{ . | quote }}
        {{- end }}
    {{- end }}
    {{- with $owners.helmReleases }}
    - key: helm.toolkit.fluxcd.io/name
      operator: NotIn
      values:
        {{- range . }}
        - {{ . | quote }}
        {{- end }}
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

{{/*
What one policy document means for the workload webhooks, as JSON:
  {"workloads": bool, "mutates": bool, "validates": bool, "namespaceSelector": <map or absent>}
workloads: spec.match can select a Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or
  CronJob (resources empty, or an entry whose kinds are empty, hold "*" or the kind, and whose
  apiGroups are empty, hold "*" or the kind's group; match.charts set selects HelmReleases only).
mutates: a rule has `mutate`, or `imagePullSecrets` with registries.
validates: a rule has any other rule kind, or `imagePullSecrets` whose validate is not false.
A document of an unexpected shape (the server refuses it anyway) counts as a policy that
covers every workload, mutates and validates, in every namespace: never narrower than real.
*/}}
{{- define "fluxadmit.policyScope" -}}
{{- $all := dict "workloads" true "mutates" true "validates" true -}}
{{- $spec := .spec -}}
{{- if not (kindIs "map" $spec) -}}
{{- toJson $all -}}
{{- else -}}
{{- $match := $spec.match | default dict -}}
{{- $rules := $spec.rules | default list -}}
{{- $resources := list -}}
{{- $charts := list -}}
{{- $ok := and (kindIs "map" $match) (kindIs "slice" $rules) -}}
{{- if $ok -}}
{{- $resources = $match.resources | default list -}}
{{- $charts = $match.charts | default list -}}
{{- $ok = and (kindIs "slice" $resources) (kindIs "slice" $charts) -}}
{{- end -}}
{{- if not $ok -}}
{{- toJson $all -}}
{{- else -}}
{{- $out := dict "workloads" false "mutates" false "validates" false -}}
{{- /* Workloads: the kinds of fluxadmit.workloadRules and their API groups. */ -}}
{{- $kindGroups := dict "Pod" "" "Deployment" "apps" "StatefulSet" "apps" "DaemonSet" "apps" "ReplicaSet" "apps" "Job" "batch" "CronJob" "batch" -}}
{{- if $charts -}}
{{- /* match.charts selects HelmReleases only. */ -}}
{{- else if not $resources -}}
{{- $_ := set $out "workloads" true -}}
{{- else -}}
{{- range $r := $resources -}}
{{- if not (kindIs "map" $r) -}}
{{- $_ := set $out "workloads" true -}}
{{- else -}}
{{- $groups := $r.apiGroups | default list -}}
{{- $kinds := $r.kinds | default list -}}
{{- if not (and (kindIs "slice" $groups) (kindIs "slice" $kinds)) -}}
{{- $_ := set $out "workloads" true -}}
{{- else -}}
{{- range $kind, $group := $kindGroups -}}
{{- if and (or (not $kinds) (has "*" $kinds) (has $kind $kinds)) (or (not $groups) (has "*" $groups) (has $group $groups)) -}}
{{- $_ := set $out "workloads" true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $rule := $rules -}}
{{- if not (kindIs "map" $rule) -}}
{{- $_ := set $out "mutates" true -}}
{{- $_ := set $out "validates" true -}}
{{- else -}}
{{- range $key, $value := $rule -}}
{{- if eq $key "name" -}}
{{- else if eq $key "mutate" -}}
{{- $_ := set $out "mutates" true -}}
{{- else if eq $key "imagePullSecrets" -}}
{{- $ips := $value | default dict -}}
{{- if not (kindIs "map" $ips) -}}
{{- $_ := set $out "mutates" true -}}
{{- $_ := set $out "validates" true -}}
{{- else -}}
{{- if $ips.registries -}}
{{- $_ := set $out "mutates" true -}}
{{- end -}}
{{- if not (and (hasKey $ips "validate") (eq (toString $ips.validate) "false")) -}}
{{- $_ := set $out "validates" true -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- /* requiredLabels, dependsOn, referencedSecrets, requiredSecrets, expression, podSecurity, or a kind this chart does not know yet. */ -}}
{{- $_ := set $out "validates" true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* A namespaceSelector is kept only in a shape the webhook can carry. */ -}}
{{- $sel := $match.namespaceSelector -}}
{{- if kindIs "map" $sel -}}
{{- $good := true -}}
{{- range $key, $value := $sel -}}
{{- if not (has $key (list "matchLabels" "matchExpressions")) -}}
{{- $good = false -}}
{{- end -}}
{{- end -}}
{{- $labels := $sel.matchLabels | default dict -}}
{{- $exprs := $sel.matchExpressions | default list -}}
{{- if not (and (kindIs "map" $labels) (kindIs "slice" $exprs)) -}}
{{- $good = false -}}
{{- else -}}
{{- range $key, $value := $labels -}}
{{- if not (kindIs "string" $value) -}}
{{- $good = false -}}
{{- end -}}
{{- end -}}
{{- range $e := $exprs -}}
{{- if not (and (kindIs "map" $e) (kindIs "string" $e.key) (has $e.operator (list "In" "NotIn" "Exists" "DoesNotExist"))) -}}
{{- $good = false -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $good -}}
{{- $_ := set $out "namespaceSelector" (dict "matchLabels" $labels "matchExpressions" $exprs) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The workload webhooks the enabled policies need, as JSON:
  {"mutate":   {"needed": bool, "namespaceSelector": <map or absent>},
   "validate": {"needed": bool, "namespaceSelector": <map or absent>}}
needed: some enabled policy covers workloads and mutates (resp. validates), see
fluxadmit.policyScope. namespaceSelector: set when every such policy has a namespaceSelector and
they are all equal: the webhook then only sees the namespaces the policies can select.
Policies the chart cannot read count as covering every workload everywhere: an extraPolicies
text fromYaml cannot parse, and, with policyResources, the DeploymentPolicy objects in the
cluster.
*/}}
{{- define "fluxadmit.workloadScope" -}}
{{- $scopes := list -}}
{{- $everything := dict "workloads" true "mutates" true "validates" true -}}
{{- if .Values.policyResources -}}
{{- $scopes = append $scopes $everything -}}
{{- end -}}
{{- range $file, $text := include "fluxadmit.policies" . | fromYaml -}}
{{- range $part := regexSplit `(?m)^---(?:[ \t]|$)` (toString $text) -1 -}}
{{- $doc := fromYaml $part -}}
{{- if hasKey $doc "Error" -}}
{{- $scopes = append $scopes $everything -}}
{{- else if and (hasSuffix "List" (toString $doc.kind)) (hasKey $doc "items") -}}
{{- /* A v1 List, as the server reads it: one policy per item. */ -}}
{{- range $item := (kindIs "slice" $doc.items | ternary $doc.items (list "not a policy")) -}}
{{- if and (kindIs "map" $item) (not (hasSuffix "List" (toString $item.kind))) -}}
{{- $scopes = append $scopes (include "fluxadmit.policyScope" $item | fromJson) -}}
{{- else -}}
{{- $scopes = append $scopes $everything -}}
{{- end -}}
{{- end -}}
{{- else if $doc -}}
{{- $scopes = append $scopes (include "fluxadmit.policyScope" $doc | fromJson) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $out := dict -}}
{{- range $sort, $flag := dict "mutate" "mutates" "validate" "validates" -}}
{{- $needed := false -}}
{{- $selectors := list -}}
{{- range $s := $scopes -}}
{{- if and $s.workloads (index $s $flag) -}}
{{- $needed = true -}}
{{- $selectors = append $selectors (hasKey $s "namespaceSelector" | ternary (toJson $s.namespaceSelector) "") -}}
{{- end -}}
{{- end -}}
{{- $result := dict "needed" $needed -}}
{{- if and $needed (not (has "" $selectors)) (eq (len (uniq $selectors)) 1) -}}
{{- $_ := set $result "namespaceSelector" (first $selectors | fromJson) -}}
{{- end -}}
{{- $_ := set $out $sort $result -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
Which webhooks are rendered, as JSON {"fluxValidation": bool, "workloadValidation": bool,
"workloadMutation": bool}: the flux webhook when enabled, a workload webhook when enabled and
needed by the enabled policies (fluxadmit.workloadScope).
*/}}
{{- define "fluxadmit.renderedWebhooks" -}}
{{- $scope := include "fluxadmit.workloadScope" . | fromJson -}}
{{- $hooks := .Values.webhooks -}}
{{- $rendered := dict "fluxValidation" $hooks.fluxValidation.enabled -}}
{{- $_ := set $rendered "workloadValidation" (and $hooks.workloadValidation.enabled $scope.validate.needed) -}}
{{- $_ := set $rendered "workloadMutation" (and $hooks.workloadMutation.enabled $scope.mutate.needed) -}}
{{- toJson $rendered -}}
{{- end -}}

{{/* Webhook configuration annotations: cert-manager's cainjector fills the caBundle. */}}
{{- define "fluxadmit.webhookAnnotations" -}}
{{- if eq .mode "certManager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s-tls" .root.Release.Namespace (include "fluxadmit.fullname" .root) }}
{{- end -}}
{{- end -}}

{{/* Fields shared by every webhook: (dict root caBundle mode path hook [narrow]). */}}
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
{{ include "fluxadmit.selectors" (dict "root" .root "narrow" .narrow) }}
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

{{/*
Names, labels and the checks a JSON schema cannot express.
*/}}

{{- define "calyx.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The DaemonSet, ServiceAccount and RBAC name: "calyx" for a release named calyx. */}}
{{- define "calyx.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The CNI plugin's ServiceAccount ("calyx-cni-plugin"), and the Secret holding its token. The plugin
runs on the host, called by the container runtime, with the kubeconfig install-cni writes.
*/}}
{{- define "calyx.cniPluginName" -}}
{{- printf "%s-cni-plugin" (include "calyx.fullname" .) -}}
{{- end -}}

{{- define "calyx.cniPluginTokenSecret" -}}
{{- printf "%s-token" (include "calyx.cniPluginName" .) -}}
{{- end -}}

{{/* Where felix finds the CNI plugin's token (CALYX_CNI_TOKEN_DIR). */}}
{{- define "calyx.cniPluginTokenDir" -}}
/var/run/secrets/calyx-cni-plugin
{{- end -}}

{{/*
calyx.passwordSecrets: the names of the Secrets holding the BGP passwords the chart's own
resources refer to (bgp.nodeMeshPassword when the BGPConfiguration is rendered, each
bgp.externalPeers[].password), de-duplicated and sorted, as a JSON list. bgpd reads exactly the
Secrets its BGP configuration names; rbac.yaml grants these by name.
*/}}
{{- define "calyx.passwordSecrets" -}}
{{- $names := list -}}
{{- if .Values.bgp.createConfiguration -}}
{{- with .Values.bgp.nodeMeshPassword -}}
{{- $names = append $names .secretKeyRef.name -}}
{{- end -}}
{{- end -}}
{{- range .Values.bgp.externalPeers -}}
{{- with .password -}}
{{- $names = append $names .secretKeyRef.name -}}
{{- end -}}
{{- end -}}
{{- $names | uniq | sortAlpha | toJson -}}
{{- end -}}

{{- define "calyx.selectorLabels" -}}
app.kubernetes.io/name: {{ include "calyx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "calyx.labels" -}}
{{ include "calyx.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: calyx
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "calyx.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
calyx.checkCIDR: fails unless the CIDR's host bits are zero.
Call with (list "field.path" "a.b.c.d/n").
*/}}
{{- define "calyx.checkCIDR" -}}
{{- $field := index . 0 -}}
{{- $cidr := index . 1 -}}
{{- $parts := splitList "/" $cidr -}}
{{- $octets := splitList "." (index $parts 0) -}}
{{- $prefix := index $parts 1 | int -}}
{{- $addr := 0 -}}
{{- range $octets -}}
{{- $addr = add (mul $addr 256) (int .) -}}
{{- end -}}
{{- $size := 1 -}}
{{- range until (sub 32 $prefix | int) -}}
{{- $size = mul $size 2 -}}
{{- end -}}
{{- if ne (mod $addr $size) 0 -}}
{{- $net := sub $addr (mod $addr $size) -}}
{{- fail (printf "%s: %q has host bits set; the network is %d.%d.%d.%d/%d" $field $cidr (div $net 16777216) (mod (div $net 65536) 256) (mod (div $net 256) 256) (mod $net 256) $prefix) -}}
{{- end -}}
{{- end -}}

{{/* calyx.validate: cross-field checks, run by every template that renders resources. */}}
{{- define "calyx.validate" -}}
{{- $pool := .Values.ipPool -}}
{{- if $pool.create -}}
{{- include "calyx.checkCIDR" (list "ipPool.cidr" $pool.cidr) -}}
{{- $prefix := index (splitList "/" $pool.cidr) 1 | int -}}
{{- if lt (int $pool.blockSize) $prefix -}}
{{- fail (printf "ipPool.blockSize: %d is larger than the pool %s itself (a block must be a /%d or longer)" (int $pool.blockSize) $pool.cidr $prefix) -}}
{{- end -}}
{{- end -}}
{{- range $i, $c := .Values.bgp.serviceClusterIPs -}}
{{- include "calyx.checkCIDR" (list (printf "bgp.serviceClusterIPs[%d]" $i) $c) -}}
{{- end -}}
{{- range $i, $c := .Values.bgp.serviceExternalIPs -}}
{{- include "calyx.checkCIDR" (list (printf "bgp.serviceExternalIPs[%d]" $i) $c) -}}
{{- end -}}
{{- range $i, $c := .Values.bgp.serviceLoadBalancerIPs -}}
{{- include "calyx.checkCIDR" (list (printf "bgp.serviceLoadBalancerIPs[%d]" $i) $c) -}}
{{- end -}}
{{- $felixPort := int .Values.felix.healthPort -}}
{{- $bgpdPort := int .Values.bgpd.healthPort -}}
{{- $bgpPort := int (.Values.bgp.listenPort | default 179) -}}
{{- if eq $felixPort $bgpdPort -}}
{{- fail (printf "felix.healthPort and bgpd.healthPort: both are %d; the daemons share the node's network, so each needs its own port" $felixPort) -}}
{{- end -}}
{{- if or (eq $felixPort $bgpPort) (eq $bgpdPort $bgpPort) -}}
{{- fail (printf "bgp.listenPort: %d is also a health port (felix.healthPort %d, bgpd.healthPort %d)" $bgpPort $felixPort $bgpdPort) -}}
{{- end -}}
{{- $seen := dict -}}
{{- if .Values.bgp.routeReflectors.enabled -}}
{{- $_ := set $seen "peer-with-route-reflectors" true -}}
{{- end -}}
{{- range $i, $p := .Values.bgp.externalPeers -}}
{{- if and $p.node $p.nodeSelector -}}
{{- fail (printf "bgp.externalPeers[%d] (%s): set node (%q) or nodeSelector (%q), not both" $i $p.name $p.node $p.nodeSelector) -}}
{{- end -}}
{{- if hasKey $seen $p.name -}}
{{- fail (printf "bgp.externalPeers[%d]: name %q is already used (by another peer, or by the route reflector BGPPeer)" $i $p.name) -}}
{{- end -}}
{{- $_ := set $seen $p.name true -}}
{{- end -}}
{{- end -}}

{{/* Environment every Calyx process gets (the contract in docs/architecture.md). */}}
{{- define "calyx.commonEnv" -}}
- name: NODENAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: CALYX_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: CALYX_RUN_DIR
  value: {{ .Values.runDir | quote }}
- name: CALYX_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: CALYX_HEALTH_HOST
  value: {{ ternary "0.0.0.0" "127.0.0.1" .Values.metricsOnAllInterfaces | quote }}
{{- with .Values.kubernetesServiceEndpoint }}
{{- if .host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .port | default "443" | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Container securityContext: root (the capabilities below only work for uid 0 without ambient
capabilities), every capability dropped except the listed ones, no privilege escalation,
read-only root filesystem. Call with (list "CAP" ...).
*/}}
{{- define "calyx.containerSecurity" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsUser: 0
runAsNonRoot: false
capabilities:
  drop: ["ALL"]
  {{- with . }}
  add: {{ toJson . }}
  {{- end }}
{{- end -}}

{{/*
Startup, liveness and readiness probes on a daemon's health port (bound on the node's loopback
too). The startup probe gives a daemon up to 5 minutes to come up (a slow or loaded node, a
large routing table to adopt) before the liveness probe may restart it.
*/}}
{{- define "calyx.probes" -}}
startupProbe:
  httpGet:
    host: 127.0.0.1
    path: /livez
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet:
    host: 127.0.0.1
    path: /livez
    port: {{ . }}
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
readinessProbe:
  httpGet:
    host: 127.0.0.1
    path: /readyz
    port: {{ . }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

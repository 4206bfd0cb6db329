{{/* The router (router.enabled): sglang-router in front of the release's servers. */}}

{{- define "kthybrid.routerName" -}}
{{- printf "%s-router" (include "kthybrid.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/* What the chart's Service selects: the router when it is enabled, else the serving pods. */}}
{{- define "kthybrid.serviceComponent" -}}
{{- if .Values.router.enabled }}router{{ else }}{{ include "kthybrid.servingComponent" . }}{{ end }}
{{- end }}

{{- define "kthybrid.routerImage" -}}
{{- $r := .Values.router.image }}
{{- $image := printf "%s:%s" $r.repository $r.tag }}
{{- with $r.digest }}
{{- $image = printf "%s@%s" $image . }}
{{- end }}
{{- $image }}
{{- end }}

{{/* The servers the router discovers: this release's pods that serve HTTP. */}}
{{- define "kthybrid.routerSelectorArgs" -}}
{{- $labels := include "kthybrid.selectorLabels" . | fromYaml }}
{{- $_ := set $labels "app.kubernetes.io/component" (include "kthybrid.servingComponent" .) }}
{{- range $key := keys $labels | sortAlpha }}
- {{ printf "%s=%s" $key (get $labels $key) | quote }}
{{- end }}
{{- end }}

{{- define "kthybrid.routerCheckovSkips" -}}
{{- if not .Values.router.image.digest }}
checkov.io/skip1: CKV_K8S_43=no digest is known before the router image is built or pushed; set router.image.digest to pull by digest
checkov.io/skip2: CKV_K8S_15=IfNotPresent with a tag that names one version; with router.image.digest the digest decides
{{- end }}
checkov.io/skip3: CKV_K8S_38=the router watches the release's server pods through the Kubernetes API (service discovery); its Role allows get, list and watch on pods in this namespace only
{{- end }}

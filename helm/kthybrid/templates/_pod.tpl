{{/* The server pod template, shared by the Deployment and the LeaderWorkerSet's leader and worker templates. */}}

{{- define "kthybrid.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
runAsNonRoot: true
capabilities:
  drop:
    - ALL
  {{- with .add }}
  add:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Requests equal to limits: Guaranteed QoS, so the static CPU manager gives whole cores. */}}
{{- define "kthybrid.guaranteedResources" -}}
requests:
  {{- toYaml . | nindent 2 }}
limits:
  {{- toYaml . | nindent 2 }}
{{- end }}

{{- define "kthybrid.serverEnv" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
- name: KTHYBRID_MODEL
  value: {{ $v.server.model | quote }}
- name: KTHYBRID_HOST
  value: "0.0.0.0"
- name: KTHYBRID_PORT
  value: {{ $v.server.port | quote }}
- name: KTHYBRID_TP_SIZE
  value: {{ include "kthybrid.tpSize" $root | quote }}
- name: KTHYBRID_NUMA_POLICY
  value: {{ $v.kt.numaPolicy | quote }}
- name: KTHYBRID_HUGEPAGES
  value: {{ $v.hugepages.enabled | quote }}
{{- if gt (int $v.server.contextLength) 0 }}
- name: KTHYBRID_CONTEXT_LENGTH
  value: {{ $v.server.contextLength | quote }}
{{- end }}
{{- with $v.server.memFractionStatic }}
- name: KTHYBRID_MEM_FRACTION_STATIC
  value: {{ . | quote }}
{{- end }}
{{- with $v.server.mtp }}
- name: KTHYBRID_MTP
  value: {{ . | quote }}
{{- end }}
{{- with $v.kt.weightPath }}
- name: KTHYBRID_KT_WEIGHT_PATH
  value: {{ . | quote }}
{{- end }}
{{- with $v.kt.method }}
- name: KTHYBRID_KT_METHOD
  value: {{ . | quote }}
{{- end }}
{{- if gt (int $v.kt.cpuinfer) 0 }}
- name: KTHYBRID_KT_CPUINFER
  value: {{ $v.kt.cpuinfer | quote }}
{{- end }}
{{- if ge (int $v.kt.numGpuExperts) 0 }}
- name: KTHYBRID_KT_NUM_GPU_EXPERTS
  value: {{ $v.kt.numGpuExperts | quote }}
{{- end }}
{{- with $v.server.extraArgs }}
- name: KTHYBRID_EXTRA_ARGS
  value: {{ join " " . | quote }}
{{- end }}
{{- if $v.multiNode.enabled }}
- name: KTHYBRID_NNODES
  value: {{ $v.multiNode.size | quote }}
- name: KTHYBRID_NODE_RANK
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']
{{- /* LWS_LEADER_ADDRESS is injected by the LWS webhook ahead of these variables, so $(...) expands. */}}
- name: KTHYBRID_DIST_INIT_ADDR
  value: "$(LWS_LEADER_ADDRESS):{{ $v.multiNode.distInitPort }}"
{{- end }}
{{- /* The server never reaches the Hub: the init container downloaded the model. */}}
- name: HF_HUB_OFFLINE
  value: "1"
{{- with $v.server.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kthybrid.hfTokenEnv" -}}
{{- with .Values.hfToken.secretName }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.hfToken.secretKey }}
{{- end }}
{{- end }}

{{/* Init container: downloads the model unless its completion marker exists. */}}
{{- define "kthybrid.downloadContainer" -}}
{{- $v := .Values -}}
- name: download-model
  image: {{ include "kthybrid.image" . }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - |
      set -eu
      if [ -f "$MARKER" ]; then
        echo "model already in $KTHYBRID_MODEL ($MARKER present); skipping the download"
        exit 0
      fi
      echo "downloading $REPO_ID into $KTHYBRID_MODEL"
      if [ -n "$REVISION" ]; then
        huggingface-cli download "$REPO_ID" --revision "$REVISION" --local-dir "$KTHYBRID_MODEL"
      else
        huggingface-cli download "$REPO_ID" --local-dir "$KTHYBRID_MODEL"
      fi
      touch "$MARKER"
  env:
    - name: KTHYBRID_MODEL
      value: {{ $v.server.model | quote }}
    - name: MARKER
      value: {{ include "kthybrid.downloadMarker" . | quote }}
    - name: REPO_ID
      value: {{ $v.models.download.repoId | quote }}
    - name: REVISION
      value: {{ $v.models.download.revision | quote }}
    - name: HF_HUB_DISABLE_TELEMETRY
      value: "1"
    {{- with include "kthybrid.hfTokenEnv" . }}
    {{- . | nindent 4 }}
    {{- end }}
  resources:
    {{- include "kthybrid.guaranteedResources" (dict "cpu" (toString $v.models.download.cpu) "memory" (printf "%dGi" (int $v.models.download.memoryGi))) | nindent 4 }}
  securityContext:
    {{- include "kthybrid.containerSecurityContext" dict | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: /models
{{- end }}

{{/* Init container: waits until the conversion Job has written its marker. */}}
{{- define "kthybrid.waitForConversionContainer" -}}
- name: wait-for-conversion
  image: {{ include "kthybrid.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - |
      until [ -f "$MARKER" ]; do
        echo "waiting for the conversion Job to write $MARKER"
        sleep 15
      done
  env:
    - name: MARKER
      value: {{ include "kthybrid.convertMarker" . | quote }}
  resources:
    {{- include "kthybrid.guaranteedResources" (dict "cpu" "1" "memory" "256Mi") | nindent 4 }}
  securityContext:
    {{- include "kthybrid.containerSecurityContext" dict | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: /models
{{- end }}

{{- define "kthybrid.serverResources" -}}
{{- $v := .Values }}
{{- $r := dict "cpu" (toString $v.resources.cpu) "memory" (printf "%sGi" (include "kthybrid.memoryLimitGi" .)) }}
{{- if gt (int $v.resources.gpus) 0 }}
{{- $_ := set $r "nvidia.com/gpu" (toString $v.resources.gpus) }}
{{- end }}
{{- if $v.hugepages.enabled }}
{{- $_ := set $r (printf "hugepages-%s" $v.hugepages.size) (printf "%dGi" (int $v.hostMemory.hugepagesGi)) }}
{{- end }}
{{- if gt (int $v.resources.ephemeralStorageGi) 0 }}
{{- $_ := set $r "ephemeral-storage" (printf "%dGi" (int $v.resources.ephemeralStorageGi)) }}
{{- end }}
{{- include "kthybrid.guaranteedResources" $r }}
{{- end }}

{{- define "kthybrid.volumes" -}}
{{- $v := .Values -}}
- name: models
{{- if eq $v.models.source "hostPath" }}
  hostPath:
    path: {{ $v.models.hostPath.path }}
    type: {{ $v.models.hostPath.type }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "kthybrid.modelsClaimName" . }}
{{- end }}
- name: cache
{{- if eq $v.cache.source "hostPath" }}
  hostPath:
    path: {{ $v.cache.hostPath.path }}
    type: DirectoryOrCreate
{{- else if eq $v.cache.source "emptyDir" }}
  emptyDir: {}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "kthybrid.cacheClaimName" . }}
{{- end }}
{{- /* Memory-backed: counted against the memory limit, which is why hostMemory.shmGi is in the budget. */}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ printf "%dGi" (int $v.hostMemory.shmGi) }}
{{- if $v.hugepages.enabled }}
- name: hugepages
  emptyDir:
    medium: {{ printf "HugePages-%s" $v.hugepages.size }}
{{- end }}
{{- end }}

{{- define "kthybrid.gpuNodeAffinity" -}}
{{- $target := include "kthybrid.targetEntry" . | fromYaml }}
{{- $products := .Values.gpuNodeAffinity.products | default $target.gpuProducts -}}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      - matchExpressions:
          - key: nvidia.com/gpu.product
            operator: In
            values:
              {{- toYaml $products | nindent 14 }}
{{- end }}

{{/*
Pod template. Arguments: root (the chart context) and role: server (Deployment),
leader or worker (LeaderWorkerSet). Workers (sglang node rank > 0) answer /health
and /health_generate on the same port once loaded, so every role gets the same probes.
*/}}
{{- define "kthybrid.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
metadata:
  labels:
    {{- include "kthybrid.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- /* Service links would inject KTHYBRID_PORT=tcp://... for a Service named kthybrid. */}}
  enableServiceLinks: false
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ include "kthybrid.terminationGracePeriodSeconds" $root }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $v.podSecurityContext.runAsUser }}
    runAsGroup: {{ $v.podSecurityContext.runAsGroup }}
    fsGroup: {{ $v.podSecurityContext.fsGroup }}
    fsGroupChangePolicy: OnRootMismatch
    seccompProfile:
      type: RuntimeDefault
  {{- if $v.affinity }}
  affinity:
    {{- toYaml $v.affinity | nindent 4 }}
  {{- else if $v.gpuNodeAffinity.enabled }}
  affinity:
    {{- include "kthybrid.gpuNodeAffinity" $root | nindent 4 }}
  {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if or $v.models.download.enabled $v.convert.enabled }}
  initContainers:
    {{- if $v.models.download.enabled }}
    {{- include "kthybrid.downloadContainer" $root | nindent 4 }}
    {{- end }}
    {{- if $v.convert.enabled }}
    {{- include "kthybrid.waitForConversionContainer" $root | nindent 4 }}
    {{- end }}
  {{- end }}
  containers:
    - name: server
      image: {{ include "kthybrid.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        {{- toYaml $v.server.args | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ $v.server.port }}
          protocol: TCP
        {{- if eq .role "leader" }}
        - name: dist-init
          containerPort: {{ $v.multiNode.distInitPort }}
          protocol: TCP
        {{- end }}
      env:
        {{- include "kthybrid.serverEnv" . | nindent 8 }}
      resources:
        {{- include "kthybrid.serverResources" $root | nindent 8 }}
      securityContext:
        {{- include "kthybrid.containerSecurityContext" $v.capabilities | nindent 8 }}
      {{- /* The port stays closed while the weights load; the startupProbe covers the whole deadline. */}}
      startupProbe:
        httpGet:
          path: /health
          port: http
        periodSeconds: {{ $v.startup.periodSeconds }}
        timeoutSeconds: 5
        failureThreshold: {{ include "kthybrid.startupFailureThreshold" $root }}
      readinessProbe:
        httpGet:
          path: {{ $v.readiness.path }}
          port: http
        periodSeconds: {{ $v.readiness.periodSeconds }}
        timeoutSeconds: {{ $v.readiness.timeoutSeconds }}
        failureThreshold: {{ $v.readiness.failureThreshold }}
      livenessProbe:
        httpGet:
          path: /health
          port: http
        periodSeconds: {{ $v.liveness.periodSeconds }}
        timeoutSeconds: {{ $v.liveness.timeoutSeconds }}
        failureThreshold: {{ $v.liveness.failureThreshold }}
      volumeMounts:
        - name: models
          mountPath: /models
        - name: cache
          mountPath: /cache
        - name: shm
          mountPath: /dev/shm
        {{- if $v.hugepages.enabled }}
        - name: hugepages
          mountPath: {{ $v.hugepages.mountPath }}
        {{- end }}
  volumes:
    {{- include "kthybrid.volumes" $root | nindent 4 }}
{{- end }}

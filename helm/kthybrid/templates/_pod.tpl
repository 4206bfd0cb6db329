{{/* The server pod template, shared by the Deployment and the LeaderWorkerSet's leader and worker templates. */}}

{{/* Every container: read-only root filesystem, no privilege, capabilities dropped (the argument lists the ones added back). */}}
{{- define "kthybrid.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
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

{{/*
The launcher options the chart passes through. Each is set only when its value is set:
unset and null mean "the launcher's default", and the variable is then left out.
*/}}
{{- define "kthybrid.launcherOptionsEnv" -}}
{{- $v := .Values }}
{{- $integers := list
  (list "KTHYBRID_CONTEXT_LENGTH" $v.server.contextLength)
  (list "KTHYBRID_TP_SIZE" $v.server.tpSize)
  (list "KTHYBRID_KT_CPUINFER" $v.kt.cpuinfer)
  (list "KTHYBRID_KT_NUM_GPU_EXPERTS" $v.kt.numGpuExperts) }}
{{- range $integers }}
{{- if include "kthybrid.isSet" (index . 1) }}
- name: {{ index . 0 }}
  value: {{ index . 1 | int64 | toString | quote }}
{{- end }}
{{- end }}
{{- $others := list
  (list "KTHYBRID_MEM_FRACTION_STATIC" $v.server.memFractionStatic)
  (list "KTHYBRID_MTP" $v.server.mtp)
  (list "KTHYBRID_TRUST_REMOTE_CODE" $v.server.trustRemoteCode)
  (list "KTHYBRID_KT_WEIGHT_PATH" $v.kt.weightPath)
  (list "KTHYBRID_KT_METHOD" $v.kt.method)
  (list "KTHYBRID_NUMA_POLICY" $v.kt.numaPolicy) }}
{{- range $others }}
{{- if include "kthybrid.isSet" (index . 1) }}
- name: {{ index . 0 }}
  value: {{ index . 1 | toString | quote }}
{{- end }}
{{- end }}
{{- with $v.server.extraArgs }}
{{- /* A JSON array: arguments with spaces or quotes arrive as they were written. */}}
- name: KTHYBRID_EXTRA_ARGS
  value: {{ toJson . | quote }}
{{- end }}
{{- end }}

{{- define "kthybrid.serverEnv" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
- name: KTHYBRID_MODEL
  value: {{ $v.server.model | quote }}
{{- /* The probes and the Service reach the pod's address on server.port. */}}
- name: KTHYBRID_HOST
  value: "0.0.0.0"
- name: KTHYBRID_PORT
  value: {{ int64 $v.server.port | toString | quote }}
- name: KTHYBRID_HUGEPAGES
  value: {{ $v.hugepages.enabled | toString | quote }}
{{- include "kthybrid.launcherOptionsEnv" $root }}
{{- /* Metrics, request logs, tracing (issue 18); the launcher turns them into sglang's flags. */}}
- name: KTHYBRID_ENABLE_METRICS
  value: {{ $v.metrics.enabled | toString | quote }}
- name: KTHYBRID_LOG_REQUESTS
  value: {{ $v.metrics.requestLogs | toString | quote }}
{{- with $v.metrics.otlpTracesEndpoint }}
- name: KTHYBRID_OTLP_TRACES_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if $v.apiKey.enabled }}
- name: KTHYBRID_API_KEY_FILE
  value: {{ include "kthybrid.apiKeyFile" $root | quote }}
{{- end }}
{{- if $v.multiNode.enabled }}
- name: KTHYBRID_NNODES
  value: {{ int64 $v.multiNode.size | toString | quote }}
- name: KTHYBRID_NODE_RANK
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']
{{- /* LWS_LEADER_ADDRESS is injected by the LWS webhook ahead of these variables, so $(...) expands. */}}
- name: KTHYBRID_DIST_INIT_ADDR
  value: {{ printf "$(LWS_LEADER_ADDRESS):%d" (int64 $v.multiNode.distInitPort) | quote }}
{{- end }}
{{- /* The server never reaches the Hub: the init container downloaded the model. */}}
- name: HF_HUB_OFFLINE
  value: "1"
{{- with $v.server.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Writable places on a read-only root filesystem: /tmp and HOME (emptyDirs), /cache. */}}
{{- define "kthybrid.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ include "kthybrid.homeDir" . | quote }}
- name: cache
  mountPath: /cache
{{- end }}

{{/* Init container: downloads the model unless its completion marker exists. */}}
{{- define "kthybrid.downloadContainer" -}}
{{- $v := .Values -}}
- name: download-model
  image: {{ include "kthybrid.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy | quote }}
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
    {{- if $v.hfToken.secretName }}
    {{- /* A file, not an environment variable: the token stays out of the pod spec's env and /proc/<pid>/environ. */}}
    - name: HF_TOKEN_PATH
      value: /run/secrets/huggingface/token
    {{- end }}
  resources:
    {{- include "kthybrid.guaranteedResources" (dict "cpu" (int64 $v.models.download.cpu | toString) "memory" (printf "%dGi" (int64 $v.models.download.memoryGi))) | nindent 4 }}
  securityContext:
    {{- include "kthybrid.containerSecurityContext" dict | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: /models
    {{- include "kthybrid.scratchMounts" . | nindent 4 }}
    {{- if $v.hfToken.secretName }}
    - name: hf-token
      mountPath: /run/secrets/huggingface
      readOnly: true
    {{- end }}
{{- end }}

{{/* Init container: waits until the conversion Job has written its marker. */}}
{{- define "kthybrid.waitForConversionContainer" -}}
- name: wait-for-conversion
  image: {{ include "kthybrid.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy | quote }}
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
      readOnly: true
{{- end }}

{{- define "kthybrid.serverResources" -}}
{{- $v := .Values }}
{{- $r := dict "cpu" (int64 $v.resources.cpu | toString) "memory" (printf "%sGi" (include "kthybrid.memoryLimitGi" .)) }}
{{- if gt (int64 $v.resources.gpus) 0 }}
{{- $_ := set $r "nvidia.com/gpu" (int64 $v.resources.gpus | toString) }}
{{- end }}
{{- if $v.hugepages.enabled }}
{{- $_ := set $r (printf "hugepages-%s" $v.hugepages.size) (printf "%dGi" (int64 $v.hostMemory.hugepagesGi)) }}
{{- end }}
{{- if gt (int64 $v.resources.ephemeralStorageGi) 0 }}
{{- $_ := set $r "ephemeral-storage" (printf "%dGi" (int64 $v.resources.ephemeralStorageGi)) }}
{{- end }}
{{- include "kthybrid.guaranteedResources" $r }}
{{- end }}

{{/*
Volumes. Arguments: root, and server (true for the server pod: /dev/shm, hugepages, the API key).
*/}}
{{- define "kthybrid.volumes" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
- name: models
{{- if eq $v.models.source "hostPath" }}
  hostPath:
    path: {{ $v.models.hostPath.path | quote }}
    type: {{ $v.models.hostPath.type | quote }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "kthybrid.modelsClaimName" $root | quote }}
{{- end }}
- name: cache
{{- if eq $v.cache.source "hostPath" }}
  hostPath:
    path: {{ $v.cache.hostPath.path | quote }}
    type: DirectoryOrCreate
{{- else if eq $v.cache.source "emptyDir" }}
  emptyDir: {}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ include "kthybrid.cacheClaimName" $root | quote }}
{{- end }}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- if and $v.models.download.enabled $v.hfToken.secretName }}
- name: hf-token
  secret:
    secretName: {{ $v.hfToken.secretName | quote }}
    defaultMode: {{ 0440 }}
    items:
      - key: {{ $v.hfToken.secretKey | quote }}
        path: token
{{- end }}
{{- if .server }}
{{- /* Memory-backed: counted against the memory limit, which is why hostMemory.shmGi is in the budget. */}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ printf "%dGi" (int64 $v.hostMemory.shmGi) | quote }}
{{- if $v.hugepages.enabled }}
- name: hugepages
  emptyDir:
    medium: {{ printf "HugePages-%s" $v.hugepages.size | quote }}
{{- end }}
{{- if $v.apiKey.enabled }}
- name: api-key
  secret:
    secretName: {{ include "kthybrid.apiKeySecretName" $root | quote }}
    {{- /* Readable by fsGroup only; the key never appears in the pod spec or the environment. */}}
    defaultMode: {{ 0440 }}
    items:
      - key: {{ $v.apiKey.secretKey | quote }}
        path: api-key
{{- end }}
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

{{/* Scheduling fields shared by the server pods and the conversion Job. */}}
{{- define "kthybrid.scheduling" -}}
{{- $v := .Values }}
{{- with $v.runtimeClassName }}
runtimeClassName: {{ . | quote }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.affinity }}
affinity:
  {{- toYaml $v.affinity | nindent 2 }}
{{- else if $v.gpuNodeAffinity.enabled }}
affinity:
  {{- include "kthybrid.gpuNodeAffinity" . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Init container (tune.enabled): `kthybrid-serve tune` with the server's options, resources and
volumes, so the record it stores in /cache matches the plan the server makes next.
*/}}
{{- define "kthybrid.tuneContainer" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
- name: tune
  image: {{ include "kthybrid.image" $root | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy | quote }}
  args: ["tune"]
  env:
    {{- include "kthybrid.serverEnv" . | nindent 4 }}
  resources:
    {{- include "kthybrid.serverResources" $root | nindent 4 }}
  securityContext:
    {{- include "kthybrid.containerSecurityContext" $v.capabilities | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: /models
      readOnly: true
    {{- include "kthybrid.scratchMounts" $root | nindent 4 }}
    - name: shm
      mountPath: /dev/shm
{{- end }}

{{/*
Pod template. Arguments: root (the chart context) and role: server (Deployment),
leader or worker (LeaderWorkerSet). Workers (sglang node rank > 0) answer /health
and /health_generate on the same port once loaded, so every role gets the same probes.
*/}}
{{- define "kthybrid.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "kthybrid.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role | quote }}
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
  priorityClassName: {{ . | quote }}
  {{- end }}
  securityContext:
    {{- include "kthybrid.podSecurityContext" $root | nindent 4 }}
  {{- with include "kthybrid.scheduling" $root | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- if or $v.models.download.enabled $v.convert.enabled $v.tune.enabled }}
  initContainers:
    {{- if $v.models.download.enabled }}
    {{- include "kthybrid.downloadContainer" $root | nindent 4 }}
    {{- end }}
    {{- if $v.convert.enabled }}
    {{- include "kthybrid.waitForConversionContainer" $root | nindent 4 }}
    {{- end }}
    {{- if $v.tune.enabled }}
    {{- include "kthybrid.tuneContainer" . | nindent 4 }}
    {{- end }}
  {{- end }}
  containers:
    - name: server
      image: {{ include "kthybrid.image" $root | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy | quote }}
      args:
        {{- toYaml $v.server.args | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ int64 $v.server.port }}
          protocol: TCP
        {{- if eq .role "leader" }}
        - name: dist-init
          containerPort: {{ int64 $v.multiNode.distInitPort }}
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
        periodSeconds: {{ int64 $v.startup.periodSeconds }}
        timeoutSeconds: 5
        failureThreshold: {{ include "kthybrid.startupFailureThreshold" $root }}
      readinessProbe:
        httpGet:
          path: {{ $v.readiness.path | quote }}
          port: http
        periodSeconds: {{ int64 $v.readiness.periodSeconds }}
        timeoutSeconds: {{ int64 $v.readiness.timeoutSeconds }}
        failureThreshold: {{ int64 $v.readiness.failureThreshold }}
      livenessProbe:
        httpGet:
          path: /health
          port: http
        periodSeconds: {{ int64 $v.liveness.periodSeconds }}
        timeoutSeconds: {{ int64 $v.liveness.timeoutSeconds }}
        failureThreshold: {{ int64 $v.liveness.failureThreshold }}
      volumeMounts:
        - name: models
          mountPath: /models
        {{- include "kthybrid.scratchMounts" $root | nindent 8 }}
        - name: shm
          mountPath: /dev/shm
        {{- if $v.hugepages.enabled }}
        - name: hugepages
          mountPath: {{ $v.hugepages.mountPath | quote }}
        {{- end }}
        {{- if $v.apiKey.enabled }}
        - name: api-key
          mountPath: {{ include "kthybrid.apiKeyDir" $root | quote }}
          readOnly: true
        {{- end }}
  volumes:
    {{- include "kthybrid.volumes" (dict "root" $root "server" true) | nindent 4 }}
{{- end }}

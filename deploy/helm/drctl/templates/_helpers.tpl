{{/*
The chart renders the objects `drctl generate kubernetes` renders (src/generate/kubernetes.rs),
from the values `drctl generate helm-values` derives from drctl.toml; tests/helm_chart.rs holds
the two equal. Change one, change the other.
*/}}

{{/* A name usable in object names: lowercase, `-` for anything else, at most 40 characters. */}}
{{- define "drctl.dns" -}}
{{- regexReplaceAll "[^a-z0-9]" (lower .) "-" | trimAll "-" | trunc 40 -}}
{{- end -}}

{{/* Labels of every object: generate's, plus Helm's own. */}}
{{- define "drctl.labels" -}}
app.kubernetes.io/name: drctl
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "drctl.image" -}}
{{- if .Values.image.tag -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- else -}}
{{ .Values.image.repository }}
{{- end -}}
{{- end -}}

{{/*
A PersistentVolumeClaim, kept when the release is uninstalled (the backups must not go with it).
Context: dict root name size storageClass mode.
*/}}
{{- define "drctl.claim" -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "drctl.labels" .root | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes: [{{ .mode }}]
  resources:
    requests:
      storage: {{ .size }}
  {{- with .storageClass }}
  storageClassName: {{ . }}
  {{- end }}
{{- end -}}

{{/*
Volumes and mounts of one workload as JSON: config, tmp, the catalog (its own claim or node
directory), the fs targets it writes, its secret files, the age identity if asked, the host paths
it reads (read-only). Context: dict root workload targets secrets identity hostPaths.
Result: {"volumes": [...], "mounts": [...], "claim": name or "", "pinned": bool}.
*/}}
{{- define "drctl.storage" -}}
{{- $v := .root.Values -}}
{{- $items := list (dict "key" "drctl.toml" "path" "drctl.toml") -}}
{{- range $file, $_ := $v.config.jobs -}}
{{- $items = append $items (dict "key" (printf "job-%s" $file) "path" (printf "jobs/%s" $file)) -}}
{{- end -}}
{{- $volumes := list (dict "name" "config" "configMap" (dict "name" "drctl-config" "items" $items)) (dict "name" "tmp" "emptyDir" dict) -}}
{{- $mounts := list (dict "name" "config" "mountPath" "/etc/drctl" "readOnly" true) (dict "name" "tmp" "mountPath" "/tmp") -}}
{{- $claim := "" -}}
{{- $pinned := false -}}
{{- with $v.persistence.catalog -}}
{{- if .hostPath -}}
{{- $pinned = true -}}
{{- $volumes = append $volumes (dict "name" "catalog" "hostPath" (dict "path" (printf "%s/%s" .hostPath $.workload) "type" "Directory")) -}}
{{- else -}}
{{- $claim = printf "drctl-catalog-%s" $.workload -}}
{{- $volumes = append $volumes (dict "name" "catalog" "persistentVolumeClaim" (dict "claimName" $claim)) -}}
{{- end -}}
{{- $mounts = append $mounts (dict "name" "catalog" "mountPath" .mountPath) -}}
{{- if ne .mountPath "/var/lib/drctl" -}}
{{- $volumes = append $volumes (dict "name" "state" "emptyDir" dict) -}}
{{- $mounts = append $mounts (dict "name" "state" "mountPath" "/var/lib/drctl") -}}
{{- end -}}
{{- else -}}
{{- $volumes = append $volumes (dict "name" "state" "emptyDir" dict) -}}
{{- $mounts = append $mounts (dict "name" "state" "mountPath" "/var/lib/drctl") -}}
{{- end -}}
{{- range $name := .targets -}}
{{- with index $v.persistence.targets $name -}}
{{- $vol := printf "target-%s" (include "drctl.dns" $name) -}}
{{- if .hostPath -}}
{{- $pinned = true -}}
{{- $volumes = append $volumes (dict "name" $vol "hostPath" (dict "path" .hostPath "type" "Directory")) -}}
{{- else -}}
{{- $volumes = append $volumes (dict "name" $vol "persistentVolumeClaim" (dict "claimName" (printf "drctl-target-%s" (include "drctl.dns" $name)))) -}}
{{- end -}}
{{- $mounts = append $mounts (dict "name" $vol "mountPath" .mountPath) -}}
{{- end -}}
{{- end -}}
{{- if .secrets -}}
{{- $sitems := list -}}
{{- range .secrets -}}
{{- $sitems = append $sitems (dict "key" .key "path" .key) -}}
{{- end -}}
{{- $volumes = append $volumes (dict "name" "secrets" "secret" (dict "secretName" $v.secrets.existingSecret "items" $sitems "defaultMode" 288)) -}}
{{- range .secrets -}}
{{- $mounts = append $mounts (dict "name" "secrets" "mountPath" .path "subPath" .key "readOnly" true) -}}
{{- end -}}
{{- end -}}
{{- if and .identity $v.identity.path -}}
{{- $volumes = append $volumes (dict "name" "age-identity" "secret" (dict "secretName" $v.identity.existingSecret "defaultMode" 288)) -}}
{{- $mounts = append $mounts (dict "name" "age-identity" "mountPath" $v.identity.path "subPath" "age.key" "readOnly" true) -}}
{{- end -}}
{{- range $i, $path := .hostPaths -}}
{{- $vol := ternary "source" (printf "source-%d" $i) (eq $i 0) -}}
{{- $volumes = append $volumes (dict "name" $vol "hostPath" (dict "path" $path "type" "Directory")) -}}
{{- $mounts = append $mounts (dict "name" $vol "mountPath" $path "readOnly" true) -}}
{{- end -}}
{{- toJson (dict "volumes" $volumes "mounts" $mounts "claim" $claim "pinned" $pinned) -}}
{{- end -}}

{{/* The drctl container. Context: dict root args mounts. */}}
{{- define "drctl.container" -}}
{{- $args := concat (list "--config" "/etc/drctl/drctl.toml") .args -}}
{{- $c := dict "name" "drctl" "image" (include "drctl.image" .root) "args" $args -}}
{{- $_ := set $c "env" (list (dict "name" "HOME" "value" "/tmp") (dict "name" "DRCTL_STATE_DIR" "value" "/var/lib/drctl")) -}}
{{- $_ := set $c "resources" .root.Values.resources -}}
{{- $_ := set $c "securityContext" (dict "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "runAsNonRoot" true "capabilities" (dict "drop" (list "ALL"))) -}}
{{- $_ := set $c "volumeMounts" .mounts -}}
{{- with .root.Values.image.pullPolicy -}}
{{- $_ := set $c "imagePullPolicy" . -}}
{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/* Pod settings every workload shares: security context, placement. Context: dict root pod pinned. */}}
{{- define "drctl.pod" -}}
{{- $pod := .pod -}}
{{- $_ := set $pod "securityContext" (dict "runAsNonRoot" true "runAsUser" 65532 "runAsGroup" 65532 "fsGroup" 65532 "seccompProfile" (dict "type" "RuntimeDefault")) -}}
{{- $selector := deepCopy (.root.Values.nodeSelector | default dict) -}}
{{- if .pinned -}}
{{- $_ := set $selector "drctl.storage" "true" -}}
{{- end -}}
{{- if $selector -}}
{{- $_ := set $pod "nodeSelector" $selector -}}
{{- end -}}
{{- with .root.Values.tolerations -}}
{{- $_ := set $pod "tolerations" . -}}
{{- end -}}
{{- with .root.Values.affinity -}}
{{- $_ := set $pod "affinity" . -}}
{{- end -}}
{{- with .root.Values.imagePullSecrets -}}
{{- $_ := set $pod "imagePullSecrets" . -}}
{{- end -}}
{{- toJson $pod -}}
{{- end -}}

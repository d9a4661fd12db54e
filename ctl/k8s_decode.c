/* ketchctl k8s: typed decoding of the Kubernetes objects kube-apiserver
 * stores as protobuf ("k8s\0" + runtime.Unknown, whose raw is the object),
 * driven by the protobuf-c descriptors of proto/k8s/k8s.proto; JSON and YAML
 * output as kubectl prints them; and the inverse (JSON -> protobuf) that the
 * fixture generator uses.
 *
 * Presence: Kubernetes' gogo-protobuf code writes every non-pointer field,
 * zero or not, and pointer fields only when set; its JSON tags mostly carry
 * omitempty. So a scalar field is shown when it is present and non-zero, or
 * when it is in keep[] (required fields without omitempty, and pointer
 * fields, whose zero is meaningful). A present message is always shown (an
 * empty one as {}; a zero Time as null, as Go's metav1.Time does). */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "k8s.h"
#include "k8s/k8s.pb-c.h"
#include "util/endian.h"

static const struct {
    const char *group, *kind; /* group without version; "" = core */
    const ProtobufCMessageDescriptor *d;
} kinds[] = {
    {"", "Pod", &k8s__pod__descriptor},
    {"", "Secret", &k8s__secret__descriptor},
    {"", "ConfigMap", &k8s__config_map__descriptor},
    {"", "Namespace", &k8s__namespace__descriptor},
    {"", "Node", &k8s__node__descriptor},
    {"", "Service", &k8s__service__descriptor},
    {"", "Endpoints", &k8s__endpoints__descriptor},
    {"", "ServiceAccount", &k8s__service_account__descriptor},
    {"", "Event", &k8s__event__descriptor},
    {"", "RangeAllocation", &k8s__range_allocation__descriptor},
    {"", "PersistentVolumeClaim", &k8s__persistent_volume_claim__descriptor},
    {"apps", "Deployment", &k8s__deployment__descriptor},
    {"apps", "ReplicaSet", &k8s__replica_set__descriptor},
    {"apps", "DaemonSet", &k8s__daemon_set__descriptor},
    {"apps", "StatefulSet", &k8s__stateful_set__descriptor},
    {"apps", "ControllerRevision", &k8s__controller_revision__descriptor},
    {"rbac.authorization.k8s.io", "Role", &k8s__role__descriptor},
    {"rbac.authorization.k8s.io", "ClusterRole", &k8s__cluster_role__descriptor},
    {"rbac.authorization.k8s.io", "RoleBinding", &k8s__role_binding__descriptor},
    {"rbac.authorization.k8s.io", "ClusterRoleBinding", &k8s__cluster_role_binding__descriptor},
    {"coordination.k8s.io", "Lease", &k8s__lease__descriptor},
    {"batch", "Job", &k8s__job__descriptor},
    {"batch", "CronJob", &k8s__cron_job__descriptor},
    {"scheduling.k8s.io", "PriorityClass", &k8s__priority_class__descriptor},
    {"discovery.k8s.io", "EndpointSlice", &k8s__endpoint_slice__descriptor},
    {"storage.k8s.io", "StorageClass", &k8s__storage_class__descriptor},
};

/* Scalars shown even when zero: "Message.field" (required fields without
 * omitempty, and pointer fields). */
static const char *const keep[] = {
    "Container.name", "ContainerPort.containerPort", "EnvVar.name", "VolumeMount.name",
    "VolumeMount.mountPath", "Volume.name", "KeyToPath.key", "KeyToPath.path", "KeyToPath.mode",
    "ServicePort.port", "EndpointPort.port", "EndpointAddress.ip", "Condition.type",
    "Condition.status", "Condition.reason", "Condition.message", "PodCondition.type",
    "PodCondition.status", "NodeCondition.type", "NodeCondition.status",
    "NamespaceCondition.type", "NamespaceCondition.status", "DeploymentCondition.type",
    "DeploymentCondition.status", "ReplicaSetCondition.type", "ReplicaSetCondition.status",
    "DaemonSetCondition.type", "DaemonSetCondition.status", "StatefulSetCondition.type",
    "StatefulSetCondition.status", "ContainerStatus.name", "ContainerStatus.ready",
    "ContainerStatus.restartCount", "ContainerStatus.image", "ContainerStatus.imageID",
    "ContainerStatus.started", "ContainerStateTerminated.exitCode", "NodeAddress.type",
    "NodeAddress.address", "NodeSystemInfo.machineID", "NodeSystemInfo.systemUUID",
    "NodeSystemInfo.bootID", "NodeSystemInfo.kernelVersion", "NodeSystemInfo.osImage",
    "NodeSystemInfo.containerRuntimeVersion", "NodeSystemInfo.kubeletVersion",
    "NodeSystemInfo.kubeProxyVersion", "NodeSystemInfo.operatingSystem",
    "NodeSystemInfo.architecture", "DaemonEndpoint.Port", "Taint.key", "Taint.effect",
    "PolicyRule.verbs", "Subject.kind", "Subject.name", "RoleRef.apiGroup", "RoleRef.kind",
    "RoleRef.name", "OwnerReference.apiVersion", "OwnerReference.kind", "OwnerReference.name",
    "OwnerReference.uid", "OwnerReference.controller", "OwnerReference.blockOwnerDeletion",
    "LabelSelectorRequirement.key", "LabelSelectorRequirement.operator",
    "NodeSelectorRequirement.key", "NodeSelectorRequirement.operator",
    "PodAffinityTerm.topologyKey", "TopologySpreadConstraint.maxSkew",
    "TopologySpreadConstraint.topologyKey", "TopologySpreadConstraint.whenUnsatisfiable",
    "ControllerRevision.revision", "Event.reportingComponent", "Event.reportingInstance",
    "DeploymentSpec.replicas", "DeploymentSpec.revisionHistoryLimit",
    "DeploymentSpec.progressDeadlineSeconds", "ReplicaSetSpec.replicas",
    "ReplicaSetStatus.replicas", "StatefulSetSpec.replicas", "StatefulSetSpec.revisionHistoryLimit",
    "StatefulSetStatus.replicas", "DaemonSetSpec.revisionHistoryLimit",
    "DaemonSetStatus.currentNumberScheduled", "DaemonSetStatus.numberMisscheduled",
    "DaemonSetStatus.desiredNumberScheduled", "DaemonSetStatus.numberReady",
    "RollingUpdateStatefulSetStrategy.partition", "PodSpec.terminationGracePeriodSeconds",
    "PodSpec.activeDeadlineSeconds", "PodSpec.automountServiceAccountToken", "PodSpec.priority",
    "PodSpec.enableServiceLinks", "PodSpec.shareProcessNamespace", "PodSpec.setHostnameAsFQDN",
    "ServiceAccount.automountServiceAccountToken", "Secret.immutable", "ConfigMap.immutable",
    "SecurityContext.privileged", "SecurityContext.runAsUser", "SecurityContext.runAsGroup",
    "SecurityContext.runAsNonRoot", "SecurityContext.readOnlyRootFilesystem",
    "SecurityContext.allowPrivilegeEscalation", "PodSecurityContext.runAsUser",
    "PodSecurityContext.runAsGroup", "PodSecurityContext.runAsNonRoot", "PodSecurityContext.fsGroup",
    "ObjectMeta.deletionGracePeriodSeconds", "Toleration.tolerationSeconds",
    "LeaseSpec.holderIdentity", "LeaseSpec.leaseDurationSeconds", "LeaseSpec.leaseTransitions",
    "SecretVolumeSource.defaultMode", "SecretVolumeSource.optional",
    "ConfigMapVolumeSource.defaultMode", "ConfigMapVolumeSource.optional",
    "ProjectedVolumeSource.defaultMode", "ServiceSpec.allocateLoadBalancerNodePorts",
    "ServiceAccountTokenProjection.expirationSeconds", "ServiceAccountTokenProjection.path",
    "ClientIPConfig.timeoutSeconds", "ConfigMapKeySelector.key", "SecretKeySelector.key",
    "ObjectFieldSelector.fieldPath", "ResourceFieldSelector.resource", "HostPathVolumeSource.path",
    "Event.count", "JobCondition.type", "JobCondition.status", "JobSpec.parallelism",
    "JobSpec.completions", "JobSpec.activeDeadlineSeconds", "JobSpec.backoffLimit",
    "JobSpec.ttlSecondsAfterFinished", "JobSpec.manualSelector", "JobSpec.suspend",
    "JobStatus.ready", "JobStatus.terminating", "CronJobSpec.schedule",
    "CronJobSpec.startingDeadlineSeconds", "CronJobSpec.suspend",
    "CronJobSpec.successfulJobsHistoryLimit", "CronJobSpec.failedJobsHistoryLimit",
    "PriorityClass.value", "EndpointConditions.ready", "EndpointConditions.serving",
    "EndpointConditions.terminating", "SliceEndpointPort.name", "SliceEndpointPort.protocol",
    "SliceEndpointPort.port", "EndpointSlice.addressType", "StorageClass.provisioner",
    "StorageClass.reclaimPolicy", "StorageClass.allowVolumeExpansion",
    "StorageClass.volumeBindingMode",
};

/* Where the Go struct order (which kubectl's JSON follows) differs from
 * the field-number order of the descriptors: the JSON keys in Go order. */
static const struct {
    const char *msg, *keys;
} go_order[] = {
    {"Container", "name image command args workingDir ports envFrom env resources volumeMounts "
                  "volumeDevices livenessProbe readinessProbe startupProbe lifecycle "
                  "terminationMessagePath terminationMessagePolicy imagePullPolicy securityContext "
                  "stdin stdinOnce tty"},
    {"PodSpec", "volumes initContainers containers ephemeralContainers restartPolicy "
                "terminationGracePeriodSeconds activeDeadlineSeconds dnsPolicy nodeSelector "
                "serviceAccountName serviceAccount automountServiceAccountToken nodeName hostNetwork "
                "hostPID hostIPC shareProcessNamespace securityContext imagePullSecrets hostname "
                "subdomain affinity schedulerName tolerations hostAliases priorityClassName priority "
                "dnsConfig readinessGates runtimeClassName enableServiceLinks preemptionPolicy overhead "
                "topologySpreadConstraints setHostnameAsFQDN"},
    {"PodStatus", "phase conditions message reason nominatedNodeName hostIP podIP podIPs startTime "
                  "initContainerStatuses containerStatuses qosClass"},
    {"Secret", "metadata immutable data stringData type"},
    {"ConfigMap", "metadata immutable data binaryData"},
    {"ServiceSpec", "ports selector clusterIP clusterIPs type externalIPs sessionAffinity "
                    "loadBalancerIP loadBalancerSourceRanges externalName externalTrafficPolicy "
                    "healthCheckNodePort publishNotReadyAddresses sessionAffinityConfig ipFamilies "
                    "ipFamilyPolicy allocateLoadBalancerNodePorts loadBalancerClass internalTrafficPolicy"},
    {"ServicePort", "name protocol appProtocol port targetPort nodePort"},
    {"EndpointAddress", "ip hostname nodeName targetRef"},
    {"NodeSpec", "podCIDR podCIDRs providerID unschedulable taints externalID"},
    {"DeploymentStatus", "observedGeneration replicas updatedReplicas readyReplicas availableReplicas "
                         "unavailableReplicas conditions collisionCount"},
    {"DeploymentCondition", "type status lastUpdateTime lastTransitionTime reason message"},
    {"ReplicaSetSpec", "replicas minReadySeconds selector template"},
    {"ReplicaSetStatus", "replicas fullyLabeledReplicas readyReplicas availableReplicas "
                         "observedGeneration conditions"},
    {"PodSecurityContext", "seLinuxOptions runAsUser runAsGroup runAsNonRoot supplementalGroups "
                           "fsGroup sysctls fsGroupChangePolicy seccompProfile"},
    {"SecurityContext", "capabilities privileged seLinuxOptions runAsUser runAsGroup runAsNonRoot "
                        "readOnlyRootFilesystem allowPrivilegeEscalation procMount seccompProfile"},
    {"PersistentVolumeClaimSpec", "accessModes selector resources volumeName storageClassName "
                                  "volumeMode dataSource"},
    {"OwnerReference", "apiVersion kind name uid controller blockOwnerDeletion"},
    {"JobSpec", "parallelism completions activeDeadlineSeconds backoffLimit backoffLimitPerIndex "
                "maxFailedIndexes selector manualSelector template ttlSecondsAfterFinished "
                "completionMode suspend podReplacementPolicy managedBy"},
    {"JobStatus", "conditions startTime completionTime active succeeded failed terminating "
                  "completedIndexes failedIndexes uncountedTerminatedPods ready"},
    {"EndpointSlice", "metadata addressType endpoints ports"},
    {"CronJobSpec", "schedule timeZone startingDeadlineSeconds concurrencyPolicy suspend jobTemplate "
                    "successfulJobsHistoryLimit failedJobsHistoryLimit"},
};

/* o's keys in Go struct order (keys not listed keep their place after). */
static json_t *reorder(const ProtobufCMessageDescriptor *d, json_t *o)
{
    const char *keys = NULL;
    for (size_t i = 0; i < sizeof go_order / sizeof go_order[0] && !keys; i++)
        if (!strcmp(go_order[i].msg, d->short_name))
            keys = go_order[i].keys;
    if (!keys)
        return o;
    json_t *r = json_object();
    for (const char *p = keys; *p;) {
        const char *e = strchr(p, ' ');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char k[64];
        snprintf(k, sizeof k, "%.*s", (int)n, p);
        json_t *v = json_object_get(o, k);
        if (v)
            json_object_set(r, k, v);
        p += n;
        while (*p == ' ')
            p++;
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) if (!json_object_get(r, k)) json_object_set(r, k, v);
    json_decref(o);
    return r;
}

/* Fields of a known kind that our schema lacks (newer Kubernetes): shown
 * as a warning on stderr, since kubectl's JSON has no place for them. */
static char unknown_paths[1024];
static size_t n_unknown;

static void note_unknown(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        n_unknown++;
        size_t l = strlen(unknown_paths);
        if (l < sizeof unknown_paths - 80)
            snprintf(unknown_paths + l, sizeof unknown_paths - l, "%s%s.%u", l ? ", " : "",
                     m->descriptor->short_name, m->unknown_fields[i].tag);
    }
}

/* Embedded Go structs whose fields JSON shows in the parent. */
static bool is_inline(const char *field)
{
    return !strcmp(field, "handler") || !strcmp(field, "localObjectReference") ||
           !strcmp(field, "volumeSource");
}

static bool keep_zero(const ProtobufCMessageDescriptor *d, const char *field)
{
    char k[160];
    snprintf(k, sizeof k, "%s.%s", d->short_name, field);
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (!strcmp(keep[i], k))
            return true;
    return false;
}

static const ProtobufCMessageDescriptor *kind_desc(const char *api, const char *kind)
{
    char group[256] = "";
    const char *slash = strrchr(api, '/');
    if (slash)
        snprintf(group, sizeof group, "%.*s", (int)(slash - api), api);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(kinds[i].kind, kind) && !strcmp(kinds[i].group, group))
            return kinds[i].d;
    return NULL;
}

bool k8s_kind_known(const char *api, const char *kind)
{
    return kind_desc(api, kind) != NULL;
}

/* ---- protobuf -> JSON ---- */

static json_t *fmt_time(int64_t s, int32_t nanos, bool micro)
{
    if (s == 0 && nanos == 0)
        return json_null();
    time_t t = (time_t)s;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return json_integer(s);
    char b[64];
    size_t l = strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    if (micro)
        snprintf(b + l, sizeof b - l, ".%06dZ", (int)(nanos / 1000));
    else
        snprintf(b + l, sizeof b - l, "Z");
    return json_string(b);
}

static json_t *b64(const uint8_t *p, size_t n)
{
    struct buf b = {0};
    out_base64(&b, p, n);
    json_t *s = json_stringn(b.p ? b.p : "", b.len);
    buf_free(&b);
    return s;
}

static json_t *str_json(const char *s)
{
    json_t *j = json_string(s);
    if (!j) { /* not UTF-8: show it as Go would, with U+FFFD */
        struct buf b = {0};
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
            if (*p < 0x80)
                buf_put(&b, p, 1);
            else
                buf_puts(&b, "\xef\xbf\xbd");
        j = json_stringn(b.p ? b.p : "", b.len);
        buf_free(&b);
    }
    return j;
}

static json_t *msg_json(const ProtobufCMessage *m);

static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
    return d->n_fields == 2 && !strcmp(d->fields[0].name, "key") &&
           !strcmp(d->fields[1].name, "value") && strstr(d->short_name, "Entry");
}

/* One value of field f at p (a pointer into the message or its array). */
static json_t *val_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_ENUM:
        return json_integer(*(const int *)p);
    case PROTOBUF_C_TYPE_STRING:
        return str_json(*(char *const *)p ? *(char *const *)p : "");
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        return b64(b->data, b->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return msg_json(*(ProtobufCMessage *const *)p);
    }
    return json_null();
}

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    default:
        return 4;
    }
}

/* Is field f of m present on the wire? */
static bool present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        return *(ProtobufCMessage *const *)(base + f->offset) != NULL;
    if (f->type == PROTOBUF_C_TYPE_STRING)
        return *(char *const *)(base + f->offset) != NULL;
    return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
}

static json_t *msg_json(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &k8s__time__descriptor || d == &k8s__micro_time__descriptor) {
        const K8s__Time *t = (const K8s__Time *)m; /* same layout as MicroTime */
        return fmt_time(t->seconds, t->nanos, d == &k8s__micro_time__descriptor);
    }
    if (d == &k8s__quantity__descriptor)
        return str_json(((const K8s__Quantity *)m)->string ? ((const K8s__Quantity *)m)->string : "");
    if (d == &k8s__int_or_string__descriptor) {
        const K8s__IntOrString *x = (const K8s__IntOrString *)m;
        if (x->type == 1)
            return str_json(x->strval ? x->strval : "");
        return json_integer(x->intval);
    }
    if (d == &k8s__raw_extension__descriptor || d == &k8s__fields_v1__descriptor) {
        const ProtobufCBinaryData *raw = d == &k8s__raw_extension__descriptor
                                             ? &((const K8s__RawExtension *)m)->raw
                                             : &((const K8s__FieldsV1 *)m)->raw;
        json_t *j = raw->len ? json_loadb((const char *)raw->data, raw->len, 0, NULL) : NULL;
        return j ? j : (raw->len ? b64(raw->data, raw->len) : json_null());
    }
    json_t *o = json_object();
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (!n)
                continue;
            const char *arr = *(char *const *)(base + f->offset);
            if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
                is_map_entry(((const ProtobufCMessageDescriptor *)f->descriptor))) {
                json_t *mo = json_object();
                for (size_t k = 0; k < n; k++) {
                    const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[k];
                    const ProtobufCMessageDescriptor *ed = e->descriptor;
                    const char *key = *(char *const *)((const char *)e + ed->fields[0].offset);
                    json_object_set_new(mo, key ? key : "",
                                        val_json(&ed->fields[1], (const char *)e + ed->fields[1].offset));
                }
                json_object_set_new(o, f->name, mo);
                continue;
            }
            json_t *a = json_array();
            for (size_t k = 0; k < n; k++)
                json_array_append_new(a, val_json(f, arr + k * elem_size(f)));
            json_object_set_new(o, f->name, a);
            continue;
        }
        if (!present(m, f))
            continue;
        const void *p = base + f->offset;
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_inline(f->name)) {
            json_t *in = msg_json(*(ProtobufCMessage *const *)p);
            json_object_update(o, in);
            json_decref(in);
            continue;
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE && pb_field_empty(f, p) && !keep_zero(d, f->name))
            continue;
        json_object_set_new(o, f->name, val_json(f, p));
    }
    note_unknown(m);
    return reorder(d, o);
}

/* ---- generic dump (unknown kinds) ---- */

static bool rdv(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int s = 0; s < 64 && *p < end; s += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

static bool pb_ok(const uint8_t *p, const uint8_t *end, int depth)
{
    if (p == end || depth > 20)
        return false;
    while (p < end) {
        uint64_t tag, v;
        if (!rdv(&p, end, &tag) || tag >> 3 == 0)
            return false;
        switch (tag & 7) {
        case 0: if (!rdv(&p, end, &v)) return false; break;
        case 1: if (end - p < 8) return false; p += 8; break;
        case 5: if (end - p < 4) return false; p += 4; break;
        case 2: if (!rdv(&p, end, &v) || v > (uint64_t)(end - p)) return false; p += v; break;
        default: return false;
        }
    }
    return true;
}

static json_t *generic(const uint8_t *p, const uint8_t *end, int depth)
{
    json_t *o = json_object();
    while (p < end) {
        uint64_t tag, v;
        if (!rdv(&p, end, &tag)) {
            json_object_set_new(o, "truncated", json_true());
            break;
        }
        char k[24];
        snprintf(k, sizeof k, "%" PRIu64, tag >> 3);
        json_t *val = NULL;
        switch (tag & 7) {
        case 0:
            if (!rdv(&p, end, &v)) {
                json_object_set_new(o, "truncated", json_true());
                return o;
            }
            val = json_integer((json_int_t)v);
            break;
        case 1: case 5: {
            size_t w = (tag & 7) == 1 ? 8 : 4;
            if ((size_t)(end - p) < w) {
                json_object_set_new(o, "truncated", json_true());
                return o;
            }
            uint64_t x = w == 8 ? get_le64(p) : get_le32(p);
            p += w;
            val = json_integer((json_int_t)x);
            break;
        }
        case 2: {
            if (!rdv(&p, end, &v) || v > (uint64_t)(end - p)) {
                json_object_set_new(o, "truncated", json_true());
                return o;
            }
            bool text = true;
            for (uint64_t i = 0; i < v; i++)
                if (p[i] < 0x20 && p[i] != '\n' && p[i] != '\t')
                    text = false;
            if (depth < 20 && pb_ok(p, p + v, 0) && !(text && v && isalnum(p[0])))
                val = generic(p, p + v, depth + 1);
            else if (text && (val = json_stringn((const char *)p, v)))
                ;
            else
                val = b64(p, v);
            p += v;
            break;
        }
        default:
            json_object_set_new(o, "badWireType", json_integer((json_int_t)(tag & 7)));
            return o;
        }
        json_t *old = json_object_get(o, k);
        if (!old) {
            json_object_set_new(o, k, val);
        } else if (json_is_array(old)) {
            json_array_append_new(old, val);
        } else {
            json_t *a = json_array();
            json_array_append(a, old);
            json_array_append_new(a, val);
            json_object_set_new(o, k, a);
        }
    }
    return o;
}

json_t *k8s_pb_to_json(const uint8_t *v, size_t n, char *why, size_t cap)
{
    if (n < 4 || memcmp(v, "k8s\0", 4)) {
        snprintf(why, cap, "not a Kubernetes protobuf value (no k8s\\0 magic)");
        return NULL;
    }
    K8s__Unknown *u = k8s__unknown__unpack(NULL, n - 4, v + 4);
    if (!u) {
        snprintf(why, cap, "truncated or malformed runtime.Unknown envelope");
        return NULL;
    }
    const char *api = u->typemeta && u->typemeta->apiversion ? u->typemeta->apiversion : "";
    const char *kind = u->typemeta && u->typemeta->kind ? u->typemeta->kind : "";
    const ProtobufCMessageDescriptor *d = kind_desc(api, kind);
    json_t *o = json_object();
    json_object_set_new(o, "apiVersion", str_json(api));
    json_object_set_new(o, "kind", str_json(kind));
    ProtobufCMessage *m = d ? protobuf_c_message_unpack(d, NULL, u->raw.len, u->raw.data) : NULL;
    if (d && !m && u->raw.len && pb_ok(u->raw.data, u->raw.data + u->raw.len, 0)) {
        /* well-formed protobuf that does not fit our schema (a field whose
         * type changed?): show its fields as for an unknown kind */
        fprintf(stderr, "warning: %s %s: the object does not match ketchctl's schema; showing its "
                        "protobuf fields\n", api, kind);
        d = NULL;
    }
    if (d) {
        if (!m) {
            snprintf(why, cap, "%s %s: truncated or malformed object (%zu bytes)", api, kind,
                     u->raw.len);
            json_decref(o);
            k8s__unknown__free_unpacked(u, NULL);
            return NULL;
        }
        n_unknown = 0;
        unknown_paths[0] = 0;
        json_t *body = msg_json(m);
        if (n_unknown)
            fprintf(stderr, "warning: %s %s: %zu fields not in ketchctl's schema are not shown "
                            "(message.field number: %s)\n", api, kind, n_unknown, unknown_paths);
        json_object_update(o, body);
        json_decref(body);
        protobuf_c_message_free_unpacked(m, NULL);
    } else if (u->has_raw) {
        if (u->raw.len && !pb_ok(u->raw.data, u->raw.data + u->raw.len, 0)) {
            snprintf(why, cap, "%s %s: truncated or malformed object (%zu bytes)", api, kind,
                     u->raw.len);
            json_decref(o);
            k8s__unknown__free_unpacked(u, NULL);
            return NULL;
        }
        json_object_set_new(o, "protobuf", generic(u->raw.data, u->raw.data + u->raw.len, 0));
    }
    k8s__unknown__free_unpacked(u, NULL);
    return o;
}

/* ---- output ---- */

/* Go's json.MarshalIndent(obj, "", "    "), as kubectl -o json: HTML
 * characters escaped, {} and [] for empty collections. */
static void j_node(struct buf *b, const json_t *v, int ind)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (!json_object_size(v)) {
            buf_puts(b, "{}");
            return;
        }
        buf_puts(b, "{\n");
        const char *k;
        json_t *x;
        size_t i = 0, n = json_object_size(v);
        json_object_foreach((json_t *)v, k, x)
        {
            buf_printf(b, "%*s", ind + 4, "");
            out_json_str(b, k, strlen(k));
            buf_puts(b, ": ");
            j_node(b, x, ind + 4);
            buf_puts(b, ++i < n ? ",\n" : "\n");
        }
        buf_printf(b, "%*s}", ind, "");
        return;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (!n) {
            buf_puts(b, "[]");
            return;
        }
        buf_puts(b, "[\n");
        for (size_t i = 0; i < n; i++) {
            buf_printf(b, "%*s", ind + 4, "");
            j_node(b, json_array_get(v, i), ind + 4);
            buf_puts(b, i + 1 < n ? ",\n" : "\n");
        }
        buf_printf(b, "%*s]", ind, "");
        return;
    }
    case JSON_STRING:
        out_json_str(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    case JSON_REAL:
        buf_printf(b, "%.17g", json_real_value(v));
        return;
    case JSON_TRUE:
        buf_puts(b, "true");
        return;
    case JSON_FALSE:
        buf_puts(b, "false");
        return;
    case JSON_NULL:
        buf_puts(b, "null");
        return;
    }
}

void k8s_print_json(const json_t *o)
{
    struct buf b = {0};
    j_node(&b, o, 0);
    buf_puts(&b, "\n");
    fwrite(b.p, 1, b.len, stdout);
    buf_free(&b);
}

/* Would YAML read this plain scalar as something other than this string
 * (go-yaml's resolve: bool, null, number, timestamp)? Then it is double
 * quoted. */
static bool resolves_other(const char *s)
{
    static const char *const words[] = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
                                        "true", "True", "TRUE", "false", "False", "FALSE", "on",
                                        "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
                                        "~", ".inf", ".Inf", ".INF", "-.inf", ".nan", ".NaN", ""};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (!strcmp(s, words[i]))
            return true;
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (!*p)
        return false;
    bool digits = true, dot = false;
    for (const char *q = p; *q; q++) {
        if (*q == '.' && !dot)
            dot = true;
        else if (*q == '_' || isdigit((unsigned char)*q))
            ;
        else if ((*q == 'e' || *q == 'E') && q != p)
            ;
        else {
            digits = false;
            break;
        }
    }
    if (digits)
        return true;
    if (!strncmp(p, "0x", 2) || !strncmp(p, "0o", 2))
        return true;
    /* timestamps: 2006-01-02... */
    if (isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) && isdigit((unsigned char)s[2]) &&
        isdigit((unsigned char)s[3]) && s[4] == '-')
        return true;
    return false;
}

static bool plain_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || s[0] == ' ' || s[n - 1] == ' ' || strchr("?:,[]{}#&*!|>'\"%@`", s[0]))
        return false;
    if (s[0] == '-' && (n == 1 || s[1] == ' ' || !strncmp(s, "---", 3)))
        return false;
    if (strstr(s, ": ") || strstr(s, " #") || s[n - 1] == ':')
        return false;
    /* YAML line breaks (NEL, LS, PS) and the BOM cannot stand in a plain scalar */
    if (strstr(s, "\xc2\x85") || strstr(s, "\xe2\x80\xa8") || strstr(s, "\xe2\x80\xa9") ||
        strstr(s, "\xef\xbb\xbf"))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* The YAML printer writes through yp(), which tracks the output column:
 * go-yaml (libyaml's emitter, width 80) folds a long plain or single-quoted
 * scalar at a space past column 80, continuing on the next line indented
 * two more than its key. */
static struct buf yout;
static int ycol;

static void yp(const char *s, size_t n)
{
    buf_put(&yout, s, n);
    for (size_t i = 0; i < n; i++)
        ycol = s[i] == '\n' ? 0 : ycol + 1;
}

static void yps(const char *s)
{
    yp(s, strlen(s));
}

static void yind(int n)
{
    for (int i = 0; i < n; i++)
        yp(" ", 1);
}

/* A double-quoted scalar: JSON's escapes, which YAML shares, plus the two
 * characters YAML would otherwise read as a line break or drop (NEL, BOM). */
static void y_dq(const char *s)
{
    struct buf b = {0};
    out_json_str(&b, s, strlen(s));
    for (size_t i = 0; i < b.len; i++) {
        if (i + 1 < b.len && (uint8_t)b.p[i] == 0xc2 && (uint8_t)b.p[i + 1] == 0x85) {
            yps("\\N");
            i++;
        } else if (i + 2 < b.len && (uint8_t)b.p[i] == 0xef && (uint8_t)b.p[i + 1] == 0xbb &&
                   (uint8_t)b.p[i + 2] == 0xbf) {
            yps("\\uFEFF");
            i += 2;
        } else {
            yp(b.p + i, 1);
        }
    }
    buf_free(&b);
}

/* A plain (quote 0) or single-quoted (quote 1) scalar, folded. */
static void y_folded(const char *s, int ind, bool quote)
{
    size_t n = strlen(s);
    if (quote)
        yp("'", 1);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == ' ' && ycol > 80 && i > 0 && s[i - 1] != ' ' && i + 1 < n && s[i + 1] != ' ' &&
            !(quote && (i == 0 || i + 1 == n))) {
            yp("\n", 1);
            yind(ind);
            continue;
        }
        if (quote && c == '\'')
            yp("'", 1);
        yp(&c, 1);
    }
    if (quote)
        yp("'", 1);
    yp("\n", 1);
}

static void y_str(const char *s, int ind)
{
    size_t nl = strspn(s, "\n");
    bool odd = strchr(s, '\r') || strstr(s, "\xc2\x85") || strstr(s, "\xe2\x80\xa8") ||
               strstr(s, "\xe2\x80\xa9") || strstr(s, "\xef\xbb\xbf");
    if (strchr(s, '\n') && !odd && s[nl]) { /* literal block; all-newline strings are quoted */
        size_t n = strlen(s);
        bool lead_space = s[nl] == ' ' || s[nl] == '\t';
        yps("|");
        if (lead_space)
            yps("2");
        yps(s[n - 1] == '\n' ? (n > 1 && s[n - 2] == '\n' ? "+" : "") : "-");
        yps("\n");
        const char *p = s;
        while (*p) {
            const char *e = strchr(p, '\n');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l) {
                yind(ind);
                yp(p, l);
            }
            yps("\n");
            if (!e)
                break;
            p = e + 1;
        }
        return;
    }
    if (resolves_other(s) || strchr(s, '\n') || odd) {
        y_dq(s);
        yps("\n");
    } else {
        y_folded(s, ind, !plain_ok(s));
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void y_node(const json_t *v, int ind, bool inline_first);

/* A value after "key:" (or "- "): scalars on the same line, collections on
 * the next lines. */
static void y_after_key(const json_t *v, int ind)
{
    if (json_is_object(v) && json_object_size(v)) {
        yps("\n");
        y_node(v, ind + 2, false);
    } else if (json_is_array(v) && json_array_size(v)) {
        yps("\n");
        y_node(v, ind, false); /* go-yaml: sequences not indented under a key */
    } else {
        yps(" ");
        y_node(v, ind + 2, true);
    }
}

static void y_node(const json_t *v, int ind, bool inline_first)
{
    char num[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        if (!n) {
            yps("{}\n");
            return;
        }
        const char **keys = calloc(n, sizeof *keys);
        size_t i = 0;
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) keys[i++] = k;
        qsort(keys, n, sizeof *keys, cmp_str);
        for (i = 0; i < n; i++) {
            if (!(i == 0 && inline_first))
                yind(ind);
            if (plain_ok(keys[i]) && !resolves_other(keys[i])) {
                yps(keys[i]);
            } else {
                y_dq(keys[i]);
            }
            yps(":");
            y_after_key(json_object_get(v, keys[i]), ind);
        }
        free(keys);
        return;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (!n) {
            yps("[]\n");
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (!(i == 0 && inline_first))
                yind(ind);
            yps("- ");
            y_node(json_array_get(v, i), ind + 2, true);
        }
        return;
    }
    case JSON_STRING:
        y_str(json_string_value(v), ind);
        return;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT "\n", json_integer_value(v));
        yps(num);
        return;
    case JSON_REAL:
        snprintf(num, sizeof num, "%.17g\n", json_real_value(v));
        yps(num);
        return;
    case JSON_TRUE:
        yps("true\n");
        return;
    case JSON_FALSE:
        yps("false\n");
        return;
    case JSON_NULL:
        yps("null\n");
        return;
    }
}

void k8s_print_yaml(const json_t *o)
{
    yout.len = 0;
    ycol = 0;
    y_node(o, 0, false);
    fwrite(yout.p, 1, yout.len, stdout);
    buf_free(&yout);
}

/* ---- JSON -> protobuf (the fixture generator) ---- */

static void w_varint(struct buf *b, uint64_t v)
{
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            c |= 0x80;
        buf_put(b, &c, 1);
    } while (v);
}

static void w_bytes(struct buf *b, unsigned field, const void *p, size_t n)
{
    w_varint(b, (uint64_t)field << 3 | 2);
    w_varint(b, n);
    if (n)
        buf_put(b, p, n);
}

static bool enc_msg(const ProtobufCMessageDescriptor *d, const json_t *o, struct buf *out,
                    char *why, size_t cap);

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static bool unb64(const char *s, struct buf *out)
{
    uint32_t acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64val((unsigned char)*s);
        if (v < 0)
            return false;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            uint8_t c = (uint8_t)(acc >> bits);
            buf_put(out, &c, 1);
        }
    }
    return true;
}

static bool parse_time(const char *s, int64_t *sec, int32_t *nanos)
{
    struct tm tm = {0};
    const char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!e)
        return false;
    *nanos = 0;
    if (*e == '.') {
        long frac = 0;
        int digits = 0;
        for (e++; isdigit((unsigned char)*e); e++, digits++)
            if (digits < 9)
                frac = frac * 10 + (*e - '0');
        for (; digits < 9; digits++)
            frac *= 10;
        *nanos = (int32_t)frac;
    }
    *sec = (int64_t)timegm(&tm);
    return true;
}

/* Encodes one value of field f. */
static bool enc_val(const ProtobufCFieldDescriptor *f, const json_t *v, struct buf *out, char *why,
                    size_t cap)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v))
            goto bad;
        w_bytes(out, f->id, json_string_value(v), json_string_length(v));
        return true;
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(v))
            goto bad;
        struct buf b = {0};
        if (!unb64(json_string_value(v), &b)) {
            buf_free(&b);
            goto bad;
        }
        w_bytes(out, f->id, b.p, b.len);
        buf_free(&b);
        return true;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            goto bad;
        w_varint(out, (uint64_t)f->id << 3);
        w_varint(out, json_is_true(v));
        return true;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_UINT64:
        if (!json_is_integer(v))
            goto bad;
        w_varint(out, (uint64_t)f->id << 3);
        w_varint(out, (uint64_t)json_integer_value(v));
        return true;
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessageDescriptor *md = f->descriptor;
        struct buf m = {0};
        if (md == &k8s__time__descriptor || md == &k8s__micro_time__descriptor) {
            if (!json_is_null(v)) {
                int64_t s;
                int32_t ns;
                if (!json_is_string(v) || !parse_time(json_string_value(v), &s, &ns))
                    goto bad;
                w_varint(&m, 1 << 3);
                w_varint(&m, (uint64_t)s);
                if (ns) {
                    w_varint(&m, 2 << 3);
                    w_varint(&m, (uint64_t)ns);
                }
            }
        } else if (md == &k8s__quantity__descriptor) {
            if (!json_is_string(v))
                goto bad;
            w_bytes(&m, 1, json_string_value(v), json_string_length(v));
        } else if (md == &k8s__int_or_string__descriptor) {
            w_varint(&m, 1 << 3);
            if (json_is_integer(v)) {
                w_varint(&m, 0);
                w_varint(&m, 2 << 3);
                w_varint(&m, (uint64_t)json_integer_value(v));
            } else if (json_is_string(v)) {
                w_varint(&m, 1);
                w_bytes(&m, 3, json_string_value(v), json_string_length(v));
            } else {
                buf_free(&m);
                goto bad;
            }
        } else if (md == &k8s__raw_extension__descriptor || md == &k8s__fields_v1__descriptor) {
            char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
            w_bytes(&m, 1, s, strlen(s));
            free(s);
        } else if (!enc_msg(md, v, &m, why, cap)) {
            buf_free(&m);
            return false;
        }
        w_bytes(out, f->id, m.p, m.len);
        buf_free(&m);
        return true;
    }
    default:
        break;
    }
bad:
    snprintf(why, cap, "field %s: value does not fit its type", f->name);
    return false;
}

static bool enc_msg(const ProtobufCMessageDescriptor *d, const json_t *o, struct buf *out,
                    char *why, size_t cap)
{
    if (!json_is_object(o)) {
        snprintf(why, cap, "%s: an object is expected", d->short_name);
        return false;
    }
    /* fields of inline (embedded) members go into their own sub-message */
    const ProtobufCFieldDescriptor *inl = NULL;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE && is_inline(d->fields[i].name))
            inl = &d->fields[i];
    json_t *inl_obj = inl ? json_object() : NULL;
    const char *k;
    json_t *v;
    bool ok = true;
    json_object_foreach((json_t *)o, k, v)
    {
        if (d == &k8s__unknown__descriptor || (!strcmp(k, "apiVersion") || !strcmp(k, "kind"))) {
            if (!protobuf_c_message_descriptor_get_field_by_name(d, k))
                continue; /* TypeMeta lives in the envelope */
        }
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, k);
        if (!f) {
            if (inl && protobuf_c_message_descriptor_get_field_by_name(inl->descriptor, k)) {
                json_object_set(inl_obj, k, v);
                continue;
            }
            snprintf(why, cap, "%s has no field %s", d->short_name, k);
            ok = false;
            break;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            const ProtobufCMessageDescriptor *md = f->descriptor;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(md)) {
                if (!json_is_object(v)) {
                    snprintf(why, cap, "field %s: an object is expected", k);
                    ok = false;
                    break;
                }
                const char *mk;
                json_t *mv;
                json_object_foreach(v, mk, mv)
                {
                    struct buf e = {0};
                    w_bytes(&e, 1, mk, strlen(mk));
                    if (!enc_val(&md->fields[1], mv, &e, why, cap)) {
                        buf_free(&e);
                        ok = false;
                        break;
                    }
                    w_bytes(out, f->id, e.p, e.len);
                    buf_free(&e);
                }
                if (!ok)
                    break;
                continue;
            }
            if (!json_is_array(v)) {
                snprintf(why, cap, "field %s: an array is expected", k);
                ok = false;
                break;
            }
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) if (!(ok = enc_val(f, e, out, why, cap))) break;
            if (!ok)
                break;
            continue;
        }
        if (!(ok = enc_val(f, v, out, why, cap)))
            break;
    }
    if (ok && inl && json_object_size(inl_obj))
        ok = enc_val(inl, inl_obj, out, why, cap);
    json_decref(inl_obj);
    return ok;
}

bool k8s_json_to_pb(const json_t *o, struct buf *out, char *why, size_t cap)
{
    const char *api = json_string_value(json_object_get(o, "apiVersion"));
    const char *kind = json_string_value(json_object_get(o, "kind"));
    const ProtobufCMessageDescriptor *d = api && kind ? kind_desc(api, kind) : NULL;
    if (!d) {
        snprintf(why, cap, "unknown kind %s %s", api ? api : "?", kind ? kind : "?");
        return false;
    }
    struct buf raw = {0}, tm = {0}, env = {0};
    if (!enc_msg(d, o, &raw, why, cap)) {
        buf_free(&raw);
        return false;
    }
    w_bytes(&tm, 1, api, strlen(api));
    w_bytes(&tm, 2, kind, strlen(kind));
    w_bytes(&env, 1, tm.p, tm.len);
    w_bytes(&env, 2, raw.p, raw.len);
    w_bytes(&env, 3, "", 0);
    w_bytes(&env, 4, "", 0);
    buf_put(out, "k8s\0", 4);
    buf_put(out, env.p, env.len);
    buf_free(&raw);
    buf_free(&tm);
    buf_free(&env);
    return true;
}

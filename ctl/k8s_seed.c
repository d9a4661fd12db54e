/* ketchctl k8s seed: writes a small, realistic Kubernetes keyspace under
 * /registry/ with values encoded as kube-apiserver encodes them: "k8s\0" +
 * runtime.Unknown wrapping the typed object (proto/k8s/k8s.proto) for the
 * built-in kinds, JSON for API services and custom resources, and Secrets
 * encrypted at rest (k8s:enc:<provider>:v1:<key>:) with test keys.
 *
 * Without --encryption-config the test keys below are used (print them as
 * an EncryptionConfiguration with --print-test-config); with it, the
 * encrypted Secrets cycle through the keys of that file. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "k8s.h"

/* Test keys (base64 of 32 bytes). Never use them for anything real. */
static const char test_config[] =
    "apiVersion: apiserver.config.k8s.io/v1\n"
    "kind: EncryptionConfiguration\n"
    "resources:\n"
    "  - resources:\n"
    "      - secrets\n"
    "    providers:\n"
    "      - aescbc:\n"
    "          keys:\n"
    "            - name: key1\n"
    "              secret: a2V0Y2gtdGVzdC1rZXktYWVzY2JjLTAxMjM0NTY3ODk=\n"
    "      - secretbox:\n"
    "          keys:\n"
    "            - name: key2\n"
    "              secret: a2V0Y2gtdGVzdC1rZXktc2VjcmV0Ym94LTAxMjM0NTY=\n"
    "      - identity: {}\n";

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

static int seed_put(const char *key, const void *v, size_t n)
{
    Etcdserverpb__PutRequest pr = ETCDSERVERPB__PUT_REQUEST__INIT;
    pr.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    pr.value = (ProtobufCBinaryData){n, (uint8_t *)v};
    protobuf_c_message_free_unpacked(
        ctl_rpc("/etcdserverpb.KV/Put", &pr.base, &etcdserverpb__put_response__descriptor), NULL);
    return 1;
}

/* metadata as kube-apiserver stores it (no resourceVersion: the store
 * clears it; name and namespace first) */
static char *meta(const char *ns, const char *name, int i, const char *extra)
{
    char nsf[300] = "";
    if (ns)
        snprintf(nsf, sizeof nsf, "\"namespace\":\"%s\",", ns);
    return fmt("{\"name\":\"%s\",%s\"uid\":\"6b1c%04x-0a1b-4c2d-8e3f-%012x\","
               "\"creationTimestamp\":\"2024-01-%02dT10:%02d:00Z\"%s%s}",
               name, nsf, (unsigned)(i * 7919) & 0xffff, (unsigned)(i * 131 + 17), 1 + i % 28,
               i % 60, extra && *extra ? "," : "", extra ? extra : "");
}

static const char pod_spec[] =
    "{\"volumes\":[{\"name\":\"kube-api-access\",\"projected\":{\"sources\":[{\"serviceAccountToken\":"
    "{\"expirationSeconds\":3607,\"path\":\"token\"}}],\"defaultMode\":420}}],"
    "\"containers\":[{\"name\":\"%s\",\"image\":\"%s\",\"args\":[\"--port=8080\"],"
    "\"ports\":[{\"name\":\"http\",\"containerPort\":8080,\"protocol\":\"TCP\"}],"
    "\"env\":[{\"name\":\"LOG_LEVEL\",\"value\":\"info\"},{\"name\":\"DB_PASSWORD\",\"valueFrom\":"
    "{\"secretKeyRef\":{\"name\":\"db-password\",\"key\":\"password\"}}}],"
    "\"resources\":{\"limits\":{\"memory\":\"170Mi\"},\"requests\":{\"cpu\":\"100m\",\"memory\":\"70Mi\"}},"
    "\"volumeMounts\":[{\"name\":\"kube-api-access\",\"readOnly\":true,\"mountPath\":"
    "\"/var/run/secrets/kubernetes.io/serviceaccount\"}],"
    "\"livenessProbe\":{\"httpGet\":{\"path\":\"/health\",\"port\":8080,\"scheme\":\"HTTP\"},"
    "\"initialDelaySeconds\":60,\"timeoutSeconds\":5,\"periodSeconds\":10,\"successThreshold\":1,"
    "\"failureThreshold\":5},"
    "\"terminationMessagePath\":\"/dev/termination-log\",\"imagePullPolicy\":\"IfNotPresent\","
    "\"terminationMessagePolicy\":\"File\"}],"
    "\"restartPolicy\":\"Always\",\"terminationGracePeriodSeconds\":30,\"dnsPolicy\":\"ClusterFirst\","
    "\"serviceAccountName\":\"default\",\"serviceAccount\":\"default\"%s,\"securityContext\":{},"
    "\"schedulerName\":\"default-scheduler\",\"tolerations\":[{\"key\":\"node.kubernetes.io/not-ready\","
    "\"operator\":\"Exists\",\"effect\":\"NoExecute\",\"tolerationSeconds\":300}],"
    "\"priority\":0,\"enableServiceLinks\":true,\"preemptionPolicy\":\"PreemptLowerPriority\"}";

static char *pod_spec_json(const char *c, const char *image, const char *node)
{
    char nn[128] = "";
    if (node)
        snprintf(nn, sizeof nn, ",\"nodeName\":\"%s\"", node);
    return fmt(pod_spec, c, image, nn);
}

static char *template_json(const char *app, const char *image)
{
    char *ps = pod_spec_json(app, image, NULL);
    char *t = fmt("{\"metadata\":{\"creationTimestamp\":null,\"labels\":{\"app\":\"%s\"}},\"spec\":%s}",
                  app, ps);
    free(ps);
    return t;
}

/* The JSON of one object (apiVersion, kind, metadata, ...). */
static char *object(const char *kind, const char *ns, const char *name, int i)
{
    char *m, *r, *t;
    if (!strcmp(kind, "Namespace")) {
        m = meta(NULL, name, i, fmt("\"labels\":{\"kubernetes.io/metadata.name\":\"%s\"}", name));
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":%s,\"spec\":{\"finalizers\":"
                "[\"kubernetes\"]},\"status\":{\"phase\":\"Active\"}}", m);
    } else if (!strcmp(kind, "Node")) {
        m = meta(NULL, name, i, fmt("\"labels\":{\"kubernetes.io/hostname\":\"%s\",\"kubernetes.io/os\":\"linux\"}", name));
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":%s,\"spec\":{\"podCIDR\":\"10.244.%d.0/24\","
                "\"podCIDRs\":[\"10.244.%d.0/24\"],\"taints\":[{\"key\":\"node-role.kubernetes.io/control-plane\","
                "\"effect\":\"NoSchedule\"}]},\"status\":{\"capacity\":{\"cpu\":\"4\",\"memory\":\"8147456Ki\","
                "\"pods\":\"110\"},\"allocatable\":{\"cpu\":\"4\",\"memory\":\"8045056Ki\",\"pods\":\"110\"},"
                "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"lastHeartbeatTime\":\"2024-03-01T12:00:00Z\","
                "\"lastTransitionTime\":\"2024-01-01T10:00:00Z\",\"reason\":\"KubeletReady\",\"message\":"
                "\"kubelet is posting ready status\"}],\"addresses\":[{\"type\":\"InternalIP\",\"address\":"
                "\"172.18.0.%d\"},{\"type\":\"Hostname\",\"address\":\"%s\"}],\"daemonEndpoints\":{\"kubeletEndpoint\":"
                "{\"Port\":10250}},\"nodeInfo\":{\"machineID\":\"a1b2c3\",\"systemUUID\":\"d4e5f6\",\"bootID\":\"0f1e2d\","
                "\"kernelVersion\":\"6.1.0-18-amd64\",\"osImage\":\"Debian GNU/Linux 12 (bookworm)\","
                "\"containerRuntimeVersion\":\"containerd://1.6.20\",\"kubeletVersion\":\"v1.29.2\","
                "\"kubeProxyVersion\":\"v1.29.2\",\"operatingSystem\":\"linux\",\"architecture\":\"amd64\"}}}",
                m, i, i, i + 2, name);
    } else if (!strcmp(kind, "ClusterRole")) {
        m = meta(NULL, name, i, fmt("\"labels\":{\"kubernetes.io/bootstrapping\":\"rbac-defaults\"}"));
        r = fmt("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRole\",\"metadata\":%s,"
                "\"rules\":[{\"verbs\":[\"get\",\"list\",\"watch\"],\"apiGroups\":[\"\"],\"resources\":[\"pods\","
                "\"services\"]},{\"verbs\":[\"create\"],\"apiGroups\":[\"authentication.k8s.io\"],\"resources\":"
                "[\"tokenreviews\"]}]}", m);
    } else if (!strcmp(kind, "ClusterRoleBinding") || !strcmp(kind, "RoleBinding")) {
        bool cl = kind[0] == 'C';
        m = meta(ns, name, i, NULL);
        r = fmt("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"%s\",\"metadata\":%s,"
                "\"subjects\":[{\"kind\":\"%s\",\"apiGroup\":\"%s\",\"name\":\"%s\"%s}],\"roleRef\":{\"apiGroup\":"
                "\"rbac.authorization.k8s.io\",\"kind\":\"%s\",\"name\":\"%s\"}}",
                kind, m, cl ? "Group" : "ServiceAccount", cl ? "rbac.authorization.k8s.io" : "",
                cl ? "system:masters" : "bootstrap-signer", cl ? "" : ",\"namespace\":\"kube-system\"",
                cl ? "ClusterRole" : "Role", cl ? name : "system:controller:bootstrap-signer");
    } else if (!strcmp(kind, "Role")) {
        m = meta(ns, name, i, NULL);
        r = fmt("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"Role\",\"metadata\":%s,"
                "\"rules\":[{\"verbs\":[\"get\",\"list\",\"watch\"],\"apiGroups\":[\"\"],\"resources\":"
                "[\"configmaps\"],\"resourceNames\":[\"extension-apiserver-authentication\"]}]}", m);
    } else if (!strcmp(kind, "ServiceAccount")) {
        m = meta(ns, name, i, NULL);
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\",\"metadata\":%s}", m);
    } else if (!strcmp(kind, "ConfigMap")) {
        m = meta(ns, name, i, NULL);
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":%s,\"data\":{\"config.yaml\":"
                "\"log-level: info\\nreplicas: 2\\n\",\"mode\":\"production\"}}", m);
    } else if (!strcmp(kind, "ControllerRevision")) {
        m = meta(ns, name, i, NULL);
        r = fmt("{\"apiVersion\":\"apps/v1\",\"kind\":\"ControllerRevision\",\"metadata\":%s,\"data\":"
                "{\"spec\":{\"template\":{\"$patch\":\"replace\"}}},\"revision\":1}", m);
    } else if (!strcmp(kind, "Deployment") || !strcmp(kind, "ReplicaSet") ||
               !strcmp(kind, "StatefulSet") || !strcmp(kind, "DaemonSet")) {
        const char *app = !strcmp(name, "coredns") ? "coredns" : !strncmp(name, "frontend", 8) ? "frontend"
                                                              : name;
        const char *image = !strcmp(app, "coredns") ? "registry.k8s.io/coredns/coredns:v1.11.1"
                            : !strcmp(app, "db")     ? "postgres:16"
                                                     : "nginx:1.25";
        t = template_json(app, image);
        m = meta(ns, name, i, fmt("\"generation\":1,\"labels\":{\"app\":\"%s\"},\"annotations\":"
                                  "{\"deployment.kubernetes.io/revision\":\"1\"}", app));
        if (!strcmp(kind, "Deployment"))
            r = fmt("{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":%s,\"spec\":{\"replicas\":2,"
                    "\"selector\":{\"matchLabels\":{\"app\":\"%s\"}},\"template\":%s,\"strategy\":{\"type\":"
                    "\"RollingUpdate\",\"rollingUpdate\":{\"maxUnavailable\":1,\"maxSurge\":\"25%%\"}},"
                    "\"revisionHistoryLimit\":10,\"progressDeadlineSeconds\":600},\"status\":{\"observedGeneration\":1,"
                    "\"replicas\":2,\"updatedReplicas\":2,\"readyReplicas\":2,\"availableReplicas\":2,\"conditions\":"
                    "[{\"type\":\"Available\",\"status\":\"True\",\"lastUpdateTime\":\"2024-01-01T10:01:00Z\","
                    "\"lastTransitionTime\":\"2024-01-01T10:01:00Z\",\"reason\":\"MinimumReplicasAvailable\","
                    "\"message\":\"Deployment has minimum availability.\"}]}}", m, app, t);
        else if (!strcmp(kind, "ReplicaSet"))
            r = fmt("{\"apiVersion\":\"apps/v1\",\"kind\":\"ReplicaSet\",\"metadata\":%s,\"spec\":{\"replicas\":2,"
                    "\"selector\":{\"matchLabels\":{\"app\":\"%s\"}},\"template\":%s},\"status\":{\"replicas\":2,"
                    "\"fullyLabeledReplicas\":2,\"readyReplicas\":2,\"availableReplicas\":2,\"observedGeneration\":1}}",
                    m, app, t);
        else if (!strcmp(kind, "StatefulSet"))
            r = fmt("{\"apiVersion\":\"apps/v1\",\"kind\":\"StatefulSet\",\"metadata\":%s,\"spec\":{\"replicas\":1,"
                    "\"selector\":{\"matchLabels\":{\"app\":\"%s\"}},\"template\":%s,\"volumeClaimTemplates\":"
                    "[{\"metadata\":{\"name\":\"data\",\"creationTimestamp\":null},\"spec\":{\"accessModes\":"
                    "[\"ReadWriteOnce\"],\"resources\":{\"requests\":{\"storage\":\"10Gi\"}},\"volumeMode\":"
                    "\"Filesystem\"},\"status\":{\"phase\":\"Pending\"}}],\"serviceName\":\"db\","
                    "\"podManagementPolicy\":\"OrderedReady\",\"updateStrategy\":{\"type\":\"RollingUpdate\","
                    "\"rollingUpdate\":{\"partition\":0}},\"revisionHistoryLimit\":10},\"status\":"
                    "{\"observedGeneration\":1,\"replicas\":1,\"readyReplicas\":1,\"currentReplicas\":1,"
                    "\"updatedReplicas\":1,\"currentRevision\":\"db-6d4f8b9c7\",\"updateRevision\":\"db-6d4f8b9c7\","
                    "\"collisionCount\":0,\"availableReplicas\":1}}", m, app, t);
        else
            r = fmt("{\"apiVersion\":\"apps/v1\",\"kind\":\"DaemonSet\",\"metadata\":%s,\"spec\":{\"selector\":"
                    "{\"matchLabels\":{\"app\":\"%s\"}},\"template\":%s,\"updateStrategy\":{\"type\":\"RollingUpdate\","
                    "\"rollingUpdate\":{\"maxUnavailable\":1,\"maxSurge\":0}},\"revisionHistoryLimit\":10},"
                    "\"status\":{\"currentNumberScheduled\":2,\"numberMisscheduled\":0,\"desiredNumberScheduled\":2,"
                    "\"numberReady\":2,\"observedGeneration\":1,\"updatedNumberScheduled\":2,\"numberAvailable\":2}}",
                    m, app, t);
        free(t);
    } else if (!strcmp(kind, "Pod")) {
        const char *app = !strncmp(name, "coredns", 7) ? "coredns" : !strncmp(name, "frontend", 8) ? "frontend"
                                                                                                   : "db";
        char *ps = pod_spec_json(app, !strcmp(app, "db") ? "postgres:16" : "nginx:1.25", "node-1");
        m = meta(ns, name, i, fmt("\"generateName\":\"%s-\",\"labels\":{\"app\":\"%s\"},\"ownerReferences\":"
                                  "[{\"apiVersion\":\"apps/v1\",\"kind\":\"ReplicaSet\",\"name\":\"%s\",\"uid\":"
                                  "\"0d9e8f7a-1b2c-4d3e-8f9a-0b1c2d3e4f5a\",\"controller\":true,"
                                  "\"blockOwnerDeletion\":true}]", app, app, app));
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":%s,\"spec\":%s,\"status\":{\"phase\":\"Running\","
                "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"lastProbeTime\":null,\"lastTransitionTime\":"
                "\"2024-01-01T10:02:00Z\"}],\"hostIP\":\"172.18.0.2\",\"podIP\":\"10.244.1.%d\",\"podIPs\":[{\"ip\":"
                "\"10.244.1.%d\"}],\"startTime\":\"2024-01-01T10:01:00Z\",\"containerStatuses\":[{\"name\":\"%s\","
                "\"state\":{\"running\":{\"startedAt\":\"2024-01-01T10:01:30Z\"}},\"lastState\":{},\"ready\":true,"
                "\"restartCount\":0,\"image\":\"nginx:1.25\",\"imageID\":\"docker.io/library/nginx@sha256:0d17b565\","
                "\"containerID\":\"containerd://4f9a1c\",\"started\":true}],\"qosClass\":\"Burstable\"}}",
                m, ps, 10 + i, 10 + i, app);
        free(ps);
    } else if (!strcmp(kind, "Secret")) {
        bool token = !strncmp(name, "bootstrap-token", 15);
        m = meta(ns, name, i, NULL);
        if (token)
            r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":%s,\"data\":{\"token-id\":\"YWJjZGVm\","
                    "\"token-secret\":\"MDEyMzQ1Njc4OWFiY2RlZg==\",\"usage-bootstrap-authentication\":\"dHJ1ZQ==\"},"
                    "\"type\":\"bootstrap.kubernetes.io/token\"}", m);
        else if (!strcmp(name, "tls-cert"))
            r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":%s,\"data\":{\"tls.crt\":"
                    "\"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIuLi4KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=\","
                    "\"tls.key\":\"LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUUuLi4KLS0tLS1FTkQgUFJJVkFURSBLRVktLS0tLQo=\"},"
                    "\"type\":\"kubernetes.io/tls\"}", m);
        else
            r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":%s,\"data\":{\"password\":\"czNjcjN0\"},"
                    "\"type\":\"Opaque\"}", m);
    } else if (!strcmp(kind, "Service")) {
        bool api = !strcmp(name, "kubernetes");
        m = meta(ns, name, i, fmt("\"labels\":{\"%s\":\"%s\"}", api ? "component" : "app", api ? "apiserver" : name));
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":%s,\"spec\":{\"ports\":[{\"name\":\"%s\","
                "\"protocol\":\"TCP\",\"port\":%d,\"targetPort\":%s}],%s\"clusterIP\":\"10.96.%d.1\",\"clusterIPs\":"
                "[\"10.96.%d.1\"],\"type\":\"ClusterIP\",\"sessionAffinity\":\"None\",\"ipFamilies\":[\"IPv4\"],"
                "\"ipFamilyPolicy\":\"SingleStack\",\"internalTrafficPolicy\":\"Cluster\"},\"status\":{\"loadBalancer\":{}}}",
                m, api ? "https" : "http", api ? 443 : 80, api ? "6443" : "\"http\"",
                api ? "" : "\"selector\":{\"app\":\"frontend\"},", api ? 0 : i, api ? 0 : i);
    } else if (!strcmp(kind, "Endpoints")) {
        bool api = !strcmp(name, "kubernetes");
        m = meta(ns, name, i, NULL);
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Endpoints\",\"metadata\":%s,\"subsets\":[{\"addresses\":[{\"ip\":"
                "\"%s\"%s}],\"ports\":[{\"name\":\"%s\",\"port\":%d,\"protocol\":\"TCP\"}]}]}",
                m, api ? "172.18.0.2" : "10.244.1.31",
                api ? "" : ",\"nodeName\":\"node-1\",\"targetRef\":{\"kind\":\"Pod\",\"namespace\":\"web\",\"name\":"
                           "\"frontend-7c9f8d6b5-x2x7q\",\"uid\":\"5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b\"}",
                api ? "https" : "http", api ? 6443 : 8080);
    } else if (!strcmp(kind, "Event")) {
        m = meta(ns, name, i, NULL);
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"Event\",\"metadata\":%s,\"involvedObject\":{\"kind\":\"Pod\","
                "\"namespace\":\"web\",\"name\":\"frontend-7c9f8d6b5-x2x7q\",\"uid\":\"5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b\","
                "\"apiVersion\":\"v1\",\"resourceVersion\":\"1042\",\"fieldPath\":\"spec.containers{frontend}\"},"
                "\"reason\":\"Pulled\",\"message\":\"Container image \\\"nginx:1.25\\\" already present on machine\","
                "\"source\":{\"component\":\"kubelet\",\"host\":\"node-1\"},\"firstTimestamp\":\"2024-01-01T10:01:20Z\","
                "\"lastTimestamp\":\"2024-01-01T10:01:20Z\",\"count\":1,\"type\":\"Normal\",\"eventTime\":null,"
                "\"reportingComponent\":\"kubelet\",\"reportingInstance\":\"node-1\"}", m);
    } else if (!strcmp(kind, "Lease")) {
        m = meta(ns, name, i, NULL);
        r = fmt("{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":%s,\"spec\":"
                "{\"holderIdentity\":\"%s\",\"leaseDurationSeconds\":40,\"acquireTime\":\"2024-01-01T10:00:05.123456Z\","
                "\"renewTime\":\"2024-03-01T12:00:00.654321Z\",\"leaseTransitions\":0}}",
                m, !strcmp(name, "node-1") ? "node-1" : "kube-scheduler-node-1_7f3c");
    } else { /* RangeAllocation */
        m = meta(NULL, "", i, NULL);
        r = fmt("{\"apiVersion\":\"v1\",\"kind\":\"RangeAllocation\",\"metadata\":%s,\"range\":\"%s\",\"data\":\"%s\"}",
                m, !strcmp(name, "serviceips") ? "10.96.0.0/12" : "30000-32767",
                !strcmp(name, "serviceips") ? "AQAAAAAAAAAAAIA=" : "AAAAAAAAAAQ=");
    }
    free(m);
    return r;
}

int k8s_seed(int argc, char **argv)
{
    const char *encf = "";
    bool print_cfg = false;
    struct flag fl[] = {{"encryption-config", 0, F_STR, &encf, false},
                        {"print-test-config", 0, F_BOOL, &print_cfg, false}, FEND};
    ctl_parse(argc, argv, fl);
    if (print_cfg) {
        fputs(test_config, stdout);
        return 0;
    }
    ctl_init_display();
    if (*encf) {
        k8s_crypt_load(encf);
    } else {
        k8s_crypt_load_text(test_config, "the test EncryptionConfiguration");
    }
    static const struct {
        const char *path, *kind, *ns, *name;
    } core[] = {
        {"namespaces", "Namespace", NULL, "default"},
        {"namespaces", "Namespace", NULL, "kube-system"},
        {"namespaces", "Namespace", NULL, "web"},
        {"minions", "Node", NULL, "node-1"},
        {"minions", "Node", NULL, "node-2"},
        {"clusterroles", "ClusterRole", NULL, "admin"},
        {"clusterroles", "ClusterRole", NULL, "system:node"},
        {"clusterrolebindings", "ClusterRoleBinding", NULL, "cluster-admin"},
        {"roles", "Role", "kube-system", "extension-apiserver-authentication-reader"},
        {"rolebindings", "RoleBinding", "kube-system", "system:controller:bootstrap-signer"},
        {"serviceaccounts", "ServiceAccount", "default", "default"},
        {"serviceaccounts", "ServiceAccount", "kube-system", "coredns"},
        {"configmaps", "ConfigMap", "kube-system", "coredns"},
        {"configmaps", "ConfigMap", "web", "frontend-config"},
        {"controllerrevisions", "ControllerRevision", "kube-system", "kube-proxy-5d8c7f9b4"},
        {"daemonsets", "DaemonSet", "kube-system", "kube-proxy"},
        {"deployments", "Deployment", "kube-system", "coredns"},
        {"deployments", "Deployment", "web", "frontend"},
        {"replicasets", "ReplicaSet", "web", "frontend-7c9f8d6b5"},
        {"statefulsets", "StatefulSet", "web", "db"},
        {"pods", "Pod", "kube-system", "coredns-5d78c9869d-abcde"},
        {"pods", "Pod", "web", "frontend-7c9f8d6b5-x2x7q"},
        {"pods", "Pod", "web", "db-0"},
        {"secrets", "Secret", "default", "db-password"},
        {"secrets", "Secret", "web", "tls-cert"},
        {"secrets", "Secret", "kube-system", "bootstrap-token-abcdef"},
        {"services/specs", "Service", "default", "kubernetes"},
        {"services/specs", "Service", "web", "frontend"},
        {"services/endpoints", "Endpoints", "default", "kubernetes"},
        {"services/endpoints", "Endpoints", "web", "frontend"},
        {"events", "Event", "web", "frontend-7c9f8d6b5-x2x7q.17a8b2c3d4e5f607"},
        {"leases", "Lease", "kube-node-lease", "node-1"},
        {"leases", "Lease", "kube-system", "kube-scheduler"},
        {"ranges", "RangeAllocation", NULL, "serviceips"},
        {"ranges", "RangeAllocation", NULL, "servicenodeports"},
    };
    int n = 0;
    size_t enc_i = 0;
    for (size_t i = 0; i < sizeof core / sizeof core[0]; i++) {
        char key[512];
        if (core[i].ns)
            snprintf(key, sizeof key, "/registry/%s/%s/%s", core[i].path, core[i].ns, core[i].name);
        else
            snprintf(key, sizeof key, "/registry/%s/%s", core[i].path, core[i].name);
        char *js = object(core[i].kind, core[i].ns, core[i].name, (int)i);
        json_error_t e;
        json_t *o = json_loads(js, 0, &e);
        if (!o)
            ctl_die(EXIT_ERR, "seed: %s: bad fixture JSON: %s (column %d)", key, e.text, e.column);
        struct buf v = {0};
        char why[256];
        if (!k8s_json_to_pb(o, &v, why, sizeof why))
            ctl_die(EXIT_ERR, "seed: %s: %s", key, why);
        /* every Secret but db-password is encrypted at rest */
        if (!strcmp(core[i].kind, "Secret") && strcmp(core[i].name, "db-password")) {
            const struct k8s_key *k = k8s_crypt_key(enc_i++ % k8s_crypt_nkeys());
            struct buf c = {0};
            if (k8s_encrypt(k, key, (const uint8_t *)v.p, v.len, &c))
                ctl_die(EXIT_ERR, "seed: %s: encryption failed", key);
            buf_free(&v);
            v = c;
        }
        n += seed_put(key, v.p, v.len);
        buf_free(&v);
        json_decref(o);
        free(js);
    }
    /* JSON: apiservices and custom resources */
    static const char apisvc[] =
        "{\"kind\":\"APIService\",\"apiVersion\":\"apiregistration.k8s.io/v1\",\"metadata\":{\"name\":"
        "\"v1.apps\",\"uid\":\"0f3a6a52-7d0e-4a33-9d4b-4a1a3c2d9e01\",\"creationTimestamp\":"
        "\"2024-01-01T00:00:00Z\",\"labels\":{\"kube-aggregator.kubernetes.io/automanaged\":"
        "\"onstart\"}},\"spec\":{\"group\":\"apps\",\"version\":\"v1\",\"groupPriorityMinimum\":"
        "17800,\"versionPriority\":15},\"status\":{\"conditions\":[{\"type\":\"Available\","
        "\"status\":\"True\",\"reason\":\"Local\"}]}}\n";
    n += seed_put("/registry/apiregistration.k8s.io/apiservices/v1.apps", apisvc, strlen(apisvc));
    static const char crd[] =
        "{\"apiVersion\":\"stable.example.com/v1\",\"kind\":\"CronTab\",\"metadata\":{\"name\":"
        "\"my-crontab\",\"namespace\":\"web\",\"uid\":\"a1b2c3d4-0000-4000-8000-000000000001\"},"
        "\"spec\":{\"cronSpec\":\"* * * * */5\",\"image\":\"my-cron-image\"}}\n";
    n += seed_put("/registry/stable.example.com/crontabs/web/my-crontab", crd, strlen(crd));
    static const char ccrd[] =
        "{\"apiVersion\":\"cert-manager.io/v1\",\"kind\":\"ClusterIssuer\",\"metadata\":{\"name\":"
        "\"letsencrypt\",\"uid\":\"a1b2c3d4-0000-4000-8000-000000000002\"},\"spec\":{\"acme\":{}}}\n";
    n += seed_put("/registry/cert-manager.io/clusterissuers/letsencrypt", ccrd, strlen(ccrd));
    printf("seeded %d keys under /registry/\n", n);
    return 0;
}
